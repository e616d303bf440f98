"""The parts of the Elasticsearch backend that need no server: the analyzer definition against tantivy's, mappings,
bulk actions, id and score encoding. Behaviour against a live server is in test_contract.py (skipped unless
FOVEAL_ES_URL is set)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import regex

from foveal.config import ElasticsearchConfig, IndexConfig, LexicalConfig
from foveal.documents import parse_document
from foveal.errors import BackendUnavailableError, ConfigError
from foveal.index import es_backend as esb
from foveal.index.base import LexicalDocument, passage_id
from foveal.index.sqlite_store import PreparedDocument
from foveal.index.tantivy_index import build_analyzer
from tests.conftest import SAMPLES as SAMPLES_DIR

#: Texts with punctuation, apostrophes, numbers, underscores, accents, CJK, long tokens and stop words.
SAMPLES = [
    "The runners are running",
    "don't stop: C++ and 3.14, foo_bar",
    "naïve Café ÉCOLE résumé",
    "日本語 テキスト und Straße",
    "x" * 39 + " " + "y" * 40 + " " + "z" * 41,
    "co-operation e-mail U.S.A. ²³ Ⅻ ½",
    "It is not such a thing as THEIR into THERE; with was will",
    "email@example.com https://example.org/path?q=1#frag",
    "tab\tseparated\nnew-line\u00a0nbsp",
]


def _es_chain_without_stemming(text: str) -> list[str]:
    """The ES analyzer's tokenizer, length, lowercase and stop filters, evaluated in Python (``regex`` supports the
    same Unicode property classes as Java's pattern)."""
    settings = esb.analysis_settings(LexicalConfig(stemming=False))
    pattern = settings["tokenizer"]["foveal_simple"]["pattern"]
    max_len = settings["filter"]["foveal_length"]["max"]
    stop = set(settings["filter"]["foveal_stop"]["stopwords"])
    tokens = [t for t in regex.split(pattern, text) if t]
    tokens = [t for t in tokens if len(t) <= max_len]
    return [t.lower() for t in tokens if t.lower() not in stop]


@pytest.mark.parametrize("text", SAMPLES)
def test_es_analyzer_matches_tantivy_without_stemming(text):
    tantivy_terms = build_analyzer(LexicalConfig(stemming=False)).analyze(text)
    assert _es_chain_without_stemming(text) == list(tantivy_terms)


def test_es_analyzer_matches_tantivy_on_real_text():
    corpus = SAMPLES_DIR / "documents.jsonl"
    analyzer = build_analyzer(LexicalConfig(stemming=False))
    lines = corpus.read_text().splitlines()[:40]
    assert lines
    for line in lines:
        doc = json.loads(line)
        text = f"{doc.get('title', '')} {doc.get('text', '')}"
        assert _es_chain_without_stemming(text) == list(analyzer.analyze(text))


def test_stop_list_is_exactly_tantivys():
    analyzer = build_analyzer(LexicalConfig(stemming=False))
    assert all(analyzer.analyze(word) == [] for word in esb.ENGLISH_STOPWORDS)
    # words of longer English lists (Snowball's, NLTK's) that tantivy keeps, so ES must keep them too
    for word in ["i", "me", "we", "he", "she", "would", "have", "do", "from", "up", "all"]:
        assert analyzer.analyze(word) == [word]
        assert word not in esb.ENGLISH_STOPWORDS


def test_analysis_settings_follow_the_config():
    full = esb.analysis_settings(LexicalConfig())
    chain = full["analyzer"][esb.ANALYZER]["filter"]
    assert chain == ["foveal_length", "lowercase", "foveal_stop", "foveal_stem"]
    assert full["filter"]["foveal_stem"] == {"type": "snowball", "language": "English"}  # Porter2, as rust-stemmers
    bare = esb.analysis_settings(LexicalConfig(stemming=False, stopwords=False))
    assert bare["analyzer"][esb.ANALYZER]["filter"] == ["foveal_length", "lowercase"]
    french = esb.analysis_settings(LexicalConfig(language="french"))
    assert french["filter"]["foveal_stop"]["stopwords"] == "_french_"
    assert french["filter"]["foveal_stem"]["language"] == "French"


