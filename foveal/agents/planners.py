"""Planners: decompose a question into sub-questions (graph nodes), follow up on answers, and write the response.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024), whose planner (WebPlanner)
builds the graph turn by turn from the answers it gets back. Both planners here return :class:`~foveal.agents.plan.Plan`
data, never code:

* :class:`RulePlanner` needs no model. It splits compound questions (several questions, or clauses joined by
  "; " / "and" + a question word), comparative and multi-entity questions ("Which is older, A or B?", "Were A and
  B both ...?") into one sub-question per part (a comparison asks each entity's value, "When was A built or
  founded?", and the response states the comparison from the two answers). A question it cannot split is asked
  whole, and once answered it follows *bridge entities*, each with a sub-question that also searches the entity
  on its own and cites the entity's own document first. Candidates (:func:`bridge_candidates`), best first: the
  title of a retrieved but uncited document that a cited passage (else the question) names; a name in the answer
  that titles a retrieved document, a name of several words, or a cited passage's title; then other retrieved
  titles and names that the best cited passages mention. :meth:`RulePlanner.for_budget` shares out the citations.
* :class:`LLMPlanner` asks any OpenAI-compatible chat model for the plan as JSON, then (after the searchers
  answer) whether more sub-questions are needed, and finally for the cited response.

Example::

    >>> RulePlanner().plan("Which is older, the Eiffel Tower or the Statue of Liberty?").nodes[1].content
    'When was the Statue of Liberty built or founded?'
"""

from __future__ import annotations

import json
import re
from typing import Protocol

from foveal.agents.graph import NodeState, SearchGraph
from foveal.agents.llm import ChatClient
from foveal.agents.plan import MAX_NODES, Plan, PlanError, PlannedNode, parse_plan
from foveal.agents.text import WH_WORDS, clean_title, mentioned_in, names


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


def _entity_pair(question: str) -> tuple[str, str, str, str, str] | None:
    """(text before, left entity, right entity, punctuation after the right one, text after) of "A or B" /
    "A and B" (the latter only with a both/same/yes-no cue), or None."""
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
        tail = tokens[end - 1][len(tokens[end - 1].rstrip(",?;")) :]
        return " ".join(tokens[:start]), left, right, tail, " ".join(tokens[end:])
    return None


#: Comparatives the rule planner answers by comparing the two entities' values: word -> (attribute, which wins).
#: ``when``: a date (the earliest year wins for "older"); ``size``: a number (the largest wins for "taller").
COMPARATIVES: dict[str, tuple[str, str]] = {
    **{w: ("when", "min") for w in ("older", "oldest", "earlier", "first", "sooner", "elder")},
    **{w: ("when", "max") for w in ("newer", "younger", "later", "latest", "last", "more recent", "youngest")},
    **{w: ("how tall", "max") for w in ("taller", "higher", "tallest", "highest")},
    **{w: ("how long", "max") for w in ("longer", "longest")},
    **{w: ("how large", "max") for w in ("larger", "bigger", "largest", "biggest")},
    **{w: ("how large", "min") for w in ("smaller", "smallest")},
    **{w: ("how many people live in", "max") for w in ("more populous", "most populous")},
}
_COMPARATIVE = re.compile(r"\b(" + "|".join(sorted((re.escape(w) for w in COMPARATIVES), key=len, reverse=True))
                          + r")\b", re.IGNORECASE)


def comparison(question: str) -> tuple[str, str, str] | None:
    """(comparative word, left entity, right entity) of a question such as "Which is older, A or B?" or "Who was
    born first, A or B?", else None. Yes/no questions ("Were A and B both ...?") are not comparisons."""
    if _YES_NO_START.search(question):
        return None
    pair = _entity_pair(question)
    if pair is None:
        return None
    before, left, right, _tail, after = pair
    match = _COMPARATIVE.search(before) or _COMPARATIVE.search(after)
    if match is None:
        return None
    if re.search(r"\bthe$", before, re.IGNORECASE):  # keep the article: "the Eiffel Tower"
        left = "the " + left
    if re.search(r"\b(?:or|and|vs\.?|versus)\s+the\s+" + re.escape(right), question, re.IGNORECASE):
        right = "the " + right
    return match.group(1).lower(), left, right


