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

import asyncio
import json

from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from foveal import __version__
from foveal.api.agent import create_agent_router
from foveal.engine import Engine
from foveal.registry import preload_models
from foveal.errors import FovealError, OverloadedError
from foveal.pipeline.request import SearchRequest, SelectedSearchResponse, shape_response_json
from foveal.api import auth, ops, snapshots, v1, web
from foveal.api.middleware import RequestContextMiddleware
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


def freeze_loaded_heap() -> int:
    """Move every object alive now (the models' and libraries' ~470,000: torch, transformers, onnxruntime) out of the
    cyclic garbage collector's reach, after one last collection; returns how many were frozen.

    Python's full collections walk every tracked object: with the models loaded one took 270 ms, and under load
    (32 clients) they stalled every request in flight often enough to be 15 % of all requests (p90 559 ms against
    a p50 of 330). Frozen objects are still freed by reference counting; only a cycle among them that becomes
    garbage later is never collected, which for what a server loads at start (and keeps) does not happen.
    Instagram's servers do the same (``gc.freeze`` exists for it, Python 3.7)."""
    import gc

    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("froze %d objects loaded at start out of the garbage collector's full passes", count)
    return count


def create_app(
    engine: Engine | None = None, home: Path | None = None, settings: ServiceSettings | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """The REST app. ``freeze_heap`` (``foveal serve``): once models and indexes are loaded, move them out of the
    garbage collector's full passes (:func:`freeze_loaded_heap`); off for an app embedded in another process."""
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
            await run_in_threadpool(state["engine"].load_encoders, refused, True)
        if freeze_heap:  # foveal serve: the process serves only this app
            await run_in_threadpool(freeze_loaded_heap)
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
        docs_url=None,  # /docs and /redoc are served from local files by foveal.api.web (no CDN)
        redoc_url=None,
    )

    @app.exception_handler(FovealError)
    async def foveal_error(_request: Request, exc: FovealError):
        response = _error(exc.status_code, type(exc).__name__, exc.message, exc.details or None)
        response.headers.update(getattr(exc, "headers", None) or {})  # WWW-Authenticate on a 401
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        """A bug, not a refusal: logged with its traceback and the request id, and answered in the same error
        shape as the rest with no exception text (the request id lets the operator find the log line)."""
        request_id = getattr(request.state, "request_id", None)
        log.error(json.dumps({"event": "unhandled_error", "request_id": request_id, "method": request.method,
                              "path": request.url.path, "error": type(exc).__name__}), exc_info=exc)
        return _error(500, "InternalError", f"internal error; quote request id {request_id} to the operator",
                      {"request_id": request_id})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        """Routing refusals (unknown route 404, wrong method 405 with its ``Allow`` header) in the envelope."""
        kinds = {400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowedError",
                 413: "PayloadTooLargeError"}
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {_request.method} {_request.url.path}"
        elif exc.status_code == 405:
            allowed = _allowed_methods(_request)
            message = f"method {_request.method} is not allowed on {_request.url.path}; allowed: {allowed}"
        response = _error(exc.status_code, kinds.get(exc.status_code, "HTTPError"), message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            response.headers["Allow"] = allowed
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                # FastAPI puts the character offset in ``loc``: say where in the body, as line and column
                problems.append({"field": "body", "message": await _json_problem(request, e)})
                continue
            problems.append({"field": _field_path(e["loc"]), "message": e["msg"].removeprefix("Value error, ")})
        problems = _merge_union_problems(problems)
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return _error(422, "InvalidInputError", f"invalid request: {summary}", problems)

    auth.install(app, settings)  # the key gate (401/429 before a body is read) and CORS
    ops.install_metrics(app)
    # added last, so it is the outermost of the app's middleware: it sees (and answers) whatever fails below it
    app.add_middleware(RequestContextMiddleware, max_request_bytes=settings.max_request_bytes,
                       max_search_request_bytes=settings.max_search_request_bytes)
    app.include_router(ops.router)
    app.include_router(v1.router)
    app.include_router(snapshots.router, dependencies=[Depends(auth.require("admin"))])

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.post("/v1/indexes/{name}/search", response_model=SelectedSearchResponse, tags=["search"],
              dependencies=[Depends(auth.require("read"))])
    async def search(body: SearchRequest, name: str = INDEX_NAME):
        """Search one index with BM25, dense retrieval or both (fused). Every hit carries its evidence.
        ``fields`` and ``text`` choose what each hit carries (whole texts, the matched passage, a snippet, none).

        Bounded by ``FOVEAL_SEARCH_TIMEOUT_S``: past it the answer is a 503 ``OverloadedError``. The search thread
        cannot be interrupted and runs to its end, but nobody waits for it."""
        try:
            response = await asyncio.wait_for(run_in_threadpool(state["engine"].search, name, body),
                                              timeout=settings.search_timeout_s)
        except asyncio.TimeoutError:
            raise OverloadedError(
                f"search took longer than {settings.search_timeout_s:g} s (FOVEAL_SEARCH_TIMEOUT_S); narrow it "
                "(smaller k, a filter, pipeline bm25) or retry later", timeout_s=settings.search_timeout_s,
                retry_after=1) from None
        return Response(shape_response_json(response, body), media_type="application/json")

    app.include_router(create_agent_router(lambda: state["engine"]))
    web.install(app)
    return app


def _field_path(loc) -> str:
    """``("body", "documents", 3, "_id")`` -> ``documents.3._id``; pydantic's union branch tags (``str``,
    ``list[...]``, ``function-after[...]``) are dropped, so the path names the caller's field only."""
    parts: list[str] = []
    for part in loc:
        if part == "body" and not parts:
            continue
        after_mapping = bool(parts) and parts[-1] == "metadata"  # there it is the caller's key, even "str"
        if not after_mapping and isinstance(part, str) and (
                part in ("str", "int", "float", "bool", "int-strict", "float-strict") or "[" in part):
            continue
        parts.append(str(part))
    return ".".join(parts)


async def _json_problem(request: Request, error: dict) -> str:
    """"invalid JSON at line L column C: <reason>" for a body that does not parse."""
    reason = (error.get("ctx") or {}).get("error") or error.get("msg", "JSON decode error")
    offset = next((p for p in error.get("loc", ()) if isinstance(p, int)), None)
    try:
        text = (await request.body()).decode("utf-8", "replace")
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except Exception:  # noqa: BLE001 - fall back to what FastAPI said
        pass
    where = f" at character {offset}" if offset is not None else ""
    return f"invalid JSON{where}: {reason}"


def _allowed_methods(request: Request) -> str:
    """Every method some route answers on this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        for route in request.app.router.routes:
            try:
                match, _ = route.matches({**request.scope, "method": method})
            except Exception:  # noqa: BLE001 - a route kind that cannot say: skipped
                continue
            if match == Match.FULL:
                methods.add(method)
                break
    return ", ".join(sorted(methods)) or "none"


def _merge_union_problems(problems: list[dict]) -> list[dict]:
    """A value that fits no branch of a union (``str | int | float``) gets one problem per branch, all on the same
    field: they become one, "Input should be a valid string, integer or number"."""
    merged: list[dict] = []
    prefix = "Input should be a valid "
    for problem in problems:
        last = merged[-1] if merged else None
        if (last is not None and last["field"] == problem["field"] and last["message"].startswith(prefix)
                and problem["message"].startswith(prefix)):
            kinds = last.pop("_kinds", [last["message"][len(prefix):]]) + [problem["message"][len(prefix):]]
            last["_kinds"] = kinds
            last["message"] = prefix + ", ".join(kinds[:-1]) + " or " + kinds[-1]
            continue
        merged.append(dict(problem))
    for problem in merged:
        problem.pop("_kinds", None)
    return merged
