"""The outermost ASGI layer: request ids, the access log, the streaming body limit, and the last-resort 500.

It is a pure ASGI middleware (no ``BaseHTTPMiddleware``) so that it sees the raw ``receive``/``send`` channels:

* **Request id.** A sane incoming ``X-Request-ID`` (1-128 of ``[A-Za-z0-9._-]``) is kept, anything else is
  replaced by a fresh uuid4 hex. It is put in ``request.state.request_id``, in the ``X-Request-ID`` header of every
  response (errors included) and in every log line this layer writes.
* **Body limit while streaming.** ``Content-Length`` is checked up front, and the bytes actually received are
  counted, so a chunked body without a length is cut at the limit too. Past it ``receive`` raises a 413
  ``HTTPException`` into the app (answered in the envelope); whatever else the app makes of the cut body is dropped
  and the 413 envelope sent instead. Search-like routes (``/search``, ``/v1/agent/ask``, ``documents/_get`` and
  ``documents/_delete``) get the smaller ``FOVEAL_MAX_SEARCH_REQUEST_BYTES``: FastAPI parses JSON on the event
  loop, and this keeps what a read request can make it parse small.
* **Last-resort 500.** Anything raised below (a route, an exception handler, another middleware) is logged with
  its traceback and the request id, and answered as a JSON 500 that names only the request id: no exception
  text reaches the caller. It is not re-raised, so Starlette's plain-text error page never shows.
* **Request id in every log record.** While a request is served (in threadpool workers too: they copy the
  context) every log record gets a ``request_id`` attribute (``None`` outside requests), so a formatter such as
  ``%(request_id)s`` or a JSON handler ties a worker's error log to the request that caused it.
* **Access log.** One JSON line per request on logger ``foveal.access``: method, route template, status,
  duration in ms, request id, and the key name when authentication set one.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.exceptions import HTTPException

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: Paths whose bodies are small by nature (a query, a list of ids) and are held to the search body limit.
_SEARCH_LIKE = re.compile(
    r"^/v1/(indexes/[^/]+/search|agent/ask|indexes/[^/]+/documents/_(get|delete|export|delete_by_filter))$")

access_log = logging.getLogger("foveal.access")
log = logging.getLogger("foveal.api")
#: The id of the request being served in this context (None outside one).
current_request_id: ContextVar[str | None] = ContextVar("foveal_request_id", default=None)


def _install_record_factory() -> None:
    """Give every log record a ``request_id`` attribute, once per process (wrapping whatever factory is set)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_foveal_request_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return record

    factory._foveal_request_id = True
    logging.setLogRecordFactory(factory)


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _SANE_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def envelope(status: int, kind: str, message: str, details: object, request_id: str,
             headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"error": {"type": kind, "message": message, "details": details}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"x-request-id", request_id.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": raw}, body


class RequestContextMiddleware:
    def __init__(self, app, max_request_bytes: int, max_search_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_search_request_bytes = max_search_request_bytes
        _install_record_factory()

    def limit_for(self, path: str) -> int:
        if _SEARCH_LIKE.match(path):
            return min(self.max_request_bytes, self.max_search_request_bytes)
        return self.max_request_bytes

    def too_large_message(self, size: str, limit: int) -> str:
        variable = "FOVEAL_MAX_SEARCH_REQUEST_BYTES" if limit < self.max_request_bytes else "FOVEAL_MAX_REQUEST_BYTES"
        return f"request body of {size}; at most {limit} ({variable})"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_of(scope.get("headers") or [])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = current_request_id.set(request_id)
        try:
            await self._serve(scope, receive, send, request_id, state)
        finally:
            current_request_id.reset(token)

    async def _serve(self, scope, receive, send, request_id: str, state: dict) -> None:
        started = time.perf_counter()
        limit = self.limit_for(scope.get("path", ""))
        outcome = {"status": 500, "started": False, "received": 0, "too_large": False}

        async def send_with_id(message):
            if outcome["too_large"]:
                # the app's own answer to a cut body is the 413 raised below, in the envelope; anything else it
                # makes of the cut (a 400 "error parsing the body") is replaced by the 413 sent after it returns
                if message["type"] == "http.response.start" and message["status"] != 413:
                    outcome["dropped"] = True
                if outcome.get("dropped"):
                    return
            if message["type"] == "http.response.start":
                outcome["started"] = True
                outcome["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", request_id.encode())]}
            await send(message)

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                outcome["received"] += len(message.get("body", b""))
                if outcome["received"] > limit:
                    outcome["too_large"] = True
                    # an HTTPException: FastAPI re-raises it and the app's handler answers it in the envelope, so
                    # the metrics middleware counts a 413 too
                    raise HTTPException(413, self.too_large_message(f"more than {limit} bytes", limit))
            return message

        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                outcome["too_large"] = True
            else:
                await self.app(scope, counting_receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - the last resort: answered, logged, never re-raised
            if not outcome["too_large"]:
                log.error(json.dumps({"event": "unhandled_error", "request_id": request_id,
                                      "method": scope.get("method"), "path": scope.get("path"),
                                      "error": type(exc).__name__}), exc_info=exc)
                if not outcome["started"]:
                    start, body = envelope(500, "InternalError",
                                           f"internal error; quote request id {request_id} to the operator",
                                           {"request_id": request_id}, request_id)
                    outcome["status"] = 500
                    await send(start)
                    await send({"type": "http.response.body", "body": body})
        if outcome["too_large"] and not outcome["started"]:
            size = f"{declared} bytes" if declared is not None else f"more than {limit} bytes"
            start, body = envelope(413, "PayloadTooLargeError", self.too_large_message(size, limit),
                                   {"limit": limit}, request_id)
            outcome["status"] = 413
            await send(start)
            await send({"type": "http.response.body", "body": body})
        route = scope.get("route")
        access_log.info(json.dumps({
            "request_id": request_id, "method": scope.get("method"),
            "route": getattr(route, "path", None) or "unmatched", "status": outcome["status"],
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "key": state.get("key_name"),
        }))


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
