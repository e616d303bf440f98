"""Search performance under load (issue 14): A/B load test, stage breakdown, filters, search during ingest.

    .venv/bin/python bench/perf.py build                  # 100k synthetic documents (Flat; a copy rebuilt as HNSW32)
    .venv/bin/python bench/perf.py load-ab [--base 3507883] [--clients 32] [--seconds 30] [--rounds 2]
    .venv/bin/python bench/perf.py breakdown [--queries 200]
    .venv/bin/python bench/perf.py filters [--queries 60]
    .venv/bin/python bench/perf.py ingest [--docs 600]
    .venv/bin/python bench/perf.py micro                  # the library calls this round changed, before and now
    .venv/bin/python bench/perf.py load-quantize          # this checkout: fp32, mixed int8 and int8 query passes
    .venv/bin/python bench/perf.py cpu [--seconds 20]     # CPU per search: in-process, encoder, HTTP layer, REST
    .venv/bin/python bench/perf.py all                    # every one of them, in this order

Documents: ``bench/speed.py``'s synthetic generator (Zipf words from SciFact, random unit vectors given with the
document, so building needs no encoder), each with ``metadata.bucket = i % 100`` (filters select 1, 10 or 50 % of
them) and a timestamp. Queries: SciFact's, encoded by the index's model (all-MiniLM-L6-v2; the backend is named in
every table). No embedding or result caches exist in foveal, so none are on.

* ``load-ab``: the same load script (``bench/load.py``'s clients, asyncio, one process: ``--client raw``, the
  default, or ``httpx``) against ``foveal serve`` from the base commit (exported with ``git archive`` under
  bench/out) and from this checkout, each on the same synthetic documents indexed by its own code (each side's
  default config; this side's run-time encoder keys, the query pass's backend and precision, are set to this
  checkout's defaults first, since an index keeps the values it was made with), alternating A, B, A, B, so that
  load from other processes on a shared machine hits both alike. Its table gives the measured run's mean micro-batch
  size where the server has the counters (`/metrics`: `foveal_query_batch_items_total` over `_batches_total`),
  and the CPU each request cost the server and the load script (user + system time of each process over the
  measured run, from ``/proc``, over the requests answered): with C cores, C x 1000 ms over their sum bounds QPS.
* ``breakdown``: one client in the library: hybrid search p50 against the sum of the p50s of its raw parts called
  directly in the same run (query encode, FAISS search, tantivy search, document fetch), plus the pipeline's own
  stage timings (``SearchResponse.timings``).
* ``load-quantize``: the load script against this checkout's server with each ``encoder.query_quantize`` of
  ``--precisions`` (default none, mixed, int8; a run-time key, set in the index's config.json between runs, put
  back after), alternating, ``--rounds`` each.
* ``cpu``: where a search's CPU goes. In-process (``--clients`` threads calling ``Engine.search``, no HTTP) for
  bm25, dense and hybrid; the query encoder alone (batches of 16); over REST with the server's search stubbed (a
  canned response: the HTTP layer and the API alone, ``stub-serve``); and the real REST hybrid search.
* ``filters``: hybrid and dense p50 with filters matching 1 % (``bucket == 0``), 10 % (``bucket < 10``) and 50 %
  (``bucket < 50``) against unfiltered, on Flat and HNSW32, the shares rotated per query.
* ``ingest``: SciFact documents ingested in-process (encoded by the model) while one client searches the same
  index: search p99 over 200 searches against idle, and ingest docs/s against solo.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the caller's own OpenMP wait policy, before importing foveal sets its default: each server gets the caller's
#: environment, so the base commit runs as it ships (this commit's servers set PASSIVE themselves)
_CALLER_OMP = os.environ.get("OMP_WAIT_POLICY")
if os.environ.get("PERF_CODE"):  # another commit's export: its foveal package, whatever path is inserted later
    sys.path.insert(0, os.environ["PERF_CODE"])
    importlib.import_module("foveal")
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))


import load  # noqa: E402  (its clients)
import speed  # noqa: E402  (its synthetic document generator)
from foveal.engine import Engine  # noqa: E402
from foveal.index.base import doc_key_of  # noqa: E402
from foveal.evaluation import read_queries  # noqa: E402
from foveal.pipeline.ingest import ingest_records  # noqa: E402
from foveal.pipeline.request import SearchRequest  # noqa: E402

OUT = ROOT / "bench" / "out"
#: the shared data folder: beside the checkout, or two levels up for a worktree (wt/<name>)
DATA = DATA_ROOT
TAG = os.environ.get("PERF_TAG", "100k")  # another tag keeps a smoke run's indexes apart
HOME = Path(os.environ["PERF_HOME"]) if os.environ.get("PERF_HOME") else OUT / f"perf-{TAG}"
HNSW_HOME = OUT / f"perf-{TAG}-hnsw"


def commit(root: Path = ROOT) -> str:
    if root == ROOT and os.environ.get("PERF_COMMIT"):  # a frozen export of a commit (no .git) names it here
        return os.environ["PERF_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def backend_of(collection) -> str:
    enc = collection.config.encoder
    name = f"{enc.model} {enc.backend}" + (f" {enc.quantize}" if enc.quantize != "none" else "")
    loaded = getattr(collection.encoder, "loaded", None)
    query_onnx = getattr(loaded, "query_onnx", None)
    if query_onnx is not None:
        precision = {"none": "fp32", "int8": "int8", "mixed": "mixed int8"}.get(query_onnx.quantize, query_onnx.quantize)
        name += f" (queries: its {precision} ONNX export, encoder.query_backend)"
    return name


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))] if values else float("nan")


_QUERIES: list[str] = []


def queries() -> list[str]:
    if not _QUERIES:
        _QUERIES.extend(read_queries(DATA / "scifact" / "queries.jsonl").values())
    return _QUERIES


# -- build -------------------------------------------------------------------------------------------------------
def records(n: int, dim: int, start: int = 0):
    for line, raw in speed._synthetic_records(n, dim):
        if line <= start:
            continue
        i = line - 1
        raw["metadata"] = {"bucket": i % 100}
        raw["timestamp"] = 1_600_000_000 + i * 60
        yield line, raw


def build(args) -> None:
    speed.DATA = DATA
    engine = Engine(HOME)
    collection = engine.open_or_create("flat")
    have = collection.store.count()
    if have < args.docs:
        t0 = time.perf_counter()
        report = ingest_records(collection, records(args.docs, collection.dimension, have), batch_size=2000)
        collection.flush()
        print(f"built {args.docs} synthetic documents in {time.perf_counter() - t0:.0f} s: {report.summary()}",
              file=sys.stderr)
    engine.close()
    if args.flat_only:
        return
    target = HNSW_HOME / "indexes" / "hnsw"
    if not (target / "config.json").exists():
        t0 = time.perf_counter()
        staging = HNSW_HOME / "indexes" / ".copy"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        source = HOME / "indexes" / "flat"
        for name in ("docs.sqlite", "instance", "lexical.json"):
            shutil.copy2(source / name, staging / name)
        shutil.copytree(source / "lexical", staging / "lexical")
        config = json.loads((source / "config.json").read_text())
        config["vector"]["factory"] = "HNSW32"
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        os.rename(staging, target)
        Engine(HNSW_HOME).get("hnsw").close()  # the vector index is rebuilt from the store (no vectors.npz)
        print(f"HNSW32 copy rebuilt in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


# -- load A/B ----------------------------------------------------------------------------------------------------
def export_base(base: str) -> Path:
    target = OUT / f"ab-{base}"
    if not (target / "foveal").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", base], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def build_base(base: str, base_root: Path, docs: int) -> Path:
    """The same synthetic documents indexed by the base commit's own code (its config, its files): a server reads
    only what its own code writes (the base commit's server refused this commit's index config with 422s)."""
    home = OUT / f"perf-{TAG}-base-{base}"
    env = {**os.environ, "PERF_CODE": str(base_root), "PERF_HOME": str(home)}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "build", "--flat-only", "--docs", str(docs)],
                   env=env, check=True)
    return home


def serve_and_load(code_root: Path, home: Path, qs: list[str], clients: int, seconds: float, pipeline: str,
                   stub: bool = False, client: str = "raw") -> dict:
    """``foveal serve`` from ``code_root`` on ``home``, loaded by ``clients`` for ``seconds``. ``stub``: the server's
    ``Engine.search`` answers every search with one canned response (``stub-serve``), so the run measures the HTTP
    layer and the API alone."""
    port = load.free_port()
    env = {**os.environ, "FOVEAL_HOME": str(home), "PYTHONPATH": str(code_root), "FOVEAL_QUEUE": "embedded"}
    env.pop("OMP_WAIT_POLICY", None)
    if _CALLER_OMP is not None:
        env["OMP_WAIT_POLICY"] = _CALLER_OMP
    command = ([sys.executable, str(Path(__file__).resolve()), "stub-serve", "--port", str(port)] if stub else
               [sys.executable, "-m", "foveal.cli", "serve", "--host", "127.0.0.1", "--port", str(port)])
    server = subprocess.Popen(command, env=env, cwd=str(code_root), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    import httpx

    try:
        for _ in range(1200):
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"the server from {code_root} exited")
            time.sleep(0.5)
        url = f"{base}/v1/indexes/flat/search"
        asyncio.run(load.run_clients(url, qs, 2, 3, pipeline, client))  # warm-up
        before = batch_counts(base)
        server_cpu, client_cpu = process_cpu_s(server.pid), time.process_time()
        result = asyncio.run(load.run_clients(url, qs, clients, seconds, pipeline, client))
        server_cpu = process_cpu_s(server.pid) - server_cpu if server_cpu is not None else None
        client_cpu = time.process_time() - client_cpu
        after = batch_counts(base)
        # CPU per answered request (user + system, every thread), of the server and of the load script itself:
        # on a machine of C cores, C x 1000 / (both) is the QPS the two together could reach at most
        n = max(1, result["requests"])
        result["server_cpu_ms"] = round(1000 * server_cpu / n, 2) if server_cpu is not None else None
        result["client_cpu_ms"] = round(1000 * client_cpu / n, 2)
        # the mean micro-batch size of the measured run (None from code without the counters)
        result["mean_batch"] = (round((after[1] - before[1]) / (after[0] - before[0]), 1)
                                if before and after and after[0] > before[0] else None)
        return result
    finally:
        server.terminate()
        server.wait(60)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_counts(base: str) -> tuple[float, float] | None:
    """(micro-batches, searches they held) of index ``flat`` from the server's /metrics; None where it has none."""
    import httpx

    found = {}
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        for name in ("foveal_query_batches_total", "foveal_query_batch_items_total"):
            if line.startswith(name + '{index="flat"}'):
                found[name] = float(line.rsplit(" ", 1)[1])
    if len(found) < 2:
        return None
    return found["foveal_query_batches_total"], found["foveal_query_batch_items_total"]


