"""X-Pool over sets of vectors, measured on SciFact: each document is the set of its sentence vectors.

    # once (about 10 minutes of CPU; cached in bench/out/xpool/):
    .venv/bin/python bench/xpool.py encode
    # train on train queries, report on test:
    .venv/bin/python bench/xpool.py run [--epochs 10] [--lr 1e-4]

``encode``: every document's title + text is split into sentences (:func:`foveal.rerank.paraformer.split_sentences`,
at most 64) and each sentence is encoded on its own with all-MiniLM-L6-v2 (torch backend, unit vectors), as are
all queries; the result is cached as ``bench/out/xpool/scifact-minilm.npz`` (float16 sentence vectors, offsets,
float32 query vectors).

``run``: the same vectors ranked three ways over the whole corpus, plus X-Pool as a reranker:

* ``mean``: each document's mean sentence vector, normalised (what a vector-item index stores for its first stage);
* ``max-sim``: a document scores its best sentence's cosine with the query;
* ``xpool``: :class:`foveal.rerank.xpool.XPool` trained on the train queries (one positive per pair, in-batch
  negatives, symmetric InfoNCE; a seeded 15% of the train queries is held out to pick the epoch) reranks the
  ``mean`` top ``--window`` (default 100). Recall@100 of a top-100 rerank is the first stage's by construction.

Reported on the test queries: nDCG@10, Recall@100, training seconds, and the p50 latency each method adds per query
(X-Pool: scoring the window, one query at a time, ``--threads`` torch threads). Prints a Markdown table and writes
``bench/out/xpool/result.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT, commit  # noqa: E402

import numpy as np  # noqa: E402

#: ``../shared`` beside the checkout (as the other benches), or two levels up from a worktree under ``/work/wt``.
DATA = DATA_ROOT / "scifact"
OUT = ROOT / "bench" / "out" / "xpool"
CACHE = OUT / "scifact-minilm.npz"


def read_corpus(data: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                title, text = record.get("title") or "", record.get("text") or ""
                ids.append(str(record["_id"]))
                texts.append(f"{title}\n{text}" if title else text)
    return ids, texts


def encode(args) -> None:
    import torch

    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder
    from foveal.evaluation import read_queries
    from foveal.rerank.paraformer import split_sentences

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    ids, texts = read_corpus(args.data)
    queries = read_queries(args.data / "queries.jsonl")
    encoder = get_encoder(EncoderConfig())
    started = time.perf_counter()
    groups = [split_sentences(t, args.max_sentences) or [t[:1000]] for t in texts]
    flat = [s for g in groups for s in g]
    print(f"{len(ids)} documents, {len(flat)} sentences", flush=True)
    chunks = []
    step = 4096
    for begin in range(0, len(flat), step):  # each chunk saved as it is done: a killed run resumes
        part = OUT / f"part-{args.max_sentences}-{begin}.npy"
        if part.exists():
            chunks.append(np.load(part))
            continue
        chunks.append(encoder.encode_queries(flat[begin:begin + step]).vectors.astype(np.float16))
        np.save(part, chunks[-1])
        print(f"{begin + step} / {len(flat)} sentences, {time.perf_counter() - started:.0f} s", flush=True)
    offsets = np.cumsum([0] + [len(g) for g in groups]).astype(np.int64)
    qids = sorted(queries)
    qvec = encoder.encode_queries([queries[q] for q in qids]).vectors.astype(np.float32)
    seconds = time.perf_counter() - started
    np.savez(CACHE, doc_ids=np.asarray(ids), offsets=offsets, sentences=np.concatenate(chunks),
             query_ids=np.asarray(qids), queries=qvec,
             meta=json.dumps({"encoder": encoder.name, "backend": encoder.config.backend, "seconds": seconds,
                              "max_sentences": args.max_sentences, "commit": commit()}))
    print(f"encoded in {seconds:.0f} s -> {CACHE}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["encode", "run"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-sentences", type=int, default=64)
    args, rest = parser.parse_known_args()
    if args.command == "encode":
        encode(args)
    else:
        run(args, rest)


def load_cache():
    if not CACHE.exists():
        raise SystemExit(f"no {CACHE}: run 'bench/xpool.py encode' first")
    data = np.load(CACHE)
    meta = json.loads(str(data["meta"]))
    sentences = data["sentences"].astype(np.float32)
    offsets = data["offsets"]
    frames = [sentences[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    queries = dict(zip(data["query_ids"].tolist(), data["queries"]))
    return list(data["doc_ids"].tolist()), frames, sentences, offsets, queries, meta


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def p50_ms(samples: list[float]) -> float:
    return round(float(np.median(samples)) * 1000, 3)


def run(args, rest) -> None:
    import torch

    from foveal.evaluation import evaluate, read_qrels
    from foveal.rerank.xpool import XPoolReranker, XPoolTrainOptions, train_xpool

    extra = argparse.ArgumentParser()
    extra.add_argument("--window", type=int, default=100)
    extra.add_argument("--epochs", type=int, default=10)
    extra.add_argument("--lrs", default="3e-5,1e-4,3e-4", help="learning rates tried; the held-out train queries pick")
    extra.add_argument("--batch-size", type=int, default=32)
    extra.add_argument("--dev-fraction", type=float, default=0.15)
    extra.add_argument("--seed", type=int, default=24)
    opts = extra.parse_args(rest)
    torch.set_num_threads(args.threads)
    doc_ids, frames, sentences, offsets, queries, meta = load_cache()
    row_of = {d: i for i, d in enumerate(doc_ids)}
    means = np.stack([f.mean(axis=0) for f in frames])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    train_qrels = read_qrels(args.data / "qrels" / "train.tsv")
    test_qrels = read_qrels(args.data / "qrels" / "test.tsv")
    train_ids = sorted(q for q in train_qrels if q in queries and any(d in row_of for d in train_qrels[q]))
    rng = np.random.default_rng(opts.seed)
    rng.shuffle(train_ids)
    n_dev = int(round(len(train_ids) * opts.dev_fraction))
    dev_ids, fit_ids = train_ids[:n_dev], train_ids[n_dev:]
    test_ids = sorted(q for q in test_qrels if q in queries)

    def first_stage(qids):
        """mean pooling over the whole corpus: the top ``window`` rows per query, with scores."""
        out = {}
        for q in qids:
            scores = means @ queries[q]
            rows = top_k(scores, opts.window)
            out[q] = (rows, scores[rows])
        return out

    def rerank_run(model, candidates):
        stage = XPoolReranker(model, window=opts.window)
        run, times = {}, []
        for q, (rows, _) in candidates.items():
            started = time.perf_counter()
            sims, _ = stage.score(queries[q], [frames[r] for r in rows])
            times.append(time.perf_counter() - started)
            run[q] = {doc_ids[r]: float(s) for r, s in zip(rows, sims)}
        return run, times

    # -- the training-free baselines on test ------------------------------------------------------------------
    results, latency = {}, {}
    mean_run, times = {}, []
    for q in test_ids:
        started = time.perf_counter()
        scores = means @ queries[q]
        rows = top_k(scores, 100)
        times.append(time.perf_counter() - started)
        mean_run[q] = {doc_ids[r]: float(scores[r]) for r in rows}
    results["mean pooling"], latency["mean pooling"] = evaluate(test_qrels, mean_run, test_ids), p50_ms(times)
    max_run, times = {}, []
    for q in test_ids:
        started = time.perf_counter()
        scores = np.maximum.reduceat(sentences @ queries[q], offsets[:-1])
        rows = top_k(scores, 100)
        times.append(time.perf_counter() - started)
        max_run[q] = {doc_ids[r]: float(scores[r]) for r in rows}
    results["max-sim"], latency["max-sim"] = evaluate(test_qrels, max_run, test_ids), p50_ms(times)

    # -- X-Pool: train on the fit part of train, pick lr/epoch on the held-out part ----------------------------
    pairs = [(q, row_of[d]) for q in fit_ids for d in sorted(train_qrels[q]) if train_qrels[q][d] > 0 and d in row_of]
    texts = np.stack([queries[q] for q, _ in pairs])
    items = [frames[r] for _, r in pairs]
    dev_candidates = first_stage(dev_ids)
    untrained = None
    trials = []
    best = None
    for lr in [float(x) for x in opts.lrs.split(",")]:
        options = XPoolTrainOptions(epochs=opts.epochs, batch_size=opts.batch_size, learning_rate=lr,
                                    threads=args.threads, window=opts.window, seed=opts.seed)
        evaluate_dev = lambda m: evaluate(train_qrels, rerank_run(m, dev_candidates)[0], dev_ids)["ndcg@10"]  # noqa
        if untrained is None:
            from foveal.rerank.xpool import XPool, XPoolSettings

            torch.manual_seed(opts.seed)
            untrained = XPool(XPoolSettings(dim=texts.shape[1])).eval()
            trials.append({"lr": 0.0, "epoch": 0, "dev_ndcg@10": round(evaluate_dev(untrained), 4)})
        model, record = train_xpool(texts, items, options, encoder=meta["encoder"], evaluate=evaluate_dev,
                                    log=lambda m: print(m, flush=True))
        dev = max(e["held_out"] for e in record["epochs"])
        trials.append({"lr": lr, "epoch": record.get("best_epoch"), "dev_ndcg@10": round(dev, 4),
                       "train_seconds": record["train_seconds"], "curve": [e["held_out"] for e in record["epochs"]]})
        print(json.dumps(trials[-1]), flush=True)
        if best is None or dev > best[0]:
            best = (dev, lr, model, record)
    _, lr, model, record = best
    # the combination with the first stage: X-Pool's weight fitted on the held-out train queries
    from foveal.rerank.combine import fit_two_weights
    from foveal.rerank.xpool import combined_scores

    def features_of(run, candidates):
        out = {}
        for q, (rows, first) in candidates.items():
            ids = [doc_ids[r] for r in rows]
            z_first = combined_scores(first, [run[q][d] for d in ids], 0.0)
            z_deep = combined_scores(first, [run[q][d] for d in ids], 1.0)
            out[q] = {d: {"first_stage": f, "xpool": x} for d, f, x in zip(ids, z_first, z_deep)}
        return out

    dev_run, _ = rerank_run(model, dev_candidates)
    weights, curve = fit_two_weights(features_of(dev_run, dev_candidates), {q: train_qrels[q] for q in dev_ids},
                                     names=("first_stage", "xpool"))
    model.settings.weight = weights["xpool"]
    model.save(OUT / "model")
    test_candidates = first_stage(test_ids)
    untrained_run, _ = rerank_run(untrained, test_candidates)
    results["X-Pool, identity init (untrained), rerank mean top-100"] = evaluate(test_qrels, untrained_run, test_ids)
    xpool_run, times = rerank_run(model, test_candidates)
    name = f"X-Pool (lr {lr:g}, epoch {record.get('best_epoch')}), rerank mean top-100"
    results[name] = evaluate(test_qrels, xpool_run, test_ids)
    latency[name] = p50_ms(times)
    combo = f"X-Pool + mean, weight {weights['xpool']:g} fitted on held-out train, rerank mean top-100"
    test_features = features_of(xpool_run, test_candidates)
    results[combo] = evaluate(test_qrels, {q: {d: (1 - weights["xpool"]) * f["first_stage"] + weights["xpool"] * f["xpool"]
                                               for d, f in docs.items()} for q, docs in test_features.items()}, test_ids)
    latency[combo] = latency[name]

    head = commit()
    lines = [f"SciFact test ({len(test_ids)} queries), documents as sets of sentence vectors "
             f"({len(sentences)} sentences, {len(sentences) / len(frames):.1f} per document), encoder "
             f"{meta['encoder']} ({meta['backend']} backend), commit {head}, {args.threads} torch threads.",
             "", "| method | nDCG@10 | Recall@100 | train s | p50 ms added per query |", "|---|---|---|---|---|"]
    for method, r in results.items():
        train_s = record["train_seconds"] if method in (name, combo) else ""
        lines.append(f"| {method} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {train_s} | "
                     f"{latency.get(method, '')} |")
    table = "\n".join(lines)
    print(table)
    (OUT / "result.json").write_text(json.dumps({
        "commit": head, "encoder": meta["encoder"], "backend": meta["backend"], "results": results,
        "latency_p50_ms": latency, "trials": trials, "chosen": {"lr": lr, "epoch": record.get("best_epoch"), "weight": weights["xpool"]},
        "dev_weight_curve": curve,
        "train_pairs": len(pairs), "dev_queries": len(dev_ids), "test_queries": len(test_ids),
        "encode_seconds": meta["seconds"], "table": table}, indent=2))


if __name__ == "__main__":
    main()
