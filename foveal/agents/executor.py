"""Running the graph: plan, search the nodes concurrently, follow up, respond, and stream every change as events.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024): searcher nodes whose
parents are finished run at once (here under a concurrency cap, each with a timeout); the planner then sees the
answers and may add nodes; the response node joins the nodes' cited answers, renumbering each node's ``[[i]]``
into one global reference map (MindSearch's ``_update_ref``; a document cited by two nodes gets one number).

Events, in order (each a dict ``{"event": kind, "data": {...}}``):

* ``graph``: ``{"change": "...", "graph": {"nodes": {name: {name, content, type, state}}, "edges": [...]}}``
  whenever a node is added or changes state;
* ``node``: ``{"node": {... answer, references, error, queries}}`` when a searcher node finishes (done or failed);
* ``error``: ``{"type", "message", "details"}`` when the run fails (an invalid plan, an unreachable model, ...);
* ``final``: ``{"status": "ok"|"partial"|"error", "answer", "references": {n: {...}}, "graph": {...}}``, always
  the last event, also after an error (then with whatever partial answer the finished nodes give).

A failed node (error or timeout) makes the run ``partial``, not failed. When the consumer stops iterating (the HTTP
client went away), the running nodes are cancelled.

Example::

    >>> agent = Agent(RulePlanner(), PipelineSearcher(engine.pipeline("wiki")))          # doctest: +SKIP
    >>> async for event in agent.stream("Who directed the 1998 Palme d'Or winner?"):     # doctest: +SKIP
    ...     print(event["event"])
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from foveal.agents.graph import RESPONSE, ROOT, NodeState, NodeType, Reference, SearchGraph
from foveal.agents.plan import apply_plan
from foveal.agents.planners import Planner
from foveal.agents.searchers import CITATION, HistoryItem, Searcher, keep_resolved_citations
from foveal.errors import FovealError
from foveal.metrics import observe_stage

Event = dict[str, Any]


@dataclass(slots=True)
class AgentSettings:
    #: Searcher nodes running at the same time.
    concurrency: int = 4
    #: Seconds one searcher node may take before it is marked failed.
    node_timeout: float = 60.0
    #: Seconds the planner may take per turn.
    planner_timeout: float = 120.0
    #: Follow-up turns after the first plan.
    max_rounds: int = 2


def _light(graph: SearchGraph) -> dict[str, Any]:
    return {
        "nodes": {n.name: {"name": n.name, "content": n.content, "type": n.type.value, "state": n.state.value}
                  for n in graph.nodes.values()},
        "edges": [e.to_dict() for e in graph.edges],
    }


def compose_answer(graph: SearchGraph) -> tuple[str, dict[int, Reference]]:
    """The nodes' answers as ``## sub-question`` sections with citations renumbered into one reference map."""
    by_doc: dict[str, int] = {}
    references: dict[int, Reference] = {}
    sections = []
    for node in graph.searchers():
        if node.state != NodeState.done or not node.answer:
            continue
        local = {r.id: r for r in node.references}

        def renumber(match) -> str:
            ref = local.get(int(match.group(1)))
            if ref is None:
                return ""
            number = by_doc.get(ref.doc_id)
            if number is None:
                number = by_doc[ref.doc_id] = len(by_doc) + 1
                references[number] = Reference(number, ref.doc_id, ref.title, ref.text, ref.score)
            return f"[[{number}]]"

        sections.append(f"## {node.content}\n\n{CITATION.sub(renumber, node.answer).strip()}")
    return "\n\n".join(sections), references


