"""``fit_pyramid``: the training loop that ``foveal train rerank`` and the union bench share."""

from __future__ import annotations

import pytest
import torch

from foveal.rerank.train import TrainOptions, TrainQuery, fit_pyramid

EXAMPLES = [
    TrainQuery("moon tides", [("Tides", "The moon pulls the oceans twice a day.")],
               [("Bread", "Yeast makes dough rise."), ("Chess", "Openings and pawns.")]),
    TrainQuery("baking bread", [("Bread", "Yeast makes dough rise in a warm oven.")],
               [("Tides", "The moon pulls the oceans."), ("Lava", "Magma erupts as lava.")]),
    TrainQuery("no judged document", [], [("Tides", "The moon."), ("Lava", "Magma.")]),  # skipped when its turn comes
]


def test_fit_pyramid_trains_steps_skips_what_it_cannot_use_and_stops_at_the_cap():
    options = TrainOptions(lower_layers=0, batch_queries=1, negatives=1, epochs=1, threads=1, summary_tokens=16,
                           max_query_title_tokens=16)
    logs: list[str] = []
    ranker, fitted = fit_pyramid(EXAMPLES, options, logs.append)
    assert fitted["steps"] == 2 and not fitted["stopped_early"]  # three turns, one without a relevant document
    assert not ranker.model.training and logs
    scores = ranker.score("moon tides", ["Tides", "Bread"], ["The moon pulls the oceans.", "Yeast."])
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    base, _ = fit_pyramid(EXAMPLES, TrainOptions(**{**options.__dict__, "max_minutes": 0.0}), logs.append)
    assert not torch.equal(ranker.model.head.weight, base.model.head.weight)  # the same seed's head, trained
    _, capped = fit_pyramid(EXAMPLES, TrainOptions(**{**options.__dict__, "max_minutes": 0.0}), logs.append)
    assert capped["steps"] == 0 and capped["stopped_early"]


def _beir(folder, docs: dict, queries: dict, qrels: dict, split: str):
    import json

    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n"
                                                 for d, (t, x) in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items()))


def test_train_rerank_also_trains_on_the_judged_queries_of_other_collections(tmp_path, engine):
    """``also`` adds every judged query of another collection (its own split, its own index for hard negatives);
    the combination is still fitted on the primary's held-out train queries."""
    from foveal.documents import parse_document
    from foveal.errors import ConfigError
    from foveal.rerank.train import train_rerank

    a_docs = {f"a{i}": (t, x) for i, (t, x) in enumerate([
        ("Tides", "The moon pulls the oceans."), ("Bread", "Yeast makes dough rise."),
        ("Chess", "The Sicilian Defence."), ("Lava", "Magma erupts as lava."), ("Coffee", "Roasting beans."),
        ("Rain", "Clouds release water."), ("Orbits", "Planets circle the sun."), ("Rice", "Simmer it covered.")])}
    b_docs = {f"b{i}": (t, x) for i, (t, x) in enumerate([
        ("Engines", "Pistons compress fuel."), ("Wings", "Lift comes from pressure."), ("Rudders", "Steer a plane."),
        ("Flaps", "Slow the wing."), ("Jets", "Turbines push air.")])}
    _beir(tmp_path / "a", a_docs, {"q1": "moon ocean", "q2": "dough yeast", "q3": "lava magma", "q4": "roasting"},
          {"q1": "a0", "q2": "a1", "q3": "a3", "q4": "a4"}, "train")
    _beir(tmp_path / "b", b_docs, {"p1": "pistons", "p2": "wing lift", "p3": "unjudged"},
          {"p1": "b0", "p2": "b1"}, "test")
    for name, docs in (("a", a_docs), ("b", b_docs)):
        engine.create_index(name).upsert([parse_document({"_id": d, "title": t, "text": x})
                                          for d, (t, x) in docs.items()])
    options = TrainOptions(lower_layers=0, batch_queries=2, negatives=1, epochs=1, threads=1, summary_tokens=16,
                           max_query_title_tokens=16, dev_fraction=0.25, hard_pool=5)
    record = train_rerank(tmp_path / "a", tmp_path / "model", home=engine.home, index="a", options=options,
                          also=[(tmp_path / "b", "b")], also_split="test", log=lambda m: None)
    assert record["train_queries"] == 3 + 2 and record["dev_queries"] == 1
    assert record["also"] == {"split": "test", "queries": {str(tmp_path / "b"): 2}}
    assert record["steps"] == 3 and (tmp_path / "model" / "pyramid.json").exists()
    with pytest.raises(ConfigError, match="no train qrels"):
        train_rerank(tmp_path / "a", tmp_path / "m2", home=engine.home, index="a", options=options,
                     also=[(tmp_path / "b", "b")], log=lambda m: None)
