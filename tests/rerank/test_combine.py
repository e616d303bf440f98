"""The final combination and the human-anchored objective."""

from __future__ import annotations

import pytest
import torch

from foveal.rerank.combine import combine, fit_two_weights, minmax
from foveal.rerank.train import TrainOptions, human_anchored_loss


def test_combine_is_a_weighted_sum_and_reads_other_stages():
    assert combine({"first_stage": 1.0, "pyramid": 0.5}, {"first_stage": 0.25, "pyramid": 0.5}) == 0.5
    assert combine({"first_stage": 1.0, "pyramid": 0.5, "freshness": 0.8},
                   {"first_stage": 0.5, "pyramid": 0.5, "freshness": 1.0}) == pytest.approx(1.55)
    assert combine({"first_stage": 1.0}, {"first_stage": 1.0, "pyramid": 2.0}) == 1.0


def test_minmax():
    assert minmax([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert minmax([2.0, 2.0]) == [1.0, 1.0]
    assert minmax([]) == []


def test_fit_finds_where_each_stage_adds():
    # query a: only the rerank score finds the relevant doc; query b: only the first stage does; the blend that
    # keeps both right needs both features
    features = {
        "a": {"rel": {"first_stage": 0.6, "pyramid": 0.9}, "other": {"first_stage": 1.0, "pyramid": 0.1}},
        "b": {"rel": {"first_stage": 1.0, "pyramid": 0.5}, "other": {"first_stage": 0.0, "pyramid": 0.6}},
    }
    qrels = {"a": {"rel": 1}, "b": {"rel": 1}}
    weights, curve = fit_two_weights(features, qrels, steps=10)
    best = max(v for _, v in curve)
    assert best == pytest.approx(1.0)
    assert 0.0 < weights["pyramid"] < 1.0 and weights["first_stage"] == pytest.approx(1 - weights["pyramid"])
    assert dict(curve)[0.0] < 1.0 and dict(curve)[1.0] < 1.0


def test_loss_is_zero_when_ranked_and_calibrated():
    options = TrainOptions()
    logit = lambda p: torch.logit(torch.tensor(p))  # noqa: E731
    good = torch.stack([logit(0.9), logit(0.1), logit(0.12)])[None, :]
    loss, parts = human_anchored_loss(good, options)
    assert float(loss) == 0.0


def test_loss_punishes_a_negative_above_the_positive_and_miscalibration():
    options = TrainOptions()
    swapped = torch.logit(torch.tensor([[0.1, 0.9]]))
    _, parts = human_anchored_loss(swapped, options)
    assert parts["pairwise"] == pytest.approx(0.9, abs=1e-5)
    # ranked right but both scores far from their anchors: only the pointwise term is non-zero
    shifted = torch.logit(torch.tensor([[0.5, 0.3]]))
    _, parts = human_anchored_loss(shifted, options)
    assert parts["pairwise"] == 0.0 and parts["pointwise"] > 0.0


def test_the_gate_opens_at_the_best_calibrated_score():
    from foveal.rerank.combine import confidence, gate_open

    assert confidence([0.2, 0.7, 0.4]) == 0.7
    assert confidence([]) == 0.0
    assert gate_open([0.2, 0.7], None)
    assert gate_open([0.2, 0.7], 0.7) and not gate_open([0.2, 0.7], 0.71)
    assert not gate_open([], 0.1) and gate_open([], 0.0)
