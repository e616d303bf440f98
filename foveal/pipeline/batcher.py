"""A micro-batcher: concurrent callers of one function share one call on a batch of their items.

Leader/follower, no thread of its own: the first caller to find no open batch opens one and becomes its leader.
While an earlier batch is still running (it holds the encoder: this one could not start anyway) the open batch
collects everyone who arrives; once none runs, the leader waits for others at most ``max_wait_s`` more (one
deadline, fixed when the way is free), and closes the batch early when it is full (``max_batch``) or when every
caller active on the pipeline is in it (a lone caller never waits: :meth:`MicroBatcher.active` counts callers in
flight). The leader then runs ``run_batch`` on the items, in arrival order, and hands each follower its own result.
One batch runs at a time, oldest first: one that fills up while another runs closes (later arrivals open the next)
but waits its turn, since two passes at once share the same cores' threads and each runs slower. ``run_batch``
may end its turn early with :meth:`MicroBatcher.handoff` (the search pipeline does once its queries are encoded):
the next batch encodes while this one searches. With ``max_batch=1`` (batching off) every call runs when it comes,
as without a batcher.
``run_batch`` returns one result per item; an exception it raises goes to every caller of that batch.

So batching adds at most ``max_wait_s`` to a search beyond the time it would have queued for the encoder anyway:
the bound holds by construction (the leader's only timed wait is ``Condition.wait(deadline - now)``), not by
tuning.

Example::

    >>> batcher = MicroBatcher(lambda items: [x * 2 for x in items], max_batch=8, max_wait_s=0.003)
    >>> batcher.submit(21)
    42
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batch:
    __slots__ = ("items", "closed", "done", "results", "error")

    def __init__(self) -> None:
        self.items: list = []
        self.closed = False
        self.done = threading.Event()
        self.results: Sequence | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, max_batch: int = 32,
                 max_wait_s: float = 0.003, clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be at least 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._cond = threading.Condition()
        self._open: _Batch | None = None
        self._active = 0
        self._running = 0  # batches in run_batch now (at most one unless max_batch is 1)
        self._waiting: deque[_Batch] = deque()  # batches whose leaders wait to run, oldest first
        self._local = threading.local()  # in a leader's thread while its batch runs: whether it still holds the way
        #: how many batches ran, how many items they held in all, and the largest (for tests and ``/metrics``)
        self.batches = 0
        self.items = 0
        self.largest = 0

    @contextmanager
    def active(self):
        """Mark a caller in flight for its whole request (not only while it waits here): a leader waits for
        others only while some other caller is active, since only they can join soon."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def submit(self, item: T) -> R:
        with self._cond:
            batch = self._open
            leader = batch is None
            if leader:
                batch = self._open = _Batch()
            index = len(batch.items)
            batch.items.append(item)
            if len(batch.items) >= self.max_batch:
                self._close(batch)
            elif not leader:
                self._cond.notify_all()  # the leader re-checks whether anyone else may still join
            if leader:
                serial = self.max_batch > 1  # 1 is batching off: each search runs when it comes, as without it
                if serial:
                    self._waiting.append(batch)
                while not batch.closed and self._running:  # an earlier batch holds the way: collect meanwhile
                    self._cond.wait()
                deadline = self._clock() + self.max_wait_s
                while not batch.closed and self._others_may_join(batch):
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._close(batch)
                # one batch runs at a time, oldest first: a batch that filled up while another ran waits its turn
                # (two at once share the cores' threads and are both slower than one after the other)
                while serial and (self._running or self._waiting[0] is not batch):
                    self._cond.wait()
                if serial:
                    self._waiting.popleft()
                self._running += 1
        if leader:
            self._local.holding = True
            try:
                results = self.run_batch(list(batch.items))
                if len(results) != len(batch.items):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch.items)} items")
                batch.results = results
            except BaseException as exc:  # every caller of the batch gets it
                batch.error = exc
            finally:
                with self._cond:
                    if self._local.holding:
                        self._running -= 1
                    self._local.holding = False
                    self.batches += 1
                    self.items += len(batch.items)
                    self.largest = max(self.largest, len(batch.items))
                    self._cond.notify_all()
                batch.done.set()
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    def alone(self) -> bool:
        """No caller but the one asking is in flight (inside :meth:`active`)."""
        return self._active <= 1

    def handoff(self) -> None:
        """Called by ``run_batch`` (in the leader's thread) once the part of it that must run one batch at a time
        is done: the next batch may start while this one finishes. A no-op anywhere else, and after the first
        call."""
        if getattr(self._local, "holding", False):
            with self._cond:
                self._local.holding = False
                self._running -= 1
                self._cond.notify_all()

    def _others_may_join(self, batch: _Batch) -> bool:
        """Some active caller is not in this batch yet (callers outside :meth:`active` count as one, the
        leader)."""
        return self._active > len(batch.items)

    def _close(self, batch: _Batch) -> None:
        batch.closed = True
        if self._open is batch:
            self._open = None
        self._cond.notify_all()