def comparison_subquestion(word: str, entity: str, question: str) -> str:
    """One entity's side of a comparison, asked as a question about that entity alone: "When was the Eiffel Tower
    built or founded?" (the search then finds the entity's own passage, not a passage about comparing)."""
    attribute, _ = COMPARATIVES[word]
    if attribute == "when":
        if re.search(r"\b(born|die[ds]?|live[ds]?)\b", question, re.IGNORECASE) or question.lower().startswith("who"):
            return f"When was {entity} born?"
        verb = re.search(r"\b(?:was|were|is|are)\s+(\w+ed)\b", question)
        return f"When was {entity} {verb.group(1)}?" if verb else f"When was {entity} built or founded?"
    if attribute.startswith("how many"):
        return f"{attribute.capitalize()} {entity}?"
    return f"{attribute.capitalize()} is {entity}?"


def split_entities(question: str) -> list[str]:
    """One sub-question per entity of "A or B" / "A and B" (the latter only with a both/same/yes-no cue); a
    comparison ("Which is older, A or B?") asks each entity's value (:func:`comparison_subquestion`)."""
    pair = _entity_pair(question)
    if pair is None:
        return []
    compared = comparison(question)
    if compared is not None:
        word, left, right = compared
        return [comparison_subquestion(word, left, question), comparison_subquestion(word, right, question)]
    before, left, right, tail, after = pair
    out = []
    for entity in (left, right):
        out.append(" ".join(part for part in (before, entity + tail, after) if part))
    return [q if q.endswith(("?", ".")) else q + "?" for q in out]


_CENTURY = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)[-\s]+century(\s+(?:BC|BCE|B\.C\.))?", re.IGNORECASE)
_YEAR = re.compile(r"\b(\d{3,4})(\s*(?:BC|BCE|B\.C\.))?(?![\d,.])")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w])")


def value_of(attribute: str, text: str) -> tuple[float, str] | None:
    """The first value of ``attribute`` kind in ``text``: a year (BC negative; a century counts as its middle) for
    ``when``, else the first number. Returns (value, the text it was read from)."""
    text = CITATION_MARK.sub("", text)
    if attribute == "when":
        found = []
        for m in _CENTURY.finditer(text):
            century = int(m.group(1))
            middle = century * 100 - 50
            found.append((m.start(), -middle if m.group(2) else middle, m.group(0).strip()))
        for m in _YEAR.finditer(text):
            year = int(m.group(1))
            if m.group(2) or 500 <= year <= 2100:
                found.append((m.start(), -year if m.group(2) else year, m.group(0).strip()))
        if not found:
            return None
        _, value, shown = min(found)
        return float(value), shown
    m = _NUMBER.search(text)
    return (float(m.group(1).replace(",", "")), m.group(1)) if m else None


CITATION_MARK = re.compile(r"\[\[\d+\]\]")


def compare_answer(question: str, sections: str) -> str | None:
    """The comparison stated from the two entities' sections (``## sub-question`` blocks of compose_answer):
    "The Great Wall of China is older (7th century BC [[2]]) than the Eiffel Tower (1889 [[1]])." When a value is
    missing, a sentence saying the comparison could not be settled and what was found. None: not a comparison."""
    compared = comparison(question)
    if compared is None:
        return None
    word, left, right = compared
    attribute, wins = COMPARATIVES[word]
    blocks = {}
    for block in re.split(r"(?m)^## ", sections):
        if block.strip():
            head, _, body = block.partition("\n")
            blocks[head.strip()] = body.strip()
    sides = []
    for entity in (left, right):
        body = blocks.get(comparison_subquestion(word, entity, question), "")
        cites = "".join(dict.fromkeys(CITATION_MARK.findall(body)))
        found = None
        for sentence in re.split(r"(?<=\]\])\s+", body):  # the best-scored sentence first
            found = value_of(attribute, sentence)
            if found:
                cites = "".join(CITATION_MARK.findall(sentence)) or cites
                break
        sides.append((entity, found, cites))
    (a, va, ca), (b, vb, cb) = sides
    if va is None or vb is None or va[0] == vb[0]:
        known = "; ".join(f"{e}: {v[1]} {c}".strip() if v else f"{e}: not found" for e, v, c in sides)
        return f"Which is {word} could not be settled from the cited passages ({known})."
    first, second = (sides[0], sides[1]) if (va[0] < vb[0]) == (wins == "min") else (sides[1], sides[0])
    name = lambda e: e[0].upper() + e[1:]  # noqa: E731
    return (f"{name(first[0])} is {word} ({first[1][1]} {first[2]}) than {second[0]} "
            f"({second[1][1]} {second[2]}).").replace(" )", ")")


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


_LOOSE_JOIN = re.compile(r"\s+(?:in|on|for|and|&)\s+")


