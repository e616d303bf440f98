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