class Agent:
    """A planner and a searcher run over a :class:`SearchGraph`; :meth:`stream` yields the events."""

    def __init__(self, planner: Planner, searcher: Searcher, settings: AgentSettings | None = None) -> None:
        self.planner = planner
        self.searcher = searcher
        self.settings = settings or AgentSettings()
        #: Things to close with the agent (the LLM client's connection pool).
        self.resources: list = []

    def close(self) -> None:
        for resource in self.resources:
            resource.close()
        self.resources.clear()

    async def stream(self, question: str) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        graph = SearchGraph(" ".join(question.split()))
        state: dict[str, Any] = {"error": None}

        async def drive() -> None:
            try:
                await self._drive(graph, queue.put_nowait)
            except asyncio.CancelledError:
                raise
            except FovealError as exc:
                state["error"] = exc
                queue.put_nowait({"event": "error", "data": {"type": type(exc).__name__, "message": exc.message,
                                                             "details": _jsonable(exc.details)}})
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error event, then the final one
                state["error"] = exc
                queue.put_nowait({"event": "error", "data": {"type": type(exc).__name__, "message": str(exc),
                                                             "details": None}})
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while True:
                event = await queue.get()
                if event is None:
                    break
                yield event
        finally:
            if not task.done():  # the consumer went away: stop the planner and every running node
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - cancellation of our own task
                    pass
        yield self._final(graph, state["error"])

    async def run(self, question: str) -> list[Event]:
        """Every event of one run, in order (the last is ``final``)."""
        return [event async for event in self.stream(question)]

    # -- internals ------------------------------------------------------------------------------------------------
    def _final(self, graph: SearchGraph, error: BaseException | None) -> Event:
        response = graph.nodes.get(RESPONSE)
        if response is not None and response.state == NodeState.done:
            answer = response.answer or ""
            references = {r.id: r for r in response.references}
        else:
            answer, references = compose_answer(graph)
        failed = any(n.state == NodeState.failed for n in graph.searchers())
        status = "error" if error is not None else ("partial" if failed else "ok")
        return {"event": "final", "data": {
            "status": status,
            "question": graph.question,
            "answer": answer,
            "references": {str(k): v.to_dict() for k, v in references.items()},
            "graph": graph.to_dict(),
        }}

    async def _drive(self, graph: SearchGraph, emit) -> None:
        settings = self.settings
        emit({"event": "graph", "data": {"change": "root", "graph": _light(graph)}})
        plan = await asyncio.wait_for(asyncio.to_thread(self.planner.plan, graph.question), settings.planner_timeout)
        added = apply_plan(graph, plan)
        emit({"event": "graph", "data": {"change": f"added {', '.join(added)}", "graph": _light(graph)}})
        semaphore = asyncio.Semaphore(max(1, settings.concurrency))
        rounds = 0
        while True:
            await self._run_ready(graph, semaphore, emit)
            if rounds >= settings.max_rounds:
                break
            plan = await asyncio.wait_for(asyncio.to_thread(self.planner.follow_up, graph), settings.planner_timeout)
            if plan is None or not plan.nodes:
                break
            added = apply_plan(graph, plan)
            rounds += 1
            emit({"event": "graph", "data": {"change": f"added {', '.join(added)}", "graph": _light(graph)}})
        response = graph.add_response()
        response.state = NodeState.running
        emit({"event": "graph", "data": {"change": "response running", "graph": _light(graph)}})
        sections, references = compose_answer(graph)
        answer = sections
        if sections:
            written = await asyncio.wait_for(asyncio.to_thread(self.planner.respond, graph, sections),
                                             settings.planner_timeout)
            if written and written.strip():
                answer = keep_resolved_citations(written.strip(), set(references))
        cited = {int(n) for n in CITATION.findall(answer)}
        response.answer = answer
        response.references = [references[n] for n in sorted(cited)]
        response.state = NodeState.done
        emit({"event": "graph", "data": {"change": "response done", "graph": _light(graph)}})

    async def _run_ready(self, graph: SearchGraph, semaphore: asyncio.Semaphore, emit) -> None:
        pending: dict[str, asyncio.Task] = {}
        try:
            while True:
                for node in graph.ready():
                    if node.name not in pending:
                        pending[node.name] = asyncio.create_task(self._run_node(graph, node.name, semaphore, emit))
                running = {name: t for name, t in pending.items() if not t.done()}
                if not running:
                    return
                await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pending.values():
                task.cancel()

    async def _run_node(self, graph: SearchGraph, name: str, semaphore: asyncio.Semaphore, emit) -> None:
        node = graph.nodes[name]
        async with semaphore:
            node.state = NodeState.running
            emit({"event": "graph", "data": {"change": f"{name} running", "graph": _light(graph)}})
            history = [HistoryItem(graph.nodes[p].content, graph.nodes[p].answer or "")
                       for p in graph.parents(name) if p != ROOT and graph.nodes[p].state == NodeState.done]
            # A follow-up looks for something new: passages its ancestors already cite are not selected again.
            exclude = frozenset(r.doc_id for a in graph.ancestors(name) for r in graph.nodes[a].references)
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(self.searcher.run, node.content, graph.question, history, exclude, node.focus,
                                      **({"select": node.select} if node.select is not None else {})),
                    self.settings.node_timeout,
                )
            except asyncio.TimeoutError:
                node.state, node.error = NodeState.failed, f"timed out after {self.settings.node_timeout:g} s"
            except FovealError as exc:
                node.state, node.error = NodeState.failed, exc.message
            except Exception as exc:  # noqa: BLE001 - one node failing leaves the others' answers standing
                node.state, node.error = NodeState.failed, f"{type(exc).__name__}: {exc}"
            else:
                node.answer, node.references = result.answer, result.references
                node.queries, node.retrieved_titles = result.queries, result.retrieved_titles
                node.state = NodeState.done
            observe_stage("agent_node", time.perf_counter() - started)
            emit({"event": "node", "data": {"node": node.to_dict()}})
            emit({"event": "graph", "data": {"change": f"{name} {node.state.value}", "graph": _light(graph)}})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()} or None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


__all__ = ["Agent", "AgentSettings", "Event", "compose_answer", "NodeType"]
