"""Kill bench: the kill test of ``tests/service/test_kill.py`` with hundreds of kills.

    .venv/bin/python bench/kill.py [--kills 200] [--queue both|embedded|celery] [--seed 0] [--keep DIR]

Real ``foveal ingest`` processes (and, with Celery, ``foveal worker`` processes on the Redis at FOVEAL_REDIS_URL,
default 127.0.0.1:6379, DB 15 under a private key prefix) are SIGKILLed at seeded moments read from their own
progress (the ``FOVEAL_TEST_HOOKS`` lines; a third or more between a batch's store commit and its derived indexes'
commit) while an in-process server searches and writes the same index; then every ingest is re-run to completion,
every job waited for, and every accepted document checked in every store from a fresh Engine (see
``tests/killharness.py``). Prints kills per phase, documents checked, lost and duplicated; exits 1 when anything
was lost, duplicated, left open or served wrong.

With ``--queue both`` the kills are split: 60 % to the embedded run (ingest processes), 40 % to the Celery run
(two thirds of those to workers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.killharness import PHASES, KillOptions, run_kills  # noqa: E402


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _redis_env() -> dict[str, str]:
    import redis

    url = os.environ.get("FOVEAL_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/15"
    redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    tag = uuid.uuid4().hex[:8]
    return {"FOVEAL_REDIS_URL": url, "FOVEAL_REDIS_PREFIX": f"foveal-bench-{tag}:",
            "FOVEAL_CELERY_QUEUE": f"foveal-bench-{tag}", "FOVEAL_JOB_TTL_S": "3600",
            "FOVEAL_TASK_DOCS": "4", "FOVEAL_TASK_TIME_LIMIT_S": "8", "FOVEAL_VISIBILITY_TIMEOUT_S": "1",
            "FOVEAL_RESTORE_INTERVAL_S": "1", "FOVEAL_TASK_MAX_DELIVERIES": "1000"}


def _drop_keys(env: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(env["FOVEAL_REDIS_URL"])
    tag = env["FOVEAL_CELERY_QUEUE"]
    doomed = list(client.scan_iter(match=f"{tag}*"))
    if doomed:
        client.delete(*doomed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs in all (at least; more when the store "
                        "window is behind its third)")
    parser.add_argument("--queue", choices=["both", "embedded", "celery"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=2, help="ingest processes at once")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()

    from foveal.engine import Engine

    shares = {"both": (0.6, 0.4), "embedded": (1.0, 0.0), "celery": (0.0, 1.0)}[args.queue]
    embedded_kills = round(args.kills * shares[0])
    celery_kills = args.kills - embedded_kills
    runs = []
    if embedded_kills:
        runs.append(KillOptions(queue="embedded", ingest_kills=embedded_kills, files=max(6, embedded_kills // 2),
                                parallel=args.parallel, seed=args.seed))
    if celery_kills:
        worker_kills = max(1, round(celery_kills * 2 / 3))
        runs.append(KillOptions(queue="celery", ingest_kills=celery_kills - worker_kills, worker_kills=worker_kills,
                                files=max(2, (celery_kills - worker_kills) // 2), parallel=args.parallel,
                                seed=args.seed + 1, env=_redis_env()))
    base = args.keep or Path(tempfile.mkdtemp(prefix="foveal-kill-"))
    failed = False
    totals = {"kills": 0, "checked": 0, "lost": 0, "duplicated": 0, **dict.fromkeys(PHASES, 0)}
    for options in runs:
        work = base / options.queue
        engine = Engine(work / "home")
        try:
            report = run_kills(engine, work, options, log=_log)
        finally:
            engine.close()
            if options.queue == "celery":
                _drop_keys(options.env)
        print(report.summary(), flush=True)
        for problem in report.problems():
            print(f"  PROBLEM: {problem}", flush=True)
        failed = failed or bool(report.problems())
        totals["kills"] += report.total_kills
        totals["checked"] += report.checked
        totals["lost"] += len(report.lost_ids)
        totals["duplicated"] += sum(report.duplicated.values())
        for phase in PHASES:
            totals[phase] += report.phase_total(phase)
    print(f"total: kills {totals['kills']} (" + ", ".join(f"{p} {totals[p]}" for p in PHASES) + f"); documents "
          f"checked {totals['checked']}; lost {totals['lost']}; duplicated {totals['duplicated']}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
