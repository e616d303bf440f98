"""LexSemBridge: the invariants of METHODS.md section 1 on small modules, then the stage on the real encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foveal.encoders.lexsem import LexSemBridge, LexSemBridgeStage, LexSemConfig, Paradigm
from foveal.errors import ConfigError

VOCAB, HIDDEN = 40, 8
CLS, SEP, PAD, UNK = 1, 2, 0, 3


def _bridge(paradigm: str, seed: int = 0, **overrides) -> LexSemBridge:
    torch.manual_seed(seed)
    config = LexSemConfig(paradigm=paradigm, vocab_size=VOCAB, hidden_size=HIDDEN, cls_id=CLS, pad_id=PAD,
                          unk_id=UNK, **overrides)
    return LexSemBridge(config).eval()


def _batch(seed: int = 0):
    """Two padded queries with a repeated token, an UNK and padding."""
    ids = torch.tensor([[CLS, 7, 9, 7, UNK, SEP, PAD, PAD], [CLS, 12, 9, 30, 30, 11, 5, SEP]])
    mask = (ids != PAD).long()
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(2, ids.shape[1], HIDDEN, generator=generator)
    embedding = torch.randn(2, HIDDEN, generator=generator)
    return ids, mask, states, embedding


@pytest.mark.parametrize("paradigm", [p.value for p in Paradigm])
def test_zero_modulation_returns_the_plain_embedding_exactly(paradigm):
    bridge = _bridge(paradigm)
    with torch.no_grad():
        bridge.modulation.weight.zero_()
        bridge.modulation.bias.zero_()
    ids, mask, states, embedding = _batch()
    out = bridge(embedding, ids, mask, states)
    assert torch.equal(out["embedding"], torch.nn.functional.normalize(embedding, dim=-1))
    assert torch.allclose(out["weights"], torch.full((2, HIDDEN), 1 / HIDDEN))


@pytest.mark.parametrize("paradigm", [p.value for p in Paradigm])
def test_weights_positive_sum_to_one_and_output_unit(paradigm):
    bridge = _bridge(paradigm, seed=4)
    ids, mask, states, embedding = _batch(1)
    with torch.no_grad():
        out = bridge(embedding, ids, mask, states)
    assert bool((out["weights"] > 0).all())
    torch.testing.assert_close(out["weights"].sum(-1), torch.ones(2))
    torch.testing.assert_close(out["embedding"].norm(dim=-1), torch.ones(2))
    # the modulation really is normalize(z ⊙ e_q), computed the plain way
    torch.testing.assert_close(out["embedding"], torch.nn.functional.normalize(out["weights"] * embedding, dim=-1))


def test_slr_is_s_at_the_unique_non_special_ids():
    bridge = _bridge("slr", scale=0.7)
    ids, mask, _, _ = _batch()
    with torch.no_grad():
        w = bridge.vocabulary_vector(ids, mask)
    for row in range(2):
        present = {int(t) for t, a in zip(ids[row], mask[row]) if a} - {CLS, PAD, UNK}
        assert SEP in present  # SEP is not excluded, as in the release
        expected = torch.zeros(VOCAB)
        expected[sorted(present)] = 0.7
        assert torch.allclose(w[row], expected), row


def test_slr_scale_is_learnable_and_keeps_specials_without_ignore():
    bridge = _bridge("slr", ignore_special_tokens=False)
    ids, mask, _, _ = _batch()
    w = bridge.vocabulary_vector(ids, mask)
    assert w[0, CLS] == 1.0 and w[0, UNK] == 1.0
    w.sum().backward()
    assert bridge.scale.grad is not None and bridge.scale.grad != 0


def test_llr_is_the_max_relu_over_positions_and_zero_at_specials():
    bridge = _bridge("llr", seed=2)
    ids, mask, states, _ = _batch(3)
    with torch.no_grad():
        w = bridge.vocabulary_vector(ids, mask, states)
        u = torch.relu(states @ bridge.sparse_linear.weight[0] + bridge.sparse_linear.bias[0])  # (B, L)
    for row in range(2):
        expected = torch.zeros(VOCAB)
        for position, token in enumerate(ids[row].tolist()):
            expected[token] = max(expected[token], u[row, position])
        expected[[CLS, PAD, UNK]] = 0
        torch.testing.assert_close(w[row], expected)
    assert (w[0] > 0).sum() >= 1 and w[0, 7] == max(u[0, 1], u[0, 3])


def test_clr_is_log1p_relu_of_the_cls_logits():
    bridge = _bridge("clr", seed=5)
    ids, mask, states, _ = _batch(2)
    with torch.no_grad():
        w = bridge.vocabulary_vector(ids, mask, states)
        logits = bridge.mlm_head(states[:, 0])
    torch.testing.assert_close(w, torch.log1p(torch.relu(logits)))
    assert bool((w >= 0).all())


@pytest.mark.parametrize("paradigm", [p.value for p in Paradigm])
def test_checkpoint_reloads_to_identical_scores(paradigm, tmp_path):
    bridge = _bridge(paradigm, seed=7)
    ids, mask, states, embedding = _batch(4)
    bridge.save(tmp_path / "ckpt")
    again = LexSemBridge.load(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(bridge(embedding, ids, mask, states)["embedding"],
                           again(embedding, ids, mask, states)["embedding"])
    # a torch state dict beside the config loads to the same module
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "lexsem.json").write_text((tmp_path / "ckpt" / "lexsem.json").read_text())
    torch.save(bridge.state_dict(), tmp_path / "pt" / "lexsem.pt")
    from_pt = LexSemBridge.load(tmp_path / "pt")
    with torch.no_grad():
        assert torch.equal(bridge(embedding, ids, mask, states)["embedding"],
                           from_pt(embedding, ids, mask, states)["embedding"])


def test_bad_config_and_checkpoint_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="allowed: slr, llr, clr"):
        LexSemConfig(paradigm="dense")
    with pytest.raises(ConfigError, match="unknown keys"):
        LexSemConfig.from_dict({"paradigm": "slr", "colour": 1})
    with pytest.raises(ConfigError, match="lexsem.json"):
        LexSemBridge.load(tmp_path)
    _bridge("slr").save(tmp_path / "slr")
    (tmp_path / "slr" / "lexsem.json").write_text('{"paradigm": "llr", "vocab_size": 40, "hidden_size": 8}')
    with pytest.raises(ConfigError, match="do not fit"):
        LexSemBridge.load(tmp_path / "slr")


# -- the stage on the real encoder ------------------------------------------------------------------------------
QUERIES = ["gravitational pull of the moon", "yeast dough rises"]


@pytest.mark.parametrize("paradigm", [p.value for p in Paradigm])
def test_stage_with_zero_weights_returns_the_encoders_vector(encoder, paradigm):
    bridge = LexSemBridge.for_encoder(encoder.model, paradigm)
    with torch.no_grad():
        bridge.modulation.weight.zero_()
        bridge.modulation.bias.zero_()
    stage = LexSemBridgeStage(bridge, tokenizer=encoder.model.tokenizer)
    encoded = encoder.encode_queries(QUERIES, with_tokens=True)
    for row in range(len(QUERIES)):
        vector, evidence = stage.apply(None, encoded.vectors[row], encoded.tokens(row))
        np.testing.assert_array_equal(vector, encoded.vectors[row])
        assert evidence["paradigm"] == paradigm
        assert all(d["weight"] == pytest.approx(1.0) for d in evidence["dimensions"])


def test_stage_evidence_names_the_query_tokens(encoder):
    bridge = LexSemBridge.for_encoder(encoder.model, "slr")
    stage = LexSemBridgeStage(bridge, tokenizer=encoder.model.tokenizer, top=4)
    encoded = encoder.encode_queries(QUERIES[:1], with_tokens=True)
    vector, evidence = stage.apply(None, encoded.vectors[0], encoded.tokens(0))
    assert stage.needs_tokens
    assert abs(np.linalg.norm(vector) - 1) < 1e-6 and not np.allclose(vector, encoded.vectors[0], atol=1e-4)
    names = {t["token"] for t in evidence["tokens"]}
    assert len(evidence["tokens"]) == 4 and names <= {"gravitational", "pull", "of", "the", "moon", "[SEP]"}
    assert len(evidence["dimensions"]) == 4
    same, skipped = stage.apply(None, encoded.vectors[0], None)
    assert np.array_equal(same, encoded.vectors[0]) and skipped == {"skipped": "the encoder gave no query tokens"}


def test_stage_in_the_pipeline(engine, encoder):
    """Zero weights leave dense search unchanged; trained-looking weights change the query and say how."""
    from foveal.config import IndexConfig
    from foveal.documents import parse_document
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline
    from tests.conftest import TINY_CORPUS

    # fp32 query passes: a query that wants token states runs the torch model, and the default (mixed int8) plain
    # query would differ from it by the quantization, not by the stage
    tiny = engine.create_index("tiny", IndexConfig.parse({"encoder": {"query_quantize": "none"}}))
    tiny.upsert([parse_document(d) for d in TINY_CORPUS])
    tiny.flush()

    request = SearchRequest(query="moon and the sea", pipeline="dense", k=6)
    plain = SearchPipeline(tiny, rerankers=[]).search(request)
    bridge = LexSemBridge.for_encoder(encoder.model, "slr")
    with torch.no_grad():
        bridge.modulation.weight.zero_()
        bridge.modulation.bias.zero_()
    stage = LexSemBridgeStage(bridge, tokenizer=encoder.model.tokenizer)
    same = SearchPipeline(tiny, query_stages=[stage], rerankers=[]).search(request)
    # the same ranking; scores to float rounding (a query that wants token states runs the torch model, a plain one
    # the fp32 ONNX export of encoder.query_backend: the two agree to about 1e-7)
    assert [h.id for h in same.hits] == [h.id for h in plain.hits]
    assert np.allclose([h.score for h in same.hits], [h.score for h in plain.hits], atol=1e-5)
    assert same.query_info["stages"]["lexsem"]["paradigm"] == "slr"
    with torch.no_grad():
        bridge.modulation.weight.normal_(0, 5.0, generator=torch.Generator().manual_seed(0))
    moved = SearchPipeline(tiny, query_stages=[stage], rerankers=[]).search(request)
    assert [h.score for h in moved.hits] != [h.score for h in plain.hits]
