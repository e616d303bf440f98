"""Loopback load test of the search endpoint: N concurrent clients for T seconds against `foveal serve`.

    .venv/bin/python bench/load.py [--docs 100000] [--clients 32] [--seconds 30] [--pipeline hybrid]
                                   [--data ../shared/data]

Builds (once, reused under bench/out/home-100k) an index of synthetic documents that carry precomputed vectors
(the same generator as ``bench/speed.py latency --docs 100k``), starts ``foveal serve`` on a free loopback port in
a subprocess, and runs the clients (asyncio, one process; ``--client raw``, the default, or ``httpx``) with SciFact
queries, k=10. Prints errors, QPS, p50 and p99 latency as seen by the clients. Server and clients share the same
CPUs.
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


#: The load scripts: ``raw`` (the default) writes each request's bytes on an asyncio stream and reads the status
#: line, the headers and a Content-Length (or chunked) body, for a fraction of ``httpx``'s CPU a request; ``httpx``
#: (``httpx.AsyncClient``) is the script that every load table ran before docs/performance.md's section "Mixed int8
#: query passes by default, and a lighter load script". Both keep one HTTP/1.1 connection per client and check
#: nothing but the status code.
CLIENTS = ("raw", "httpx")


async def run_clients(url: str, queries: list[str], clients: int, seconds: float, pipeline: str,
                      client: str = "raw") -> dict:
    """``clients`` concurrent clients, each sending one search after another (a random SciFact query, k=10) for
    ``seconds``; returns requests answered (status 200), errors by kind, QPS and the p50/p99 latency in ms."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, not {client!r}")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def with_httpx(i: int, http) -> None:
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            body = {"query": rng.choice(queries), "k": 10, "pipeline": pipeline}
            t0 = time.perf_counter()
            try:
                response = await http.post(url, json=body)
                if response.status_code != 200:
                    error(str(response.status_code))
                    continue
            except httpx.HTTPError as exc:
                error(type(exc).__name__)
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    parsed = httpx.URL(url)
    host, port, path = parsed.host, parsed.port or 80, parsed.raw_path.decode()

    async def raw(i: int) -> None:
        rng = random.Random(i)
        reader = writer = None
        while time.perf_counter() < deadline:
            body = json.dumps({"query": rng.choice(queries), "k": 10, "pipeline": pipeline}).encode()
            request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                status = int(head[0].split(" ", 2)[1])
                headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
                headers = {k.strip().lower(): v.strip().lower() for k, v in headers.items()}
                if headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("connection") == "close":
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                error(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if status != 200:
                error(str(status))
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    if client == "httpx":
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            await asyncio.gather(*(with_httpx(i, http) for i in range(clients)))
    else:  # no per-request timeout (it would cost a task a request): a hung server fails the run instead
        await asyncio.wait_for(asyncio.gather(*(raw(i) for i in range(clients))), seconds + 120)
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
    parser.add_argument("--client", choices=CLIENTS, default="raw", help="the load script (see CLIENTS)")
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
        asyncio.run(run_clients(url, queries, 2, 3, args.pipeline, args.client))  # warm-up
        result = asyncio.run(run_clients(url, queries, args.clients, args.seconds, args.pipeline, args.client))
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
