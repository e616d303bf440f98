"""The Pyramid-ERNIE reranker trained on the union of the development judgments, one model per left-out collection
(issue 15), beside the SciFact-only model of bench/robust_rerank.py. One table; docs/robust.md quotes it.

    PYTHONPATH=. .venv/bin/python bench/robust_dump.py --home bench/out/home           # once: the candidate lists
    PYTHONPATH=. .venv/bin/python bench/robust_rerank_union.py train --home bench/out/home [--minutes 11]
    PYTHONPATH=. .venv/bin/python bench/robust_rerank_union.py table

Training data (``foveal.rerank.train.fit_pyramid``, the loss and settings of ``foveal train rerank``): the SciFact
train queries that ``held_out_split`` keeps for training (the other 15 %, ``scifact-rerank-dev``, are never trained
on), and every judged query of adi, time, cranfield, cacm and lisa. Hard negatives come from each query's default
first stage (z-score + Rocchio): the cached lists of bench/robust_dump.py for the classic collections, a hybrid
search of the SciFact index for SciFact train. One model is trained per held-out group:

* ``no-<collection>`` leaves one classic collection out (``no-cranfield`` also serves ``cranfield-weak``, which
  shares its queries and judgments); it scores only that collection;
* ``all`` sees every development collection and scores SciFact test and ``scifact-rerank-dev``.

Each unit is scored by the model that never saw it. The weight ``a`` and the gate for a reported unit are then chosen
as bench/robust_rerank.py chooses them, on the other units, with their own models' scores: the best mean nDCG@10
among the settings that lower none of them by more than 0.005. Caveat, said in the output: a model that scores
another unit was trained on the reported collection's judgments, so those judgments reach the choice through
training (a fully nested protocol would need a model per pair of left-out collections).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import commit  # noqa: E402
from robust import DATA  # noqa: E402
from robust import SHIPPED  # noqa: E402
from robust_rerank import DEV, REPORT, Unit, first_stage, print_table, score_unit  # noqa: E402

from foveal.evaluation import read_qrels, read_queries  # noqa: E402

OUT = ROOT / "bench" / "out" / "rerank-union"
CLASSIC = ["adi", "time", "cranfield", "cacm", "lisa"]
GROUPS = {"all": None, **{f"no-{c}": c for c in CLASSIC}}
#: which model scores a unit: the one that never saw it
MODEL_OF = {"adi": "no-adi", "time": "no-time", "cranfield": "no-cranfield", "cranfield-weak": "no-cranfield",
            "cacm": "no-cacm", "lisa": "no-lisa", "scifact-test": "all", "scifact-rerank-dev": "all"}


def _corpus(name: str) -> dict[str, tuple[str, str]]:
    from foveal.rerank.train import _corpus as read

    return read(DATA / name)


def training_queries(home: Path, hard_pool: int) -> dict[str, list]:
    """collection -> [TrainQuery] (SciFact: its training part only)."""
    from foveal.engine import Engine
    from foveal.rerank.train import TrainQuery, held_out_split, mine_candidates

    out: dict[str, list] = {}
    for name in CLASSIC:
        loaded = first_stage(name)
        if loaded is None:
            raise SystemExit(f"{name}: no cached lists; run bench/robust_dump.py first")
        runs, qrels = loaded
        corpus = _corpus(name)
        queries = read_queries(DATA / name / "queries.jsonl")
        out[name] = [TrainQuery.judged(queries[q], qrels[q], runs[q], corpus, hard_pool) for q in sorted(runs)]
    qrels = read_qrels(DATA / "scifact" / "qrels" / "train.tsv")
    queries = {q: t for q, t in read_queries(DATA / "scifact" / "queries.jsonl").items() if q in qrels}
    _, train_ids = held_out_split(queries)
    engine = Engine(home)
    candidates = mine_candidates(engine, "scifact", {q: queries[q] for q in train_ids},
                                 OUT / "candidates-scifact-train.json")
    engine.close()
    corpus = _corpus("scifact")
    out["scifact-train"] = [TrainQuery.judged(queries[q], qrels[q], candidates[q], corpus, hard_pool)
                            for q in train_ids]
    return out


def train(args) -> None:
    from foveal.rerank.train import TrainOptions, fit_pyramid

    options = TrainOptions(epochs=args.epochs, max_minutes=args.minutes)
    per_collection = training_queries(Path(args.home), options.hard_pool)
    for group, left_out in GROUPS.items():
        if args.only and group not in args.only:
            continue
        target = OUT / group
        if (target / "pyramid.json").exists():
            print(f"{group}: trained already ({target})", file=sys.stderr)
            continue
        examples = [e for name, rows in per_collection.items() if name != left_out for e in rows]
        random.Random(7).shuffle(examples)  # fit_pyramid shuffles again each epoch; this only mixes the sources
        print(f"{group}: {len(examples)} training queries "
              f"({', '.join(n for n in per_collection if n != left_out)})", file=sys.stderr, flush=True)
        ranker, fitted = fit_pyramid(examples, options)
        ranker.settings.combination = {"first_stage": 0.5, "pyramid": 0.5}  # the protocol chooses a and the gate
        ranker.settings.training = {
            "union": [n for n in per_collection if n != left_out], "left_out": left_out,
            "train_queries": len(examples), "steps": fitted["steps"], "stopped_early": fitted["stopped_early"],
            "train_seconds": round(fitted["train_seconds"], 1), "options": dict(options.__dict__),
            "commit": commit()}
        ranker.save(target)
        print(f"{group}: {fitted['steps']} steps in {fitted['train_seconds'] / 60:.1f} min -> {target}",
              file=sys.stderr, flush=True)


def load_units(window: int) -> dict[str, Unit]:
    from foveal.rerank.pyramid import PyramidRanker

    units: dict[str, Unit] = {}
    rankers: dict[str, object] = {}
    for name in dict.fromkeys(DEV + REPORT):
        loaded = first_stage(name)
        model = OUT / MODEL_OF[name]
        if loaded is None or not (model / "pyramid.json").exists():
            print(f"{name}: no cached lists or no model {model.name}; skipped", file=sys.stderr)
            continue
        runs, qrels = loaded
        if model.name not in rankers:
            rankers[model.name] = PyramidRanker.load(model)
        scores = score_unit(name, runs, rankers[model.name], window, model, {},
                            cache_name=f"rerank-union-{name}.json")
        units[name] = Unit(name, runs, qrels, scores)
    return units


def table(args) -> None:
    units = load_units(args.window)
    print(f"models: Pyramid-ERNIE trained on the union of the development judgments, one per left-out collection "
          f"(bench/out/rerank-union: {', '.join(sorted({MODEL_OF[u] for u in units}))}), window {args.window}, "
          f"first stage {SHIPPED}; encoder all-MiniLM-L6-v2 (torch), commit {commit()}\n")
    print_table(units, 0.5, "+ rerank a = 0.5, no gate", scored_by=MODEL_OF)
    print("\nEach unit is scored by the model that never saw it; its a and gate come from the other units (siblings "
          "left out), scored by their own models, which were trained with the reported collection's judgments.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    p.add_argument("--minutes", type=float, default=11.0, help="cap per model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--only", nargs="*", help="train only these groups (all, no-adi, ...)")
    p = sub.add_parser("table")
    p.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    {"train": train, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
