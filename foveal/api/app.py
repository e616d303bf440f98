"""The REST API (FastAPI).

``GET /healthz``, ``POST /v1/indexes/{name}/search``; indexes, documents and jobs in :mod:`foveal.api.v1`;
``/readyz`` and ``/metrics`` in :mod:`foveal.api.ops`. Errors from :mod:`foveal.errors` map to HTTP statuses
here and nowhere else; every error body is ``{"error": {"type", "message", "details"}}``.

Example::

    curl -s localhost:8000/v1/indexes/default/search -H 'content-type: application/json' \\
         -d '{"query": "why does the moon cause tides", "k": 3}'
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from foveal import __version__
from foveal.api.agent import create_agent_router
from foveal.engine import Engine
from foveal.registry import preload_models
from foveal.errors import FovealError
from foveal.pipeline.request import SearchRequest, SearchResponse
from foveal.api import ops, snapshots, v1
from foveal.service.jobs import make_queue
from foveal.service.settings import ServiceSettings

INDEX_NAME = PathParam(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="Index name.")
log = logging.getLogger("foveal.api")


def _error(status: int, kind: str, message: str, details: object = None) -> JSONResponse:
    headers = None
    if isinstance(details, dict) and isinstance(details.get("retry_after"), (int, float)):
        # 429 and 503 say when to come back (RFC 9110 Retry-After, whole seconds)
        headers = {"Retry-After": str(max(1, int(round(details["retry_after"]))))}
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message, "details": details}},
                        headers=headers)


def create_app(
    engine: Engine | None = None, home: Path | None = None, settings: ServiceSettings | None = None
) -> FastAPI:
    state: dict[str, Engine] = {}
    settings = settings or ServiceSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["engine"] = app.state.engine = engine or Engine(home)
        app.state.settings = settings
        app.state.queue = make_queue(state["engine"].home, settings, lambda: state["engine"])
        # load models and indexes now, not on the first request; an index that cannot be trusted is logged and
        # refused (its requests answer IndexDamagedError), the others serve
        refused = await run_in_threadpool(state["engine"].open_all)
        if preload_models():  # the encoder is lazy (BM25-only processes never load it)
            await run_in_threadpool(state["engine"].load_encoders, refused)
        app.state.queue.start()  # embedded: in-process workers resume what was queued before a restart
        yield
        await run_in_threadpool(app.state.queue.stop)
        if engine is None:
            state["engine"].close()

    app = FastAPI(
        title="foveal",
        version=__version__,
        description="Hybrid (BM25 + dense) search with per-hit evidence.",
        lifespan=lifespan,
    )

    @app.exception_handler(FovealError)
    async def foveal_error(_request: Request, exc: FovealError):
        return _error(exc.status_code, type(exc).__name__, exc.message, exc.details or None)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        """A bug, not a refusal: logged with its traceback, and answered in the same error shape as the rest (a
        client parsing ``error`` never meets a plain-text body)."""
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "InternalError", f"internal error ({type(exc).__name__}); see the server log")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return _error(422, "InvalidInputError", f"invalid request: {summary}", problems)

    v1.install_request_limit(app, settings)
    ops.install_metrics(app)
    app.include_router(ops.router)
    app.include_router(v1.router)
    app.include_router(snapshots.router)  # admin scope

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.post("/v1/indexes/{name}/search", response_model=SearchResponse, tags=["search"])
    async def search(body: SearchRequest, name: str = INDEX_NAME) -> SearchResponse:
        """Search one index with BM25, dense retrieval or both (fused). Every hit carries its evidence."""
        return await run_in_threadpool(state["engine"].search, name, body)

    app.include_router(create_agent_router(lambda: state["engine"]))
    return app
