"""Robust fusion on collections nobody tuned on: leave-one-collection-out, one table.

    PYTHONPATH=. .venv/bin/python bench/robust_dump.py                 # once: cache the candidate lists
    PYTHONPATH=. .venv/bin/python bench/robust.py                      # the table (docs/robust.md)
    PYTHONPATH=. .venv/bin/python bench/robust.py --fit                # coefficients fitted on every dev collection

Protocol (issue 15): development collections are adi, time, cranfield, cacm, lisa, SciFact *train* and
cranfield-weak (Cranfield with BM25 weakened by rule, see bench/robust_dump.py). Any choice (the adaptive fusion's
coefficients, which candidate method wins) is made without the collection it is reported on: each collection's row
comes from a fit on the others (cranfield and cranfield-weak leave each other out too, being the same queries;
SciFact test is reported from a fit that saw neither SciFact split). The candidate lists are the ones the pipeline
fuses (bm25 and dense, top 100 each); every method below is applied to the same cached lists with
foveal.pipeline.fusion, so what the table measures is what ships. nDCG@10 with linear gains (as trec_eval), Recall@100.
Intervals: paired bootstrap over queries (2,000 resamples), 95%.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT, commit  # noqa: E402

from foveal.config import ADAPTIVE_SIGNALS, FusionConfig  # noqa: E402
from foveal.evaluation import read_qrels  # noqa: E402
from foveal.pipeline.fusion import adaptive_signals, fuse, regularize  # noqa: E402

DATA = DATA_ROOT
CACHE = ROOT / "bench" / "out" / "robust"
DEV = ["adi", "time", "cranfield", "cacm", "lisa", "scifact-train", "cranfield-weak"]
REPORT = ["adi", "time", "cranfield", "cacm", "lisa", "cranfield-weak", "scifact-test"]
#: The five classic collections whose mean margin issue 15 states (+0.050 then, +0.07 asked).
CLASSIC = ["adi", "time", "cranfield", "cacm", "lisa"]
#: Collections that share queries and judgments: leaving one out leaves the other out too.
SIBLINGS = {"cranfield": {"cranfield-weak"}, "cranfield-weak": {"cranfield"},
            "scifact-test": {"scifact-train"}, "scifact-train": {"scifact-test"}}
GRID = [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]


# -- data ------------------------------------------------------------------------------------------------------
def load(name: str):
    """(queries {qid: {list: [[doc_id, score], ...]}}, qrels, encoder info) of one reported unit."""
    base, _, split = name.partition("-")
    if name == "cranfield-weak":
        base, split = "cranfield-weak", "test"
    split = split or "test"
    path = CACHE / f"{base}.json"
    if not path.exists():
        return None
    cached = json.loads(path.read_text())
    if split not in cached["splits"]:
        return None
    qrels = read_qrels(DATA / base.removesuffix("-weak") / "qrels" / f"{split}.tsv")
    queries = cached["splits"][split]["queries"]
    attach_vectors(queries, base)
    return queries, qrels, cached["encoder"]


def attach_vectors(queries: dict, stem: str) -> None:
    """Each query's candidates' best passage vectors (``_vectors``), for score regularization."""
    path = CACHE / f"{stem}-passages.npz"
    if not path.exists():
        return
    npz = np.load(path)
    passages = dict(zip(npz["ids"].tolist(), npz["vectors"].astype(np.float32)))
    for per in queries.values():
        per["_vectors"] = {d: passages[f"{d}\t{o}"] for d, o in per.get("best", ()) if f"{d}\t{o}" in passages}


def as_lists(per: dict, bm25: str = "bm25", dense: str = "dense") -> dict:
    return {"bm25": [(d, s) for d, s in per[bm25]], "dense": [(d, s) for d, s in per[dense]]}


# -- metrics ---------------------------------------------------------------------------------------------------
def ndcg10(ranking: list[str], rels: dict[str, int]) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall100(ranking: list[str], rels: dict[str, int]) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranking[:100])) / len(relevant) if relevant else 0.0


def per_query(runs: dict[str, list[str]], qrels) -> tuple[np.ndarray, np.ndarray]:
    qids = sorted(q for q in runs if any(r > 0 for r in qrels.get(q, {}).values()))
    return (np.array([ndcg10(runs[q], qrels[q]) for q in qids]), np.array([recall100(runs[q], qrels[q]) for q in qids]))


def bootstrap(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# -- fast fitting of the adaptive coefficients ----------------------------------------------------------------
class Prepared:
    """One collection's queries as arrays: min-max scores of each candidate in each list, gains, signals."""

    def __init__(self, queries: dict, qrels, bm25: str = "bm25", dense: str = "dense") -> None:
        self.items = []
        self.features = []
        for qid, per in queries.items():
            rels = qrels.get(qid, {})
            if not any(r > 0 for r in rels.values()):
                continue
            lists = as_lists(per, bm25, dense)
            keys = list(dict.fromkeys([d for d, _ in lists["bm25"]] + [d for d, _ in lists["dense"]]))
            index = {k: i for i, k in enumerate(keys)}
            mm = []
            for name in ("bm25", "dense"):
                col = np.zeros(len(keys))
                scores = np.array([s for _, s in lists[name]], dtype=float)
                if len(scores):
                    span = scores.max() - scores.min()
                    norm = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
                    for (d, _), v in zip(lists[name], norm):
                        col[index[d]] = v
                mm.append(col)
            gains = np.array([rels.get(k, 0) for k in keys], dtype=float)
            ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
            idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
            sig = adaptive_signals(lists, 100)
            self.items.append((mm[0], mm[1], gains, idcg, np.array([sig[n] for n in ADAPTIVE_SIGNALS])))
            self.features.append(candidate_features(lists, keys))
        self.discount = 1.0 / np.log2(np.arange(2, 12))

    def mean_ndcg(self, coef: np.ndarray) -> float:
        total = 0.0
        for b, d, gains, idcg, sig in self.items:
            w = 2.0 / (1.0 + math.exp(-float(sig @ coef)))
            fused = (2.0 - w) * b + w * d
            top = np.argsort(-fused, kind="stable")[:10]
            total += float(gains[top] @ self.discount[: len(top)]) / idcg
        return total / max(1, len(self.items))


