import random

import pytest

from foveal.encoders.segment import segment, sentence_spans


def _fake_tokens(text):
    """Whitespace tokens with their character offsets (stands in for a fast tokenizer)."""
    offsets, i = [], 0
    for word in text.split():
        start = text.index(word, i)
        offsets.append((start, start + len(word)))
        i = start + len(word)
    return offsets


def _text(n_sentences, seed=0, words=(3, 20)):
    rng = random.Random(seed)
    sentences = []
    for s in range(n_sentences):
        n = rng.randint(*words)
        sentences.append(" ".join(f"w{s}_{i}" for i in range(n)) + ".")
    return " ".join(sentences)


def test_sentence_spans():
    text = 'He said "stop." Then left! Really? Yes\n\nNew paragraph'
    spans = [text[a:b] for a, b in sentence_spans(text)]
    assert spans == ['He said "stop."', "Then left!", "Really?", "Yes", "New paragraph"]


def test_short_text_is_one_passage():
    text = "A short text. Two sentences."
    passages = segment(text, _fake_tokens(text), max_tokens=50, overlap=8)
    assert len(passages) == 1 and passages[0].token_start == 0 and passages[0].token_end == 5


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("window, overlap", [(16, 4), (32, 8), (64, 0), (20, 10)])
def test_passages_fit_cover_everything_and_overlap(seed, window, overlap):
    text = _text(30, seed, words=(1, 40))
    offsets = _fake_tokens(text)
    passages = segment(text, offsets, max_tokens=window, overlap=overlap)
    assert all(0 < p.n_tokens <= window for p in passages)
    covered = set()
    for p in passages:
        covered.update(range(p.token_start, p.token_end))
    assert covered == set(range(len(offsets))), "every token is in some passage: nothing is cut"
    for prev, nxt in zip(passages, passages[1:]):
        assert nxt.token_start > prev.token_start, "passages advance"
        if overlap:
            assert nxt.token_start < prev.token_end, "consecutive passages overlap"
        else:
            assert nxt.token_start == prev.token_end
    # character spans agree with token spans
    for p in passages:
        assert p.char_start == offsets[p.token_start][0] and p.char_end == offsets[p.token_end - 1][1]


def test_passages_start_on_sentence_boundaries_when_they_can():
    text = _text(12, 3, words=(4, 6))
    offsets = _fake_tokens(text)
    passages = segment(text, offsets, max_tokens=24, overlap=8)
    starts = {a for a, _ in sentence_spans(text)}
    assert len(passages) > 2
    assert all(p.char_start in starts for p in passages)


def test_sentence_longer_than_window_is_cut_not_dropped():
    text = " ".join(f"w{i}" for i in range(100)) + "."
    passages = segment(text, _fake_tokens(text), max_tokens=30, overlap=5)
    assert passages[-1].token_end == 100 and all(p.n_tokens <= 30 for p in passages)
