"""Searchers: answer one sub-question from foveal's own index, citing the passages used.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024), where each searcher
rewrites its sub-question into queries, searches (top 6 per query, deduplicated), selects at most 4 results and
writes an answer citing them as ``[[i]]``. Here the search is foveal's pipeline (hybrid by default) and each of
the three steps sits behind a small protocol with a rule-based and an LLM implementation:

* :class:`Rewriter` (``RuleRewriter``: the question and its content words; ``LLMRewriter``),
* selection (the best fused scores, skipping passages the node's ancestors already cite),
* :class:`Writer` (``ExtractiveWriter``: the sentence of each selected passage closest to the sub-question,
  each cited; ``LLMWriter``).

Answers of parent nodes reach the rewriter and writer as ``history``.

Example::

    >>> searcher = PipelineSearcher(engine.pipeline("wiki"))                                  # doctest: +SKIP
    >>> result = searcher.run("Who wrote Dune?", topic="Who wrote Dune?", history=[])         # doctest: +SKIP
    >>> result.answer                                                                          # doctest: +SKIP
    'Dune is a 1965 novel by Frank Herbert. [[1]]'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from foveal.agents.graph import Reference
from foveal.agents.llm import ChatClient
from foveal.agents.text import clean_title, content_words, sentences
from foveal.config import FusionConfig, Pipeline
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline

CITATION = re.compile(r"\[\[(\d+)\]\]")


@dataclass(slots=True)
class HistoryItem:
    """A parent node's question and answer, passed on to its children."""

    question: str
    answer: str


@dataclass(slots=True)
class SearcherResult:
    answer: str
    #: Only the passages the answer cites, numbered as the answer cites them.
    references: list[Reference]
    queries: list[str] = field(default_factory=list)
    #: Titles of every passage the searches returned (the rule planner looks for bridge entities among them).
    retrieved_titles: list[str] = field(default_factory=list)


class Searcher(Protocol):
    def run(self, question: str, topic: str, history: Sequence[HistoryItem],
            exclude: frozenset[str] = frozenset(), focus: str | None = None) -> SearcherResult:
        """One sub-question's cited answer. A planner that sets a node's ``select`` passes it as a keyword
        (``select=n``: cite at most n passages); a searcher without that keyword is called without it."""


class Rewriter(Protocol):
    def rewrite(self, question: str, topic: str, history: Sequence[HistoryItem]) -> list[str]: ...


class Writer(Protocol):
    def write(self, question: str, topic: str, history: Sequence[HistoryItem],
              passages: Sequence[Reference]) -> str: ...


# -- rewriting ----------------------------------------------------------------------------------------------------
class RuleRewriter:
    """The question as asked, and its content words alone (MindSearch's no-LLM fallback)."""

    def rewrite(self, question: str, topic: str, history: Sequence[HistoryItem]) -> list[str]:
        queries = [question]
        keywords = " ".join(content_words(question))
        if keywords and keywords.lower() != question.lower():
            queries.append(keywords)
        return queries


class LLMRewriter:
    """Asks the model for up to three search queries as a JSON list; falls back to the question."""

    def __init__(self, client: ChatClient, max_queries: int = 3) -> None:
        self.client = client
        self.max_queries = max_queries

    def rewrite(self, question: str, topic: str, history: Sequence[HistoryItem]) -> list[str]:
        known = "".join(f"Known: {h.question} -> {h.answer}\n" for h in history)
        reply = self.client.complete([
            {"role": "system", "content": "You write search queries for a document index. Reply with a JSON list "
                                          f"of at most {self.max_queries} short queries and nothing else."},
            {"role": "user", "content": f"Overall question: {topic}\n{known}Sub-question: {question}"},
        ])
        try:
            data = json.loads(reply[reply.index("[") : reply.rindex("]") + 1])
        except ValueError:
            return [question]
        queries = [q.strip() for q in data if isinstance(q, str) and q.strip()][: self.max_queries]
        return queries or [question]


# -- writing ------------------------------------------------------------------------------------------------------
class ExtractiveWriter:
    """The best sentence of each selected passage by cosine to the sub-question, best first, each cited ``[[i]]``.

    ``encode`` maps texts to unit vectors (the index's encoder); sentences are scored against the sub-question
    plus the parents' answers, so a follow-up question leans on what was found before. ``max_sentences``: at most
    this many passages are cited; None: every passage given (the searcher already chose how many).
    """

    def __init__(self, encode, max_sentences: int | None = 4) -> None:
        self.encode = encode
        self.max_sentences = max_sentences

    def write(self, question: str, topic: str, history: Sequence[HistoryItem], passages: Sequence[Reference]) -> str:
        if not passages:
            return ""
        pool: list[tuple[int, str]] = []
        for ref in passages:
            for sentence in sentences(ref.text) or [ref.text]:
                pool.append((ref.id, sentence))
        vectors = np.asarray(self.encode([question] + [s for _, s in pool]), dtype=np.float32)
        scores = vectors[1:] @ vectors[0]
        best: dict[int, tuple[float, str]] = {}
        for (ref_id, sentence), score in zip(pool, scores):
            if ref_id not in best or score > best[ref_id][0]:
                best[ref_id] = (float(score), sentence)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[: self.max_sentences or len(best)]
        return " ".join(f"{sentence} [[{ref_id}]]" for ref_id, (_, sentence) in ranked)


