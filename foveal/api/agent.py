"""``POST /v1/agent/ask``: the MindSearch-style agent, streamed as server-sent events from the API process.

After "MindSearch: Mimicking Human Minds Elicits Deep AI Searcher" (Chen et al., 2024), whose ``/solve`` endpoint
streams the graph as it grows. Each event is ``event: <kind>`` + ``data: <json>``; the kinds are ``graph``,
``node``, ``error`` and ``final`` (always last, also after an error), as described in
:mod:`foveal.agents.executor`. An unknown index is a 404 and a missing LLM configuration a 422, both before the
stream starts. When the client goes away the running searcher nodes are cancelled.

Example::

    curl -N localhost:8000/v1/agent/ask -H 'content-type: application/json' \\
         -d '{"question": "Were Scott Derrickson and Ed Wood of the same nationality?", "index": "wiki"}'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from foveal.agents import AgentSettings, build_agent
from foveal.agents.executor import Event
from foveal.api.auth import agent_run, check_index, require
from foveal.engine import Engine

#: Seconds between checks that the client is still there.
DISCONNECT_POLL_S = 0.5


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000, description="The question to research (not only whitespace).",
                          json_schema_extra={"pattern": r"\S"})
    index: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="The index to search.")
    planner: Literal["rule", "llm"] = Field(default="rule", description="rule (no model) or llm (FOVEAL_LLM_*).")
    searcher: Literal["rule", "llm"] | None = Field(default=None, description="Default: the planner's mode.")
    # strict: ``true`` is no number (it used to be taken as 1)
    concurrency: StrictInt = Field(default=4, ge=1, le=16, description="Searcher nodes running at once.")
    node_timeout: StrictInt | StrictFloat = Field(default=60.0, gt=0, le=600, description="Seconds per searcher node.")
    max_rounds: StrictInt = Field(default=2, ge=0, le=5, description="Follow-up planning turns.")
    select: StrictInt = Field(default=4, ge=1, le=10, description="Passages each searcher node may cite (the rule planner gives a question it asks whole 2 * select - 2 and each of its two bridge nodes 1).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"question": "Were Scott Derrickson and Ed Wood of the same nationality?",
                                         "index": "default"}]},
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        from foveal.pipeline.request import not_blank

        return not_blank(value, "question")


def format_event(event: Event) -> bytes:
    """One server-sent event: ``event: kind`` and one ``data:`` line of JSON."""
    return f"event: {event['event']}\ndata: {json.dumps(event['data'], ensure_ascii=False)}\n\n".encode()


class _RunStream(StreamingResponse):
    """Releases the key's agent-run slot when the response ends, also when the stream never started (a client
    gone before the first byte: the generator's ``finally`` would then never run)."""

    def __init__(self, content, release, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def create_agent_router(get_engine: Callable[[], Engine]) -> APIRouter:
    """The router; ``get_engine`` returns the app's engine (it exists only once the app has started)."""
    router = APIRouter(tags=["agent"])

    @router.post(
        "/v1/agent/ask",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "graph, node, error, final events"}},
        dependencies=[Depends(require("read"))],
    )
    async def ask(body: AskRequest, request: Request) -> StreamingResponse:
        """Plan sub-questions, search them in parallel, and stream the graph and the cited answer (SSE)."""
        check_index(request, body.index)
        pipeline = await run_in_threadpool(get_engine().pipeline, body.index)  # unknown index -> 404 now
        settings = AgentSettings(concurrency=body.concurrency, node_timeout=body.node_timeout,
                                 max_rounds=body.max_rounds)
        release = agent_run(request)  # 429 over FOVEAL_MAX_AGENT_RUNS for this key
        try:
            agent = build_agent(pipeline, planner=body.planner, searcher=body.searcher, settings=settings,
                                select=body.select)
        except BaseException:
            release()
            raise

        async def events() -> AsyncIterator[bytes]:
            stream = agent.stream(body.question)
            step: asyncio.Future | None = None
            try:
                while True:
                    step = asyncio.ensure_future(stream.__anext__())
                    while not step.done():
                        await asyncio.wait({step}, timeout=DISCONNECT_POLL_S)
                        if not step.done() and await request.is_disconnected():
                            return  # the finally below cancels the run
                    try:
                        event: dict[str, Any] = step.result()
                    except StopAsyncIteration:
                        return
                    yield format_event(event)
            finally:
                # The client went away (or the server is stopping): cancel the planner and the running nodes.
                if step is not None and not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await step
                await stream.aclose()
                agent.close()
                release()

        return _RunStream(events(), release, media_type="text/event-stream",
                          headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    return router
