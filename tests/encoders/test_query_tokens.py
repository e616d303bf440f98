"""The encoder seam gives query stages the token ids and states of the forward pass that made the vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

QUERIES = ["what pulls the tides", "yeast makes the loaf rise because it ferments sugars", "chess"]


def test_without_tokens_nothing_extra(encoder):
    encoded = encoder.encode_queries(QUERIES)
    assert encoded.token_ids is None and encoded.token_states is None and encoded.tokens(0) is None
    with pytest.raises(ValueError):
        encoded.padded()


def test_ids_are_the_tokenizers_with_specials(encoder):
    encoded = encoder.encode_queries(QUERIES, with_tokens=True)
    tokenizer = encoder.model.tokenizer
    for text, ids, states in zip(QUERIES, encoded.token_ids, encoded.token_states):
        assert ids.tolist() == tokenizer(text)["input_ids"]
        assert states.shape == (len(ids), encoder.dimension) and states.dtype == np.float32


def test_states_mean_pool_to_the_returned_vector(encoder):
    """Mean-pooling the returned states (mask all ones: they are unpadded) gives the model's pooled vector before
    normalisation, and normalising it gives the returned vector: the states are those of the same pass."""
    encoded = encoder.encode_queries(QUERIES, with_tokens=True)
    transformer, pooling = encoder.model[0], encoder.model[1]
    for row, (ids, states) in enumerate(zip(encoded.token_ids, encoded.token_states)):
        mask = encoded.attention_mask[row]
        pooled = (states * mask[:, None]).sum(0) / mask.sum()
        with torch.inference_mode():
            features = {"input_ids": torch.from_numpy(ids[None]), "attention_mask": torch.from_numpy(mask[None]),
                        "token_type_ids": torch.zeros(1, len(ids), dtype=torch.long)}
            reference = pooling(transformer(features))["sentence_embedding"][0].numpy()
        np.testing.assert_allclose(pooled, reference, atol=1e-5)
        np.testing.assert_allclose(pooled / np.linalg.norm(pooled), encoded.vectors[row], atol=1e-6)


def test_vectors_do_not_change_when_tokens_are_asked_for(fp32_encoder):
    """With fp32 query passes (``query_quantize: none``): a call that asks for tokens runs the torch model, a plain
    one the fp32 export, and the two agree. (With the default ``mixed`` passes a plain query's vector is the int8
    export's, within about 0.004 of these in 1 - cosine.)"""
    encoder = fp32_encoder
    np.testing.assert_allclose(
        encoder.encode_queries(QUERIES, with_tokens=True).vectors, encoder.encode_queries(QUERIES).vectors, atol=1e-6
    )


def test_padded_batch(encoder):
    encoded = encoder.encode_queries(QUERIES, with_tokens=True)
    ids, mask, states = encoded.padded(pad_id=0)
    width = max(len(i) for i in encoded.token_ids)
    assert ids.shape == mask.shape == (3, width) and states.shape == (3, width, encoder.dimension)
    for row, row_ids in enumerate(encoded.token_ids):
        assert mask[row].sum() == len(row_ids) and ids[row, : len(row_ids)].tolist() == row_ids.tolist()
        assert not states[row, len(row_ids):].any()
    one = encoded.tokens(2)
    assert one.ids.tolist() == encoded.token_ids[2].tolist() and one.attention_mask.tolist() == [1] * len(one.ids)


def test_onnx_backend_runs_torch_when_tokens_are_asked_for(fp32_encoder):
    """The ONNX export returns only the pooled vector; a call that wants tokens must not mix its vector with
    another pass's states, so it runs the torch model for both."""
    from foveal.encoders.sentence_transformer import SentenceTransformerEncoder

    encoder = fp32_encoder

    calls = []

    def onnx_forward(ids, mask):
        calls.append(ids.shape)
        return np.ones((ids.shape[0], encoder.dimension), dtype=np.float32)

    onnx_like = SentenceTransformerEncoder(encoder.config, encoder.loaded)
    onnx_like._onnx = onnx_forward
    with_tokens = onnx_like.encode_queries(QUERIES, with_tokens=True)
    assert calls == []
    np.testing.assert_allclose(with_tokens.vectors, encoder.encode_queries(QUERIES).vectors, atol=1e-6)
    onnx_like.encode_queries(QUERIES)
    assert len(calls) == 1


def test_sentence_spans_pooled_from_the_passage_pass(encoder):
    """One pass over the document: each sentence gets the normalised mean of its own tokens' states, close to (not
    equal to) encoding it on its own; sentences of a document longer than the window all get a vector."""
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import SentenceTransformerEncoder

    text = "The moon raises the sea. Yeast makes bread rise! Lava erupts from volcanoes?"
    [(vectors, spans)] = encoder.encode_sentence_spans([text])
    sentences = [text[a:b] for a, b in spans]
    assert sentences == ["The moon raises the sea.", "Yeast makes bread rise!", "Lava erupts from volcanoes?"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    alone = encoder.encode_queries(sentences).vectors
    similarity = vectors @ alone.T
    assert (np.diag(similarity) > 0.6).all() and (similarity.argmax(axis=1) == np.arange(3)).all()
    # each sentence's vector is its own tokens' mean in the document pass
    [(one, _)] = encoder.encode_sentence_spans([sentences[0]])
    encoded = encoder.encode_queries([sentences[0]], with_tokens=True)
    pooled = encoded.token_states[0][1:-1].mean(0)
    np.testing.assert_allclose(one[0], pooled / np.linalg.norm(pooled), atol=1e-5)

    small = SentenceTransformerEncoder(EncoderConfig(max_seq_length=16, passage_overlap=4), encoder.loaded)
    long_text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(8))
    [(vectors, spans)] = small.encode_sentence_spans([long_text], max_sentences=5)
    assert len(spans) == 5 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
