"""Process-wide stage timings for Prometheus: ``foveal_stage_seconds{stage=...}``.

Every stage of a search (query encoding, each query stage, retrieval per source, fusion, each rerank stage, the
fetch of the page's documents) and every agent searcher node reports its wall time here with
:func:`observe_stage` or the :func:`stage_timer` context manager. The histogram lives in this module's own
registry, so it is shared by every app in the process; :func:`foveal.api.ops.install_metrics` exposes it on
``/metrics`` next to the per-app series. Stage names are plain words: ``encode``, ``query_<stage>``,
``retrieve_bm25``, ``retrieve_dense``, ``fuse``, ``rerank_<name>``, ``fetch``, ``agent_node``.

Example::

    >>> from foveal.metrics import stage_timer
    >>> with stage_timer("fuse"):
    ...     pass
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Histogram

#: From 0.1 ms (a fusion of short lists) to 30 s (an agent node waiting on a model).
STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REGISTRY = CollectorRegistry()
STAGE_SECONDS = Histogram("foveal_stage_seconds", "Wall time of one search or agent stage.", ["stage"],
                          registry=REGISTRY, buckets=STAGE_BUCKETS)


def observe_stage(stage: str, seconds: float) -> None:
    """Record that ``stage`` took ``seconds`` (never raises: metrics must not fail a search)."""
    try:
        STAGE_SECONDS.labels(stage).observe(max(0.0, seconds))
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
