"""Stage timings: one mechanism for ``explain``, the latency bench and the Prometheus histograms.

Every search measures its stages with a :class:`StageTimes` (``with times.stage("retrieve_dense"): ...``). When
the search ends the pipeline hands the times to :func:`record`, which adds each stage to the process-wide
histogram ``foveal_stage_seconds{stage=...}`` (:data:`RECORDER`); the response carries the same figures (in
``query_info.timings_ms`` with ``explain``, and always as :attr:`SearchResponse.timings
<foveal.pipeline.request.SearchResponse.timings>` for library callers and benches).

Stage names (:data:`STAGES` lists the fixed ones; rerank stages add ``rerank_<name>`` and query stages
``query_stage_<name>``):

``queue_wait``
    time a request waited in the query micro-batcher for its batch to start (server only).
``query_encode``
    the encoder forward pass that produced the query vector (shared by a micro-batch: each request of the batch
    counts the batch's whole pass, the time it waited for it).
``filter``
    building the allow-list of a filtered search.
``retrieve_bm25`` / ``retrieve_dense``
    the lexical (tantivy) and vector (FAISS, MaxP rounds) retrievers.
``fuse``
    rank fusion and candidate assembly.
``fetch``
    reading the page's documents from the store and building hits.

Reading the histograms (what ``/metrics`` serves)::

    >>> from foveal.pipeline import timing
    >>> registry = CollectorRegistry(); registry.register(timing.collector())   # doctest: +SKIP
    >>> timing.snapshot()["query_encode"]["count"]                              # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

#: The Prometheus metric name (a histogram, label ``stage``); shared with the web/metrics work: keep it.
METRIC = "foveal_stage_seconds"
#: Histogram bucket upper bounds, seconds (``+Inf`` is implied).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The fixed stage names, in pipeline order.
STAGES = ("queue_wait", "query_encode", "filter", "retrieve_bm25", "retrieve_dense", "fuse", "fetch")


class StageTimes:
    """The stage timings of one search (seconds, summed per stage name; insertion order = pipeline order)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def as_ms(self) -> dict[str, float]:
        return {name: round(value * 1000, 3) for name, value in self.seconds.items()}

    def total(self) -> float:
        return sum(self.seconds.values())


class StageRecorder:
    """Process-wide histograms of stage durations (thread-safe; cheap: one lock, a bisect per stage)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, stage: str, seconds: float) -> None:
        import bisect

        slot = bisect.bisect_left(self.buckets, seconds)  # le semantics: a value equal to a bound counts in it
        with self._lock:
            counts = self._counts.get(stage)
            if counts is None:
                counts = self._counts[stage] = [0] * (len(self.buckets) + 1)
                self._sums[stage] = 0.0
            counts[slot] += 1
            self._sums[stage] += seconds

    def record(self, times: StageTimes) -> None:
        for name, seconds in times.seconds.items():
            self.observe(name, seconds)

    def snapshot(self) -> dict[str, dict]:
        """``{stage: {"buckets": [(upper_bound, cumulative_count), ..., (inf, count)], "sum": s, "count": n}}``."""
        with self._lock:
            counts = {k: list(v) for k, v in self._counts.items()}
            sums = dict(self._sums)
        out = {}
        for stage, per_bucket in counts.items():
            cumulative, running = [], 0
            for bound, n in zip((*self.buckets, float("inf")), per_bucket):
                running += n
                cumulative.append((bound, running))
            out[stage] = {"buckets": cumulative, "sum": sums[stage], "count": running}
        return out

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._sums.clear()


#: The one recorder of this process (every search pipeline records here).
RECORDER = StageRecorder()


def observe(stage: str, seconds: float) -> None:
    """Add one duration to ``foveal_stage_seconds{stage=...}`` (for stages outside the search pipeline, e.g. an
    agent node)."""
    RECORDER.observe(stage, seconds)


def record(times: StageTimes) -> None:
    RECORDER.record(times)


def snapshot() -> dict[str, dict]:
    return RECORDER.snapshot()


class _Collector:
    """A prometheus_client collector serving :data:`RECORDER` as the histogram ``foveal_stage_seconds``."""

    def __init__(self, recorder: StageRecorder) -> None:
        self.recorder = recorder

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(METRIC, "Search pipeline stage durations.", labels=["stage"])
        for stage, data in sorted(self.recorder.snapshot().items()):
            buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), count)
                       for bound, count in data["buckets"]]
            family.add_metric([stage], buckets, data["sum"])
        yield family

    def describe(self):
        return []


def collector(recorder: StageRecorder | None = None) -> _Collector:
    """A collector to ``registry.register(...)`` on a prometheus_client registry (one per registry)."""
    return _Collector(recorder or RECORDER)
