"""A planner's output: sub-questions and edges as JSON, validated before anything runs.

MindSearch's planner writes Python that calls the graph and the authors ``exec()`` it; here the planner writes
data, ``{"nodes": [{"name", "content"}], "edges": [[start, end], ...]}``, which is parsed, checked and applied.
Nothing a model writes is ever executed.

Example::

    >>> plan = parse_plan('{"nodes": [{"name": "a", "content": "Who wrote Dune?"}], "edges": [["root", "a"]]}')
    >>> plan.nodes[0].content
    'Who wrote Dune?'
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foveal.agents.graph import RESPONSE, ROOT, SearchGraph
from foveal.errors import InvalidInputError

MAX_NODES = 8
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$"


class PlanError(InvalidInputError):
    """A plan that cannot be used (not JSON, wrong shape, unknown nodes, cycles)."""


class PlannedNode(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    content: str = Field(min_length=1, max_length=1000)
    #: An entity the sub-question is about; the searcher also searches it on its own.
    focus: str | None = Field(default=None, max_length=200)
    #: How many passages this node may cite; None: the searcher's own number.
    select: int | None = Field(default=None, ge=1, le=20)
    model_config = ConfigDict(extra="forbid")


class Plan(BaseModel):
    nodes: list[PlannedNode] = Field(default_factory=list, max_length=MAX_NODES)
    edges: list[tuple[str, str]] = Field(default_factory=list)
    model_config = ConfigDict(extra="forbid")


def _json_object(text: str) -> object:
    """The JSON object in ``text``: the whole reply, a fenced block, or the outermost braces."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [text.strip()]
    if fenced:
        candidates.append(fenced.group(1).strip())
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise PlanError("the plan is not JSON", reply=text[:500])


def parse_plan(text: str | dict) -> Plan:
    """Parse and validate a plan's shape (a reply text or an already decoded object)."""
    data = _json_object(text) if isinstance(text, str) else text
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}" for e in exc.errors())
        raise PlanError(f"invalid plan: {problems}") from None
    names = [n.name for n in plan.nodes]
    reserved = {ROOT, RESPONSE} & set(names)
    if reserved:
        raise PlanError(f"invalid plan: node names {sorted(reserved)} are reserved")
    if len(set(names)) != len(names):
        raise PlanError("invalid plan: node names repeat")
    return plan


def apply_plan(graph: SearchGraph, plan: Plan) -> list[str]:
    """Add a plan's nodes and edges to ``graph``; returns the names added. Checked in full before any change.

    A new node with no incoming edge gets one from ``root``.
    """
    known = set(graph.nodes)
    new = [n.name for n in plan.nodes]
    clash = known & set(new)
    if clash:
        raise PlanError(f"invalid plan: nodes {sorted(clash)} already exist")
    allowed = known | set(new)
    for start, end in plan.edges:
        for name in (start, end):
            if name not in allowed or name == RESPONSE:
                raise PlanError(f"invalid plan: edge {start!r} -> {end!r} names an unknown node {name!r}")
        if end not in new:
            raise PlanError(f"invalid plan: edge {start!r} -> {end!r} must end at a node of this plan")
    trial = SearchGraph(graph.question)
    for name in known - {ROOT}:
        trial.nodes[name] = graph.nodes[name]
    trial.edges = list(graph.edges)
    try:
        for node in plan.nodes:
            trial.add_node(node.name, node.content)
        for start, end in plan.edges:
            trial.add_edge(start, end)
    except ValueError as exc:
        raise PlanError(f"invalid plan: {exc}") from None
    for node in plan.nodes:
        added = graph.add_node(node.name, node.content)
        added.focus, added.select = node.focus, node.select
    for start, end in plan.edges:
        graph.add_edge(start, end)
    for name in new:
        if not graph.parents(name):
            graph.add_edge(ROOT, name)
    return new
