"""Kill test (issue 10): real ``foveal ingest`` and ``foveal worker`` processes SIGKILLed at seeded moments taken
from their own progress (a third or more between a batch's store commit and its derived indexes' commit), beside
a server that searches and writes the same index; then every accepted document must be in every store exactly
once, and every REST job done. The harness is :mod:`tests.killharness`; ``bench/kill.py`` runs it with hundreds
of kills. Select with ``-m kill``."""

from __future__ import annotations

import pytest

from tests.killharness import KillOptions, run_kills


def _assert_holds(report, options: KillOptions) -> None:
    print(report.summary())
    assert report.total_kills >= options.ingest_kills + options.worker_kills, report.summary()
    assert report.phase_total("store_to_derived") * 3 >= report.total_kills, report.summary()
    assert report.checked == report.accepted > 0
    assert report.problems() == [], report.summary()
    stats = report.stats
    assert stats["documents"] == stats["lexical_documents"] == stats["vectors"] == stats["passages"] \
        == report.accepted, report.summary()


@pytest.mark.kill
def test_kills_lose_nothing_embedded_queue(engine, tmp_path):
    """Ingest processes killed while the server (embedded queue: its own worker threads) searches and indexes."""
    options = KillOptions(queue="embedded", ingest_kills=12, files=4, docs_per_file=128, seed=10)
    report = run_kills(engine, tmp_path / "kill", options)
    _assert_holds(report, options)


@pytest.mark.kill
@pytest.mark.redis
def test_kills_lose_nothing_celery_queue(engine, redis_env, tmp_path):
    """Celery workers and ingest processes killed while the server searches and queues batches on Redis."""
    options = KillOptions(
        queue="celery", ingest_kills=2, worker_kills=6, files=2, seed=11,
        # small tasks and a short redelivery so a killed worker's batch comes back within the test
        env={"FOVEAL_TASK_DOCS": "4", "FOVEAL_TASK_TIME_LIMIT_S": "8", "FOVEAL_VISIBILITY_TIMEOUT_S": "1",
             "FOVEAL_RESTORE_INTERVAL_S": "1",
             "FOVEAL_TASK_MAX_DELIVERIES": "100"},  # a batch whose worker is killed again and again still runs
    )
    report = run_kills(engine, tmp_path / "kill", options)
    _assert_holds(report, options)
