"""The Pyramid-ERNIE reranker on collections it was not trained on, with its confidence gate and combination weight
chosen leave-one-collection-out (issue 15). One table; the figures in docs/robust.md come from it.

    PYTHONPATH=. .venv/bin/python bench/robust_dump.py --home bench/out/home        # once: the candidate lists
    PYTHONPATH=. .venv/bin/python bench/robust_rerank.py --model bench/out/rerank/model
    PYTHONPATH=. .venv/bin/python bench/robust_rerank.py --model bench/out/rerank/model --save   # write the choice

The first stage is the shipped default fusion (z-score over bm25 and dense after Rocchio, with score completion and
score regularization: bench/robust.py's SHIPPED), applied with foveal.pipeline.fusion to the lists
bench/robust_dump.py cached. The model (from `foveal train rerank` on SciFact
train) scores the first --window candidates of every query: title and QUITE summary, as the stage does; the scores
are cached under bench/out/robust. The reranked order is computed with the stage's own functions
(foveal.rerank.combine): ``(1 - a) * minmax(first stage) + a * pyramid`` over the window, and a query whose best
pyramid score is below the gate keeps its first-stage order.

Protocol: the development units are adi, time, cranfield, cacm, lisa, cranfield-weak and the SciFact train queries
that training held out (``scifact-rerank-dev``; the model never saw them). For each reported unit, ``a`` and the
gate are chosen on the other units (siblings left out together): the best mean nDCG@10 over them, among the
settings that lower none of them by more than 0.005 against the first stage. SciFact test is reported from a
choice that saw no SciFact query. ``--save`` writes the choice made on all development units into the model's
pyramid.json (``combination``, ``gate``), which the stage then uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import commit  # noqa: E402
from robust import CACHE, DATA, SHIPPED, attach_vectors, bootstrap, fused_of, ndcg10  # noqa: E402

from foveal.evaluation import read_qrels, read_queries  # noqa: E402
from foveal.rerank.combine import combine, confidence, gate_open, minmax  # noqa: E402

DEV = ["adi", "time", "cranfield", "cacm", "lisa", "cranfield-weak", "scifact-rerank-dev"]
REPORT = ["adi", "time", "cranfield", "cacm", "lisa", "cranfield-weak", "scifact-test"]
SIBLINGS = {"cranfield": {"cranfield-weak"}, "cranfield-weak": {"cranfield"},
            "scifact-test": {"scifact-rerank-dev"}, "scifact-rerank-dev": {"scifact-test"}}
ALPHAS = [round(a / 20, 2) for a in range(21)]
MAX_DROP = 0.005


def unit_files(unit: str) -> tuple[str, str, str]:
    """(cached lists file stem, split key, qrels split) of a unit."""
    if unit == "cranfield-weak":
        return "cranfield-weak", "test", "test"
    if unit == "scifact-rerank-dev":
        return "scifact", "rerank-dev", "train"
    base, _, split = unit.partition("-")
    return base, split or "test", split or "test"


def first_stage(unit: str):
    """{qid: [(doc id, fused score), ...] top 100} and the qrels of a unit, or None when its lists are not cached."""
    stem, split, qsplit = unit_files(unit)
    path = CACHE / f"{stem}.json"
    if not path.exists():
        return None
    cached = json.loads(path.read_text())
    if split not in cached["splits"]:
        return None
    qrels = read_qrels(DATA / stem.removesuffix("-weak") / "qrels" / f"{qsplit}.tsv")
    runs = {}
    queries = cached["splits"][split]["queries"]
    attach_vectors(queries, stem)
    for qid, per in queries.items():
        if any(r > 0 for r in qrels.get(qid, {}).values()):
            runs[qid] = fused_of(per, SHIPPED)[:100]
    return runs, qrels


def weights_digest(model: Path) -> str:
    """The model's weights file's SHA-1: the score cache's key (pyramid.json may change with --save)."""
    import hashlib

    from foveal.rerank.pyramid import WEIGHTS_FILE

    return hashlib.sha1((model / WEIGHTS_FILE).read_bytes()).hexdigest()


