"""Ingest throughput on the worker pool: ``foveal ingest --server`` into a Celery-backed API with 1, then 2 workers.

    .venv/bin/python bench/ingest_workers.py [--docs 500] [--workers 1 2] [--batch-size 64] [--in-flight 4]
                                             [--data ../shared/data] [--redis redis://127.0.0.1:6379/0]

For each worker count: a fresh FOVEAL_HOME under bench/out, ``foveal serve`` with ``FOVEAL_QUEUE=celery`` on a free
loopback port, one ``foveal worker --concurrency N`` (N prefork children, each with its own model; waited for
until it logs ``ready``), an index with the default config, then ``foveal ingest`` of the first ``--docs`` SciFact
documents with ``--server`` (a fresh journal). docs/s is the client's: documents indexed / seconds from the first
batch sent to the last job done. Encoding runs in parallel in the children; commits stay serialised per index (the
index's write lock). Redis keys and the queue get a private prefix and are deleted afterwards. Prints a markdown
table naming the encoder backend and the commit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import DATA

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what}: the process exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(0.5)


def run_one(workers: int, corpus: Path, args, tag: str) -> dict:
    import httpx

    home = OUT / f"ingest-workers-{workers}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOVEAL_HOME": str(home), "FOVEAL_QUEUE": "celery",
           "FOVEAL_REDIS_URL": args.redis, "FOVEAL_REDIS_PREFIX": f"foveal-bench-{tag}-{workers}:",
           "FOVEAL_CELERY_QUEUE": f"foveal-bench-{tag}-{workers}", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    env.pop("FOVEAL_API_KEYS", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = OUT / f"ingest-workers-{workers}"
    server = subprocess.Popen([sys.executable, "-m", "foveal.cli", "serve", "--port", str(port)], env=env,
                              stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT)
    worker_log = logs / "worker.log"
    worker = None
    try:
        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 300, "foveal serve", server)
        # the index first: each worker child then opens it and loads the model before it takes a task
        httpx.post(base + "/v1/indexes", json={"name": "scifact"}, timeout=120).raise_for_status()
        worker = subprocess.Popen([sys.executable, "-m", "foveal.cli", "worker", "--concurrency", str(workers),
                                   "--loglevel", "INFO"], env=env, stdout=open(worker_log, "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)

        def loaded() -> bool:
            text = worker_log.read_text(errors="replace")
            return " ready." in text and text.count("Loading SentenceTransformer model") >= workers

        wait_for(loaded, 300, "foveal worker", worker)
        time.sleep(10)  # the children finish loading (the log line comes as each starts)
        started = time.perf_counter()
        ingest = subprocess.run(
            [sys.executable, "-m", "foveal.cli", "ingest", str(corpus), "--index", "scifact", "--server", base,
             "--batch-size", str(args.batch_size), "--in-flight", str(args.in_flight),
             "--journal", str(logs / "journal.jsonl"), "--restart"],
            env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        summary = json.loads(next(line for line in reversed(ingest.stderr.splitlines()) if line.startswith("{")))
        stats = httpx.get(f"{base}/v1/indexes/scifact", timeout=60).json()
        backend = (stats.get("config") or {}).get("encoder", {}).get("backend", "?")
    finally:
        for proc in (worker, server):
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, 15) if proc is worker else proc.terminate()
                proc.wait(60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                proc.kill()
        _clean_redis(args.redis, f"foveal-bench-{tag}-{workers}")
    return {"workers": workers, "docs": summary["documents"], "indexed": summary["indexed"],
            "rejected": summary["rejected"], "seconds": summary["seconds"], "docs_per_s": summary["docs_per_s"],
            "wall_s": round(wall, 1), "stored": stats.get("documents"), "backend": backend,
            "exit": ingest.returncode}


def _clean_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    doomed = list(client.scan_iter(match=f"{prefix}*")) + list(client.scan_iter(match=f"*{prefix}*"))
    if doomed:
        client.delete(*set(doomed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--redis", default=os.environ.get("FOVEAL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = OUT / f"scifact-{args.docs}.jsonl"
    with open(args.data / "scifact" / "corpus.jsonl") as source:
        corpus.write_text("".join(itertools.islice(source, args.docs)))
    tag = uuid.uuid4().hex[:8]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()  # before the run: what the servers and workers import
    rows = [run_one(n, corpus, args, tag) for n in args.workers]
    print(json.dumps(rows))
    print(f"\nSciFact, first {args.docs} documents; commit {commit}; encoder backend {rows[0]['backend']}; "
          f"batch {args.batch_size}, {args.in_flight} jobs in flight; {os.cpu_count()} CPUs\n")
    print("| Celery workers | docs | indexed | rejected | seconds | docs/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['docs']} | {row['indexed']} | {row['rejected']} | {row['seconds']} | "
              f"{row['docs_per_s']} |")
    (OUT / "ingest_workers.json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
