"""Encoding throughput and quality of foveal's encoder backends against plain sentence-transformers, in one run.

    .venv/bin/python bench/encoders.py                 # SciFact subset: judged documents + distractors, 1,200 docs
    .venv/bin/python bench/encoders.py --docs 0        # the full SciFact corpus (5,183 docs; long on 2 CPUs)

Variants, all on the same all-MiniLM-L6-v2 weights and the same documents (``title text``):

* ``plain``: ``SentenceTransformer.encode`` of the full texts, max_seq_length 512, batch 32 (it sorts by length);
  one vector per document;
* ``foveal torch``: :class:`~foveal.encoders.sentence_transformer.SentenceTransformerEncoder` with the default
  config: sentence-aware 256-token passages, the passages of a chunk sorted by length in batches of 32, SDPA;
* ``foveal onnx``: the same with ``encoder.backend: onnx`` (fp32, onnxruntime's fused transformer graph);
* ``foveal onnx int8``: ``backend: onnx, quantize: int8`` (dynamic int8, per-channel weights);
* ``int8q``: the ``foveal torch`` document vectors (not encoded again, so no timing) searched with query vectors
  from the int8 export (``query_quantize: int8``, opt-in); ``foveal torch`` runs its queries in fp32
  (``query_quantize: none``, the default), so the two rows differ only in the query vectors;
* ``mixedq``: the same with ``query_quantize: mixed`` (int8, but the first two-thirds of the layers' feed-forward
  output projections in fp32).

Timing: the documents are cut into chunks (``--chunk`` docs); each round encodes one chunk with every variant, the
order of the variants rotating from round to round, so that load from other processes on a shared machine hits
them alike. Each variant's time is the sum over rounds; docs/s and the ratio to plain follow. One-off costs (model
load, ONNX export, warm-up) are outside the timings.

Quality: dense-only nDCG@10 on SciFact's test queries (and train, for reference) with the vectors just timed;
foveal variants score a document by its best passage (MaxP), plain by its single vector. With the default
``--docs 1200`` the corpus is the same subset protocol as bench/tempscale.py (every document judged in train or test
plus seeded random distractors), so absolute nDCG is higher than on the full corpus; the comparison between
variants is what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from foveal.config import EncoderConfig  # noqa: E402
from foveal.encoders.sentence_transformer import SentenceTransformerEncoder, resolve_model_path  # noqa: E402
from foveal.evaluation import evaluate, read_qrels, read_queries  # noqa: E402

OUT = ROOT / "bench" / "out"


def load_subset(data: Path, docs: int) -> tuple[list[str], list[str], dict, dict]:
    corpus = [json.loads(line) for line in open(data / "corpus.jsonl", encoding="utf-8")]
    by_id = {d["_id"]: d for d in corpus}
    # Cranfield and other test-only collections have no train split
    qrels = {split: read_qrels(data / "qrels" / f"{split}.tsv") for split in ("train", "test")
             if (data / "qrels" / f"{split}.tsv").exists()}
    queries = read_queries(data / "queries.jsonl")
    if docs:
        judged = sorted({d for split in qrels.values() for per in split.values() for d in per if d in by_id})
        rng = random.Random(0)
        others = [d for d in by_id if d not in set(judged)]
        rng.shuffle(others)
        ids = judged + others[: max(0, docs - len(judged))]
        random.Random(1).shuffle(ids)  # chunks mix judged documents and distractors
        ids = ids[:docs]  # below the number of judged documents: a smoke-test sample
    else:
        ids = [d["_id"] for d in corpus]
    texts = [f"{by_id[i].get('title', '')} {by_id[i].get('text', '')}".strip() for i in ids]
    return ids, texts, qrels, queries


class Plain:
    name = "plain `SentenceTransformer.encode` (512 tokens)"

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
        self.model.max_seq_length = 512

    def documents(self, texts):
        vectors = self.model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        return [np.asarray(v, dtype=np.float32)[None, :] for v in vectors]

    def queries(self, texts):
        return np.asarray(self.model.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float32)


class QueriesOnly:
    """Another variant's document vectors, searched with this encoder's query vectors (nothing to time)."""

    def __init__(self, name: str, config: EncoderConfig, documents_of: str) -> None:
        self.name = name
        self.documents_of = documents_of
        self.encoder = SentenceTransformerEncoder(config)

    def queries(self, texts):
        return self.encoder.encode_queries(texts).vectors


class Foveal:
    def __init__(self, name: str, config: EncoderConfig) -> None:
        self.name = name
        self.encoder = SentenceTransformerEncoder(config)

    def documents(self, texts):
        return [d.vectors for d in self.encoder.encode_documents(texts)]

    def queries(self, texts):
        return self.encoder.encode_queries(texts).vectors


def ndcg(ids, per_doc, query_vectors, qids, judgments) -> float:
    matrix = np.concatenate(per_doc)
    owner = np.concatenate([np.full(len(v), i) for i, v in enumerate(per_doc)])
    scores = query_vectors @ matrix.T
    run = {}
    for qid, row in zip(qids, scores):
        best = np.full(len(ids), -np.inf)
        np.maximum.at(best, owner, row)  # MaxP (one row per document for plain)
        top = np.argsort(-best)[:100]
        run[qid] = {ids[j]: float(best[j]) for j in top}
    return evaluate(judgments, run)["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=1200, help="subset size (judged + distractors); 0 = full corpus")
    parser.add_argument("--chunk", type=int, default=100, help="documents per round")
    parser.add_argument("--variants", default="plain,torch,onnx,int8")
    args = parser.parse_args()

    ids, texts, qrels, queries = load_subset(args.data, args.docs)
    threads = torch.get_num_threads()
    cache = Path(tempfile.mkdtemp(prefix="foveal-onnx-bench-"))  # a fresh export, outside the timings

    def queries_only(precision: str) -> QueriesOnly:
        """The torch variant's document vectors, searched with ``query_quantize: precision`` query vectors."""
        label = "int8" if precision == "int8" else f"{precision} int8"
        return QueriesOnly(f"foveal torch documents, {label} queries", EncoderConfig(
            query_quantize=precision, onnx_threads=threads, onnx_cache=str(cache)), documents_of="torch")

    makers = {
        "plain": Plain,
        "torch": lambda: Foveal("foveal torch (bucketed passages, SDPA)", EncoderConfig(query_quantize="none")),
        "onnx": lambda: Foveal("foveal onnx fp32", EncoderConfig(backend="onnx", onnx_threads=threads,
                                                                 onnx_cache=str(cache))),
        "int8": lambda: Foveal("foveal onnx int8", EncoderConfig(backend="onnx", quantize="int8",
                                                                 onnx_threads=threads, onnx_cache=str(cache))),
        "int8q": lambda: queries_only("int8"),
        "mixedq": lambda: queries_only("mixed"),
    }
    keys = [k.strip() for k in args.variants.split(",")]
    if {"int8q", "mixedq"} & set(keys) and "torch" not in keys:
        raise SystemExit("--variants: int8q and mixedq search the torch variant's document vectors; list torch too")
    variants = {k: makers[k]() for k in keys}
    for variant in variants.values():
        if not isinstance(variant, QueriesOnly):
            variant.documents(texts[:16])  # warm-up
    timed = [k for k in keys if not isinstance(variants[k], QueriesOnly)]

    seconds = dict.fromkeys(timed, 0.0)
    vectors: dict[str, list[np.ndarray]] = {k: [] for k in timed}
    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]
    for round_index, chunk in enumerate(chunks):
        order = timed[round_index % len(timed) :] + timed[: round_index % len(timed)]
        for key in order:
            t0 = time.perf_counter()
            out = variants[key].documents(chunk)
            seconds[key] += time.perf_counter() - t0
            vectors[key].extend(out)
        print(f"round {round_index + 1}/{len(chunks)}: " + ", ".join(f"{k} {seconds[k]:.1f}s" for k in timed),
              file=sys.stderr, flush=True)
    for key in keys:
        if isinstance(variants[key], QueriesOnly):
            vectors[key] = vectors[variants[key].documents_of]
            seconds[key] = float("nan")

    rows = []
    for key in keys:
        row = {"variant": key, "name": variants[key].name, "seconds": seconds[key],
               "passages": sum(len(v) for v in vectors[key])}
        for split, judgments in qrels.items():
            qids = [q for q in judgments if q in queries]
            row[split] = ndcg(ids, vectors[key], variants[key].queries([queries[q] for q in qids]), qids, judgments)
        rows.append(row)
    n = len(ids)
    base = next((r for r in rows if r["variant"] == "plain"), rows[0])
    fp32 = next((r for r in rows if r["variant"] == "torch"), base)
    what = f"subset of {n} documents (all judged + distractors)" if args.docs else f"full corpus, {n} documents"
    print(f"\n{args.data.name} {what}; commit {commit()}; {os.cpu_count()} CPUs, torch and onnxruntime with {threads} threads; "
          f"{len(chunks)} interleaved rounds of {args.chunk} documents\n")
    print("| variant | passages | seconds | docs/s | ratio to plain | dense nDCG@10 test | Δ vs foveal torch | train |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        timing = (f"{r['seconds']:.1f} | {n / r['seconds']:.2f} | {base['seconds'] / r['seconds']:.2f}"
                  if r["seconds"] == r["seconds"] else "– | – | –")  # NaN: queries only, nothing timed
        print(f"| {r['name']} | {r['passages']} | {timing} | {r['test']:.4f} | {r['test'] - fp32['test']:+.4f} | "
              f"{r.get('train', float('nan')):.4f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"encoders-{args.data.name}-{args.docs or 'full'}.json"
    (OUT / name).write_text(json.dumps({"docs": n, "threads": threads, "chunk": args.chunk, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
