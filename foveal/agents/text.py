"""Small text helpers shared by the rule-based planner and searchers: sentences, content words, names."""

from __future__ import annotations

import html
import re

STOPWORDS = frozenset(
    """a an the of in on at to for from by with about as into onto upon and or but nor not no so than then that
    this these those there here is are was were be been being am do does did done has have had having can could
    shall should will would may might must which who whom whose what when where why how whether if also both
    either neither same other another any all each every some such own its it it's he she they them their his her
    him we you i me my our your us one ones first second more most less least many much very""".split()
)

WH_WORDS = ("who", "whom", "whose", "what", "when", "where", "which", "why", "how", "is", "are", "was", "were",
            "did", "does", "do", "can", "has", "have", "had", "in which", "on which")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[\w][\w'’\-]*", re.UNICODE)
_CONNECTORS = r"(?:of|the|de|da|di|del|della|du|des|la|le|van|von|der|den|y|and|&|for|in|on)"
_CAPITALISED = re.compile(
    rf"(?:[A-Z0-9][\w'’\-\.]*|\"[^\"]+\")(?:\s+(?:{_CONNECTORS}\s+)*(?:[A-Z0-9][\w'’\-\.]*))*", re.UNICODE
)
_WEAK_START = frozenset("the a an in on at he she it they his her its their this that these those there "
                        "when while after before during since for from by as but and or if".split())


def sentences(text: str) -> list[str]:
    """Split prose into sentences (a period before a capital starts a new one)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """The words of ``text`` that are not stopwords, in order, without repeats."""
    seen: dict[str, None] = {}
    for word in words(text):
        if word not in STOPWORDS and word not in seen:
            seen[word] = None
    return list(seen)


def names(text: str) -> list[str]:
    """Capitalised spans (names, titles) in order of appearance; sentence-initial function words are dropped."""
    found: list[str] = []
    for match in _CAPITALISED.finditer(text):
        span = match.group(0).strip().strip("\"").rstrip(".,;:")
        tokens = span.split()
        while tokens and (tokens[0].lower() in _WEAK_START or tokens[0][0].isdigit()):
            tokens = tokens[1:]
        while tokens and (re.fullmatch(_CONNECTORS, tokens[-1].lower()) or tokens[-1][0].isdigit()):
            tokens = tokens[:-1]
        span = " ".join(tokens)
        if span and not span.isdigit() and span not in found:
            found.append(span)
    return found


def mentioned_in(span: str, text: str) -> bool:
    """Whether ``span`` (or every content word of it) already occurs in ``text``."""
    lowered = " ".join(words(text))
    if " ".join(words(span)) in lowered:
        return True
    span_words = content_words(span)
    present = set(words(text))
    return bool(span_words) and all(w in present for w in span_words)


def clean_title(title: str) -> str:
    """A document title as an entity name: HTML escapes undone, a trailing parenthetical ("Alien (film)") dropped."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", html.unescape(title)).strip()