class LLMWriter:
    """Asks the model to answer from numbered passages, citing them as ``[[i]]``."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def write(self, question: str, topic: str, history: Sequence[HistoryItem], passages: Sequence[Reference]) -> str:
        numbered = "\n".join(f"[[{p.id}]] {p.title}: {p.text}" for p in passages)
        known = "".join(f"## Historical Problem\n{h.question}\nAnswer: {h.answer}\n" for h in history)
        return self.client.complete([
            {"role": "system", "content": "Answer the current problem from the numbered passages only. Cite every "
                                          "fact with the passage number as [[n]]. Be brief."},
            {"role": "user", "content": f"{known}## Final Problem\n{topic}\n## Current Problem\n{question}\n"
                                        f"## Passages\n{numbered}"},
        ])


def keep_resolved_citations(answer: str, known: set[int]) -> str:
    """Drop ``[[n]]`` markers that name no passage (a model may invent them)."""
    return CITATION.sub(lambda m: m.group(0) if int(m.group(1)) in known else "", answer)


# -- the searcher -------------------------------------------------------------------------------------------------
#: What a searcher node changes in its index's fusion: score regularization off. Regularization lifts documents like
#: the best ones, where a node of a multi-hop question needs the one that is not (the bridge paragraph); chosen on
#: HotpotQA dev150 questions 1-75 against the index's fusion and the fusion of the previous default (docs/robust.md).
NODE_FUSION: dict[str, Any] = {"regularize": {"enabled": False}}


def merged_fusion(base: FusionConfig, changes: Mapping[str, Any] | None) -> FusionConfig | None:
    """``base`` with ``changes`` (a partial fusion config; nested sections merge key by key); None when there are
    none, so the request keeps its index's fusion."""
    if not changes:
        return None
    merged = base.model_dump()
    for key, value in changes.items():
        merged[key] = {**merged[key], **value} if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
    return FusionConfig.model_validate(merged)


class PipelineSearcher:
    """Rewrite, search with foveal's pipeline, select, write: one sub-question's cited answer."""

    def __init__(
        self,
        pipeline: SearchPipeline,
        rewriter: Rewriter | None = None,
        writer: Writer | None = None,
        *,
        search_pipeline: Pipeline = Pipeline.hybrid,
        per_query: int = 6,
        select: int = 4,
        candidates: int = 10,
        fusion: Mapping[str, Any] | None = NODE_FUSION,
    ) -> None:
        """``fusion``: what the node's searches change in the index's fusion (:data:`NODE_FUSION`; None: nothing)."""
        self.pipeline = pipeline
        self.fusion = fusion
        self.rewriter = rewriter or RuleRewriter()
        self.writer = writer or ExtractiveWriter(
            lambda texts: pipeline.collection.encoder.encode_queries(texts).vectors, max_sentences=None)
        self.search_pipeline = search_pipeline
        self.per_query = per_query
        self.select = select
        #: Hits read per query: the best ``select`` are cited, the titles of all are bridge candidates.
        self.candidates = max(candidates, per_query)

    def run(self, question: str, topic: str, history: Sequence[HistoryItem],
            exclude: frozenset[str] = frozenset(), focus: str | None = None,
            select: int | None = None) -> SearcherResult:
        select = select or self.select
        queries = [q[:2000] for q in self.rewriter.rewrite(question, topic, history) if q.strip()] or [question][:1 if question.strip() else 0]
        if focus and focus.strip() and focus not in queries:
            queries.append(focus.strip())
        fusion = merged_fusion(self.pipeline.collection.config.fusion, self.fusion)
        requests = [SearchRequest(query=q, k=self.candidates + len(exclude), pipeline=self.search_pipeline,
                                  fusion=fusion) for q in queries]
        # Deduplicate across queries: a document keeps its best rank (then its best score).
        best: dict[str, tuple[int, float, object]] = {}
        responses = self.pipeline.search_many(requests)
        for response in responses:
            for hit in response.hits[: self.per_query + len(exclude)]:
                key = (hit.rank, -hit.score)
                if hit.id not in best or key < (best[hit.id][0], -best[hit.id][1]):
                    best[hit.id] = (hit.rank, hit.score, hit)
        ordered = [entry[2] for entry in sorted(best.values(), key=lambda e: (e[0], -e[1]))]
        if focus and focus.strip():  # the entity's own document first: its title names the focus
            ordered.sort(key=lambda h: not titles_match(h.title, focus))
        seen_titles: dict[str, None] = {}
        for rank in range(self.candidates + len(exclude)):  # every query's hits, by rank
            for response in responses:
                if rank < len(response.hits) and response.hits[rank].title:
                    seen_titles.setdefault(response.hits[rank].title)
        retrieved_titles = list(seen_titles)
        chosen = [h for h in ordered if h.id not in exclude][:select]
        passages = [Reference(id=i, doc_id=h.id, title=h.title, text=_passage_text(h), score=h.score)
                    for i, h in enumerate(chosen, start=1)]
        answer = self.writer.write(question, topic, history, passages)
        answer = keep_resolved_citations(answer, {p.id for p in passages})
        cited = {int(n) for n in CITATION.findall(answer)}
        return SearcherResult(answer=answer.strip(), references=[p for p in passages if p.id in cited],
                              queries=queries, retrieved_titles=retrieved_titles)


def titles_match(title: str | None, entity: str) -> bool:
    """Whether a document title names ``entity``: equal, ignoring case, HTML escapes and a trailing
    parenthetical ("Alien (film)" names "Alien")."""
    if not title:
        return False
    clean = clean_title(title).lower()
    return bool(clean) and clean == " ".join(entity.split()).lower()


def _passage_text(hit) -> str:
    """The matched passage without the title line the index prepends to a document's first passage."""
    text = hit.passage.text if hit.passage else hit.text
    if hit.title and text.startswith(hit.title + "\n"):
        text = text[len(hit.title) + 1 :]
    return text.strip()
