import pytest

from foveal.config import FusionMethod, IndexConfig
from foveal.errors import ConfigError, IncompatibleIndexError


def test_defaults():
    cfg = IndexConfig()
    # issue 15: the default became z-scored linear fusion with Rocchio on the dense list (docs/robust.md)
    assert cfg.fusion.method == FusionMethod.linear and cfg.fusion.normalization.value == "zscore"
    assert cfg.fusion.rocchio.enabled and not cfg.fusion.rm3.enabled and cfg.fusion.coefficients is None
    assert cfg.fusion.rank_constant == 60
    assert cfg.vector.factory == "Flat" and cfg.lexical.stemming


def test_unknown_mode_lists_allowed_values():
    with pytest.raises(ConfigError, match="allowed: rrf, linear"):
        IndexConfig.parse({"fusion": {"method": "borda"}})
    with pytest.raises(ConfigError, match="allowed: minmax, zscore"):
        IndexConfig.parse({"fusion": {"normalization": "rank"}})


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="encoderr"):
        IndexConfig.parse({"encoderr": {}})


def test_weights_validated():
    with pytest.raises(ConfigError, match="allowed: bm25, dense"):
        IndexConfig.parse({"fusion": {"weights": {"splade": 1.0}}})


def test_build_signature_ignores_runtime_settings():
    a = IndexConfig.parse({"encoder": {"batch_size": 8}, "fusion": {"method": "linear"}})
    b = IndexConfig()
    a.check_compatible(b, "x")  # no error: batch size and fusion are search/run-time settings
    c = IndexConfig.parse({"vector": {"factory": "HNSW32"}})
    with pytest.raises(IncompatibleIndexError, match="vector.factory"):
        c.check_compatible(b, "x")


@pytest.mark.parametrize("section", ["vector", "lexical", "docstore"])
def test_unknown_backend_lists_the_known_ones(tmp_path, section):
    from foveal import registry
    from foveal.config import DocStoreConfig, LexicalConfig, VectorConfig

    with pytest.raises(ConfigError, match="allowed: "):
        if section == "vector":
            registry.make_vector_index(4, VectorConfig(backend="milvus"))
        elif section == "lexical":
            registry.make_lexical_index(tmp_path, LexicalConfig(backend="solr"))
        else:
            registry.make_docstore(tmp_path / "x", DocStoreConfig(backend="mongo"))


@pytest.mark.parametrize("data, field", [
    ({"fusion": {"weights": {"bm25": float("nan")}}}, "fusion.weights.bm25"),
    ({"lexical": {"text_boost": float("inf")}}, "lexical.text_boost"),
    ({"rerank": {"budget_ms": float("inf")}}, "rerank.budget_ms"),
    ({"rerank": {"weights": {"pyramid": float("nan")}}}, "rerank.weights.pyramid"),
    ({"elasticsearch": {"request_timeout": float("nan")}}, "elasticsearch.request_timeout"),
])
def test_nan_and_infinity_are_refused_in_every_setting(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        IndexConfig.parse(data)


@pytest.mark.parametrize("section, field, value", [
    ("lexical", "title_boost", 1e9), ("lexical", "text_boost", 1e9),
    ("fusion", "rank_constant", 10**12), ("rerank", "budget_ms", 1e12),
])
def test_numeric_knobs_are_bounded(section, field, value):
    """Found by the safe-config work: these had no upper bound (a tenant could send 1e12)."""
    from foveal.config import IndexConfig
    from foveal.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        IndexConfig.parse({section: {field: value}})
    assert field in str(refused.value)
