"""Stage timings for Prometheus: ``foveal_stage_seconds{stage=...}``.

The search pipeline measures its stages with :mod:`foveal.pipeline.timing` (one mechanism for ``explain``, the
latency bench and these histograms: ``queue_wait``, ``query_encode``, ``filter``, ``retrieve_bm25``,
``retrieve_dense``, ``fuse``, ``query_stage_<name>``, ``rerank_<name>``, ``fetch``). Work outside the pipeline
reports here with :func:`observe_stage` or :func:`stage_timer`: the agent's searcher nodes as ``agent_node``.
:func:`foveal.api.ops.install_metrics` serves the histograms on ``/metrics``.

Example::

    >>> from foveal.metrics import stage_timer
    >>> with stage_timer("agent_node"):
    ...     pass
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from foveal.pipeline import timing


def observe_stage(stage: str, seconds: float) -> None:
    """Record that ``stage`` took ``seconds`` (never raises: metrics must not fail a search)."""
    try:
        timing.observe(stage, max(0.0, seconds))
    except Exception:  # noqa: BLE001
        pass


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Time the block and record it under ``stage`` (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - started)