def current_runtime_defaults(home: Path) -> None:
    """Give index ``flat`` under ``home`` this checkout's defaults of the encoder's run-time keys (the query pass's
    backend and precision): an index keeps the values it was made with, and one built by an earlier checkout
    would otherwise be served as that checkout's default."""
    from foveal.config import EncoderConfig

    path = home / "indexes" / "flat" / "config.json"
    config = json.loads(path.read_text())
    defaults = EncoderConfig()
    for key in ("query_backend", "query_quantize"):
        if config["encoder"].get(key) != getattr(defaults, key):
            print(f"index flat: encoder.{key} {config['encoder'].get(key)!r} -> {getattr(defaults, key)!r} "
                  "(this checkout's default)", file=sys.stderr)
            config["encoder"][key] = getattr(defaults, key)
    path.write_text(json.dumps(config, indent=2))


def load_ab(args) -> None:
    base_root = export_base(args.base)
    base_home = build_base(args.base, base_root, args.docs)
    current_runtime_defaults(HOME)
    qs = queries()
    sides = {f"base {args.base}": (base_root, base_home), f"this {commit()}": (ROOT, HOME)}
    rows = []
    for round_index in range(args.rounds):
        for name, (root, home) in sides.items():
            result = serve_and_load(root, home, qs, args.clients, args.seconds, args.pipeline, client=args.client)
            rows.append((round_index + 1, name, result))
            print(json.dumps({"round": round_index + 1, "code": name, **result}), file=sys.stderr, flush=True)
    print_load_table(args, rows, "code", "each side's default CPU encoder; bench/perf.py load-ab")
    (OUT / "perf-load-ab.json").write_text(json.dumps([{"round": a, "code": b, **c} for a, b, c in rows], indent=2))