def candidate_features(lists: dict, keys: list) -> np.ndarray:
    """Label-free per-candidate features: min-max and z-score of each list's score, 1/log2(1 + rank) in each
    list, in-both flag, and the query's endorsement and overlap signals times each min-max score."""
    sig = adaptive_signals(lists, 100)
    cols = {}
    for name in ("bm25", "dense"):
        ranked = lists[name]
        scores = np.array([sc for _, sc in ranked], dtype=float)
        mm = np.zeros(len(keys)); z = np.zeros(len(keys)); lr = np.zeros(len(keys)); present = np.zeros(len(keys))
        if len(scores):
            span = scores.max() - scores.min()
            norm = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
            std = scores.std()
            zs = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
            z[:] = zs.min()
            pos = {d: i for i, d in enumerate(keys)}
            for r, ((d, _), v, zz) in enumerate(zip(ranked, norm, zs), start=1):
                i = pos[d]
                mm[i], z[i], lr[i], present[i] = v, zz, 1.0 / math.log2(1 + r), 1.0
        cols[name] = (mm, z, lr, present)
    (mb, zb, lb, pb), (md, zd, ld, pd) = cols["bm25"], cols["dense"]
    e, o = sig["endorsement"], sig["overlap"]
    return np.stack([mb, md, zb, zd, lb, ld, pb * pd, e * md, e * mb, o * md, o * mb], axis=1)


def fit_learned(prepared: list[Prepared]) -> np.ndarray:
    """Pairwise logistic regression (RankNet-style, linear) on feature differences of (relevant, non-relevant)
    candidate pairs, the non-relevant ones from each query's first 30 by min-max fusion; every collection weighs
    the same."""
    from sklearn.linear_model import LogisticRegression

    X, y, w = [], [], []
    for p in prepared:
        rows = []
        for (b, d, gains, _, _), feats in zip(p.items, p.features):
            top = np.argsort(-(b + d), kind="stable")[:30]
            pos = np.flatnonzero(gains > 0)
            neg = [i for i in top if gains[i] <= 0]
            for i in pos:
                for j in neg:
                    rows.append(feats[i] - feats[j])
        if not rows:
            continue
        rows = np.array(rows)
        X.append(rows); X.append(-rows)
        y += [1] * len(rows) + [0] * len(rows)
        w += [1.0 / len(rows)] * (2 * len(rows))
    model = LogisticRegression(fit_intercept=False, C=1.0, max_iter=2000)
    model.fit(np.vstack(X), np.array(y), sample_weight=np.array(w) * len(w) / len(prepared) / 2)
    return model.coef_[0]


