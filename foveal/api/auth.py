"""API keys, scopes, index restrictions, CORS and per-key limits for the REST API.

The operator configures keys with ``FOVEAL_API_KEYS`` (entries separated by ``;`` or newlines) and/or
``FOVEAL_API_KEYS_FILE`` (one entry a line, ``#`` comments). Each entry is ``NAME SCOPES SECRET [INDEXES]``::

    ci     read,write  sk-live-abc123                 papers,notes
    ops    admin       sha256:<hex of sha256(secret)>

``SCOPES`` is a comma-separated subset of ``read`` (search, get a document, list and get events, agent), ``write``
(upsert and delete documents, add and delete events, jobs) and ``admin`` (create and delete indexes, snapshots, config; implies read and write).
``INDEXES`` omitted or ``*`` means every index; otherwise a request naming another index is a 403 and the index
listing shows only these. A plain secret is hashed (SHA-256) when it is read and the key ring holds only digests;
a ``sha256:`` entry is taken as it is, so the file need not hold the secret at all
(``printf %s "$SECRET" | sha256sum``). Callers send ``Authorization: Bearer <secret>`` or ``X-API-Key: <secret>``;
the digest of what they send is compared with every key's digest with :func:`hmac.compare_digest`.

With no key configured the server is open (every request has all three scopes, ``key_name`` ``anonymous``);
``foveal serve`` allows that only on a loopback address (:func:`check_binding`). The key file is re-read when its
size, mtime or inode changes (looked at no more than once a second), so keys rotate without a restart; a file that
cannot be read or parsed on a reload keeps the previous keys (logged). Replace it by a rename for an atomic
change.

A gate (ASGI middleware) refuses a request without a valid key, or over its key's rate, before its body is read;
every route declares its scope with ``dependencies=[Depends(require("read"|"write"|"admin"))]``, which also
checks a path's ``{name}`` against the key's indexes (a body naming an index calls :func:`check_index`). After
either ran, ``request.state.scopes`` (a frozenset) and ``request.state.key_name`` are set. Other code reads
``getattr(request.state, "scopes", ALL_SCOPES)``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from foveal.errors import (AuthenticationError, ConfigError, FovealError, PermissionDeniedError,
                           RateLimitedError)

log = logging.getLogger("foveal.auth")

SCOPES = ("read", "write", "admin")
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)
ANONYMOUS = "anonymous"
#: The key file is looked at (one ``stat``) at most this often.
RELOAD_CHECK_S = 1.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_INDEX = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key (or the anonymous principal of an open server). ``indexes`` None: every index."""

    name: str
    scopes: frozenset[str]
    digest: bytes = b""
    indexes: frozenset[str] | None = None

    def __repr__(self) -> str:  # never print a digest
        return f"ApiKey({self.name!r}, {sorted(self.scopes)}, indexes={self.indexes and sorted(self.indexes)})"


OPEN = ApiKey(ANONYMOUS, ALL_SCOPES)
#: A caller without a key on a route that lets one in (``/readyz``'s status, ``/metrics`` with FOVEAL_OPEN_OPS).
NOBODY = ApiKey(ANONYMOUS, frozenset())