def load_quantize(args) -> None:
    qs = queries()
    path = HOME / "indexes" / "flat" / "config.json"
    original = path.read_text()
    rows = []
    try:
        for round_index in range(args.rounds):
            for precision in args.precisions.split(","):
                config = json.loads(original)
                config["encoder"]["query_quantize"] = precision
                path.write_text(json.dumps(config, indent=2))
                result = serve_and_load(ROOT, HOME, qs, args.clients, args.seconds, args.pipeline,
                                        client=args.client)
                rows.append((round_index + 1, precision, result))
                print(json.dumps({"round": round_index + 1, "query_quantize": precision, **result}), file=sys.stderr,
                      flush=True)
    finally:
        path.write_text(original)
    print_load_table(args, rows, "query_quantize", "documents torch fp32, queries on the ONNX export in each "
                     "precision; bench/perf.py load-quantize")


def print_load_table(args, rows: list, column: str, setup: str) -> None:
    """A load run's table: one row per (round, ``column``'s value, result); ``setup`` says what ran, before the
    commit."""
    print(f"\n{args.docs:,} synthetic documents (Flat), REST `{args.pipeline}` search k=10, {args.clients} clients x "
          f"{args.seconds:g} s per run (load script: {args.client}), server and clients on the same "
          f"{os.cpu_count()} CPUs; all-MiniLM-L6-v2, {setup} at {commit()}\n")
    print(f"| round | {column} | requests | errors | QPS | p50 ms | p99 ms | mean batch | server CPU ms/request | "
          "load script CPU ms/request | QPS the CPU allows |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for round_index, name, r in rows:
        server, client = r.get("server_cpu_ms"), r.get("client_cpu_ms")
        bound = f"{os.cpu_count() * 1000 / (server + client):.0f}" if server and client else "–"
        print(f"| {round_index} | {name} | {r['requests']} | {sum(r['errors'].values())} | {r['qps']} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['mean_batch'] or '–'} | {_cell(server)} | {_cell(client)} | "
              f"{bound} |")
    print(f"\nQPS the CPU allows: {os.cpu_count()} cores x 1000 ms over the CPU ms one request cost the server and the "
          "load script together.")


def _cell(value) -> str:
    return "–" if value is None else f"{value:.2f}"


# -- where the CPU goes ------------------------------------------------------------------------------------------
def stub_serve(args) -> None:
    """``foveal serve`` with ``Engine.search`` answering every search with the response to one fixed query (made
    once, by the real pipeline): what a request costs the server outside the search itself."""
    canned: dict = {}
    real = Engine.search

    def search(self, name, body):
        if name not in canned:
            canned[name] = real(self, name, SearchRequest(query=queries()[0], k=10))
        return canned[name]

    Engine.search = search
    from foveal.cli import app

    sys.argv = ["foveal", "serve", "--host", "127.0.0.1", "--port", str(args.port)]
    app()


def cpu_split(args) -> None:
    """CPU per search, split: in-process (no HTTP) with ``--clients`` threads per pipeline, the query encoder alone,
    the HTTP layer and the API alone (search stubbed), and the whole REST search. Process CPU time (user + system,
    every thread) over the searches answered."""
    import gc

    qs = queries()
    rows = []
    engine = Engine(HOME)
    engine.search("flat", SearchRequest(query=qs[0], k=10))
    gc.collect()
    gc.freeze()  # as `foveal serve` does once it has loaded (docs/performance.md)
    for pipeline in ("bm25", "dense", "hybrid"):
        done = [0] * args.clients
        stop = time.perf_counter() + args.seconds

        def worker(i: int) -> None:
            rng = random.Random(i)
            while time.perf_counter() < stop:
                engine.search("flat", SearchRequest(query=rng.choice(qs), k=10, pipeline=pipeline))
                done[i] += 1

        cpu0, wall0 = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = sum(done)
        rows.append((f"in-process `{pipeline}`, {args.clients} threads, no HTTP", n,
                     n / (time.perf_counter() - wall0), 1000 * (time.process_time() - cpu0) / n))
    collection = engine.get("flat")
    encoder, backend = collection.encoder, backend_of(collection)
    rng = random.Random(7)
    batches = [[rng.choice(qs) for _ in range(16)] for _ in range(20)]
    encoder.encode_queries(batches[0])
    cpu0 = time.process_time()
    for batch in batches:
        encoder.encode_queries(batch)
    rows.append(("query encoder alone, batches of 16", 320, None, 1000 * (time.process_time() - cpu0) / 320))
    engine.close()
    gc.unfreeze()
    for label, stub in (("REST, search stubbed: the HTTP layer and the API", True), ("REST `hybrid`", False)):
        r = serve_and_load(ROOT, HOME, qs, args.clients, args.seconds, "hybrid", stub=stub, client=args.client)
        rows.append((f"{label}, {args.clients} clients (server CPU; the load script's: {r['client_cpu_ms']:.2f})",
                     r["requests"], r["qps"], r["server_cpu_ms"]))
    print(f"\n{args.docs:,} synthetic documents (Flat), k=10, {args.seconds:g} s per row, {os.cpu_count()} CPUs; "
          f"{backend}; bench/perf.py cpu at {commit()}\n")
    print("| measured | searches | QPS | CPU ms per search |")
    print("|---|---|---|---|")
    for label, n, qps, ms in rows:
        print(f"| {label} | {n} | {'–' if qps is None else f'{qps:.1f}'} | {_cell(ms)} |")


# -- breakdown ---------------------------------------------------------------------------------------------------
def breakdown(args) -> None:
    engine = Engine(HOME)
    searcher = engine.pipeline("flat")
    collection = searcher.collection
    rng = random.Random(3)
    qs = [rng.choice(queries()) for _ in range(args.queries)]
    window = collection.config.fusion.window
    parts: dict[str, list[float]] = {k: [] for k in ("encode", "faiss", "faiss2", "tantivy", "fetch", "hybrid",
                                                      "hybrid_no_rocchio", "hybrid_search_again")}
    rocchio = collection.config.fusion.rocchio
    no_rocchio = collection.config.fusion.model_copy(
        update={"rocchio": rocchio.model_copy(update={"enabled": False})})
    search_again = collection.config.fusion.model_copy(  # Rocchio's second pass as a search of the whole index
        update={"rocchio": rocchio.model_copy(update={"rescore": False})})
    stages: dict[str, list[float]] = {}
    searcher.search(SearchRequest(query=qs[0], k=10))  # warm-up
    for q in qs:
        t0 = time.perf_counter()
        response = searcher.search(SearchRequest(query=q, k=10))
        parts["hybrid"].append((time.perf_counter() - t0) * 1000)
        for name, ms in response.timings.items():
            stages.setdefault(name, []).append(ms)
        if rocchio.enabled:
            t0 = time.perf_counter()
            searcher.search(SearchRequest(query=q, k=10, fusion=no_rocchio))
            parts["hybrid_no_rocchio"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            searcher.search(SearchRequest(query=q, k=10, fusion=search_again))
            parts["hybrid_search_again"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        vector = collection.encoder.encode_queries([q]).vectors[0]
        t1 = time.perf_counter()
        _, ids = collection.vectors.search(vector[None, :], window * 4)
        t2 = time.perf_counter()
        found = collection.lexical.search(q, window + 1)
        t3 = time.perf_counter()
        collection.store.get_documents([k for k, _ in found[:10]])
        t4 = time.perf_counter()
        for name, a, b in (("encode", t0, t1), ("faiss", t1, t2), ("tantivy", t2, t3), ("fetch", t3, t4)):
            parts[name].append((b - a) * 1000)
        if rocchio.enabled:  # the default fusion's second vector search: the query moved towards its feedback
            _, feedback = collection.store.vectors_of([doc_key_of(int(i)) for i in ids[0][: rocchio.fb_docs]])
            moved = (vector + rocchio.beta * feedback.mean(axis=0)) if len(feedback) else vector
            t5 = time.perf_counter()
            collection.vectors.search(moved[None, :].astype(np.float32), window * 4)
            parts["faiss2"].append((time.perf_counter() - t5) * 1000)
    p50 = {k: statistics.median(v) for k, v in parts.items() if v}
    raw = p50["encode"] + p50["faiss"] + p50["tantivy"] + p50["fetch"]
    print(f"\n{collection.store.count():,} synthetic documents (Flat), {args.queries} SciFact queries, one client in "
          f"the library, k=10, fusion window {window}; encoder {backend_of(collection)}; {os.cpu_count()} CPUs; "
          f"bench/perf.py breakdown at {commit()}\n")
    print("| measured | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name in ("encode", "faiss", "tantivy", "fetch"):
        print(f"| raw {name} | {p50[name]:.2f} | {pct(parts[name], 0.99):.2f} |")
    print(f"| **sum of raw parts** | {raw:.2f} | |")
    print(f"| **hybrid search (pipeline)** | {p50['hybrid']:.2f} | {pct(parts['hybrid'], 0.99):.2f} |")
    print(f"| ratio hybrid / raw sum | {p50['hybrid'] / raw:.2f}x | |")
    if "faiss2" in p50:
        print(f"| raw second faiss search (what `rocchio.rescore: false` adds) | {p50['faiss2']:.2f} | "
              f"{pct(parts['faiss2'], 0.99):.2f} |")
        print(f"| hybrid search with Rocchio's second search (`fusion.rocchio.rescore: false`) | "
              f"{p50['hybrid_search_again']:.2f} | {pct(parts['hybrid_search_again'], 0.99):.2f} |")
        print(f"| ratio of that / (raw sum + second faiss search) | "
              f"{p50['hybrid_search_again'] / (raw + p50['faiss2']):.2f}x | |")
        print(f"| hybrid search without the Rocchio pass (`fusion.rocchio.enabled: false`) | "
              f"{p50['hybrid_no_rocchio']:.2f} | {pct(parts['hybrid_no_rocchio'], 0.99):.2f} |")
        print(f"| ratio hybrid without Rocchio / raw sum | {p50['hybrid_no_rocchio'] / raw:.2f}x | |")
    print("\nThe pipeline's own stage timings (`SearchResponse.timings`, same run):\n")
    print("| stage | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, values in stages.items():
        print(f"| {name} | {statistics.median(values):.2f} | {pct(values, 0.99):.2f} |")
    engine.close()


# -- filters -----------------------------------------------------------------------------------------------------
FILTERS = {
    "unfiltered": None,
    "1% (bucket == 0)": {"metadata": {"bucket": 0}},
    "10% (bucket < 10)": {"metadata": {"bucket": {"lt": 10}}},
    "50% (bucket < 50)": {"metadata": {"bucket": {"lt": 50}}},
}


def filters(args) -> None:
    rng = random.Random(5)
    qs = [rng.choice(queries()) for _ in range(args.queries)]
    print(f"\n100,000 synthetic documents, {args.queries} SciFact queries per cell, one client in the library, k=10, "
          f"filter shares rotated per query; p50 ms of the search without its query encoding (wall time minus the "
          f"`query_encode` stage; ratio to unfiltered); bench/perf.py filters at {commit()}\n")
    for home, name in ((HOME, "flat"), (HNSW_HOME, "hnsw")):
        engine = Engine(home)
        searcher = engine.pipeline(name)
        collection = searcher.collection
        factory = collection.config.vector.factory
        times: dict[tuple[str, str], list[float]] = {}
        names = list(FILTERS)
        for pipeline in ("hybrid", "dense"):
            searcher.search(SearchRequest(query=qs[0], k=10, pipeline=pipeline, filter=FILTERS[names[1]]))
            for i, q in enumerate(qs):
                for label in names[i % len(names):] + names[: i % len(names)]:
                    request = SearchRequest(query=q, k=10, pipeline=pipeline, filter=FILTERS[label])
                    t0 = time.perf_counter()
                    response = searcher.search(request)
                    took = (time.perf_counter() - t0) * 1000
                    # the query's encoding costs the same with or without a filter and dominates on a busy CPU:
                    # the table compares the rest (the stage timings of the same search)
                    times.setdefault((pipeline, label), []).append(took - response.timings.get("query_encode", 0))
                    assert len(response.hits) == 10, (label, len(response.hits))
        terms = "yes" if getattr(collection.lexical, "indexes_metadata", False) else "no (a folder made before them)"
        print(f"**{factory}** (encoder {backend_of(collection)}; BM25 metadata terms: {terms}):\n")
        print("| pipeline | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for pipeline in ("hybrid", "dense"):
            base = statistics.median(times[(pipeline, "unfiltered")])
            cells = []
            for label in names:
                med = statistics.median(times[(pipeline, label)])
                cells.append(f"{med:.1f}" + ("" if label == "unfiltered" else f" ({med / base:.2f}x)"))
            print(f"| {pipeline} | " + " | ".join(cells) + " |")
        print()
        engine.close()


# -- micro: the library calls this round changed, each against what it replaced ---------------------------------
_OMP_CHILD = """
import os, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from foveal.engine import Engine
collection = Engine(Path(sys.argv[2])).get("flat")
queries = ["cancer cells immune response", "vitamin D deficiency in older adults", "protein folding disease"]
collection.encoder.encode_queries(queries)
encode, search = [], []
for i in range(40):
    t0 = time.perf_counter()
    vector = collection.encoder.encode_queries([queries[i % 3]]).vectors
    t1 = time.perf_counter()
    collection.vectors.search(vector, 400)
    encode.append(t1 - t0)
    search.append(time.perf_counter() - t1)
print(statistics.median(encode) * 1000, statistics.median(search) * 1000)
"""


def micro(args) -> None:
    import faiss

    engine = Engine(HOME)
    collection = engine.get("flat")
    store = collection.store
    rng = np.random.default_rng(9)

    def p50(call, n: int = 15) -> float:
        call()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    rows = []
    half = {"bucket": {"range": {"lt": 50}}}
    rows.append(("a 50 % metadata filter resolved to doc keys (100k documents)",
                 f"{p50(lambda: store.filter_key_array_sql(None, half, None)):.1f} ms (one SQL statement)",
                 f"{p50(lambda: store.filter_key_array(None, half, None)):.2f} ms (in-memory columns)"))
    inner = faiss.downcast_index(collection.vectors._main.index)
    batch = rng.standard_normal((32, collection.dimension)).astype(np.float32)
    threshold = faiss.cvar.distance_compute_blas_threshold
    try:
        faiss.cvar.distance_compute_blas_threshold = 128_000
        per_query = p50(lambda: inner.search(batch, 400), 5)
        faiss.cvar.distance_compute_blas_threshold = threshold
        blas = p50(lambda: inner.search(batch, 400), 5)
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold
    rows.append(("FAISS Flat search of 32 queries, k=400, 100k vectors",
                 f"{per_query:.0f} ms (this build's threshold 128,000: a scan per query)", f"{blas:.0f} ms (BLAS)"))

    def wall_and_cpu(call, n: int = 15) -> str:
        call()
        walls, cpu0 = [], time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            walls.append((time.perf_counter() - t0) * 1000)
        return f"{statistics.median(walls):.1f} / {1000 * (time.process_time() - cpu0) / n:.1f} ms"

    from foveal.index.packed_scan import PackedScan

    stored = collection.vectors._stored(inner)
    scan = PackedScan.build(0, stored.copy())
    for n in (1, 16):
        rows.append((f"Flat search of {n} quer{'y' if n == 1 else 'ies'}, k=400, 100k vectors: p50 wall / CPU",
                     wall_and_cpu(lambda: inner.search(batch[:n], 400)) + " (FAISS through BLAS)",
                     wall_and_cpu(lambda: scan.search(batch[:n], 400, stored)) + " (the packed scan)"))
    del scan
    path = str(store.path)

    def fetch_rate(shared: bool, threads: int = 32, seconds: float = 3.0) -> float:
        import sqlite3

        done = []
        stop = time.perf_counter() + seconds

        def work(seed: int) -> None:
            pick = random.Random(seed)
            conn = None if shared else sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            count = 0
            while time.perf_counter() < stop:
                keys = [pick.randrange(1, 100_000) for _ in range(10)]
                if shared:
                    store.get_documents(keys)
                else:
                    conn.execute("SELECT doc_key, id, title, text, metadata, timestamp, content_hash, passages, "
                                 f"n_tokens FROM documents WHERE doc_key IN ({','.join('?' * 10)})", keys).fetchall()
                count += 1
            done.append(count)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(done) / seconds

    rows.append(("32 threads fetching 10 documents each", f"{fetch_rate(False):,.0f} fetches/s (a connection "
                 "per thread)", f"{fetch_rate(True):,.0f} fetches/s (the store's shared read connection)"))
    # what a micro-batch's encoder pass costs: most of a search under load (not changed: the default stays torch)
    from foveal.config import IndexConfig
    from foveal.registry import make_encoder

    pick = random.Random(11)
    batches = [[pick.choice(queries()) for _ in range(32)] for _ in range(6)]
    from foveal.encoders import sentence_transformer

    encode = {}
    pass_cost = sentence_transformer.QUERY_PASS_COST
    for label, settings, cost in (("torch, one pass", {"query_backend": "torch"}, 10**9),
                                  ("torch", {"query_backend": "torch"}, pass_cost),
                                  ("onnx fp32", {"query_quantize": "none"}, pass_cost),
                                  ("onnx int8", {"backend": "onnx", "quantize": "int8", "batch_size": 8}, pass_cost)):
        encoder = make_encoder(IndexConfig.parse({"encoder": settings}).encoder)
        sentence_transformer.QUERY_PASS_COST = cost
        try:
            encoder.encode_queries(batches[0])
            times = []
            for _ in range(3):
                for texts in batches:
                    t0 = time.perf_counter()
                    encoder.encode_queries(texts)
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            sentence_transformer.QUERY_PASS_COST = pass_cost
        encode[label] = statistics.median(times)
    rows.append(("32 SciFact queries encoded in one call, p50",
                 f"{encode['torch, one pass']:.0f} ms (torch, one pass padded to the longest query)",
                 f"{encode['onnx fp32']:.0f} ms (fp32 ONNX export, passes cut by length); "
                 f"{encode['torch']:.0f} ms (torch, passes cut by length); "
                 f"{encode['onnx int8']:.0f} ms (ONNX int8, opt-in)"))
    single = {}
    for label, settings in (("torch", {"query_backend": "torch"}), ("onnx fp32", {"query_quantize": "none"}),
                            ("onnx mixed", {})):
        encoder = make_encoder(IndexConfig.parse({"encoder": settings}).encoder)
        singles = [[text] for text in batches[0]]
        single[label] = p50(lambda: [encoder.encode_queries(one) for one in singles], 5) / len(singles)
    rows.append(("one SciFact query encoded, p50", f"{single['torch']:.1f} ms (torch)",
                 f"{single['onnx fp32']:.1f} ms (fp32 ONNX export); "
                 f"{single['onnx mixed']:.1f} ms (mixed int8 ONNX export, the CPU default now)"))
    # the default fusion's Rocchio round: a second FAISS search, or the first round's passages rescored
    searcher = engine.pipeline("flat")
    rows.append(lexical_slack_row(searcher, collection))
    qv = collection.encoder.encode_queries(queries()[:8]).vectors
    moved = qv[::-1].copy()
    firsts = [collection.vectors.search(v[None, :], 400) for v in qv]
    rocchio = collection.config.fusion.rocchio

    def rescore_all():
        return [searcher._rescored(m, None, (400, s[0], i[0]), rocchio, {}) for m, (s, i) in zip(moved, firsts)]

    rows.append(("the Rocchio round of one query (the moved vector's first 400 passages, 100k Flat), p50",
                 f"{p50(lambda: [collection.vectors.search(m[None, :], 400) for m in moved]) / len(moved):.2f} ms "
                 "(a second FAISS search)",
                 f"{p50(rescore_all) / len(moved):.2f} ms (the first round's 400 passages rescored, the default now)"))
    engine.close()
    found = {}
    for label, policy in (("spinning", ""), ("passive", "PASSIVE")):  # "" is no policy: OpenMP's own default
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, "-c", _OMP_CHILD, str(ROOT), str(HOME)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        found[label] = (float(out[0]), float(out[1]))
    rows.append(("one query: encode + FAISS search (100k Flat), p50",
                 "{:.1f} + {:.1f} ms (OpenMP threads spin)".format(*found["spinning"]),
                 "{:.1f} + {:.1f} ms (OMP_WAIT_POLICY=PASSIVE, the default now)".format(*found["passive"])))
    print(f"\nThe library calls this round changed, each against what it replaced, in one run; 100,000 synthetic "
          f"documents; encoder {backend_of(collection)}; {os.cpu_count()} CPUs; bench/perf.py micro at {commit()}\n")
    print("| measured | before | now |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def lexical_slack_row(searcher, collection) -> tuple[str, str, str]:
    """A BM25 list of the fusion window with its ties at the cut settled (``SearchPipeline._lexical``), fetched
    one past the cut first (before) or ``LEXICAL_SLACK`` past it (now): mean ms a query over 300 SciFact queries,
    and how many of them needed a second fetch."""
    from foveal.pipeline import search as search_module

    window = collection.config.fusion.window
    pick = random.Random(3)
    qs = [pick.choice(queries()) for _ in range(300)]
    lexical = collection.lexical
    cells = []
    slack = search_module.LEXICAL_SLACK
    for value in (1, slack):
        calls = []
        original = lexical.search

        def counting(query, limit, **kwargs):
            calls.append(limit)
            return original(query, limit, **kwargs)

        search_module.LEXICAL_SLACK = value
        lexical.search = counting
        try:
            searcher._lexical(qs[0], window, None)
            calls.clear()
            t0 = time.perf_counter()
            for q in qs:
                searcher._lexical(q, window, None)
            ms = (time.perf_counter() - t0) * 1000 / len(qs)
        finally:
            search_module.LEXICAL_SLACK = slack
            del lexical.search
        again = len(calls) - len(qs)
        cells.append(f"{ms:.2f} ms a query; {again} of {len(qs)} queries fetched again (a tie at the cut), "
                     f"fetching {value} past the cut first")
    return (f"BM25 list of {window} with the ties at its cut settled (`SearchPipeline._lexical`), "
            f"mean of 300 SciFact queries", cells[0], cells[1])


# -- search during ingest ----------------------------------------------------------------------------------------
def ingest(args) -> None:
    import tempfile

    corpus = [json.loads(line) for line in open(DATA / "scifact" / "corpus.jsonl", encoding="utf-8")]
    third = args.docs // 3
    home = Path(tempfile.mkdtemp(prefix="perf-ingest-", dir=OUT))
    engine = Engine(home)
    collection = engine.create_index("live")
    searcher = engine.pipeline("live")
    rng = random.Random(7)
    qs = [rng.choice(queries()) for _ in range(args.searches)]

    def feed(docs):
        return ((i + 1, d) for i, d in enumerate(docs))

    ingest_records(collection, feed(corpus[:third]), batch_size=args.batch)  # something to search
    searcher.search(SearchRequest(query=qs[0], k=10))

    def run_searches(stop=None) -> list[float]:
        out = []
        for q in qs:
            if stop is not None and stop.is_set() and len(out) >= 20:
                break
            t0 = time.perf_counter()
            searcher.search(SearchRequest(query=q, k=10))
            out.append((time.perf_counter() - t0) * 1000)
        return out

    idle = run_searches()
    t0 = time.perf_counter()
    ingest_records(collection, feed(corpus[third: 2 * third]), batch_size=args.batch)
    solo_rate = third / (time.perf_counter() - t0)
    done = threading.Event()
    rate: list[float] = []

    def background():
        t = time.perf_counter()
        ingest_records(collection, feed(corpus[2 * third: 3 * third]), batch_size=args.batch)
        rate.append(third / (time.perf_counter() - t))
        done.set()

    worker = threading.Thread(target=background)
    worker.start()
    busy = run_searches(done)
    busy_while_ingesting = len(busy)
    worker.join()
    print(f"\nSciFact documents ingested in-process ({third} per phase, batches of {args.batch}; encoder "
          f"{backend_of(collection)}), one client searching the same index (hybrid, k=10); {os.cpu_count()} CPUs; "
          f"bench/perf.py ingest at {commit()}\n")
    print("| measured | searches | p50 ms | p99 ms | ingest docs/s |")
    print("|---|---|---|---|---|")
    print(f"| idle search | {len(idle)} | {statistics.median(idle):.1f} | {pct(idle, 0.99):.1f} | |")
    print(f"| ingest alone | | | | {solo_rate:.2f} |")
    print(f"| search during ingest | {busy_while_ingesting} | {statistics.median(busy):.1f} | {pct(busy, 0.99):.1f} | "
          f"{rate[0]:.2f} |")
    print(f"\np99 during / idle: {pct(busy, 0.99) / pct(idle, 0.99):.2f}x; ingest during / alone: "
          f"{rate[0] / solo_rate:.2f}")
    engine.close()
    shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "load-ab", "load-quantize", "breakdown", "filters", "ingest", "micro", "cpu", "stub-serve",
                 "all"):
        p = sub.add_parser(name)
        p.add_argument("--docs", type=int, default=100_000 if name != "ingest" else 600)
        p.add_argument("--base", default="3507883")
        p.add_argument("--clients", type=int, default=32)
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--rounds", type=int, default=2)
        p.add_argument("--pipeline", default="hybrid")
        p.add_argument("--queries", type=int, default=200 if name == "breakdown" else 60)
        p.add_argument("--searches", type=int, default=200)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--flat-only", action="store_true", help="build: no HNSW32 copy")
        p.add_argument("--port", type=int, default=0, help="stub-serve: the port (cpu starts it)")
        p.add_argument("--client", choices=load.CLIENTS, default="raw",
                       help="the load script: raw (asyncio streams, the default) or httpx (every table before it)")
        p.add_argument("--precisions", default="none,mixed,int8",
                       help="load-quantize: the encoder.query_quantize values to alternate")
    args = parser.parse_args()
    steps = {"build": build, "load-ab": load_ab, "load-quantize": load_quantize, "breakdown": breakdown,
             "filters": filters, "ingest": ingest, "micro": micro, "cpu": cpu_split, "stub-serve": stub_serve}
    if args.command == "all":
        build(args)
        for name in ("breakdown", "filters", "load-ab"):
            steps[name](args)
            sys.stdout.flush()
        args.docs = 600
        ingest(args)
    else:
        steps[args.command](args)


if __name__ == "__main__":
    main()