def test_lexical_mapping_uses_the_analyzer_and_tantivys_bm25():
    body = esb.lexical_body(LexicalConfig(), ElasticsearchConfig(shards=2, replicas=1))
    assert body["settings"]["similarity"]["default"] == {"type": "BM25", "k1": 1.2, "b": 0.75}
    assert body["settings"]["number_of_shards"] == 2 and body["settings"]["number_of_replicas"] == 1
    props = body["mappings"]["properties"]
    assert props["title"]["analyzer"] == props["text"]["analyzer"] == esb.ANALYZER
    assert props["doc_key"]["type"] == "long" and props["id"]["type"] == "keyword"


def test_lexical_query_is_tantivys_disjunction_with_boosts():
    query = esb.lexical_query(["tide", "moon", "tide"], LexicalConfig(title_boost=2.0))
    should = query["bool"]["should"]
    assert should == [
        {"term": {"title": {"value": "tide", "boost": 2.0}}},
        {"term": {"title": {"value": "moon", "boost": 2.0}}},
        {"term": {"text": {"value": "tide", "boost": 1.0}}},
        {"term": {"text": {"value": "moon", "boost": 1.0}}},
    ]
    assert esb.lexical_query([], LexicalConfig()) is None
    assert esb.lexical_query(["x"], LexicalConfig(title_boost=0, text_boost=0)) is None


def test_vector_mapping_and_factories():
    es = ElasticsearchConfig(ef_construction=64)
    field = esb.vector_body(384, "HNSW32", es)["mappings"]["properties"]["vector"]
    assert field["dims"] == 384 and field["similarity"] == "cosine" and field["index"] is True
    assert field["index_options"] == {"type": "hnsw", "m": 32, "ef_construction": 64}
    assert esb.vector_index_options("Flat", es) == {"type": "flat"}
    assert esb.vector_index_options("HNSW", es)["m"] == 16
    for bad in ["IVF256,PQ16", "HNSW1", "PQ8"]:
        with pytest.raises(ConfigError, match="factory"):
            esb.vector_index_options(bad, es)


def test_vector_actions_use_faiss_passage_ids():
    ids = np.array([passage_id(7, 0), passage_id(7, 3)])
    vectors = np.eye(2, 4, dtype=np.float32)
    actions = list(esb.vector_actions("v", ids, vectors))
    assert [a["_id"] for a in actions] == [str(7 << 14), str((7 << 14) | 3)]
    assert [a["_source"]["doc_key"] for a in actions] == [7, 7]
    assert actions[1]["_source"]["vector"] == [0.0, 1.0, 0.0, 0.0]
    assert all(a["_op_type"] == "index" and a["_index"] == "v" for a in actions)


def test_lexical_actions_and_long_ids():
    docs = [LexicalDocument(3, "a", "T", "x"), LexicalDocument(4, "é" * 300, "", "y")]
    actions = list(esb.lexical_actions("lex", docs))
    assert actions[0]["_id"] == "a" and actions[0]["_source"] == {"doc_key": 3, "id": "a", "title": "T", "text": "x"}
    long_id = actions[1]["_id"]
    assert long_id.startswith("sha256:") and len(long_id) == 7 + 64 and actions[1]["_source"]["id"] == "é" * 300
    assert esb.es_doc_id("é" * 256) == "é" * 256  # 512 bytes: still fits
    assert esb.es_doc_id("sha256:abc") != "sha256:abc"  # cannot collide with a hashed id


def test_scores_and_vector_encoding_round_trip():
    assert esb.cosine_from_es(1.0) == 1.0 and esb.cosine_from_es(0.5) == 0.0 and esb.cosine_from_es(0.0) == -1.0
    vectors = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert np.array_equal(esb.decode_vectors(esb.encode_vectors(vectors), 5), vectors)


