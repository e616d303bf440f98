"""Elasticsearch servers named by the operator (FOVEAL_ES_SERVERS; FOVEAL_ES_URL is the server named ``default``):
an index config picks one by name; over REST an unknown name is a 422 naming the field and the known names, and an
address stays refused; CLI config files may still give a url."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from foveal.config import ElasticsearchConfig, IndexConfig
from foveal.errors import ConfigError
from foveal.service.settings import ServiceSettings

ES = {"backend": "elasticsearch"}


@pytest.fixture()
def servers(monkeypatch):
    monkeypatch.setenv("FOVEAL_ES_SERVERS", "main=http://es-main:9200; archive=http://es-archive:9200")
    monkeypatch.setenv("FOVEAL_ES_URL", "http://es-legacy:9200")


def test_servers_are_named_by_the_operator(servers, monkeypatch):
    from foveal.config import es_servers
    from foveal.index.es_backend import es_server, es_url

    assert es_servers() == {"main": "http://es-main:9200", "archive": "http://es-archive:9200",
                            "default": "http://es-legacy:9200"}
    assert es_url(ElasticsearchConfig(server="archive")) == "http://es-archive:9200"
    assert es_server(ElasticsearchConfig()) == ("server 'default'", "http://es-legacy:9200")
    assert es_url(ElasticsearchConfig(url="http://cli-file:9200", server="main")) == "http://cli-file:9200"
    with pytest.raises(ConfigError, match="elasticsearch.server: unknown server 'gone'; known: archive, default, main"):
        es_url(ElasticsearchConfig(server="gone"))
    monkeypatch.setenv("FOVEAL_ES_SERVERS", "main http://es-main:9200")
    with pytest.raises(ConfigError, match="FOVEAL_ES_SERVERS"):
        es_url(ElasticsearchConfig(server="main"))


def test_rest_config_picks_a_server_by_name(servers, engine, monkeypatch):
    from elasticsearch import Elasticsearch

    from foveal.api.app import create_app
    from foveal.index import es_backend
    from tests.index.fake_es import FakeElasticsearch

    fake = FakeElasticsearch()
    client = Elasticsearch("http://es-main:9200", request_timeout=30.0)
    fake.install(client)
    monkeypatch.setitem(es_backend._clients, ("http://es-main:9200", 30.0), client)
    es = {"server": "main", "index_prefix": f"t{uuid.uuid4().hex[:8]}-"}
    with TestClient(create_app(engine, settings=ServiceSettings())) as api:
        unknown = api.post("/v1/indexes", json={"name": "t", "config": {"lexical": ES, "elasticsearch":
                                                                         {"server": "elsewhere"}}})
        assert unknown.status_code == 422, unknown.text
        message = unknown.json()["error"]["message"]
        assert "elasticsearch.server" in message and "archive, default, main" in message
        address = api.post("/v1/indexes", json={"name": "t", "config": {"elasticsearch": {"url": "http://x:1"}}})
        assert address.status_code == 422 and "elasticsearch.url" in address.json()["error"]["message"]
        assert api.get("/v1/indexes").json() == []

        made = api.post("/v1/indexes", json={"name": "t", "config": {"lexical": ES, "elasticsearch": es}})
        assert made.status_code == 201, made.text
    assert any(name.startswith(es["index_prefix"]) for name in fake.indexes)  # on the server named main


def test_cli_config_files_may_still_give_a_url(servers):
    config = IndexConfig.parse({"elasticsearch": {"url": "http://cli-file:9200"}})
    assert config.elasticsearch.url == "http://cli-file:9200"
    with pytest.raises(ConfigError, match="elasticsearch.url"):
        IndexConfig.parse({"elasticsearch": {"url": "http://cli-file:9200"}}, source="rest")