def score_unit(unit: str, runs: dict, ranker, window: int, model: Path, pairs: dict,
               cache_name: str | None = None) -> dict:
    """{qid: [[doc, minmax first stage, pyramid], ...]} for the first ``window`` candidates; cached (in
    ``cache_name`` under the robust cache, default ``rerank-<unit>.json``)."""
    cache = CACHE / (cache_name or f"rerank-{unit}.json")
    digest = weights_digest(model)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("weights") == digest and cached["window"] == window and set(runs) <= set(cached["queries"]):
            return cached["queries"]
    stem = unit_files(unit)[0].removesuffix("-weak")
    corpus = {}
    with open(DATA / stem / "corpus.jsonl") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                corpus[str(doc["_id"])] = (doc.get("title") or "", doc.get("text") or "")
    queries = read_queries(DATA / stem / "queries.jsonl")
    out = {}
    for n, (qid, ranked) in enumerate(runs.items(), 1):
        normalised = minmax([s for _, s in ranked])
        top = [d for d, _ in ranked[:window]]
        missing = [d for d in top if (stem, qid, d) not in pairs]
        if missing:
            titles = [corpus.get(d, ("", ""))[0] for d in missing]
            summaries = [ranker.summarize(queries[qid], corpus.get(d, ("", ""))[1]) for d in missing]
            for d, s in zip(missing, ranker.score(queries[qid], titles, summaries).tolist()):
                pairs[stem, qid, d] = float(s)
        out[qid] = [[d, normalised[i], pairs[stem, qid, d]] for i, d in enumerate(top)]
        if n % 50 == 0:
            print(f"{unit}: {n}/{len(runs)} queries scored", file=sys.stderr, flush=True)
    cache.write_text(json.dumps({"weights": digest, "window": window, "queries": out}))
    return out


def reranked(ranked: list, scored: list, alpha: float, gate: float | None) -> list[str]:
    """The stage's order: the window by the combination (unless the gate is closed), the rest in first-stage order."""
    order = [d for d, _ in ranked]
    if not scored or not gate_open([p for _, _, p in scored], gate):
        return order
    weights = {"first_stage": 1 - alpha, "pyramid": alpha}
    head = sorted(scored, key=lambda row: -combine({"first_stage": row[1], "pyramid": row[2]}, weights))
    return [row[0] for row in head] + order[len(scored):]


class Unit:
    def __init__(self, name: str, runs: dict, qrels: dict, scores: dict) -> None:
        self.name, self.runs, self.qrels, self.scores = name, runs, qrels, scores
        self.qids = sorted(runs)
        self.base = np.array([ndcg10([d for d, _ in runs[q]], qrels[q]) for q in self.qids])
        self.confidence = np.array([confidence([p for _, _, p in scores[q]]) for q in self.qids])
        self._memo: dict = {}

    def ndcg(self, alpha: float, gate: float | None) -> np.ndarray:
        key = (alpha, gate)
        if key not in self._memo:
            self._memo[key] = np.array([ndcg10(reranked(self.runs[q], self.scores[q], alpha, gate), self.qrels[q])
                                        for q in self.qids])
        return self._memo[key]


def gates_of(units: list[Unit]) -> list[float | None]:
    pooled = np.concatenate([u.confidence for u in units])
    return [None] + sorted({round(float(np.quantile(pooled, p / 20)), 4) for p in range(1, 20)})


def fit(units: list[Unit]) -> tuple[float, float | None, float]:
    """(alpha, gate, mean gain) with the best mean nDCG@10 over ``units`` among the settings that lower none of them
    by more than MAX_DROP; (0, None, 0) (reranking changes nothing) when none qualifies."""
    best = (0.0, None, 0.0)
    for gate in gates_of(units):
        for alpha in ALPHAS[1:]:
            deltas = [float(u.ndcg(alpha, gate).mean() - u.base.mean()) for u in units]
            if min(deltas) < -MAX_DROP:
                continue
            gain = float(np.mean(deltas))
            if gain > best[2] + 1e-9:
                best = (alpha, gate, gain)
    return best


def load_units(model: Path, window: int, score: bool = True) -> dict[str, Unit] | None:
    """Every development and reported unit with its cached lists; scores missing pyramid scores unless ``score``
    is False (then None when any is missing)."""
    from foveal.rerank.pyramid import PyramidRanker

    ranker = PyramidRanker.load(model) if score else None
    pairs: dict = {}
    units: dict[str, Unit] = {}
    for name in dict.fromkeys(DEV + REPORT):
        loaded = first_stage(name)
        if loaded is None:
            print(f"{name}: no cached lists (run bench/robust_dump.py); skipped", file=sys.stderr)
            continue
        runs, qrels = loaded
        if ranker is None:
            cache = CACHE / f"rerank-{name}.json"
            if not cache.exists():
                return None
            cached = json.loads(cache.read_text())
            if cached.get("weights") != weights_digest(model) or cached["window"] != window:
                return None
            scores = cached["queries"]
        else:
            scores = score_unit(name, runs, ranker, window, model, pairs)
        units[name] = Unit(name, runs, qrels, scores)
    return units


