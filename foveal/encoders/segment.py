"""Sentence-aware segmentation of a tokenized text into overlapping passages that fit the encoder's window.

Works on token offsets so that the passages' token ids are exactly the document's own tokens (no re-tokenizing),
and every token of the text lands in at least one passage: nothing is cut.

Example::

    >>> spans = sentence_spans("One. Two words here! Three?")
    >>> [s for s in spans]
    [(0, 4), (5, 20), (21, 27)]
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

# A sentence ends at . ! ? (optionally closed by quotes or brackets) followed by space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n|\n(?=[-*•\d])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace between sentences is left out)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start()
        # keep closing quotes/brackets with the sentence
        stripped = text[start:match.end()].rstrip()
        end = start + len(stripped)
        if end > start:
            spans.append((start, end))
        start = match.end()
    tail = text[start:].rstrip()
    if tail:
        spans.append((start, start + len(tail)))
    # drop leading whitespace inside spans
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        if a < b:
            out.append((a, b))
    return out


@dataclass(frozen=True, slots=True)
class Passage:
    """Tokens ``[token_start, token_end)`` of the document; characters ``[char_start, char_end)`` of its text."""

    token_start: int
    token_end: int
    char_start: int
    char_end: int

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start


def segment(
    text: str,
    offsets: list[tuple[int, int]],
    max_tokens: int,
    overlap: int,
) -> list[Passage]:
    """Split a tokenized ``text`` into passages of at most ``max_tokens`` tokens.

    ``offsets`` are the tokens' character spans (from a fast tokenizer, special tokens excluded). Sentences are
    packed greedily; a sentence longer than the window is cut at token boundaries. Each passage after the first
    starts with the last whole sentences of the previous one that fit in ``overlap`` tokens, or, when even the
    last sentence is longer, with its last ``overlap`` tokens.
    """
    n = len(offsets)
    if n == 0:
        return [Passage(0, 0, 0, len(text))] if text else []
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    overlap = max(0, min(overlap, max_tokens // 2))
    if n <= max_tokens:
        return [Passage(0, n, offsets[0][0], offsets[-1][1])]

    token_starts = [a for a, _ in offsets]
    # sentence boundaries as token indices: a sentence owns the tokens that start inside it
    bounds: list[tuple[int, int]] = []
    for a, b in sentence_spans(text):
        t0 = bisect.bisect_left(token_starts, a)
        t1 = bisect.bisect_left(token_starts, b)
        if t1 > t0:
            bounds.append((t0, t1))
    # tokens not covered by any sentence (odd whitespace) are attached to the preceding sentence
    fixed: list[tuple[int, int]] = []
    cursor = 0
    for t0, t1 in bounds:
        if t0 > cursor:
            if fixed:
                fixed[-1] = (fixed[-1][0], t0)
            else:
                t0 = cursor
        fixed.append((t0, t1))
        cursor = t1
    if cursor < n:
        if fixed:
            fixed[-1] = (fixed[-1][0], n)
        else:
            fixed.append((0, n))
    # cut sentences longer than the window into pieces that leave room for the overlap
    piece = max_tokens - overlap
    units: list[tuple[int, int]] = []
    for t0, t1 in fixed:
        while t1 - t0 > piece:
            units.append((t0, t0 + piece))
            t0 += piece
        units.append((t0, t1))

    passages: list[tuple[int, int]] = []
    i = 0
    start = units[0][0]
    while i < len(units):
        end = start
        j = i
        while j < len(units) and units[j][1] - start <= max_tokens:
            end = units[j][1]
            j += 1
        if j == i:  # whole-sentence overlap left no room for the next unit: overlap by tokens instead
            start = units[i][1] - max_tokens
            continue
        passages.append((start, end))
        if j >= len(units):
            break
        # overlap: whole trailing units of this passage within budget, else the last `overlap` tokens
        next_start = end
        k = j - 1
        while k >= i and end - units[k][0] <= overlap and units[k][0] > start:
            next_start = units[k][0]
            k -= 1
        if next_start == end and overlap > 0:
            next_start = max(start + 1, end - overlap)
        start = next_start
        i = j
    return [Passage(a, b, offsets[a][0], offsets[b - 1][1]) for a, b in passages]
