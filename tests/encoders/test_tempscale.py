"""TempScale on the real all-MiniLM-L6-v2: identity at τ = 1, sharper attention below 1, folded == unfolded."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from foveal.encoders.tempscale import (
    attention_entropy,
    fold_attention_temperature,
    mean_pairwise_cosine,
    self_attention_modules,
    set_attention_temperature,
)
from foveal.errors import ConfigError, InvalidInputError

TEXTS = [
    "The gravitational pull of the moon raises the sea twice a day.",
    "Yeast ferments sugars in dough and releases carbon dioxide, so the loaf rises.",
    "Chess",
]
PER_HEAD = torch.linspace(0.6, 1.2, 12)


@pytest.fixture()
def model(encoder):
    """A private copy: the session encoder must stay unpatched."""
    return copy.deepcopy(encoder.model)


@pytest.fixture()
def batch(encoder):
    return encoder.model.tokenizer(TEXTS, padding=True, return_tensors="pt")


def run(model, batch):
    """Token states and sentence embeddings (the model's own pooling and normalisation)."""
    with torch.no_grad():
        out = model(dict(batch))
    return out["token_embeddings"], out["sentence_embedding"]


def test_finds_the_six_self_attentions(model):
    modules = self_attention_modules(model)
    assert len(modules) == 6
    assert all(type(module).__name__ == "BertSelfAttention" for _, module in modules)
    assert all(hasattr(module, "scaling") for _, module in modules)  # the attribute the unfolded form relies on


@pytest.mark.parametrize("apply", [set_attention_temperature, fold_attention_temperature], ids=["unfolded", "folded"])
def test_temperature_one_leaves_outputs_unchanged(model, batch, encoder, apply):
    before = run(encoder.model, batch)
    apply(model, 1.0)
    after = run(model, batch)
    for expected, actual in zip(before, after):
        assert torch.equal(expected, actual)


def test_unfolded_temperature_is_absolute_and_reversible(model, batch, encoder):
    set_attention_temperature(model, 0.5)
    assert not torch.allclose(run(model, batch)[1], run(encoder.model, batch)[1], atol=1e-4)
    set_attention_temperature(model, 1.0)
    assert torch.equal(run(model, batch)[1], run(encoder.model, batch)[1])


def test_attention_entropy_falls_as_temperature_falls(encoder, batch):
    entropies = []
    for tau in (1.5, 1.0, 0.8, 0.5):
        patched = set_attention_temperature(copy.deepcopy(encoder.model), tau)
        entropies.append(attention_entropy(patched, batch))
    assert entropies[0].shape == (6, 12)
    means = [float(e.mean()) for e in entropies]
    assert means == sorted(means, reverse=True) and means[0] > means[-1] + 0.1
    # layer by layer too (averaged over heads)
    per_layer = torch.stack([e.mean(dim=1) for e in entropies])
    assert bool((per_layer[:-1] > per_layer[1:]).all())


def test_attention_entropy_restores_the_attention_backend(model, batch):
    before = model[0].auto_model.config._attn_implementation
    attention_entropy(model, batch)
    assert model[0].auto_model.config._attn_implementation == before


@pytest.mark.parametrize("tau", [0.7, 1.3])
def test_folded_equals_unfolded(encoder, batch, tau):
    unfolded = set_attention_temperature(copy.deepcopy(encoder.model), tau)
    folded = fold_attention_temperature(copy.deepcopy(encoder.model), tau)
    for a, b in zip(run(unfolded, batch), run(folded, batch)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert not torch.allclose(run(folded, batch)[1], run(encoder.model, batch)[1], atol=1e-4)


def test_folded_equals_unfolded_per_head(encoder, batch):
    unfolded = copy.deepcopy(encoder.model)
    unfolded[0].auto_model.set_attn_implementation("eager")  # a tensor scaling needs the eager backend
    set_attention_temperature(unfolded, PER_HEAD)
    folded = fold_attention_temperature(copy.deepcopy(encoder.model), PER_HEAD)  # any backend (sdpa here)
    for a, b in zip(run(unfolded, batch), run(folded, batch)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # one τ for every head is the scalar case
    uniform = fold_attention_temperature(copy.deepcopy(encoder.model), torch.full((12,), 0.8))
    scalar = fold_attention_temperature(copy.deepcopy(encoder.model), 0.8)
    assert torch.equal(run(uniform, batch)[1], run(scalar, batch)[1])


def test_per_head_unfolded_needs_eager(model):
    assert model[0].auto_model.config._attn_implementation != "eager"
    with pytest.raises(ConfigError, match="eager"):
        set_attention_temperature(model, PER_HEAD)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), [1.0, 0.9]])
def test_rejects_bad_temperatures(model, bad):
    with pytest.raises(ConfigError):
        fold_attention_temperature(model, bad)


def test_rejects_a_model_without_self_attention():
    with pytest.raises(ConfigError, match="no self-attention"):
        fold_attention_temperature(torch.nn.Linear(4, 4), 0.9)


UNRELATED = [
    "The moon raises the tides of the ocean twice a day and sailors plan around them.",
    "Yeast ferments sugar in the dough, releasing gas that makes bread rise in the oven.",
    "The Sicilian Defence answers the king's pawn with the c-pawn in many chess games.",
    "Magma rises through cracks in the crust and erupts from volcanoes as lava and ash.",
    "Compilers translate source code into machine instructions through several passes.",
    "Migrating birds navigate thousands of kilometres using the earth's magnetic field.",
]


def test_long_texts_collapse_and_a_lower_temperature_spreads_them(encoder):
    """The paper's effect: unrelated long texts embed closer together than short ones; τ < 1 pushes them apart."""
    long_texts = [" ".join([text] * 12) for text in UNRELATED]  # about 200 tokens each
    short = mean_pairwise_cosine(encoder.model.encode(UNRELATED))
    long = mean_pairwise_cosine(encoder.model.encode(long_texts))
    sharpened = fold_attention_temperature(copy.deepcopy(encoder.model), 0.8)
    long_sharpened = mean_pairwise_cosine(sharpened.encode(long_texts))
    assert long > short
    assert long_sharpened < long


class TestMeanPairwiseCosine:
    def test_known_values(self):
        assert mean_pairwise_cosine(np.eye(3)) == pytest.approx(0.0)
        assert mean_pairwise_cosine(np.ones((4, 5)) * [[1.0], [2.0], [3.0], [4.0]]) == pytest.approx(1.0)
        assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)

    def test_rejects_too_few_rows_and_zero_vectors(self):
        with pytest.raises(InvalidInputError):
            mean_pairwise_cosine(np.ones((1, 3)))
        with pytest.raises(InvalidInputError):
            mean_pairwise_cosine(np.zeros((2, 3)))
