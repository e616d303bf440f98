"""Paraformer: the invariants of METHODS.md section 4, the rerank stage on the tiny index, training on a tiny sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foveal.errors import ConfigError
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline
from foveal.rerank.paraformer import (
    EncodeSentences, ParaformerExample, ParaformerHead, ParaformerReranker, ParaformerSettings, SentenceVectors,
    sparsemax, split_sentences, train_head,
)

HIDDEN = 16


def _head(seed: int = 0) -> ParaformerHead:
    torch.manual_seed(seed)
    return ParaformerHead(ParaformerSettings(hidden_size=HIDDEN)).eval()


def test_sparsemax_known_value():
    assert sparsemax(torch.tensor([1.0, 0.5, -1.0])).tolist() == [0.75, 0.25, 0.0]


@pytest.mark.parametrize("seed", range(5))
def test_sparsemax_is_a_distribution(seed):
    scores = torch.randn(4, 9, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
    out = sparsemax(scores)
    assert bool((out >= 0).all())
    torch.testing.assert_close(out.sum(-1), torch.ones(4))
    # along another dimension too
    torch.testing.assert_close(sparsemax(scores, dim=0).sum(0), torch.ones(9))


def test_sparsemax_mask_zeroes_padding_and_matches_the_unpadded():
    scores = torch.tensor([[0.3, 0.2, 9.0, 9.0]])
    mask = torch.tensor([[True, True, False, False]])
    out = sparsemax(scores, mask=mask)
    assert out[0, 2:].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out[:, :2], sparsemax(scores[:, :2]))


def _document(n: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, HIDDEN, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_one_sentence_document_attends_fully():
    head = _head()
    query = _document(1, 1)
    with torch.no_grad():
        _, attention = head(query, _document(1, 2)[None])
    assert attention.tolist() == [[1.0]]


def test_score_does_not_depend_on_sentence_order():
    head = _head(3)
    query, sentences = _document(1, 4), _document(7, 5)
    permutation = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        score, attention = head.score(query, sentences[None] * 3)
        shuffled, shuffled_attention = head.score(query, sentences[permutation][None] * 3)
    torch.testing.assert_close(score, shuffled, rtol=0, atol=1e-6)
    torch.testing.assert_close(attention[0, permutation], shuffled_attention[0])


def test_padding_does_not_change_a_score():
    head = _head(2)
    query = _document(1, 6)
    short, long = _document(2, 7), _document(5, 8)
    from foveal.rerank.paraformer import pad_sentences

    padded, mask = pad_sentences([short.numpy(), long.numpy()], HIDDEN)
    with torch.no_grad():
        together, _ = head.score(query.expand(2, -1), padded, mask)
        alone, _ = head.score(query, short[None])
    torch.testing.assert_close(together[0], alone[0])


def test_checkpoint_reloads_to_identical_scores(tmp_path):
    head = _head(9)
    head.settings.weights = {"first_stage": 0.7, "paraformer": 0.3}
    query, sentences = _document(1, 10), _document(4, 11)
    head.save(tmp_path / "p")
    again = ParaformerHead.load(tmp_path / "p")
    assert again.settings == head.settings
    with torch.no_grad():
        assert torch.equal(head.score(query, sentences[None])[0], again.score(query, sentences[None])[0])
    with pytest.raises(ConfigError, match="not a Paraformer checkpoint"):
        ParaformerHead.load(tmp_path)
    (tmp_path / "p" / "paraformer.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ConfigError, match="do not fit"):
        ParaformerHead.load(tmp_path / "p")


def test_split_sentences_caps():
    assert split_sentences("One. Two words here! Three?\nFour", 3) == ["One.", "Two words here!", "Three?"]


# -- with the real (frozen) encoder ------------------------------------------------------------------------------
def test_frozen_encoder_gets_no_gradient_and_the_head_learns(encoder):
    examples = [
        ParaformerExample("moon and tides", ["The moon pulls the sea.", "Tides rise twice a day."], 1),
        ParaformerExample("moon and tides", ["Yeast ferments sugar.", "Bread rises."], 0),
    ]
    before = {name: p.detach().clone() for name, p in encoder.model.named_parameters()}
    head, losses = train_head(encoder, examples, epochs=10, learning_rate=1e-3)
    assert len(losses) == 10 and losses[-1] < losses[0]
    for name, parameter in encoder.model.named_parameters():
        assert parameter.grad is None, name
        assert torch.equal(parameter, before[name]), name
    # and gradients do reach the head through a forward pass on the encoder's vectors
    head.train()
    sentences = torch.from_numpy(encoder.encode_queries(examples[0].sentences).vectors)[None]
    query = torch.from_numpy(encoder.encode_queries([examples[0].query]).vectors)
    head(query, sentences)[0][:, 1].sum().backward()
    assert head.linear_in.weight.grad is not None and head.linear_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.model.parameters())


def test_reranker_records_the_attended_sentences(tiny, encoder):
    torch.manual_seed(0)
    head = ParaformerHead(ParaformerSettings(hidden_size=encoder.dimension, window=4))
    stage = ParaformerReranker(head)
    response = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="moon tides sea", k=6))
    assert len(response.hits) == 6
    scores = [h.score for h in response.hits]
    assert scores == sorted(scores, reverse=True)
    rescored = [h for h in response.hits if "sentences" in h.evidence["paraformer"]]
    assert len(rescored) == 4
    for hit in rescored:
        evidence = hit.evidence["paraformer"]
        sentences = split_sentences(hit.title + "\n" + hit.text, 64)
        assert sum(s["weight"] for s in evidence["sentences"]) == pytest.approx(1.0, abs=1e-5)
        for s in evidence["sentences"]:
            assert s["weight"] > 0 and sentences[s["index"]] == s["text"]
    skipped = [h for h in response.hits if "skipped" in h.evidence["paraformer"]]
    assert len(skipped) == 2 and all(h.evidence["paraformer"]["skipped"] == "outside the rerank window" for h in skipped)


def test_reranker_from_a_provider_and_a_checkpoint(tiny, encoder, tmp_path):
    """A custom provider (what the store will be) is what the stage attends over; a reloaded checkpoint gives the
    same scores."""
    torch.manual_seed(1)
    head = ParaformerHead(ParaformerSettings(hidden_size=encoder.dimension))
    head.save(tmp_path / "ckpt")
    calls = []
    faithful = EncodeSentences(encoder)

    def provider(collection, keys):
        calls.append(list(keys))
        return faithful(collection, keys)

    def run(stage):
        hits = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="yeast bread", k=3)).hits
        return [(h.id, h.score) for h in hits]

    first = run(ParaformerReranker(head, provider=provider))
    assert calls and len(calls[0]) == 6  # the tiny index has 6 documents, all in the window of 10
    assert run(ParaformerReranker.from_checkpoint(tmp_path / "ckpt")) == first


def test_one_sentence_provider_document_attends_fully(encoder):
    head = ParaformerHead(ParaformerSettings(hidden_size=encoder.dimension))
    stage = ParaformerReranker(head, encoder=encoder)
    vectors = encoder.encode_queries(["Only one sentence here.", "query"]).vectors
    [(score, attention)] = stage.score_documents(vectors[1], [SentenceVectors(vectors[:1], ["Only one sentence here."])])
    np.testing.assert_allclose(attention, [1.0], atol=1e-6)  # a softmax over one sentence, to float rounding
    assert np.isfinite(score)


def test_reranker_over_pooled_sentence_spans(tiny, encoder):
    from foveal.rerank.paraformer import PoolSentenceSpans

    torch.manual_seed(2)
    head = ParaformerHead(ParaformerSettings(hidden_size=encoder.dimension, window=3))
    stage = ParaformerReranker(head, provider=PoolSentenceSpans(encoder))
    hits = SearchPipeline(tiny, rerankers=[stage]).search(SearchRequest(query="magma and lava", k=3)).hits
    for hit in hits:
        sentences = split_sentences(hit.title + "\n" + hit.text, 64)
        attended = hit.evidence["paraformer"]["sentences"]
        assert attended and all(sentences[s["index"]] == s["text"] for s in attended)
