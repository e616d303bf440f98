"""``fit_pyramid``: the training loop that ``foveal train rerank`` and the union bench share."""

from __future__ import annotations

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
