"""Dump, once per collection, every query's candidate lists for bench/robust.py (which then fuses the cached lists).

    .venv/bin/python bench/robust_dump.py --home bench/out/home \
        --collections adi,time,cranfield,cacm,lisa,scifact,cranfield-weak

Reads the base indexes (default config) read-only. Per judged query it stores the top 100 of: bm25, dense (MaxP),
bm25 after RM3 (fb_docs 10, fb_terms 10, original weight 0.5 and 0.7), dense after Rocchio (beta 0.5 and 0.25 over the
best passages of the first 5 dense documents; as the pipeline runs it by default, the moved vector rescoring the first
dense round's 400 passages, and as ``rocchio*_search``, a second search over the whole index); each as
[[doc_id, score], ...], plus the encoder backend; for the default's pair (bm25, rocchio_025) also the score completion
(``complete``: BM25 of the documents only the dense list holds, the moved vector's best-passage cosine of those only
BM25 holds) and every candidate's best passage (``best``), whose vectors go to <collection>-passages.npz (score
regularization). SciFact also
gets a ``rerank-dev`` split: the train queries `foveal train rerank` holds out (for bench/robust_rerank.py). Output:
bench/out/robust/<collection>.json (git-ignored).

``cranfield-weak``: the documented weakened-BM25 collection. Rule: BM25 indexes every Cranfield document with its
title and its first sentence removed (the text up to and including the first ". "); the dense side and the judgments
are Cranfield's own. It makes BM25 much weaker than dense, which is what the robustness check needs.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT  # noqa: E402

from foveal.engine import Engine  # noqa: E402
from foveal.evaluation import read_qrels, read_queries  # noqa: E402
from foveal.index.base import LexicalDocument, doc_key_of, passage_id, passage_ordinal  # noqa: E402
from foveal.index.tantivy_index import TantivyLexicalIndex  # noqa: E402
from foveal.pipeline.feedback import rm3, rocchio  # noqa: E402
from foveal.pipeline.fusion import completion_keys  # noqa: E402
from foveal.pipeline.search import PASSAGES_PER_DOCUMENT  # noqa: E402
from foveal.rerank.train import held_out_split  # noqa: E402

DATA = DATA_ROOT
DEPTH = 100
#: SciFact train queries dumped (first N in file order; CPU on a shared machine); the test split is dumped whole.
TRAIN_LIMIT = 300
RM3_SETTINGS = {"rm3": (10, 10, 0.5), "rm3_07": (10, 10, 0.7)}  # fb_docs, fb_terms, original weight
ROCCHIO_SETTINGS = {"rocchio": (5, 0.5), "rocchio_025": (5, 0.25)}  # fb_docs, beta
#: The lists the default fuses (BM25, dense after Rocchio): the pair completed, and whose best passages are kept.
COMPLETED = ("bm25", "rocchio_025")


def first_sentence_removed(text: str) -> str:
    match = re.search(r"[.!?]\s", text)
    return text[match.end():] if match else ""


SPLITS: list[str] | None = None  # --splits


def splits_of(name: str) -> list[str]:
    wanted = ["train", "test", "rerank-dev"] if name == "scifact" else ["test"]
    return [s for s in wanted if SPLITS is None or s in SPLITS]


def dump(engine: Engine, name: str, out: Path) -> None:
    base = name.removesuffix("-weak")
    folder = DATA / base
    collection = engine.get(base)
    searcher = engine.pipeline(base)
    store = collection.store
    conn = store._connect()
    id_of = dict(conn.execute("SELECT doc_key, id FROM documents"))
    lexical = collection.lexical
    doc_text = {}  # doc_key -> analysed terms (what RM3 reads), filled lazily
    if name.endswith("-weak"):
        lexical = TantivyLexicalIndex(None, collection.config.lexical)
        docs = []
        for batch in store.iter_documents():
            for d in batch:
                docs.append(LexicalDocument(d.doc_key, d.id, "", first_sentence_removed(d.text)))
        lexical.upsert(docs)
        lexical.commit()
        weak_text = {d.doc_key: d.text for d in docs}
    queries = read_queries(folder / "queries.jsonl")
    passages: set[int] = set()
    result = {"collection": name, "encoder": collection.config.encoder.model_dump(mode="json"), "splits": {}}
    for split in splits_of(name):
        qrels = read_qrels(folder / "qrels" / f"{'train' if split == 'rerank-dev' else split}.tsv")
        ids = [q for q in queries if q in qrels]
        if split == "rerank-dev":  # the train queries `foveal train rerank` holds out (never trained on)
            ids = sorted(held_out_split(ids)[0])
        if split == "train" and TRAIN_LIMIT:
            ids = ids[:TRAIN_LIMIT]  # CPU: the first TRAIN_LIMIT train queries in file order
        t0 = time.perf_counter()
        vectors = collection.encoder.encode_queries([queries[q] for q in ids]).vectors
        per_query = {}
        for qid, vector in zip(ids, vectors):
            lists = {}
            bm25 = lexical.search(queries[qid], DEPTH)
            bm25.sort(key=lambda kv: (-kv[1], kv[0]))
            lists["bm25"] = bm25
            # the first dense round as the pipeline runs it (depth x 4 passages), kept for the Rocchio pass
            limit = min(DEPTH * PASSAGES_PER_DOCUMENT, len(collection.vectors))
            scores, found_ids = collection.vectors.search(vector[None, :], limit)
            first = (limit, scores[0], found_ids[0])
            dense, best = searcher._dense(vector, DEPTH, first=first)
            lists["dense"] = dense
            terms = lexical.analyze(queries[qid])
            for label, (fb_docs, fb_terms, weight) in RM3_SETTINGS.items():
                feedback = []
                for key, score in bm25[:fb_docs]:
                    if key not in doc_text:
                        if name.endswith("-weak"):
                            doc_text[key] = lexical.analyze(weak_text[key])
                        else:
                            doc = store.get_documents([key])[key]
                            doc_text[key] = lexical.analyze(doc.full_text)
                    feedback.append((doc_text[key], score))
                weights = rm3(terms, feedback, fb_terms, weight)
                found = lexical.search("", DEPTH, term_weights=weights) if weights else []
                found.sort(key=lambda kv: (-kv[1], kv[0]))
                lists[label] = found
            for label, (fb_docs, beta) in ROCCHIO_SETTINGS.items():
                keys = [k for k, _ in dense[:fb_docs]]
                pids, vecs = store.vectors_of(keys)
                wanted = {passage_id(k, best[k]) for k in keys if k in best}
                rows = [i for i, p in enumerate(pids.tolist()) if p in wanted]
                moved = rocchio(vector, vecs[rows] if rows else None, beta)
                # as the pipeline does by default (rocchio.rescore): the first round's passages scored by the
                # moved vector; and, under ``<label>_search``, the second search over the whole index it replaced
                rescored = searcher._rescored(moved, vector, first, collection.config.fusion.rocchio, {})
                lists[label], best_of = searcher._dense(moved, DEPTH, first=rescored)
                lists[f"{label}_search"], _ = searcher._dense(moved, DEPTH)
                if label == COMPLETED[1]:
                    moved_default, best_default = moved, dict(best_of)
            per_query[qid] = {label: [[id_of[k], round(float(s), 6)] for k, s in ranked] for label, ranked in lists.items()}
            # score completion of the default's pair as the pipeline does it (SearchPipeline._complete, with this
            # unit's BM25), and each candidate's best passage, for score regularization
            pair = {"bm25": lists[COMPLETED[0]], "dense": lists[COMPLETED[1]]}
            lacking = completion_keys(pair, DEPTH)
            found = dict(lexical.search(queries[qid], len(lacking["bm25"]), allowed=lacking["bm25"])) if lacking["bm25"] else {}
            dense_scores, dense_best = searcher._best_passages(lacking["dense"], moved_default) if lacking["dense"] else ({}, {})
            best_default.update(dense_best)
            per_query[qid]["complete"] = {
                "bm25": [[id_of[k], round(float(found.get(k, 0.0)), 6)] for k in lacking["bm25"]],
                "dense": [[id_of[k], round(float(s), 6)] for k, s in dense_scores.items()]}
            per_query[qid]["best"] = [[id_of[k], int(o)] for k, o in best_default.items()]
            passages.update(passage_id(k, o) for k, o in best_default.items())
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(ids))
        result["splits"][split] = {"queries": per_query, "ms_per_query": ms}
        print(f"{name} {split}: {len(ids)} queries, {ms:.1f} ms/query", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    # the best passages' vectors (as the index holds them), for score regularization in bench/robust.py
    pids = np.array(sorted(passages), dtype=np.int64)
    vectors, held = collection.vectors.vectors(pids)
    keys = [f"{id_of[doc_key_of(p)]}\t{passage_ordinal(p)}" for p in pids[held].tolist()]
    np.savez(out / f"{name}-passages.npz", ids=np.array(keys), vectors=vectors[held])
    (out / f"{name}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--collections", default="adi,time,cranfield,cacm,lisa,scifact,cranfield-weak")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "robust"))
    parser.add_argument("--splits", default=None, help="only these splits, e.g. 'test' (SciFact: CPU)")
    args = parser.parse_args()
    global SPLITS
    SPLITS = args.splits.split(",") if args.splits else None
    engine = Engine(Path(args.home))
    for name in args.collections.split(","):
        if (Path(args.out) / f"{name}.json").exists():
            print(f"{name}: cached", file=sys.stderr)
            continue
        dump(engine, name, Path(args.out))
    engine.close()


if __name__ == "__main__":
    main()
