"""X-Pool's invariants (METHODS.md section 5): shape, frame-order invariance, text-independence on identical frames,
the identity-initialisation equations to 1e-5, cosine range, checkpoint round trip, and a short InfoNCE run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foveal.rerank.xpool import LOGIT_SCALE_MAX, XPool, XPoolSettings, XPoolTrainOptions, pad_frames, train_xpool

D = 16


def _model(dim: int = D, heads: int = 1, seed: int = 0) -> XPool:
    torch.manual_seed(seed)
    return XPool(XPoolSettings(dim=dim, heads=heads)).eval()


def _perturbed(model: XPool, seed: int = 1) -> XPool:
    """Weights away from the identity, so invariances are not an artefact of the initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def test_shapes_and_cosine_range():
    model = _model()
    text, frames = torch.randn(3, D), torch.randn(4, 6, D)
    pooled, attention = model(text, frames)
    assert pooled.shape == (4, 3, D) and attention.shape == (4, 3, 6)
    assert torch.allclose(attention.sum(-1), torch.ones(4, 3), atol=1e-6)
    sims, _ = model.similarity(text, frames)
    assert sims.shape == (3, 4) and bool(((sims >= -1 - 1e-6) & (sims <= 1 + 1e-6)).all())


@pytest.mark.parametrize("heads", [1, 4])
def test_output_invariant_to_frame_order(heads):
    model = _perturbed(_model(heads=heads))
    text, frames = torch.randn(2, D), torch.randn(3, 7, D)
    permutation = torch.randperm(7)
    pooled, attention = model(text, frames)
    pooled_p, attention_p = model(text, frames[:, permutation])
    assert torch.allclose(pooled, pooled_p, atol=1e-5)
    assert torch.allclose(attention[..., permutation], attention_p, atol=1e-6)  # the weights follow their frames


def test_identical_frames_give_a_text_independent_pooled_vector():
    model = _perturbed(_model())
    frame = torch.randn(D)
    frames = frame.expand(2, 5, D).clone()
    pooled, _ = model(torch.randn(6, D) * 3, frames)
    assert torch.allclose(pooled, pooled[:, :1].expand_as(pooled), atol=1e-5)


def test_identity_initialisation_equations_hold():
    """At identity init, eval, one head: y = LN3(2·LN2(Σ_f softmax_f(LN1(t)·LN1(F_f)/√D) LN1(F_f)))."""
    model = _model()
    # LayerNorms away from their defaults too: the equation names them, whatever their parameters
    with torch.no_grad():
        for norm in (model.layer_norm1, model.layer_norm2, model.layer_norm3):
            norm.weight.add_(0.2 * torch.randn(D))
            norm.bias.add_(0.2 * torch.randn(D))
    text, frames = torch.randn(3, D), torch.randn(2, 5, D)
    pooled, attention = model(text, frames)
    t_hat, f_hat = model.layer_norm1(text), model.layer_norm1(frames)
    a = torch.softmax(torch.einsum("td,vfd->vtf", t_hat, f_hat) / math.sqrt(D), dim=-1)
    r = torch.einsum("vtf,vfd->vtd", a, f_hat)
    expected = model.layer_norm3(2 * model.layer_norm2(r))
    assert (pooled - expected).abs().max() < 1e-5
    assert (attention - a).abs().max() < 1e-6
    sims, _ = model.similarity(text, frames)
    cos = torch.einsum("td,vtd->tv", F.normalize(text, dim=-1), F.normalize(expected, dim=-1))
    assert (sims - cos).abs().max() < 1e-5
    # and it is not mean pooling
    mean = frames.mean(dim=1)
    assert not torch.allclose(F.normalize(pooled[:, 0], dim=-1), F.normalize(mean, dim=-1), atol=1e-2)


def test_padding_is_masked_out():
    model = _perturbed(_model())
    text = torch.randn(1, D)
    short, long = np.random.default_rng(0).normal(size=(3, D)), np.random.default_rng(1).normal(size=(7, D))
    frames, mask = pad_frames([short, long], D)
    together, _ = model.similarity(text, frames, mask)
    alone, _ = model.similarity(text, torch.from_numpy(short).float()[None])
    assert torch.allclose(together[:, 0], alone[:, 0], atol=1e-5)
    with pytest.raises(ValueError):
        pad_frames([np.zeros((0, D))], D)


def test_checkpoint_reloads_to_identical_scores(tmp_path):
    model = _perturbed(_model())
    text, frames = torch.randn(2, D), torch.randn(3, 4, D)
    model.save(tmp_path / "m")
    loaded = XPool.load(tmp_path / "m")
    assert loaded.settings == model.settings
    assert torch.equal(model.similarity(text, frames)[0], loaded.similarity(text, frames)[0])


def test_training_lowers_the_loss_and_clamps_the_scale():
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(int(rng.integers(2, 6)), D)).astype(np.float32) for _ in range(24)]
    # the text is a noisy copy of one of its item's frames: learnable, and not the mean
    texts = np.stack([f[0] + 0.1 * rng.normal(size=D) for f in items]).astype(np.float32)
    options = XPoolTrainOptions(epochs=6, batch_size=8, learning_rate=3e-3, threads=1)
    model, record = train_xpool(texts, items, options)
    losses = [e["loss"] for e in record["epochs"]]
    assert losses[-1] < losses[0]
    assert float(model.logit_scale.detach()) <= LOGIT_SCALE_MAX + 1e-6
    assert not model.training


def test_reranker_on_a_text_index_attends_over_passage_vectors(tiny):
    """Without frames, a document's set is its passage vectors; the stage runs when the request switches it on."""
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline
    from foveal.rerank.xpool import XPoolReranker

    stage = XPoolReranker(_model(dim=tiny.dimension), window=3, enabled=False)
    pipeline = SearchPipeline(tiny, rerankers=[stage])
    off = pipeline.search(SearchRequest(query="moon and sea", k=5))
    assert all("xpool" not in h.evidence for h in off.hits)
    on = pipeline.search(SearchRequest(query="moon and sea", k=5, stages={"xpool": True}))
    rescored = [h for h in on.hits if "score" in h.evidence["xpool"]]
    assert len(rescored) == 3 and all(h.evidence["xpool"]["attention"][0]["weight"] == 1.0 for h in rescored)
    assert [h.score for h in on.hits] == sorted((h.score for h in on.hits), reverse=True)
    assert on.hits[3].evidence["xpool"]["skipped"] == "outside the rerank window"


def test_weight_combines_z_scores_with_the_first_stage(tiny):
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline
    from foveal.rerank.xpool import XPoolReranker, combined_scores

    assert combined_scores([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 0.0) == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert combined_scores([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 0.5) == [0.0, 0.0, 0.0]
    stage = XPoolReranker(_perturbed(_model(dim=tiny.dimension)), window=4, weight=0.0)
    hits = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="moon and sea", k=6)).hits
    plain = SearchPipeline(tiny, rerankers=[]).search(SearchRequest(query="moon and sea", k=6)).hits
    assert [h.id for h in hits] == [h.id for h in plain]  # weight 0: the first stage's order, X-Pool recorded
    assert all(h.evidence["xpool"]["weight"] == 0.0 for h in hits[:4])
