"""The ONNX Runtime backend: same vectors as torch (fp32), close ones (int8), cached exports, config checks."""

from __future__ import annotations

import numpy as np
import pytest

from foveal.config import EncoderConfig, IndexConfig
from foveal.errors import ConfigError, IncompatibleIndexError

from tests.conftest import TINY_CORPUS

DOCS = [
    "The gravitational pull of the moon raises the sea twice a day. Spring tides come at new and full moon.",
    "Yeast ferments sugars in dough and releases carbon dioxide, so the loaf rises.",
    "Chess",
    # long enough for two passages with the default 256-token window
    " ".join(f"Sentence {i} says that magma rises through cracks in the crust and erupts as lava." for i in range(40)),
]
QUERIES = ["what pulls the tides", "how does bread rise", "volcano"]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def onnx_fp32(onnx_cache):
    from foveal.encoders.sentence_transformer import get_encoder

    return get_encoder(EncoderConfig(backend="onnx", onnx_cache=str(onnx_cache)))


@pytest.fixture(scope="session")
def onnx_int8(onnx_cache):
    from foveal.encoders.sentence_transformer import get_encoder

    # max_seq_length as an index resolves it, so that the engine test below reuses this loaded model
    return get_encoder(EncoderConfig(backend="onnx", quantize="int8", onnx_cache=str(onnx_cache), max_seq_length=256))


def _rows(encoded):
    return np.concatenate([d.vectors for d in encoded])


def test_onnx_fp32_matches_torch(fp32_encoder, onnx_fp32):
    encoder = fp32_encoder
    theirs, ours = encoder.encode_documents(DOCS), onnx_fp32.encode_documents(DOCS)
    assert [d.passages for d in ours] == [d.passages for d in theirs]  # same segmentation
    assert len(ours[3].passages) >= 2
    cosines = (_rows(ours) * _rows(theirs)).sum(axis=1)
    assert cosines.min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(_rows(ours), axis=1), 1.0, atol=1e-5)
    queries = (onnx_fp32.encode_queries(QUERIES).vectors * encoder.encode_queries(QUERIES).vectors).sum(axis=1)
    assert queries.min() > 0.9999


def test_onnx_int8_is_close_but_not_identical(encoder, onnx_int8):
    theirs, ours = _rows(encoder.encode_documents(DOCS)), _rows(onnx_int8.encode_documents(DOCS))
    cosines = (ours * theirs).sum(axis=1)
    # during development, on 64 SciFact abstracts (256 tokens): min 0.990, mean 0.994 (per-channel int8 weights)
    assert cosines.min() > 0.97
    assert cosines.max() < 0.99999  # really quantized, not the fp32 graph again


def test_int8_keeps_the_ranking(onnx_int8):
    scores = onnx_int8.encode_queries(QUERIES).vectors @ _rows(onnx_int8.encode_documents(DOCS[:2] + DOCS[3:])).T
    # tides -> doc 0, bread -> doc 1, volcano -> one of the two magma passages
    assert list(scores.argmax(axis=1)[:2]) == [0, 1]
    assert scores[2].argmax() >= 2


def test_export_is_cached_and_keyed_by_options(onnx_fp32, onnx_int8, onnx_cache):
    from foveal.encoders.onnx_backend import OnnxForward

    assert onnx_fp32._onnx.path.parent == onnx_cache
    assert onnx_fp32._onnx.path != onnx_int8._onnx.path
    before = {p.name: p.stat().st_mtime_ns for p in onnx_cache.iterdir()}
    assert not [name for name in before if name.endswith(".tmp")]  # atomic: no leftovers
    again = OnnxForward(onnx_fp32.model, cache_dir=onnx_cache)
    assert again.path == onnx_fp32._onnx.path
    assert {p.name: p.stat().st_mtime_ns for p in onnx_cache.iterdir()} == before  # reused, not exported again


def test_tempscale_temperature_changes_the_cache_key(onnx_fp32):
    import copy

    from foveal.encoders.onnx_backend import cache_key
    from foveal.encoders.tempscale import fold_attention_temperature

    model = copy.deepcopy(onnx_fp32.model)
    plain = cache_key(model, quantize="none", optimize=True)
    assert cache_key(model, quantize="none", optimize=True) == plain  # deterministic
    assert cache_key(model, quantize="int8", optimize=True) != plain
    assert cache_key(model, quantize="none", optimize=False) != plain
    fold_attention_temperature(model, 0.8)  # τ is folded into the weights before export: another file
    assert cache_key(model, quantize="none", optimize=True) != plain


