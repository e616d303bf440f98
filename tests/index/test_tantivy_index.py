import pytest

from foveal.config import LexicalConfig
from foveal.errors import ConfigError
from foveal.index.base import LexicalDocument
from foveal.index.tantivy_index import TantivyLexicalIndex

DOCS = [
    LexicalDocument(1, "a", "Running shoes", "Shoes for runners who run on roads."),
    LexicalDocument(2, "b", "Cooking rice", "Rinse the rice, then simmer it covered."),
    LexicalDocument(3, "c", "The history of shoes", "People have worn sandals for millennia."),
]


@pytest.fixture()
def index(tmp_path):
    idx = TantivyLexicalIndex(tmp_path / "lex")
    idx.upsert(DOCS)
    idx.commit()
    return idx


def test_stemming_and_stop_words(index):
    assert index.analyze("The runners are running") == ["runner", "run"]
    assert [k for k, _ in index.search("run", 5)] == [1]


def test_query_text_is_never_a_syntax_error(index):
    for query in ['shoes AND (', 'title:"rice', "C++ -- ~~ *", "the of and"]:
        index.search(query, 5)  # no exception
    assert index.search("the of and", 5) == []


def test_title_boost_changes_ranking(tmp_path):
    docs = [LexicalDocument(1, "t", "rice", "a grain"), LexicalDocument(2, "x", "grain", "rice rice rice is here")]
    plain = TantivyLexicalIndex(tmp_path / "a", LexicalConfig(title_boost=0.0))
    boosted = TantivyLexicalIndex(tmp_path / "b", LexicalConfig(title_boost=10.0))
    for idx in (plain, boosted):
        idx.upsert(docs)
        idx.commit()
    assert plain.search("rice", 2)[0][0] == 2
    assert boosted.search("rice", 2)[0][0] == 1


def test_upsert_replaces_and_remove_deletes(index):
    index.upsert([LexicalDocument(2, "b", "Cooking pasta", "Boil water and salt it.")])
    index.commit()
    assert index.search("rice", 5) == [] and [k for k, _ in index.search("pasta", 5)] == [2]
    index.remove(["a"])
    index.commit()
    assert len(index) == 2 and index.search("runner", 5) == []


def test_persistent(tmp_path, index):
    reopened = TantivyLexicalIndex(tmp_path / "lex")
    assert len(reopened) == 3 and reopened.search("sandals", 1)[0][0] == 3


def test_unknown_language_is_a_config_error():
    with pytest.raises(ConfigError, match="klingon"):
        TantivyLexicalIndex(None, LexicalConfig(language="klingon"))


def test_long_allow_lists_filter_the_ranking_and_match_the_term_set_query(monkeypatch):
    """Allow-lists above TERM_SET_MAX go through a bitmap over the ranking: the same hits, in the same order, as
    the term-set query that short lists use."""
    import random

    import numpy as np

    from foveal.index import tantivy_index
    from foveal.index.base import LexicalDocument
    from foveal.index.tantivy_index import TantivyLexicalIndex

    rng = random.Random(0)
    words = ["tide", "moon", "ocean", "lava", "bread", "yeast", "coffee", "roast", "star", "orbit"]
    index = TantivyLexicalIndex(None)
    index.upsert([LexicalDocument(i, f"d{i}", "", " ".join(rng.choices(words, k=12))) for i in range(1, 601)])
    index.commit()
    allowed = np.array(sorted(rng.sample(range(1, 601), 300)), np.int64)
    for query in ("moon tide", "coffee", "lava star orbit"):
        monkeypatch.setattr(tantivy_index, "TERM_SET_MAX", 10_000)
        inside = index.search(query, 25, allowed=allowed)
        monkeypatch.setattr(tantivy_index, "TERM_SET_MAX", 8)
        ranked = index.search(query, 25, allowed=allowed)
        assert [k for k, _ in ranked] == [k for k, _ in inside] and len(ranked) == 25
        assert np.allclose([s for _, s in ranked], [s for _, s in inside])
        assert set(k for k, _ in ranked) <= set(allowed.tolist())


# -- metadata terms: a filter's equality conditions restrict inside tantivy ----------------------------------------
META_VALUES = [0, 1, 2, 1.0, -0.0, 0.0, 2.5, -1, 2**53 + 1, 2**60, 1e300, True, False, "x", "1", "", "2024-03-01",
               "é" * 200, None, ["x"], {"a": 1}]


def _store_and_index(tmp_path, rng, n: int = 400):
    """A document store with random metadata (the store's own filter answers the allow-lists) and the tantivy
    index fed from it, as the collection feeds it (``derived._lexical``)."""
    import numpy as np

    from foveal.documents import parse_document
    from foveal.index.derived import _lexical
    from foveal.index.sqlite_store import PreparedDocument, SqliteDocStore

    words = ["tide", "moon", "ocean", "lava", "bread", "yeast", "coffee", "roast", "star", "orbit"]
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    prepared = []
    for i in range(n):
        metadata = {key: rng.choice(META_VALUES) for key in ("k1", "k2", "k3") if rng.random() < 0.8}
        parsed = parse_document({"_id": f"d{i}", "text": " ".join(rng.choices(words, k=10)), "metadata": metadata})
        prepared.append(PreparedDocument(parsed, [(0, len(parsed.full_text))], np.ones((1, 4), np.float32) / 2,
                                         n_tokens=1))
    store.write(prepared)
    index = TantivyLexicalIndex(tmp_path / "lex")
    for documents in store.iter_documents():
        index.upsert([_lexical(d) for d in documents])
    index.commit()
    return store, index


