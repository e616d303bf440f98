"""Planners: decompose a question into sub-questions (graph nodes), follow up on answers, and write the response.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024), whose planner (WebPlanner)
builds the graph turn by turn from the answers it gets back. Both planners here return :class:`~foveal.agents.plan.Plan`
data, never code:

* :class:`RulePlanner` needs no model. It splits compound questions (several questions, or clauses joined by
  "; " / "and" + a question word), comparative and multi-entity questions ("Which is older, A or B?", "Were A and
  B both ...?") into one sub-question per part; a question it cannot split is asked whole, and once answered it
  follows a *bridge entity* with a second sub-question that also searches the entity on its own. The entity is
  the title of a retrieved but uncited document that a cited passage (else the question) names; failing that, a
  name in the answer that titles a retrieved document, a name of several words, or a cited passage's title.
* :class:`LLMPlanner` asks any OpenAI-compatible chat model for the plan as JSON, then (after the searchers
  answer) whether more sub-questions are needed, and finally for the cited response.

Example::

    >>> RulePlanner().plan("Which is older, the Eiffel Tower or the Statue of Liberty?").nodes[1].content
    'Which is older, the Statue of Liberty?'
"""

from __future__ import annotations

import html
import json
import re
from typing import Protocol

from foveal.agents.graph import NodeState, SearchGraph
from foveal.agents.llm import ChatClient
from foveal.agents.plan import MAX_NODES, Plan, PlanError, PlannedNode, parse_plan
from foveal.agents.text import WH_WORDS, mentioned_in, names


class Planner(Protocol):
    def plan(self, question: str) -> Plan:
        """The first sub-questions."""

    def follow_up(self, graph: SearchGraph) -> Plan | None:
        """More sub-questions given the answers so far, or None when the graph is complete."""

    def respond(self, graph: SearchGraph, sections: str) -> str | None:
        """The final answer from the nodes' cited answers (``[[n]]`` global numbering), or None to use them as is."""


