import numpy as np
import pytest

from foveal.config import EncoderConfig
from foveal.encoders.sentence_transformer import SentenceTransformerEncoder, resolve_model_path
from foveal.errors import ConfigError


def test_queries_match_plain_sentence_transformers(fp32_encoder):
    encoder = fp32_encoder  # fp32 query passes (the default's are mixed int8: test_onnx.py)
    texts = ["what pulls the tides", "a much longer query about baking bread with yeast and flour"]
    ours = encoder.encode_queries(texts).vectors
    plain = encoder.model.encode(texts, normalize_embeddings=True)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, plain, atol=1e-5)


def test_short_document_is_one_passage_equal_to_plain_encoding(encoder):
    text = "Ocean tides\nThe moon raises the sea twice a day."
    (doc,) = encoder.encode_documents([text])
    assert len(doc.passages) == 1
    np.testing.assert_allclose(doc.vectors[0], encoder.model.encode([text], normalize_embeddings=True)[0], atol=1e-5)


def test_long_document_is_segmented_not_truncated(encoder):
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120)]
    text = " ".join(sentences)
    (doc,) = encoder.encode_documents([text])
    assert doc.n_tokens > encoder.max_seq_length
    assert len(doc.passages) >= 3
    assert all(p.n_tokens <= encoder.content_tokens for p in doc.passages)
    assert doc.passages[0].token_start == 0 and doc.passages[-1].token_end == doc.n_tokens
    assert doc.vectors.shape == (len(doc.passages), 384)
    np.testing.assert_allclose(np.linalg.norm(doc.vectors, axis=1), 1.0, atol=1e-5)
    # the last passage really holds the end of the text
    assert text[doc.passages[-1].char_start : doc.passages[-1].char_end].endswith("in some detail.")


def test_batch_order_does_not_change_vectors(encoder):
    texts = ["alpha beta", "gamma " * 50, "delta epsilon zeta"]
    together = encoder.encode_documents(texts)
    alone = [encoder.encode_documents([t])[0] for t in texts]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_long_query_truncation_is_reported(encoder):
    result = encoder.encode_queries(["word " * 400])
    assert result.truncated_tokens[0] == 400 - encoder.content_tokens


def test_unknown_model_is_refused_without_download():
    with pytest.raises(ConfigError, match="never downloads"):
        resolve_model_path("someone/some-model")
    with pytest.raises(ConfigError, match="positions"):
        SentenceTransformerEncoder(EncoderConfig(max_seq_length=1024))


def test_foveal_attention_backend_equals_transformers_sdpa(encoder):
    """The default backend routes every self-attention through foveal.kernels; on the CPU it must agree with
    transformers' own SDPA, padding included."""
    assert encoder.model[0].auto_model.config._attn_implementation == "foveal"
    # both on the torch model: on the CPU, plain query passes run an ONNX export whatever the attention backend
    ours = SentenceTransformerEncoder(EncoderConfig(query_backend="torch"))
    plain = SentenceTransformerEncoder(EncoderConfig(attention="sdpa", query_backend="torch"))
    assert ours.model[0].auto_model.config._attn_implementation == "foveal"
    texts = ["short", "a much longer text about tides, the moon and the sea " * 8, "medium length text here"]
    np.testing.assert_allclose(
        ours.encode_queries(texts).vectors, plain.encode_queries(texts).vectors, atol=1e-5
    )


def test_tempscale_config_folds_the_temperature(fp32_encoder):
    import copy

    from foveal.encoders.tempscale import set_attention_temperature

    encoder = fp32_encoder  # fp32 query passes, compared with the torch model to float rounding below
    texts = ["a long text about tides and the moon " * 10, "bread and yeast"]
    same = SentenceTransformerEncoder(EncoderConfig(attention_temperature=1.0, query_quantize="none"))
    np.testing.assert_array_equal(same.encode_queries(texts).vectors, encoder.encode_queries(texts).vectors)

    cooled = SentenceTransformerEncoder(EncoderConfig(attention_temperature=0.8, query_quantize="none"))
    folded = cooled.encode_queries(texts).vectors
    assert np.abs(folded - encoder.encode_queries(texts).vectors).max() > 1e-3
    reference = copy.deepcopy(encoder.model)
    set_attention_temperature(reference, 0.8)  # the unfolded form, on transformers' own scaling
    unfolded = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(folded, unfolded, atol=1e-5)


def test_bad_temperature_and_index_signature():
    from foveal.config import IndexConfig
    from foveal.errors import IncompatibleIndexError

    with pytest.raises(ConfigError, match="attention_temperature"):
        IndexConfig.parse({"encoder": {"attention_temperature": 0}})
    with pytest.raises(IncompatibleIndexError, match="attention_temperature"):
        IndexConfig.parse({"encoder": {"attention_temperature": 0.9}}).check_compatible(IndexConfig(), "x")
    IndexConfig.parse({"encoder": {"attention": "eager"}}).check_compatible(IndexConfig(), "x")  # runtime only