def _random_conditions(rng) -> dict:
    scalars = [v for v in META_VALUES if isinstance(v, (int, float, str, bool))]
    out = {}
    for key in rng.sample(["k1", "k2", "k3"], rng.randint(1, 2)):
        shape = rng.random()
        if shape < 0.6:
            out[key] = rng.choice(scalars)
        elif shape < 0.85:
            out[key] = rng.sample(scalars, rng.randint(1, 4))
        else:
            out[key] = {"range": {"gte": 0, "lt": 3}, "dates": False}
    return out


def test_every_document_a_filter_allows_carries_a_term_of_each_equality_condition(tmp_path):
    """The restriction inside tantivy may only drop what the store's filter drops: for every equality condition,
    each allowed document has one of the condition's terms (1 == 1.0, -0.0 == 0, True != 1, "1" != 1, huge and
    long values, lists and objects never equal)."""
    import random

    from foveal.index.tantivy_index import condition_terms, metadata_terms

    rng = random.Random(3)
    store, index = _store_and_index(tmp_path, rng)
    try:
        checked = 0
        for _ in range(150):
            conditions = _random_conditions(rng)
            allowed = store.filter_key_array(None, conditions, None)
            documents = store.get_documents(allowed.tolist())
            for terms in condition_terms(conditions):
                for doc in documents.values():
                    assert set(terms) & set(metadata_terms(doc.metadata)), (conditions, doc.metadata)
                    checked += 1
        assert checked > 500
        # what cannot be a term is never a restriction: a long text, an object, a list
        assert condition_terms({"k1": "é" * 200, "k2": {"exists": True}, "k3": [1, ["x"]]}) == []
    finally:
        store.close()


def test_equality_conditions_restrict_inside_tantivy_with_the_same_hits(tmp_path, monkeypatch):
    """``within`` gives the same hits and scores as the term-set query and the bitmap over the ranking, and asks
    tantivy for about ``k`` hits instead of ``k / share`` (the old cost of a selective filter)."""
    import random

    import numpy as np

    from foveal.index import tantivy_index

    rng = random.Random(4)
    store, index = _store_and_index(tmp_path, rng, 600)
    limits: list[int] = []
    real_hits = TantivyLexicalIndex._hits

    def spy(searcher, compiled, limit):
        limits.append(limit)
        return real_hits(searcher, compiled, limit)

    monkeypatch.setattr(TantivyLexicalIndex, "_hits", staticmethod(spy))
    try:
        compared = restricted_limits = 0
        for _ in range(80):
            conditions = _random_conditions(rng)
            allowed = store.filter_key_array(None, conditions, None)
            if not allowed.size:
                continue
            query = " ".join(rng.sample(["tide", "moon", "coffee", "lava star", "orbit"], 2))
            monkeypatch.setattr(tantivy_index, "TERM_SET_MAX", 0)  # every allow-list: the bitmap over the ranking
            limits.clear()
            ranked = index.search(query, 10, allowed=allowed)
            ranked_limit = limits[0]
            monkeypatch.setattr(tantivy_index, "TERM_SET_MAX", 10_000)
            inside = index.search(query, 10, allowed=allowed)
            limits.clear()
            within = index.search(query, 10, allowed=allowed, within=conditions)
            assert [k for k, _ in within] == [k for k, _ in inside] == [k for k, _ in ranked], conditions
            assert np.allclose([s for _, s in within], [s for _, s in inside])
            compared += bool(within)
            if tantivy_index.condition_terms(conditions) and allowed.size < 60:
                assert limits[0] < ranked_limit  # fetched for the share of the terms' documents, not of all
                restricted_limits += 1
        assert compared > 30 and restricted_limits > 10
    finally:
        store.close()


def test_a_folder_made_before_metadata_terms_opens_and_filters_as_before(tmp_path):
    import numpy as np
    import tantivy

    from foveal.index import tantivy_index

    legacy = tantivy.Index(tantivy_index._schema(meta=False), path=str(tmp_path), reuse=True)
    legacy.register_tokenizer(tantivy_index._ANALYZER, tantivy_index.build_analyzer(LexicalConfig()))
    writer = legacy.writer()
    for doc in DOCS:
        document = tantivy.Document()
        document.add_unsigned("doc_key", doc.doc_key)
        document.add_text("id", doc.id)
        document.add_text("title", doc.title)
        document.add_text("text", doc.text)
        writer.add_document(document)
    writer.commit()
    writer.wait_merging_threads()
    del legacy, writer
    index = TantivyLexicalIndex(tmp_path)
    assert not index.indexes_metadata
    assert [k for k, _ in index.search("shoes", 5, allowed=np.array([3]), within={"color": "red"})] == [3]
    index.upsert([LexicalDocument(4, "d", "Shoes again", "More shoes.", {"color": "red"})])
    index.commit()
    assert sorted(k for k, _ in index.search("shoes", 5)) == [1, 3, 4]