# -- rule-based ---------------------------------------------------------------------------------------------------
_JOINERS = {"and", "or", "vs", "vs.", "versus"}
_INNER = {"of", "the", "de", "da", "del", "du", "la", "le", "van", "von", "der", "for", "in", "on", "a", "&"}
_SENTENCE_START = {w.capitalize() for w in WH_WORDS} | {"Which", "In", "On", "The", "Both", "Name", "Between"}
_AND_CUES = re.compile(r"\b(both|same|common|between|neither|either|together)\b", re.IGNORECASE)
_YES_NO_START = re.compile(r"^(are|were|is|was|do|does|did|have|has|can|could)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"\s*;\s*|,?\s+and\s+(?=(?:" + "|".join(WH_WORDS) + r")\b)", re.IGNORECASE)


def _is_name_token(token: str) -> bool:
    token = token.strip("\"'“”‘’(),?")
    return bool(token) and (token[0].isupper() or token[0].isdigit())


def _run_left(tokens: list[str], end: int) -> int:
    """Start index of the capitalised run ending at ``end`` (inclusive), or ``end + 1`` when there is none."""
    start = end + 1
    j = end
    while j >= 0:
        token = tokens[j]
        if j != end and token.endswith(","):
            break
        if _is_name_token(token):
            start = j
        elif token.lower() in _INNER and j > 0 and _is_name_token(tokens[j - 1]) and start == j + 1:
            pass
        else:
            break
        j -= 1
    while start <= end and (tokens[start].strip("\"“") in _SENTENCE_START or tokens[start].lower() in _INNER):
        start += 1
    return start


def _run_right(tokens: list[str], begin: int) -> int:
    """End index (exclusive) of the capitalised run starting at ``begin``."""
    while begin < len(tokens) - 1 and tokens[begin].lower() in _INNER:
        begin += 1
    end = begin
    j = begin
    while j < len(tokens):
        token = tokens[j]
        if _is_name_token(token):
            end = j + 1
        elif not (token.lower() in _INNER and j + 1 < len(tokens) and _is_name_token(tokens[j + 1])):
            break
        if token.endswith((",", "?", ";")) or (token.endswith(".") and j + 1 < len(tokens)
                                                  and not _is_name_token(tokens[j + 1])):
            break
        j += 1
    while end > begin and tokens[end - 1].lower() in _INNER:
        end -= 1
    return end


def split_entities(question: str) -> list[str]:
    """One sub-question per entity of "A or B" / "A and B" (the latter only with a both/same/yes-no cue)."""
    tokens = question.split()
    for i, token in enumerate(tokens):
        word = token.lower().strip(",")
        if word not in _JOINERS or i == 0 or i == len(tokens) - 1:
            continue
        if word == "and" and not (_AND_CUES.search(question) or _YES_NO_START.search(question)):
            continue
        start = _run_left(tokens, i - 1)
        end = _run_right(tokens, i + 1)
        right_tokens = tokens[i + 1 : end]
        while right_tokens and right_tokens[0].lower() in _INNER:
            right_tokens = right_tokens[1:]
        if start > i - 1 or not right_tokens:
            continue
        left = " ".join(tokens[start:i]).rstrip(",")
        right = " ".join(right_tokens).rstrip(",?;")
        before = " ".join(tokens[:start])
        after = " ".join(tokens[end:])
        tail = tokens[end - 1][len(tokens[end - 1].rstrip(",?;")) :]
        out = []
        for entity in (left, right):
            text = " ".join(part for part in (before, entity + tail, after) if part)
            out.append(text)
        return [q if q.endswith(("?", ".")) else q + "?" for q in out]
    return []


def split_compound(question: str) -> list[str]:
    """Several questions in one: split on '?' between questions, on ';', and on ', and <question word>'."""
    parts = [p.strip() + "?" for p in question.split("?") if p.strip()] if question.count("?") > 1 else [question]
    out: list[str] = []
    for part in parts:
        pieces = [p.strip() for p in _CLAUSE_SPLIT.split(part) if p and p.strip()]
        if len(pieces) > 1 and all(len(p.split()) >= 3 for p in pieces):
            out.extend(p if p.endswith(("?", ".")) else p.rstrip(",") + "?" for p in pieces)
        else:
            out.append(part)
    return out[:MAX_NODES]


def _clean_title(title: str) -> str:
    return re.sub(r"\s*\([^)]*\)\s*$", "", html.unescape(title)).strip()


_LOOSE_JOIN = re.compile(r"\s+(?:in|on|for|and|&)\s+")


def _named_in(title: str, text: str) -> int:
    """Where ``text`` names ``title`` (case-sensitive, whole words), or -1."""
    match = re.search(r"(?<!\w)" + re.escape(title) + r"(?!\w)", text)
    return match.start() if match else -1


def linked_title(question: str, references: list, retrieved_titles: list[str]) -> str | None:
    """A retrieved, not yet cited document that a cited passage names (best passage first, earliest mention
    first), else one the question names: the entity linking that leads from a first answer to a second hop."""
    cited = {_clean_title(r.title) for r in references}
    titles = [t for t in dict.fromkeys(_clean_title(t) for t in retrieved_titles)
              if len(t) >= 4 and t not in cited]
    for ref in references:
        found = [(at, t) for t in titles if (at := _named_in(t, ref.text)) >= 0 and not mentioned_in(t, question)]
        if found:
            return min(found)[1]
    found = [(at, t) for t in titles if (at := _named_in(t, question)) >= 0]
    return min(found)[1] if found else None


def bridge_entity(question: str, answer: str, cited_titles: list[str], retrieved_titles: list[str]) -> str | None:
    """The entity a first answer leads to, never one the question already mentions.

    The answer's cited sentences are read best first; in each, a name that titles a retrieved document wins, then
    a name of several words. Failing those, the title of a cited passage, then any new name.
    """
    titles = {_clean_title(t).lower(): _clean_title(t) for t in retrieved_titles if t}
    every: list[str] = []
    for sentence in re.split(r"\[\[\d+\]\]", answer):
        spans = []
        for name in names(sentence):  # "Gustav Klimt in Vienna": its parts first, then the whole span
            parts = [p for p in _LOOSE_JOIN.split(name) if p]
            spans.extend((parts if len(parts) > 1 else []) + [name])
        fresh = [n for n in spans if len(n) > 2 and not mentioned_in(n, question)]
        every.extend(fresh)
        for name in fresh:
            if name.lower() in titles:
                return titles[name.lower()]
        several = [n for n in fresh if len(n.split()) > 1]
        if several:
            return several[0]
    for title in cited_titles:
        clean = _clean_title(title)
        if clean and not mentioned_in(clean, question):
            return clean
    return every[0] if every else None


class RulePlanner:
    """Splits compound, comparative and multi-entity questions; follows one bridge entity otherwise."""

    def __init__(self, follow_bridges: bool = True) -> None:
        self.follow_bridges = follow_bridges

    def plan(self, question: str) -> Plan:
        question = " ".join(question.split())
        parts = split_compound(question)
        if len(parts) == 1:
            parts = split_entities(question) or parts
        return Plan(nodes=[PlannedNode(name=f"q{i}", content=p) for i, p in enumerate(parts, start=1)])

    def follow_up(self, graph: SearchGraph) -> Plan | None:
        searchers = graph.searchers()
        if not self.follow_bridges or len(searchers) != 1:
            return None
        first = searchers[0]
        if first.state != NodeState.done or not first.answer:
            return None
        entity = linked_title(graph.question, first.references, first.retrieved_titles) or bridge_entity(
            graph.question, first.answer, [r.title for r in first.references], first.retrieved_titles)
        if entity is None:
            return None
        content = f"{entity}: {graph.question}"
        return Plan(nodes=[PlannedNode(name="bridge", content=content[:1000], focus=entity[:200])],
                    edges=[(first.name, "bridge")])

    def respond(self, graph: SearchGraph, sections: str) -> str | None:
        return None


# -- LLM ----------------------------------------------------------------------------------------------------------
PLAN_PROMPT = """You plan web-style research for a question over a document index.
Break the question into single-fact sub-questions. Each sub-question is a node; an edge [a, b] means b needs a's
answer first (use it when a later sub-question depends on an entity found by an earlier one). Independent
sub-questions have no edges between them and run in parallel. Do not repeat sub-questions; at most {max_nodes} nodes.
Node names are short identifiers (letters, digits, _ or -), never "root" or "response".
Reply with JSON only, exactly in this shape:
{{"nodes": [{{"name": "q1", "content": "..."}}], "edges": [["q1", "q2"]]}}"""

FOLLOW_UP_PROMPT = """Here are the answers found so far for the sub-questions of: {question}

{answers}

If another sub-question is needed to answer the question, reply with JSON of new nodes in the same shape (edges may
start at the existing node names: {existing}). If nothing more is needed, reply {{"nodes": [], "edges": []}}."""

RESPONSE_PROMPT = """Write the final answer to: {question}

Use only these findings; keep their citations [[n]] next to the facts they support and cite nothing else.

{sections}"""


class LLMPlanner:
    """Plans, follows up and responds through an OpenAI-compatible chat model; replies are validated JSON."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def plan(self, question: str) -> Plan:
        reply = self.client.complete([
            {"role": "system", "content": PLAN_PROMPT.format(max_nodes=MAX_NODES)},
            {"role": "user", "content": question},
        ])
        plan = parse_plan(reply)
        if not plan.nodes:
            raise PlanError("invalid plan: the planner proposed no sub-questions", reply=reply[:500])
        return plan

    def follow_up(self, graph: SearchGraph) -> Plan | None:
        answers = "\n".join(
            f"- {n.name}: {n.content}\n  answer: {n.answer or '(failed: ' + str(n.error) + ')'}" for n in graph.searchers()
        )
        reply = self.client.complete([
            {"role": "system", "content": PLAN_PROMPT.format(max_nodes=MAX_NODES)},
            {"role": "user", "content": FOLLOW_UP_PROMPT.format(
                question=graph.question, answers=answers, existing=json.dumps([n.name for n in graph.searchers()]))},
        ])
        plan = parse_plan(reply)
        return plan if plan.nodes else None

    def respond(self, graph: SearchGraph, sections: str) -> str | None:
        return self.client.complete([{"role": "user", "content": RESPONSE_PROMPT.format(
            question=graph.question, sections=sections)}])