def leave_one_out(units: dict[str, Unit]) -> dict[str, tuple[np.ndarray, float, float | None, float]]:
    """unit -> (per-query nDCG@10 gated, a, gate, share of queries reranked), each from the choice without it."""
    dev = [n for n in DEV if n in units]
    out = {}
    for name in REPORT:
        if name not in units:
            continue
        unit = units[name]
        alpha, gate, _ = fit([units[n] for n in dev if n != name and n not in SIBLINGS.get(name, set())])
        gated = unit.ndcg(alpha, gate) if alpha > 0 else unit.base
        share = float(np.mean([gate_open([p for _, _, p in unit.scores[q]], gate) for q in unit.qids])) if alpha else 0.0
        out[name] = (gated, alpha, gate, share)
    return out


def print_table(units: dict[str, Unit], plain_alpha: float, plain_label: str,
                scored_by: dict[str, str] | None = None) -> None:
    """The leave-one-out table: per reported unit its first stage, reranked at ``plain_alpha`` without a gate, and
    reranked with the ``a`` and gate chosen without it; ``scored_by`` adds which model scored each unit."""
    by_head, by_rule = ("scored by | ", "---|") if scored_by else ("", "")
    print(f"| collection | q | {by_head}first stage nDCG@10 | {plain_label} | + rerank, gated (LOO) "
          "| LOO choice (a, gate) | queries reranked | gated − first stage (95% CI) |")
    print(f"|---|---|{by_rule}---|---|---|---|---|---|")
    rows = []
    for name, (gated, alpha, gate, share) in leave_one_out(units).items():
        unit = units[name]
        plain = unit.ndcg(plain_alpha, None)
        diff = gated - unit.base
        lo, hi = bootstrap(diff)
        rows.append((unit.base.mean(), plain.mean(), gated.mean()))
        gate_text = "none" if gate is None else f"{gate:.3f}"
        by = f"{scored_by[name]} | " if scored_by else ""
        print(f"| {name} | {len(unit.qids)} | {by}{unit.base.mean():.4f} | {plain.mean():.4f} "
              f"({plain.mean() - unit.base.mean():+.4f}) | {gated.mean():.4f} | {alpha:.2f}, {gate_text} | {share:.0%} "
              f"| {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    if rows:
        m = np.mean(rows, axis=0)
        print(f"| mean | | {'| ' if scored_by else ''}{m[0]:.4f} | {m[1]:.4f} ({m[1] - m[0]:+.4f}) | {m[2]:.4f} | | "
              f"| {m[2] - m[0]:+.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "bench" / "out" / "rerank" / "model"),
                        help="a folder written by foveal train rerank")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--save", action="store_true",
                        help="write the choice made on every development unit into the model's pyramid.json")
    args = parser.parse_args()
    from foveal.rerank.pyramid import CONFIG_FILE

    model = Path(args.model)
    own = json.loads((model / CONFIG_FILE).read_text())["combination"]
    units = load_units(model, args.window)
    dev = [n for n in DEV if n in units]
    alpha_all, gate_all, _ = fit([units[n] for n in dev])
    if args.save:
        settings = json.loads((model / CONFIG_FILE).read_text())
        settings["combination"] = {"first_stage": round(1 - alpha_all, 6), "pyramid": alpha_all}
        settings["gate"] = gate_all
        settings.setdefault("training", {})["robust_fit"] = {"units": dev, "window": args.window, "commit": commit()}
        (model / CONFIG_FILE).write_text(json.dumps(settings, indent=2))
        print(f"saved into {model / CONFIG_FILE}: combination {settings['combination']}, gate {gate_all}")
        return

    print(f"model: {model.name} (Pyramid-ERNIE, trained on SciFact train; weights fitted by training {own}), "
          f"window {args.window}, first stage {SHIPPED}; encoder all-MiniLM-L6-v2 (torch), "
          f"commit {commit()}\n")
    print_table(units, own.get("pyramid", 0.5), "+ rerank, training's weights, no gate")
    gate_text = "none" if gate_all is None else f"{gate_all:.3f}"
    print(f"\nchoice on every development unit ({', '.join(dev)}): a = {alpha_all:.2f}, gate {gate_text} "
          f"(what --save writes into the model)")


if __name__ == "__main__":
    main()
