"""QUITE: query-weighted summary extraction, after Pyramid-ERNIE ("Pre-trained Language Model based Ranking in
Baidu Search", Zou et al., KDD 2021, arXiv 2105.11108).

A document is cut into sentences; the summary is built greedily. Every query word starts with weight 1; a
sentence scores the summed weight of the query words it contains, ``score(s) = sum_{w in W_q & W_s} omega_w``. The
best sentence that still fits the token budget is taken, and the weight of every query word it covered decays,
``omega_w <- alpha * omega_w``, so the next pick prefers sentences that cover query words not seen yet. When no
remaining sentence covers a query word, the leftover budget is filled with the earliest sentences that fit (a
summary of an off-topic document is then its lead). Sentences appear in the order they were picked.

The budget counts the reranker tokenizer's word pieces (no special tokens) and is never exceeded: a first sentence
longer than the whole budget is cut to it.

Example::

    >>> text = "Tides rise twice a day. The moon pulls the sea. Bread needs yeast."
    >>> quite("why does the moon move the sea", text, budget=12, count_tokens=lambda s: len(s.split())).text
    'The moon pulls the sea.'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

#: Sentence boundary: end punctuation followed by space, or a line break.
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_WORD = re.compile(r"[a-z0-9]+")
#: Function words carry no query intent.
STOPWORDS = frozenset(
    "a an and are as at be been but by can could do does did for from had has have how i if in into is it its "
    "of on or our so such than that the their them then there these they this those to was we were what when "
    "where which while who whom why will with would you your not no".split()
)


def words(text: str) -> set[str]:
    """Lower-cased content words with a light plural/-ing/-ed strip, so 'tides' matches 'tide'."""
    out = set()
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        out.add(_stem(word))
    return out


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


@dataclass(slots=True)
class Summary:
    text: str
    #: Indices of the picked sentences, in pick order.
    sentences: list[int]
    tokens: int


def quite(
    query: str,
    text: str,
    budget: int,
    count_tokens: Callable[[str], int],
    *,
    decay: float = 0.5,
    truncate: Callable[[str, int], str] | None = None,
) -> Summary:
    """Pick sentences of ``text`` that cover ``query``'s words within ``budget`` tokens (see the module doc)."""
    if budget < 1:
        raise ValueError("the summary budget must be at least 1 token")
    if not 0.0 <= decay < 1.0:
        raise ValueError("decay must be in [0, 1)")
    sentences = split_sentences(text)
    if not sentences:
        return Summary("", [], 0)
    weights = {w: 1.0 for w in words(query)}
    sentence_words = [words(s) & weights.keys() for s in sentences]
    lengths = [count_tokens(s) for s in sentences]
    remaining = set(range(len(sentences)))
    picked: list[int] = []
    used = 0
    while remaining:
        fitting = [i for i in remaining if lengths[i] + used <= budget]
        if not fitting:
            break
        # best coverage first; the earlier sentence wins a tie
        best = max(fitting, key=lambda i: (sum(weights[w] for w in sentence_words[i]), -i))
        if sum(weights[w] for w in sentence_words[best]) <= 0.0:
            best = min(fitting)  # nothing covers the query any more: fill with the lead
        picked.append(best)
        remaining.discard(best)
        used += lengths[best]
        for w in sentence_words[best]:
            weights[w] *= decay
    if not picked:  # even the shortest sentence is longer than the budget: cut the best one to size
        best = max(range(len(sentences)), key=lambda i: (len(sentence_words[i]), -i))
        cut = truncate(sentences[best], budget) if truncate else _cut_words(sentences[best], budget, count_tokens)
        return Summary(cut, [best], count_tokens(cut))
    return Summary(" ".join(sentences[i] for i in picked), picked, used)


def _cut_words(sentence: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    tokens = sentence.split()
    while tokens and count_tokens(" ".join(tokens)) > budget:
        tokens = tokens[: max(0, min(len(tokens) - 1, int(len(tokens) * 0.9)))]
    return " ".join(tokens)


