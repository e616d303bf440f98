"""Loopback load test of the search endpoint: N concurrent clients for T seconds against `foveal serve`.

    .venv/bin/python bench/load.py [--docs 100000] [--clients 32] [--seconds 30] [--pipeline hybrid]
                                   [--data ../shared/data]

Builds (once, reused under bench/out/home-100k) an index of synthetic documents that carry precomputed vectors
(the same generator as ``bench/speed.py latency --docs 100k``), starts ``foveal serve`` on a free loopback port in
a subprocess, and runs the clients (httpx, asyncio, one process) with SciFact queries, k=10. Prints errors, QPS,
p50 and p99 latency as seen by the clients. Server and clients share the same CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402

import speed  # noqa: E402  (its synthetic document generator)
from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import read_queries  # noqa: E402
from foveal.pipeline.ingest import ingest_records  # noqa: E402

OUT = ROOT / "bench" / "out"


def build(home: Path, docs: int, data: Path) -> None:
    speed.DATA = data
    engine = Engine(home)
    collection = engine.open_or_create("synthetic")
    have = collection.store.count()
    if have < docs:
        t0 = time.perf_counter()
        records = ((line, raw) for line, raw in speed._synthetic_records(docs, collection.dimension) if line > have)
        report = ingest_records(collection, records, batch_size=2000)
        print(f"built {docs} synthetic documents in {time.perf_counter() - t0:.0f} s: {report.summary()}",
              file=sys.stderr)
    engine.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_clients(url: str, queries: list[str], clients: int, seconds: float, pipeline: str) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            body = {"query": rng.choice(queries), "k": 10, "pipeline": pipeline}
            t0 = time.perf_counter()
            try:
                response = await http.post(url, json=body)
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p * (len(latencies) - 1))))] if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "qps": round(len(latencies) / elapsed, 1), "p50_ms": round(pct(0.5), 1), "p99_ms": round(pct(0.99), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pipeline", default="hybrid", choices=["bm25", "dense", "hybrid"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    home = OUT / f"home-{args.docs // 1000}k"
    build(home, args.docs, args.data)
    if args.build_only:
        return
    queries = list(read_queries(args.data / "scifact" / "queries.jsonl").values())
    port = free_port()
    env = {**os.environ, "FOVEAL_HOME": str(home), "PYTHONPATH": str(ROOT), "FOVEAL_QUEUE": "embedded"}
    server = subprocess.Popen([sys.executable, "-m", "foveal.cli", "serve", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.5)
        else:
            raise SystemExit("the server did not become ready")
        url = f"{base}/v1/indexes/synthetic/search"
        asyncio.run(run_clients(url, queries, 2, 3, args.pipeline))  # warm-up
        result = asyncio.run(run_clients(url, queries, args.clients, args.seconds, args.pipeline))
    finally:
        server.terminate()
        server.wait(30)
    result.update(docs=args.docs, clients=args.clients, pipeline=args.pipeline, cpus=os.cpu_count())
    print(json.dumps(result))
    print("\n| docs | clients | seconds | pipeline | requests | errors | QPS | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.docs:,} | {args.clients} | {result['seconds']} | {args.pipeline} | {result['requests']} | "
          f"{sum(result['errors'].values())} | {result['qps']} | {result['p50_ms']} | {result['p99_ms']} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
