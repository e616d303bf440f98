"""QUITE summaries: the budget is never exceeded and covered query words decay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from foveal.rerank.quite import quite, words


def count_words(text: str) -> int:
    return len(text.split())


TEXT = "Moon tides sun. Moon tides sun again. Gravity."


def test_second_pick_prefers_uncovered_query_words():
    # first pick covers 3 query words; with decay 0.1 the repeat scores 0.3 and 'Gravity.' (1 fresh word) wins
    summary = quite("moon tides sun gravity", TEXT, budget=100, count_tokens=count_words, decay=0.1)
    assert summary.sentences == [0, 2, 1]
    assert summary.text == "Moon tides sun. Gravity. Moon tides sun again."


def test_without_decay_the_repeat_wins():
    summary = quite("moon tides sun gravity", TEXT, budget=100, count_tokens=count_words, decay=0.99)
    assert summary.sentences == [0, 1, 2]


def test_budget_limits_the_picks():
    summary = quite("moon tides sun gravity", TEXT, budget=4, count_tokens=count_words, decay=0.1)
    assert summary.sentences == [0, 2]
    assert summary.tokens == 4


def test_off_topic_document_falls_back_to_its_lead():
    text = "Bread needs yeast. Dough rises slowly. Ovens are hot."
    summary = quite("quantum chromodynamics", text, budget=7, count_tokens=count_words)
    assert summary.sentences == [0, 1]


def test_over_long_first_sentence_is_cut_to_the_budget():
    text = " ".join(f"word{i}" for i in range(50)) + "."
    summary = quite("word3", text, budget=10, count_tokens=count_words)
    assert 0 < summary.tokens <= 10
    assert count_words(summary.text) <= 10


def test_empty_text_and_bad_arguments():
    assert quite("q", "", 10, count_words).text == ""
    with pytest.raises(ValueError):
        quite("q", "text.", 0, count_words)
    with pytest.raises(ValueError):
        quite("q", "text.", 5, count_words, decay=1.5)


def test_words_drop_stopwords_and_fold_plurals():
    assert words("The tides of the oceans") == {"tide", "ocean"}


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(st.lists(st.sampled_from(["moon", "tide", "sun", "sea", "bread", "yeast", "x"]), min_size=1,
                                max_size=12), min_size=1, max_size=12),
    budget=st.integers(min_value=1, max_value=40),
    decay=st.floats(min_value=0.0, max_value=0.99),
)
def test_budget_is_never_exceeded(sentences, budget, decay):
    text = " ".join(" ".join(s).capitalize() + "." for s in sentences)
    summary = quite("moon tide sun", text, budget, count_words, decay=decay)
    assert count_words(summary.text) <= budget
    assert summary.tokens <= budget
    assert len(set(summary.sentences)) == len(summary.sentences)


def test_budget_with_the_reranker_tokenizer(tiny_ranker):
    text = ("Magma rises through cracks in the crust. It erupts as lava and ash, sometimes violently. "
            "Volcanologists measure sulfur dioxide emissions to forecast eruptions.")
    for budget in (3, 8, 15, 40):
        tiny_ranker.settings.summary_tokens = budget
        summary = tiny_ranker.summarize("volcano eruption forecast", text)
        assert tiny_ranker.count_tokens(summary) <= budget