def test_engine_builds_and_searches_an_onnx_index(engine, onnx_cache, onnx_int8):
    from foveal.documents import parse_document
    from foveal.pipeline.request import SearchRequest

    config = {"encoder": {"backend": "onnx", "quantize": "int8", "onnx_cache": str(onnx_cache)}}
    collection = engine.create_index("quantized", config)
    assert collection.encoder.model is onnx_int8.model  # the model loaded once per model config, export cached
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    collection.flush()
    hits = engine.pipeline("quantized").search(SearchRequest(query="why does the sea rise", pipeline="dense")).hits
    assert hits[0].id == "tides"


@pytest.mark.parametrize(
    ("encoder_config", "message"),
    [
        ({"quantize": "int8"}, "needs backend 'onnx'"),
        ({"backend": "tensorflow"}, "encoder.backend"),
        ({"backend": "onnx", "quantize": "int4"}, "encoder.quantize"),
        ({"backend": "onnx", "device": "cuda"}, "runs on the CPU"),
        ({"backend": "onnx", "onnx_threads": 0}, "encoder.onnx_threads"),
    ],
)
def test_bad_encoder_config_is_refused_clearly(encoder_config, message):
    with pytest.raises(ConfigError, match=message):
        IndexConfig.parse({"encoder": encoder_config})


def test_backend_and_quantization_are_part_of_the_build_signature():
    torch_cfg = IndexConfig.parse({})
    int8 = IndexConfig.parse({"encoder": {"backend": "onnx", "quantize": "int8", "onnx_threads": 2}})
    signature = int8.build_signature()["encoder"]
    assert signature["backend"] == "onnx" and signature["quantize"] == "int8"
    assert "onnx_threads" not in signature and "onnx_cache" not in signature  # run-time only
    with pytest.raises(IncompatibleIndexError, match="encoder.quantize"):
        int8.check_compatible(torch_cfg, "x")


def test_the_cache_keeps_only_the_most_recently_used_exports(tmp_path, monkeypatch):
    """Each export is ~90 MB (fp32) and every new TempScale temperature or option makes another: the folder keeps
    the N most recently used (and at most a byte budget), the one in use always, and nothing that is not ours."""
    import os
    import time

    from foveal.encoders import onnx_backend

    keys = iter(f"{i:024x}" for i in range(100))
    monkeypatch.setattr(onnx_backend, "cache_key", lambda model, **_: next(keys))
    exported = []

    def fake_export(model, target, hidden, heads, *, optimize, quantize):
        target.write_bytes(b"x" * 1000)
        exported.append(target.name)

    monkeypatch.setattr(onnx_backend, "_export", fake_export)
    monkeypatch.setenv("FOVEAL_ONNX_CACHE_MAX_MODELS", "3")
    monkeypatch.setenv("FOVEAL_ONNX_CACHE_MAX_BYTES", str(10**9))
    (tmp_path / "notes.txt").write_text("not an export: never deleted")
    stale = tmp_path / ".minilm-dead.onnx.abc.tmp"  # left by an export that was killed
    stale.write_text("half")
    old = time.time() - 2 * onnx_backend.STALE_TEMP_S
    os.utime(stale, (old, old))
    opened = []
    paths = []
    for _ in range(6):
        paths.append(onnx_backend.export_path(None, cache_dir=tmp_path, quantize="none", optimize=True, hidden_size=1,
                                              num_heads=1, use=lambda path: opened.append(path.exists())))
        time.sleep(0.01)  # distinct access times
    assert opened == [True] * 6  # each file exists while it is opened (under the lock)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")
    assert left == sorted(["notes.txt", *(p.name for p in paths[-3:])])

    # a use refreshes a file's place: reusing the oldest survivor keeps it past the next export
    monkeypatch.setattr(onnx_backend, "cache_key", lambda model, **_: paths[3].name[7:31])
    onnx_backend.export_path(None, cache_dir=tmp_path, quantize="none", optimize=True, hidden_size=1, num_heads=1)
    assert len(exported) == 6  # reused, not exported again
    monkeypatch.setattr(onnx_backend, "cache_key", lambda model, **_: "f" * 24)
    onnx_backend.export_path(None, cache_dir=tmp_path, quantize="none", optimize=True, hidden_size=1, num_heads=1)
    left = {p.name for p in tmp_path.iterdir()}
    assert paths[3].name in left and paths[4].name not in left

    # the byte budget: two files' worth keeps two, but never drops the one in use
    monkeypatch.setenv("FOVEAL_ONNX_CACHE_MAX_MODELS", "10")
    monkeypatch.setenv("FOVEAL_ONNX_CACHE_MAX_BYTES", "2500")
    onnx_backend.prune_cache(tmp_path, keep=paths[5])
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".onnx"]) == 2 and paths[5].exists()
    monkeypatch.setenv("FOVEAL_ONNX_CACHE_MAX_BYTES", "0")
    onnx_backend.prune_cache(tmp_path, keep=paths[5])
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".onnx"] == [paths[5].name]


