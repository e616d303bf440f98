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
