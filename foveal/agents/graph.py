"""The search graph of a MindSearch-style agent.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024): a question becomes the
``root`` node, the planner adds one searcher node per sub-question with edges from the nodes whose answers it
needs, and a ``response`` node closes the graph. Unlike the authors' ``WebSearchGraph``, adding a node does not
start a searcher; the executor (:mod:`foveal.agents.executor`) runs every node whose parents are done.

Example::

    >>> graph = SearchGraph("Who directed the film that won the 1998 Palme d'Or?")
    >>> node = graph.add_node("film", "Which film won the 1998 Palme d'Or?")
    >>> graph.add_edge("root", "film")
    >>> response = graph.add_response()
    >>> [n.name for n in graph.ready()]
    ['film']
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

ROOT = "root"
RESPONSE = "response"


class NodeState(str, enum.Enum):
    not_started = "not_started"
    running = "running"
    done = "done"
    failed = "failed"


class NodeType(str, enum.Enum):
    root = "root"
    searcher = "searcher"
    response = "response"


@dataclass(slots=True)
class Reference:
    """A passage a node's answer cites: ``[[id]]`` in the answer text resolves to it."""

    id: int
    doc_id: str
    title: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "doc_id": self.doc_id, "title": self.title, "text": self.text, "score": self.score}


@dataclass(slots=True)
class Node:
    name: str
    content: str
    type: NodeType
    state: NodeState = NodeState.not_started
    answer: str | None = None
    references: list[Reference] = field(default_factory=list)
    error: str | None = None
    #: An entity the sub-question is about (searched on its own too), set by the planner.
    focus: str | None = None
    #: How many passages the node may cite (set by the planner); None: the searcher's own number.
    select: int | None = None
    #: The search queries the searcher ran (after rewriting).
    queries: list[str] = field(default_factory=list)
    #: Titles of everything the searches returned, cited or not (the rule planner's bridge candidates).
    retrieved_titles: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content": self.content,
            "type": self.type.value,
            "state": self.state.value,
            "focus": self.focus,
            "select": self.select,
            "answer": self.answer,
            "references": [r.to_dict() for r in self.references],
            "error": self.error,
            "queries": self.queries,
        }


@dataclass(slots=True)
class Edge:
    start: str
    end: str

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end}


class SearchGraph:
    """Nodes (root, sub-questions, response), edges, node states, and each node's answer and references."""

    def __init__(self, question: str) -> None:
        self.nodes: dict[str, Node] = {ROOT: Node(ROOT, question, NodeType.root, NodeState.done)}
        self.edges: list[Edge] = []

    @property
    def question(self) -> str:
        return self.nodes[ROOT].content

    def add_node(self, name: str, content: str) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists")
        node = self.nodes[name] = Node(name, content, NodeType.searcher)
        return node

    def add_edge(self, start: str, end: str) -> None:
        for name in (start, end):
            if name not in self.nodes:
                raise ValueError(f"edge {start!r} -> {end!r} names an unknown node {name!r}")
        if end == ROOT or start == RESPONSE:
            raise ValueError(f"edge {start!r} -> {end!r}: nothing points at root and response points nowhere")
        if any(e.start == start and e.end == end for e in self.edges):
            return
        if start == end or end in self.ancestors(start):
            raise ValueError(f"edge {start!r} -> {end!r} would make a cycle")
        self.edges.append(Edge(start, end))

    def add_response(self) -> Node:
        """Add the response node with an edge from every searcher node that has no child."""
        node = self.nodes.get(RESPONSE) or Node(RESPONSE, self.question, NodeType.response)
        self.nodes[RESPONSE] = node
        for leaf in self.searchers():
            if not self.children(leaf.name) or self.children(leaf.name) == [RESPONSE]:
                if not any(e.start == leaf.name and e.end == RESPONSE for e in self.edges):
                    self.edges.append(Edge(leaf.name, RESPONSE))
        return node

    # -- queries --------------------------------------------------------------------------------------------------
    def parents(self, name: str) -> list[str]:
        return [e.start for e in self.edges if e.end == name]

    def children(self, name: str) -> list[str]:
        return [e.end for e in self.edges if e.start == name]

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for parent in self.parents(stack.pop()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def searchers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == NodeType.searcher]

    def ready(self) -> list[Node]:
        """Searcher nodes not started whose parents have all finished (done or failed)."""
        finished = {NodeState.done, NodeState.failed}
        return [
            n
            for n in self.searchers()
            if n.state == NodeState.not_started and all(self.nodes[p].state in finished for p in self.parents(n.name))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": {name: node.to_dict() for name, node in self.nodes.items()},
                "edges": [e.to_dict() for e in self.edges]}