def digest_of(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def expand_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """admin implies read and write."""
    scopes = frozenset(scopes)
    return ALL_SCOPES if "admin" in scopes else scopes


def parse_keys(text: str, source: str, *, semicolons: bool = False) -> list[ApiKey]:
    """Parse key entries; ``source`` names where they came from in error messages (which never quote a secret)."""
    keys: list[ApiKey] = []
    lines = text.splitlines()
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        for part in (line.split(";") if semicolons else [line]):
            entries.append((f"{source} line {number}" if not semicolons else f"{source} entry {len(entries) + 1}",
                            part.strip()))
    for where, entry in entries:
        if not entry or entry.startswith("#"):
            continue
        fields = entry.split()
        if len(fields) not in (3, 4):
            raise ConfigError(f"{where}: expected NAME SCOPES SECRET [INDEXES], got {len(fields)} fields")
        name, scopes_text, secret = fields[:3]
        if not _NAME.match(name):
            raise ConfigError(f"{where}: key name {name!r} must be 1-64 of letters, digits, '_', '.', '-'")
        scopes = [s for s in scopes_text.lower().split(",") if s]
        unknown = sorted(set(scopes) - ALL_SCOPES)
        if not scopes or unknown:
            raise ConfigError(f"{where}: key {name!r} has scopes {scopes_text!r}; allowed: read, write, admin "
                              "(comma-separated)")
        match = _DIGEST.match(secret)
        if match:
            digest = bytes.fromhex(match.group(1))
        elif secret.lower().startswith("sha256:"):
            raise ConfigError(f"{where}: key {name!r}: a sha256: entry needs 64 hex digits")
        else:
            digest = digest_of(secret)
            if len(secret) < 16:
                log.warning("%s: the secret of key %r is shorter than 16 characters", where, name)
        indexes: frozenset[str] | None = None
        if len(fields) == 4 and fields[3] != "*":
            names = [i for i in fields[3].split(",") if i]
            bad = [i for i in names if not _INDEX.match(i)]
            if not names or bad:
                raise ConfigError(f"{where}: key {name!r}: INDEXES must be '*' or comma-separated index names")
            indexes = frozenset(names)
        keys.append(ApiKey(name, expand_scopes(scopes), digest, indexes))
    return keys


def _merge(groups: Iterable[list[ApiKey]], source: str) -> tuple[ApiKey, ...]:
    keys: list[ApiKey] = []
    for group in groups:
        keys.extend(group)
    names = [k.name for k in keys]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: key names must be unique (limits are per name): {', '.join(dupes)}")
    digests = [k.digest for k in keys]
    if len(set(digests)) != len(digests):
        raise ConfigError(f"{source}: two keys have the same secret")
    return tuple(keys)


class KeyRing:
    """The configured keys: ``FOVEAL_API_KEYS`` once, ``FOVEAL_API_KEYS_FILE`` re-read when it changes.

    ``enabled`` is fixed at start: a server started with keys never becomes open, even if every key is removed
    from the file (it then refuses every request)."""

    def __init__(self, env_keys: str = "", path: str | os.PathLike | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.path = Path(path) if path else None
        self._env = parse_keys(env_keys, "FOVEAL_API_KEYS", semicolons=True) if env_keys.strip() else []
        self.enabled = bool(self._env) or self.path is not None
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._checked = -math.inf
        self._keys: tuple[ApiKey, ...] = _merge([self._env], "FOVEAL_API_KEYS")
        if self.path is not None:
            try:
                signature = self._stat()
                self._keys = self._read()
            except OSError as exc:
                raise ConfigError(f"FOVEAL_API_KEYS_FILE={self.path}: cannot read it ({exc.strerror or exc})") from None
            self._signature = signature
            self._checked = self.clock()

    def _stat(self) -> tuple:
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> tuple[ApiKey, ...]:
        text = self.path.read_text(encoding="utf-8")
        return _merge([self._env, parse_keys(text, str(self.path))], f"FOVEAL_API_KEYS and {self.path}")

    def refresh(self) -> None:
        """Re-read the key file if it changed (at most one ``stat`` per RELOAD_CHECK_S)."""
        if self.path is None:
            return
        now = self.clock()
        if now - self._checked < RELOAD_CHECK_S:
            return
        with self._lock:
            if now - self._checked < RELOAD_CHECK_S:
                return
            self._checked = now
            try:
                signature = self._stat()
                if signature == self._signature:
                    return
                keys = self._read()
            except (OSError, FovealError) as exc:
                log.error("keeping the previous API keys: cannot reload %s: %s", self.path,
                          getattr(exc, "message", None) or exc)
                return
            self._keys, self._signature = keys, signature
            log.info("reloaded %d API keys from %s", len(keys), self.path)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        self.refresh()
        return self._keys

    def lookup(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, compared in constant time against every key."""
        digest = digest_of(secret)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return found


class RateLimiter:
    """A token bucket per key name: ``rate`` requests a second, bursts of ``2 x rate``; rate 0 is off."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = 2 * rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[name] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise RateLimitedError(f"key {name!r} sent more than {self.rate:g} requests a second "
                                       "(FOVEAL_RATE_LIMIT_RPS)", retry_after=max(1, math.ceil(wait)),
                                       limit=self.rate)
            self._buckets[name] = (tokens - 1, now)


class RunLimiter:
    """At most ``limit`` concurrent agent runs per key name (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def running(self, name: str) -> int:
        return self._running.get(name, 0)

    def acquire(self, name: str) -> Callable[[], None]:
        """Count one run for ``name``; returns the release (safe to call more than once)."""
        with self._lock:
            if self.limit and self._running.get(name, 0) >= self.limit:
                raise RateLimitedError(f"key {name!r} already has {self.limit} agent runs going "
                                       "(FOVEAL_MAX_AGENT_RUNS)", retry_after=5, limit=self.limit)
            self._running[name] = self._running.get(name, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                left = self._running.get(name, 1) - 1
                if left > 0:
                    self._running[name] = left
                else:
                    self._running.pop(name, None)

        return release


# -- requests ----------------------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="`Authorization: Bearer <key>` (an entry of FOVEAL_API_KEYS / FOVEAL_API_KEYS_FILE).")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                        description="`X-API-Key: <key>`, the same keys as the bearer scheme.")


def _secret_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


def authenticate(request: Request, *, optional: bool = False) -> ApiKey:
    """Who sends this request; sets ``request.state.scopes`` and ``request.state.key_name``.

    An open server (no keys) answers :data:`OPEN`. A missing key is a 401, or :data:`NOBODY` (no scopes) when
    ``optional``; a wrong key is always a 401."""
    cached = getattr(request.state, "auth_key", None)
    if cached is not None and (optional or cached is not NOBODY):
        return cached
    keyring: KeyRing | None = getattr(request.app.state, "keyring", None)
    if keyring is None or not keyring.enabled:
        key = OPEN
    else:
        secret = _secret_of(request)
        if secret is None:
            if not optional:
                raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>' or "
                                          "'X-API-Key: <key>'")
            key = NOBODY
        else:
            key = keyring.lookup(secret)
            if key is None:
                raise AuthenticationError("the API key is not valid", invalid=True)
    request.state.auth_key = key
    request.state.scopes = key.scopes
    request.state.key_name = key.name
    if key is not NOBODY:
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is not None:
            limiter.take(key.name)
    return key


def check_index(request: Request, index: str) -> None:
    """403 unless the request's key may use ``index``."""
    key = authenticate(request)
    if key.indexes is not None and index not in key.indexes:
        raise PermissionDeniedError(f"key {key.name!r} may not use index {index!r}", index=index)


def allowed_indexes(request: Request) -> frozenset[str] | None:
    """The indexes the request's key is limited to; None: every index."""
    return authenticate(request).indexes


def require(scope: str, *, ops: bool = False):
    """A dependency: the request carries a key with ``scope`` (and, when the path names an index, a key allowed on
    it). ``ops``: let a request without a key in when the operator set ``FOVEAL_OPEN_OPS`` (``/metrics``); a key
    limited to some indexes may not see ops data about the others."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request,
                         _bearer_credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                         _header: str | None = Depends(_api_key)) -> None:
        open_ops = ops and getattr(request.app.state, "open_ops", False)
        key = authenticate(request, optional=open_ops)
        if key is NOBODY:
            return
        if scope not in key.scopes:
            raise PermissionDeniedError(f"key {key.name!r} lacks the {scope!r} scope this route needs "
                                        f"(it has: {', '.join(s for s in SCOPES if s in key.scopes)})",
                                        required=scope)
        if ops and key.indexes is not None:
            raise PermissionDeniedError(f"key {key.name!r} is limited to some indexes; operational data covers "
                                        "all of them", required=scope)
        name = request.path_params.get("name")
        if isinstance(name, str):
            # an alias is checked as the index it points to now: a key limited to A never reaches B through one
            engine = getattr(request.app.state, "engine", None)
            check_index(request, engine.resolve(name) if engine is not None and key.indexes is not None else name)

    dependency.scope = scope  # read by the test that every route declares one
    dependency.__name__ = f"require_{scope}"
    return dependency


#: OpenAPI for a route a key is optional on (``/readyz``): no key, or either scheme.
OPTIONAL_SECURITY = {"security": [{}, {"bearer": []}, {"apiKey": []}]}


def shows_ops_details(request: Request) -> bool:
    """Whether ``/readyz`` may list its checks for this request: an admin key for all indexes, an open server,
    or FOVEAL_OPEN_OPS."""
    key = authenticate(request, optional=True)  # first: code that hides details reads request.state.scopes
    if getattr(request.app.state, "open_ops", False):
        return True
    return "admin" in key.scopes and key.indexes is None


def agent_run(request: Request) -> Callable[[], None]:
    """Count one agent run against the request's key (429 over FOVEAL_MAX_AGENT_RUNS); returns the release."""
    key = authenticate(request)
    runs: RunLimiter | None = getattr(request.app.state, "agent_runs", None)
    return runs.acquire(key.name) if runs is not None else (lambda: None)


# -- the app and the process -------------------------------------------------------------------------------------
class _Gate:
    """Refuses a request without a valid key (401) or over its key's rate (429) before its body is read: FastAPI
    parses a JSON body before it runs a route's dependencies, so without this gate anyone who reaches the port
    could make the server parse request bodies. Scopes and indexes are checked by :func:`require`, which reuses
    the key found here. Paths that let a caller in without a key (``/healthz``, ``/readyz``, the OpenAPI document
    and ``/docs``, the web page ``/`` and its ``/static/`` files, ``/metrics`` with FOVEAL_OPEN_OPS) and CORS
    preflights pass through."""

    def __init__(self, app, fastapi: FastAPI, settings) -> None:
        self.app = app
        from foveal.api.web import PUBLIC_PATHS, PUBLIC_PREFIXES

        self.public = {fastapi.openapi_url, fastapi.docs_url, fastapi.redoc_url,
                       fastapi.swagger_ui_oauth2_redirect_url, "/healthz", "/readyz", *PUBLIC_PATHS} - {None}
        self.public_prefixes = PUBLIC_PREFIXES
        if settings.open_ops:
            self.public.add("/metrics")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS" and not self._is_public(_local_path(scope)):
            request = Request(scope)
            try:
                authenticate(request)
            except FovealError as exc:
                await _refusal(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


    def _is_public(self, path: str) -> bool:
        return path in self.public or (path.startswith(self.public_prefixes) and ".." not in path)


def _local_path(scope) -> str:
    """The path without the prefix the app is served under (uvicorn --root-path behind a proxy)."""
    path, root = scope["path"], scope.get("root_path") or ""
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def _refusal(exc: FovealError):
    """The error envelope for a refusal raised outside the routes (the app's handlers do not see these)."""
    from fastapi.responses import JSONResponse

    headers = dict(getattr(exc, "headers", None) or {})
    retry = exc.details.get("retry_after")
    if isinstance(retry, (int, float)):
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    return JSONResponse(status_code=exc.status_code, headers=headers, content={
        "error": {"type": type(exc).__name__, "message": exc.message, "details": exc.details or None}})


_ENVELOPE = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["type", "message"], "properties": {
        "type": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}}
_REFUSALS = {
    "401": "No API key, or one that is not configured (`WWW-Authenticate: Bearer`).",
    "403": "The key lacks this route's scope, or may not use that index.",
    "429": "The key is over FOVEAL_RATE_LIMIT_RPS (or FOVEAL_MAX_AGENT_RUNS); see `Retry-After`.",
}


def _declare_refusals(app: FastAPI) -> None:
    """Every operation that takes a key documents the answers it can get for it (401, 403, 429), so a client or a
    schema-driven test meets no undeclared status."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                security = operation.get("security") if isinstance(operation, dict) else None
                if not security:
                    continue
                responses = operation.setdefault("responses", {})
                for status, text in _REFUSALS.items():
                    if status == "403" and {} in security:  # a key is optional there: never a 403
                        continue
                    responses.setdefault(status, {"description": text,
                                                  "content": {"application/json": {"schema": _ENVELOPE}}})
        return schema

    app.openapi = openapi


def install(app: FastAPI, settings) -> None:
    """Keys, limiters, the gate and CORS on ``app`` (a bad key entry raises ConfigError here, before the server
    starts). Call it after the middlewares that should run after authentication (the body limit) and before those
    that should see every request (metrics): CORS is outside the gate, so a refusal still carries its headers."""
    app.state.keyring = KeyRing(settings.api_keys, settings.api_keys_file or None)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_rps)
    app.state.agent_runs = RunLimiter(settings.max_agent_runs)
    app.state.open_ops = settings.open_ops
    _declare_refusals(app)
    app.add_middleware(_Gate, fastapi=app, settings=settings)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # keys travel in headers, never cookies: no credentials mode
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["Retry-After", "X-Request-ID", "Location"], max_age=600)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (``127.0.0.0/8``, ``::1``, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_binding(host: str, settings) -> None:
    """Refuse to serve an open API on a non-loopback address unless the operator opted out (FOVEAL_ALLOW_OPEN)."""
    keyring = KeyRing(settings.api_keys, settings.api_keys_file or None)
    if keyring.enabled or is_loopback(host) or settings.allow_open:
        return
    raise ConfigError(
        f"refusing to serve on {host} without API keys: anyone who reaches the port could read, change and delete "
        "every index. Set FOVEAL_API_KEYS or FOVEAL_API_KEYS_FILE (see README, 'Securing foveal'), bind 127.0.0.1, "
        "or set FOVEAL_ALLOW_OPEN=1 if something in front of foveal already authenticates (dangerous)")