def _counting(forward):
    """Count the onnxruntime runs of an OnnxForward, on its main session and on its query lanes' (sessions are C
    objects: wrap the attributes)."""
    calls = []
    sessions = {name: getattr(forward, name) for name in ("session", "_lane_session")
                if getattr(forward, name, None) is not None}

    class Counting:
        def __init__(self, session) -> None:
            self.session = session

        def run(self, *args, **kwargs):
            calls.append(1)
            return self.session.run(*args, **kwargs)

    for name, session in sessions.items():
        setattr(forward, name, Counting(session))

    def restore() -> None:
        for name, session in sessions.items():
            setattr(forward, name, session)

    return calls, restore


def test_cpu_queries_run_the_fp32_export_and_documents_torch(fp32_encoder):
    """encoder.query_backend auto on the CPU with query_quantize none: query passes run the fp32 ONNX export (a
    third of torch's time for one query here), document passes the torch model; the vectors are torch's to float
    rounding."""
    from foveal.encoders.sentence_transformer import get_encoder

    encoder = fp32_encoder
    assert encoder.config.query_quantize == "none"
    encoder.encode_queries(["the first query makes (or loads) the export"])
    assert encoder.loaded.onnx is None and encoder.loaded.query_onnx is not None
    assert not encoder.loaded.query_onnx.path.name.endswith("-int8.onnx")
    plain = get_encoder(EncoderConfig(query_backend="torch"))
    assert plain.loaded.query_onnx is None
    calls, restore = _counting(encoder.loaded.query_onnx)
    try:
        ours = encoder.encode_queries(QUERIES).vectors
        assert len(calls) >= 1
        del calls[:]
        documents = encoder.encode_documents(DOCS)
        tokens = encoder.encode_queries(QUERIES, with_tokens=True)  # token states: the torch model
        assert calls == []
    finally:
        restore()
    np.testing.assert_allclose(ours, plain.encode_queries(QUERIES).vectors, atol=1e-5)
    np.testing.assert_allclose(tokens.vectors, ours, atol=1e-5)
    np.testing.assert_array_equal(_rows(documents), _rows(plain.encode_documents(DOCS)))


def test_query_backend_is_validated_and_needs_no_rebuild():
    with pytest.raises(ConfigError, match="encoder.query_backend"):
        IndexConfig.parse({"encoder": {"query_backend": "tensorrt"}})
    with pytest.raises(ConfigError, match="encoder.query_quantize"):
        IndexConfig.parse({"encoder": {"query_quantize": "int4"}})
    default, torch_queries = IndexConfig.parse({}), IndexConfig.parse({"encoder": {"query_backend": "torch"}})
    int8_queries = IndexConfig.parse({"encoder": {"query_quantize": "int8"}})
    assert {"query_backend", "query_quantize"}.isdisjoint(default.build_signature()["encoder"])
    default.check_compatible(torch_queries, "x")  # switching either keeps the index
    default.check_compatible(int8_queries, "x")


def test_a_process_that_only_encodes_documents_never_makes_the_query_export():
    """Celery workers encode documents only: the query export is made on the first query, not when the model loads
    (the API server makes it at start, see Engine.load_encoders)."""
    from foveal.encoders.sentence_transformer import LoadedModel, SentenceTransformerEncoder

    loaded = LoadedModel(EncoderConfig())
    encoder = SentenceTransformerEncoder(EncoderConfig(), loaded)
    encoder.encode_documents(DOCS[:2])
    assert loaded.query_onnx is None
    encoder.encode_queries(QUERIES)
    assert loaded.query_onnx is not None