def test_docstore_source_carries_seq_key_and_vectors():
    doc = parse_document({"_id": "d", "title": "T", "text": "body", "metadata": {"a": 1}})
    prepared = PreparedDocument(doc, [(0, 3), (2, 6)], np.ones((2, 4), np.float32), 9)
    source = esb.stored_source(prepared, doc_key=5, seq=12)
    assert (source["doc_key"], source["seq"], source["deleted"], source["n_passages"]) == (5, 12, False, 2)
    stored = esb._stored(source)
    assert stored.passages == [(0, 3), (2, 6)] and stored.metadata == {"a": 1} and stored.n_tokens == 9
    assert np.array_equal(esb.decode_vectors(source["vectors"], source["dimension"]), prepared.vectors)
    assert esb.tombstone_source("d", 5, 13) == {"id": "d", "doc_key": 5, "seq": 13, "deleted": True}
    mapping = esb.docs_body(ElasticsearchConfig())["mappings"]["properties"]
    assert set(source) <= set(mapping)  # dynamic: strict would refuse anything else


def test_index_names_and_url(monkeypatch):
    assert esb.index_names("foveal-", "papers") == {
        "lexical": "foveal-papers-lexical", "vectors": "foveal-papers-vectors",
        "docs": "foveal-papers-docs", "meta": "foveal-papers-meta",
    }
    monkeypatch.delenv("FOVEAL_ES_URL", raising=False)
    with pytest.raises(ConfigError, match="FOVEAL_ES_URL"):
        esb.es_url(ElasticsearchConfig())
    monkeypatch.setenv("FOVEAL_ES_URL", "http://es:9200")
    assert esb.es_url(ElasticsearchConfig()) == "http://es:9200"
    assert esb.es_url(ElasticsearchConfig(url="http://other:9200")) == "http://other:9200"


def test_config_section_validation_and_default_backends(monkeypatch):
    with pytest.raises(ConfigError, match="index_prefix"):
        IndexConfig.parse({"elasticsearch": {"index_prefix": "Bad/Prefix"}})
    with pytest.raises(ConfigError, match="num_candidates"):
        IndexConfig.parse({"elasticsearch": {"num_candidates": 0}})
    # url, timeout, replicas and num_candidates are run-time settings: changing them needs no rebuild
    a = IndexConfig.parse({"elasticsearch": {"url": "http://a:9200", "num_candidates": 50}})
    IndexConfig.parse({"elasticsearch": {"url": "http://b:9200"}}).check_compatible(a, "x")
    monkeypatch.setenv("FOVEAL_DEFAULT_BACKENDS", "elasticsearch")
    cfg = IndexConfig()
    assert (cfg.vector.backend, cfg.lexical.backend, cfg.docstore.backend) == ("elasticsearch",) * 3
    monkeypatch.setenv("FOVEAL_DEFAULT_BACKENDS", "lexical=elasticsearch")
    cfg = IndexConfig()
    assert (cfg.vector.backend, cfg.lexical.backend, cfg.docstore.backend) == ("faiss", "elasticsearch", "sqlite")
    monkeypatch.delenv("FOVEAL_DEFAULT_BACKENDS")
    assert IndexConfig().vector.backend == "faiss"


def test_elasticsearch_backend_without_a_url_is_a_clear_config_error(monkeypatch, tmp_path):
    from foveal.registry import make_docstore

    monkeypatch.delenv("FOVEAL_ES_URL", raising=False)
    cfg = IndexConfig.parse({"docstore": {"backend": "elasticsearch"}})
    with pytest.raises(ConfigError, match="FOVEAL_ES_URL"):
        make_docstore(tmp_path / "docs.sqlite", cfg.docstore, es=cfg.elasticsearch, name="x")


def test_unreachable_server_is_a_503(monkeypatch, tmp_path):
    from foveal.registry import make_lexical_index

    cfg = IndexConfig.parse({"lexical": {"backend": "elasticsearch"},
                             "elasticsearch": {"url": "http://127.0.0.1:9", "request_timeout": 2}})
    with pytest.raises(BackendUnavailableError) as info:
        make_lexical_index(tmp_path / "lexical", cfg.lexical, es=cfg.elasticsearch, name="x")
    assert info.value.status_code == 503