def learned_run(queries: dict, coef: np.ndarray) -> dict[str, list[str]]:
    runs = {}
    for qid, per in queries.items():
        lists = as_lists(per)
        keys = list(dict.fromkeys([d for d, _ in lists["bm25"]] + [d for d, _ in lists["dense"]]))
        scores = candidate_features(lists, keys) @ coef
        order = np.argsort(-scores, kind="stable")[:100]
        runs[qid] = [keys[i] for i in order]
    return runs


def fit(prepared: list[Prepared], passes: int = 3, signals: tuple[str, ...] = ADAPTIVE_SIGNALS) -> dict[str, float]:
    """Coordinate search over GRID, maximising the mean over collections of mean nDCG@10 (each collection counts
    the same, whatever its number of queries); starts from all zeros (plain min-max fusion)."""
    coef = np.zeros(len(ADAPTIVE_SIGNALS))

    def objective(c):
        return float(np.mean([p.mean_ndcg(c) for p in prepared]))

    best = objective(coef)
    for _ in range(passes):
        improved = False
        for i in range(len(coef)):
            if ADAPTIVE_SIGNALS[i] not in signals:
                continue
            for value in GRID:
                trial = coef.copy()
                trial[i] = value
                score = objective(trial)
                if score > best + 1e-6:
                    best, coef, improved = score, trial, True
        if not improved:
            break
    return {n: float(v) for n, v in zip(ADAPTIVE_SIGNALS, coef)}


# -- methods ---------------------------------------------------------------------------------------------------
def run_of(queries: dict, method: str, coefficients: dict | None = None) -> dict[str, list[str]]:
    runs = {}
    for qid, per in queries.items():
        if method in per:  # a single list: bm25, dense, rm3, rocchio ...
            runs[qid] = [d for d, _ in per[method]][:100]
            continue
        runs[qid] = [d for d, _ in fused_of(per, method, coefficients)][:100]
    return runs


def fused_of(per: dict, method: str, coefficients: dict | None = None) -> list[tuple[str, float]]:
    """One query's fused list by ``method``: ``kind[+c][+rW/D/N]@A+B``, fusion ``kind`` of lists A and B, with
    score completion (``c``, the cached one of :data:`COMPLETED`) and score regularization (weight W, depth D,
    N neighbours), each by the functions the pipeline runs (foveal.pipeline.fusion)."""
    kind, _, inputs = method.partition("@")
    kind, *stages = kind.split("+")
    bm25, dense = (inputs.split("+") if inputs else ("bm25", "dense"))
    lists = as_lists(per, bm25, dense)
    completed = None
    if "c" in stages:
        if (bm25, dense) != COMPLETED:
            raise SystemExit(f"{method}: only {'+'.join(COMPLETED)} has its completion cached")
        completed = {name: {d: s for d, s in per["complete"][name]} for name in ("bm25", "dense")}
    if kind == "minmax":
        config = FusionConfig(method="linear", normalization="minmax")
    elif kind == "zscore":
        config = FusionConfig(method="linear", normalization="zscore")
    elif kind == "rrf":
        config = FusionConfig(method="rrf")
    elif kind == "adaptive":
        config = FusionConfig(method="adaptive", normalization="minmax", coefficients=coefficients)
    else:
        raise SystemExit(f"unknown method {method}")
    fused = fuse(lists, config, completed)
    for stage in stages:
        if stage.startswith("r"):
            weight, depth, neighbours = stage[1:].split("/")
            vectors = {d: v / max(float(np.linalg.norm(v)), 1e-12) for d, v in per["_vectors"].items()}
            fused, _ = regularize(fused, vectors, float(weight), int(depth), int(neighbours))
    return fused