def test_query_quantize_int8_runs_queries_on_the_int8_export_and_documents_torch():
    """encoder.query_quantize int8 (opt-in): query passes run the int8 export, document passes the torch model; the
    query vectors are close to torch's, the document vectors are torch's."""
    from foveal.encoders.sentence_transformer import get_encoder

    encoder = get_encoder(EncoderConfig(query_quantize="int8"))
    encoder.encode_queries(["the first query makes (or loads) the export"])
    assert encoder.loaded.onnx is None and encoder.loaded.query_onnx.path.name.endswith("-int8.onnx")
    plain = get_encoder(EncoderConfig(query_backend="torch"))
    calls, restore = _counting(encoder.loaded.query_onnx)
    try:
        ours = encoder.encode_queries(QUERIES).vectors
        assert len(calls) == len(QUERIES)  # one query per pass (test_priority_lock says why)
        del calls[:]
        documents = encoder.encode_documents(DOCS)
        assert calls == []
    finally:
        restore()
    theirs = plain.encode_queries(QUERIES).vectors
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() > 0.98 and not np.allclose(ours, theirs, atol=1e-4)  # close, not equal (int8 products)
    np.testing.assert_array_equal(_rows(documents), _rows(plain.encode_documents(DOCS)))


#: More queries than QUERIES for comparing precisions: int8 error varies from query to query.
MANY_QUERIES = QUERIES + [
    "effects of sleep deprivation on memory", "boundary layer separation on a swept wing", "solar wind and comets",
    "children's reading comprehension in primary school", "heat transfer in turbulent pipe flow",
    "protein folding and misfolding diseases", "the price of wheat after the war", "buckling of thin shells",
    "library classification schemes", "vaccination and herd immunity",
]


def test_fp32_nodes_are_the_first_two_thirds_of_the_feed_forward_outputs(onnx_cache):
    """``mixed`` keeps in fp32 the feed-forward output projections (``/encoder/layer.<i>/output/dense/MatMul``) of
    layers 0-3 of all-MiniLM-L6-v2's six, never an attention output (``attention/output/dense``)."""
    import onnx

    from foveal.encoders.onnx_backend import fp32_nodes

    fp32 = next(p for p in onnx_cache.iterdir() if p.name.endswith("-opt.onnx"))
    keep = fp32_nodes(onnx.load(str(fp32)), 6)
    assert keep == [f"/model.0/encoder/layer.{i}/output/dense/MatMul" for i in range(4)]
    assert fp32_nodes(onnx.load(str(fp32)), 3) == keep[:2]
    assert fp32_nodes(onnx.load(str(fp32)), 0) == []


def test_query_quantize_mixed_is_int8_with_the_early_feed_forward_outputs_in_fp32(onnx_cache):
    """encoder.query_quantize mixed: query passes run an export whose first four feed-forward output projections
    are plain fp32 MatMuls and every other matrix product is int8; one query per pass (its activations are still
    scaled per tensor); the vectors sit closer to fp32 than plain int8's and still differ from them."""
    import onnx

    from foveal.encoders.sentence_transformer import get_encoder

    assert EncoderConfig().query_quantize == "mixed"  # the default for new indexes
    mixed = get_encoder(EncoderConfig(query_quantize="mixed", onnx_cache=str(onnx_cache)))
    mixed.encode_queries(["the first query makes (or loads) the export"])
    path = mixed.loaded.query_onnx.path
    assert path.name.endswith("-mixed.onnx") and mixed.loaded.query_onnx.quantize == "mixed"
    graph = onnx.load(str(path)).graph
    plain_matmuls = {n.name for n in graph.node if n.op_type == "MatMul"}
    ffn = {f"/model.0/encoder/layer.{i}/output/dense/MatMul" for i in range(6)}
    assert ffn & plain_matmuls == {f"/model.0/encoder/layer.{i}/output/dense/MatMul" for i in range(4)}
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention") for n in graph.node)
    calls, restore = _counting(mixed.loaded.query_onnx)
    try:
        ours = mixed.encode_queries(MANY_QUERIES).vectors
        assert len(calls) == len(MANY_QUERIES)  # one query per pass
    finally:
        restore()
    fp32 = get_encoder(EncoderConfig(query_backend="torch")).encode_queries(MANY_QUERIES).vectors
    int8 = get_encoder(EncoderConfig(query_quantize="int8", onnx_cache=str(onnx_cache))).encode_queries(
        MANY_QUERIES).vectors
    mixed_distance = np.mean(1 - np.sum(ours * fp32, axis=1))
    int8_distance = np.mean(1 - np.sum(int8 * fp32, axis=1))
    assert 0 < mixed_distance < 0.75 * int8_distance
    # alone or beside other queries: the same vector
    np.testing.assert_array_equal(mixed.encode_queries(MANY_QUERIES[:1]).vectors[0], ours[0])