def _named_in(title: str, text: str) -> int:
    """Where ``text`` names ``title`` (case-sensitive, whole words), or -1."""
    match = re.search(r"(?<!\w)" + re.escape(title) + r"(?!\w)", text)
    return match.start() if match else -1


def linked_title(question: str, references: list, retrieved_titles: list[str]) -> str | None:
    """A retrieved, not yet cited document that a cited passage names (best passage first, earliest mention
    first), else one the question names: the entity linking that leads from a first answer to a second hop."""
    cited = {clean_title(r.title) for r in references}
    titles = [t for t in dict.fromkeys(clean_title(t) for t in retrieved_titles)
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
    titles = {clean_title(t).lower(): clean_title(t) for t in retrieved_titles if t}
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
        clean = clean_title(title)
        if clean and not mentioned_in(clean, question):
            return clean
    return every[0] if every else None


def bridge_candidates(question: str, answer: str, references: list, retrieved_titles: list[str]) -> list[str]:
    """Entities a first answer leads to, best first, none the question already mentions: the linked title
    (:func:`linked_title`), then the answer's bridge entity (:func:`bridge_entity`), then retrieved titles named in
    the cited passages, then names in the best cited passages."""
    out = [linked_title(question, references, retrieved_titles),
           bridge_entity(question, answer, [r.title for r in references], retrieved_titles)]
    cited = {clean_title(r.title) for r in references}
    titles = [t for t in dict.fromkeys(clean_title(t) for t in retrieved_titles) if len(t) >= 4 and t not in cited]
    for ref in references:
        found = sorted((at, t) for t in titles if (at := _named_in(t, ref.text)) >= 0 and not mentioned_in(t, question))
        out.extend(t for _, t in found)
    for ref in references[:2]:
        out.extend(n for n in names(ref.text) if len(n) > 2 and not mentioned_in(n, question))
    return [e for e in dict.fromkeys(out) if e and e not in cited]


class RulePlanner:
    """Splits compound, comparative and multi-entity questions; follows one bridge entity otherwise."""

    def __init__(self, follow_bridges: bool = True, whole_select: int | None = None,
                 bridge_select: int | None = None, bridges: int = 1) -> None:
        self.follow_bridges = follow_bridges
        #: How many bridge entities are followed (one node each, chained so each cites something new).
        self.bridges = bridges
        #: Passages the whole-question node (a question not split) and the bridge node may cite; None: the
        #: searcher's own number.
        self.whole_select = whole_select
        self.bridge_select = bridge_select

    @classmethod
    def for_budget(cls, select: int = 4) -> "RulePlanner":
        """The split chosen on HotpotQA dev150 questions 1-75 (docs/robust.md): two nodes' budget (``2 * select``
        passages) goes to a question asked whole as ``2 * select - 2`` passages of its own search and one passage
        (the entity's own document) for each of two bridge entities, followed in turn."""
        if select < 2:
            return cls(whole_select=select, bridge_select=1, bridges=1)
        return cls(whole_select=2 * select - 2, bridge_select=1, bridges=2)

    def plan(self, question: str) -> Plan:
        question = " ".join(question.split())
        parts = split_compound(question)
        if len(parts) == 1:
            parts = split_entities(question) or parts
        whole = self.whole_select if len(parts) == 1 else None
        return Plan(nodes=[PlannedNode(name=f"q{i}", content=p, select=whole) for i, p in enumerate(parts, start=1)])

    def follow_up(self, graph: SearchGraph) -> Plan | None:
        searchers = graph.searchers()
        if not self.follow_bridges or len(searchers) != 1:
            return None
        first = searchers[0]
        if first.state != NodeState.done or not first.answer:
            return None
        entities = bridge_candidates(graph.question, first.answer, first.references, first.retrieved_titles)
        if not entities:
            return None
        nodes, edges, parent = [], [], first.name
        for i, entity in enumerate(entities[: self.bridges]):
            name = "bridge" if i == 0 else f"bridge{i + 1}"
            content = f"{entity}: {graph.question}"
            nodes.append(PlannedNode(name=name, content=content[:1000], focus=entity[:200], select=self.bridge_select))
            edges.append((parent, name))
            parent = name
        return Plan(nodes=nodes, edges=edges)

    def respond(self, graph: SearchGraph, sections: str) -> str | None:
        """A comparison's answer states the comparison first, then the findings; other answers are the findings."""
        stated = compare_answer(graph.question, sections)
        return f"{stated}\n\n{sections}" if stated else None


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