#: The pair the default fuses, whose score completion bench/robust_dump.py caches.
COMPLETED = ("bm25", "rocchio_025")
#: The default foveal ships (foveal.config.FusionConfig), the choice on every development collection.
SHIPPED = "zscore+c+r0.3/50/3@bm25+rocchio_025"
#: Score regularization's grid (weight, depth, neighbours), over the completed default pair.
REGULARIZE_GRID = [(w, d, n) for w in (0.1, 0.2, 0.3, 0.4) for d in (20, 30, 50) for n in (3, 5, 10)]
CANDIDATES = ["bm25", "dense", "rm3", "rm3_07", "rocchio", "rocchio_025", "minmax", "zscore", "rrf",
              "zscore@bm25+rocchio_025", "minmax@rm3_07+rocchio", "minmax@rm3+dense", "minmax@rm3_07+dense", "minmax@bm25+rocchio", "minmax@bm25+rocchio_025",
              "minmax@rm3_07+rocchio_025", "zscore@rm3_07+rocchio_025", "rrf@rm3_07+rocchio_025",
              "zscore+c@bm25+rocchio_025"] + [
              f"zscore{c}+r{w}/{d}/{n}@bm25+rocchio_025" for c in ("+c", "") for w, d, n in REGULARIZE_GRID]


def candidates_table(units) -> None:
    """Every candidate's nDCG@10 per collection, and which one leave-one-out selection picks for each collection
    (the best mean nDCG@10 over the *other* development collections)."""
    names = [n for n in REPORT + ["scifact-train"] if n in units]
    table = {c: {} for c in CANDIDATES}
    for name in names:
        queries, qrels, _ = units[name]
        for c in CANDIDATES:
            table[c][name] = per_query(run_of(queries, c), qrels)[0].mean()
    print("| candidate | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    grid = [c for c in CANDIDATES if c.startswith(("zscore+c+r", "zscore+r"))]
    for c in CANDIDATES:
        if c not in grid:
            print(f"| {c} | " + " | ".join(f"{table[c][n]:.4f}" for n in names) + " |")
    previous = "zscore@bm25+rocchio_025"
    dev = [n for n in DEV if n in names]
    print(f"\nscore regularization's grid, {len(REGULARIZE_GRID)} settings (weight, depth, neighbours) with and without "
          f"completion: each collection's lowest / highest nDCG@10 over the settings, and in how many it is above "
          f"{previous} (the previous default); then the five best settings by mean Δ over the dev collections")
    for completed in (True, False):
        rows = [c for c in grid if c.startswith("zscore+c+") == completed]
        print(f"\n| {'with' if completed else 'without'} completion | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        print("| lowest / highest | " + " | ".join(
            f"{min(table[c][n] for c in rows):.4f} / {max(table[c][n] for c in rows):.4f}" for n in names) + " |")
        print("| above the previous default | " + " | ".join(
            f"{sum(table[c][n] > table[previous][n] for c in rows)}/{len(rows)}" for n in names) + " |")
        ranked = sorted(rows, key=lambda c: -np.mean([table[c][n] - table[previous][n] for n in dev]))
        for c in ranked[:5]:
            delta = np.mean([table[c][n] - table[previous][n] for n in dev])
            print(f"| {c} (mean Δ {delta:+.4f}) | " + " | ".join(f"{table[c][n]:.4f}" for n in names) + " |")
    print("\nleave-one-out fitted (each column from a fit without that collection and its sibling):")
    prepared = {n: Prepared(units[n][0], units[n][1]) for n in DEV if n in units}
    for label in ("adaptive (fitted)", "adaptive, bias only (a global weight)", "adaptive, endorsement only",
                  "adaptive, bias + endorsement", "learned pairwise (fitted)"):
        cells = []
        for name in names:
            queries, qrels, _ = units[name]
            train = [prepared[n] for n in DEV if n in prepared and n != name and n not in SIBLINGS.get(name, set())]
            if label.startswith("adaptive"):
                signals = {"adaptive (fitted)": ADAPTIVE_SIGNALS, "adaptive, bias only (a global weight)": ("bias",),
                           "adaptive, endorsement only": ("endorsement",),
                           "adaptive, bias + endorsement": ("bias", "endorsement")}[label]
                run = run_of(queries, "adaptive", fit(train, signals=signals))
            else:
                run = learned_run(queries, fit_learned(train))
            cells.append(per_query(run, qrels)[0].mean())
        print(f"| {label} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    print("\nleave-one-out selection among the fusion candidates (best mean nDCG@10 on the other dev collections):")
    fusions = [c for c in CANDIDATES if "@" in c or c in ("minmax", "zscore", "rrf")]
    for name in names:
        others = [n for n in DEV if n in units and n != name and n not in SIBLINGS.get(name, set())]
        pick = max(fusions, key=lambda c: np.mean([table[c][n] for n in others]))
        print(f"  {name}: picks {pick} -> {table[pick][name]:.4f} (minmax {table['minmax'][name]:.4f})")


def rescore_check(units) -> None:
    """The default Rocchio pass rescores the first dense round (``rocchio.rescore``) instead of searching the whole
    index again: per collection, how often that changes the new default's top 10, and what it does to nDCG@10."""
    rows = []
    for name in REPORT:
        if name not in units:
            continue
        queries, qrels, _ = units[name]
        if not all("rocchio_025_search" in per for per in queries.values()):
            return  # lists dumped before rescoring existed: nothing to compare
        rescored = run_of(queries, "zscore@bm25+rocchio_025")
        searched = run_of(queries, "zscore@bm25+rocchio_025_search")
        same10 = np.mean([rescored[q][:10] == searched[q][:10] for q in queries])
        dense_same = np.mean([[d for d, _ in per["rocchio_025"]] == [d for d, _ in per["rocchio_025_search"]]
                              for per in queries.values()])
        a, b = per_query(rescored, qrels)[0], per_query(searched, qrels)[0]
        rows.append(f"| {name} | {len(queries)} | {same10:.3f} | {dense_same:.3f} | {a.mean():.4f} | {b.mean():.4f} "
                    f"| {(a - b).mean():+.4f} |")
    print("\nRocchio by rescoring the first dense round (the default) against a second search of the whole index, "
          "new default fusion:\n")
    print("| collection | q | same top 10 | same Rocchio dense top 100 | nDCG@10 rescored | nDCG@10 searched | Δ |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()


def latency(args) -> None:
    import time

    from foveal.engine import Engine
    from foveal.evaluation import read_queries
    from foveal.pipeline.request import SearchRequest

    engine = Engine(Path(args.home))
    searcher = engine.pipeline(args.latency)
    collection = searcher.collection
    base = args.latency.split("-")[0]
    queries = list(read_queries(DATA / base / "queries.jsonl").values())[: args.latency_queries]
    searcher.search(SearchRequest(query=queries[0]))  # warm up: model load
    from foveal.pipeline.fusion import fuse_explained

    vectors = collection.encoder.encode_queries(queries).vectors
    defaults = FusionConfig()

    def best_of(fn, repeats=3):
        # the fastest of a few runs: what the stage costs when it gets the CPU (this machine is shared)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(1000 * (time.perf_counter() - t0))
        return min(times), out

    rows = {"encode the query (one at a time)": [], "hybrid retrieval + linear min-max fusion (old default, no encode)": [],
            "+ z-score instead of min-max": [], "+ adaptive weights": [], "+ Rocchio on dense (feedback read + 2nd dense search)": [],
            "+ RM3 on BM25 (feedback read + weighted BM25)": [],
            "+ score completion (BM25 of the dense-only documents, best passage of the BM25-only ones)": [],
            "+ score regularization (best passages of the fused top 50, their similarities)": [],
            "served hybrid search, the previous default (z-score + Rocchio; encode included)": [],
            "served hybrid search, the new default (+ completion + regularization; encode included)": []}
    previous = {"complete": False, "regularize": {"enabled": False}}
    minmax = FusionConfig(normalization="minmax", rocchio={"enabled": False})
    for q, vector in zip(queries, vectors):
        rows["encode the query (one at a time)"].append(best_of(lambda: collection.encoder.encode_queries([q]))[0])

        def retrieve():
            bm25 = searcher._lexical(q, 100, None)
            dense, best = searcher._dense(vector, 100)
            return {"bm25": bm25, "dense": dense}, best

        t_retrieve, (lists, best) = best_of(retrieve)
        t_minmax, _ = best_of(lambda: fuse_explained(lists, minmax))
        rows["hybrid retrieval + linear min-max fusion (old default, no encode)"].append(t_retrieve + t_minmax)
        rows["+ z-score instead of min-max"].append(best_of(lambda: fuse_explained(lists, defaults))[0] - t_minmax)
        rows["+ adaptive weights"].append(
            best_of(lambda: fuse_explained(lists, FusionConfig(method="adaptive", normalization="minmax")))[0] - t_minmax)

        def with_rocchio():
            moved, _ = searcher._rocchio(vector, lists["dense"], best, defaults.rocchio)
            return searcher._dense(moved, 100)

        rows["+ Rocchio on dense (feedback read + 2nd dense search)"].append(best_of(with_rocchio)[0])
        rm3_cfg = FusionConfig(rm3={"enabled": True}).rm3
        rows["+ RM3 on BM25 (feedback read + weighted BM25)"].append(
            best_of(lambda: searcher._rm3(q, lists["bm25"], 100, None, rm3_cfg))[0])
        moved, _ = searcher._rocchio(vector, lists["dense"], best, defaults.rocchio)
        roc, roc_best = searcher._dense(moved, 100)
        pair = {"bm25": lists["bm25"], "dense": roc}
        t_complete, (completed, _) = best_of(lambda: searcher._complete(q, pair, 100, moved, None, dict(roc_best)))
        rows["+ score completion (BM25 of the dense-only documents, best passage of the BM25-only ones)"].append(t_complete)
        fused = fuse_explained(pair, defaults, completed)[0]
        rows["+ score regularization (best passages of the fused top 50, their similarities)"].append(
            best_of(lambda: searcher._regularize(fused, defaults.regularize, dict(roc_best), moved))[0])
        rows["served hybrid search, the previous default (z-score + Rocchio; encode included)"].append(
            best_of(lambda: searcher.search(SearchRequest(query=q, fusion=previous)))[0])
        rows["served hybrid search, the new default (+ completion + regularization; encode included)"].append(
            best_of(lambda: searcher.search(SearchRequest(query=q)))[0])
    print(f"{args.latency}: {len(queries)} queries, CPU, commit {commit()}, encoder "
          f"{collection.config.encoder.model} ({collection.config.encoder.backend}); each step timed alone, the "
          "fastest of 3 runs per query (the machine is shared), p50 over queries\n")
    print("| step | p50 ms |")
    print("|---|---|")
    for label, values in rows.items():
        print(f"| {label} | {float(np.percentile(values, 50)):.1f} |")
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="fit on every dev collection and print the coefficients")
    parser.add_argument("--candidates", action="store_true", help="also print every candidate method, LOO")
    parser.add_argument("--latency", default=None, metavar="INDEX",
                        help="p50 query latency (CPU, one query at a time) of hybrid with each feedback stage on, on "
                             "INDEX of --home (read-only)")
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--latency-queries", type=int, default=100)
    args = parser.parse_args()
    if args.latency:
        latency(args)
        return
    units = {n: load(n) for n in sorted(set(DEV) | set(REPORT))}
    units = {n: u for n, u in units.items() if u is not None}
    prepared = {}
    for n in units:
        if n in DEV:
            prepared[n] = Prepared(units[n][0], units[n][1])
    if args.fit:
        coefficients = fit([prepared[n] for n in DEV if n in prepared])
        print(json.dumps(coefficients))
        return
    if args.candidates:
        candidates_table(units)
        return
    encoder = next(iter(units.values()))[2]
    print(f"encoder: {encoder['model']} ({encoder['backend']} backend), commit {commit()}; "
          f"dev collections present: {', '.join(n for n in DEV if n in units)}\n")
    fusions = [c for c in CANDIDATES if "@" in c or c in ("minmax", "zscore", "rrf")]
    ndcg = {}  # (candidate, unit) -> per-query arrays
    for name in units:
        queries, qrels, _ = units[name]
        for c in ["bm25", "dense"] + fusions:
            ndcg[c, name] = per_query(run_of(queries, c), qrels)
    dev = [n for n in DEV if n in units]
    shipped = max(fusions, key=lambda c: np.mean([ndcg[c, n][0].mean() for n in dev]))
    labels = ["bm25", "dense", "old hybrid (minmax)", "new default"]
    rerank, model = None, ROOT / "bench" / "out" / "rerank" / "model"
    if (model / "model.safetensors").exists():  # bench/robust_rerank.py's cached scores, its LOO choice
        from robust_rerank import leave_one_out, load_units

        loaded = load_units(model, 20, score=False)
        rerank = leave_one_out(loaded) if loaded else None
    print("| collection | q | " + " | ".join(f"{l} nDCG@10 / R@100" for l in labels)
          + " | with reranking | new default picked without it | new − better single (95% CI) | new − old (95% CI) |")
    print("|---|---|" + "---|" * (len(labels) + 4))
    means = {l: [] for l in labels}
    margins: dict[str, float] = {}  # new default - better single retriever, nDCG@10
    for name in REPORT:
        if name not in units:
            continue
        others = [n for n in dev if n != name and n not in SIBLINGS.get(name, set())]
        pick = max(fusions, key=lambda c: np.mean([ndcg[c, n][0].mean() for n in others]))
        scores = {"bm25": ndcg["bm25", name], "dense": ndcg["dense", name],
                  "old hybrid (minmax)": ndcg["minmax", name], "new default": ndcg[pick, name]}
        best_single = max(("bm25", "dense"), key=lambda l: scores[l][0].mean())
        new = scores["new default"][0]
        d1 = new - scores[best_single][0]
        d2 = new - scores["old hybrid (minmax)"][0]
        lo1, hi1 = bootstrap(d1)
        lo2, hi2 = bootstrap(d2)
        cells = " | ".join(f"{scores[l][0].mean():.4f} / {scores[l][1].mean():.4f}" for l in labels)
        reranked = f"{rerank[name][0].mean():.4f}" if rerank and name in rerank else "n/a"
        print(f"| {name} | {len(new)} | {cells} | {reranked} | {pick} | {d1.mean():+.4f} vs {best_single} [{lo1:+.4f}, {hi1:+.4f}] "
              f"| {d2.mean():+.4f} [{lo2:+.4f}, {hi2:+.4f}] |")
        margins[name] = float(d1.mean())
        for l in labels:
            means[l].append((scores[l][0].mean(), scores[l][1].mean()))
    cells = " | ".join(f"{np.mean([m[0] for m in means[l]]):.4f} / {np.mean([m[1] for m in means[l]]):.4f}" for l in labels)
    reranked = f"{np.mean([rerank[n][0].mean() for n in REPORT if n in rerank]):.4f}" if rerank else "n/a"
    print(f"| mean | | {cells} | {reranked} | | | |")
    classic = [n for n in CLASSIC if n in margins]
    print(f"\nmean margin of the new default over the better single retriever: {np.mean([margins[n] for n in classic]):+.4f} "
          f"over the classic collections ({', '.join(classic)}); {np.mean(list(margins.values())):+.4f} over every "
          f"reported unit ({', '.join(margins)})")
    print(f"\nshipped default (best mean nDCG@10 over all dev collections: {', '.join(dev)}): {shipped}")
    print("minmax = linear fusion of min-max scores (the old default); X@A+B = method X over lists A and B; rm3_07 = "
          "RM3 (10 docs, 10 terms, original weight 0.7) on BM25; rocchio_025 = Rocchio (5 docs, beta 0.25) on dense. "
          "+c = score completion; +rW/D/N = score regularization, weight W over the fused top D, N neighbours.")
    rescore_check(units)
    if rerank:
        print("with reranking: the new default, then the Pyramid reranker trained on SciFact train (bench/out/rerank/model, "
              "window 20) with its weight and confidence gate chosen leave-one-out (bench/robust_rerank.py; same table there).")
    else:
        print("with reranking: n/a, no scored Pyramid model under bench/out/rerank/model (run bench/robust_rerank.py).")


if __name__ == "__main__":
    main()
