"""The sync and async REST clients: one request description per operation, two thin ways of sending it."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

import httpx

from foveal.client.errors import APIError, TransportError, error_for

#: Statuses whose ``Retry-After`` the client honours (within ``max_retry_wait``).
RETRY_STATUSES = (429, 503)
API_KEY_ENV = "FOVEAL_API_KEY"


# -- the typed answers -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexSummary:
    name: str
    documents: int | None
    error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IndexSummary":
        return cls(name=data["name"], documents=data.get("documents"), error=data.get("error"))


@dataclass(frozen=True)
class JobAccepted:
    """A batch the server queued (``202``): follow it with :meth:`Client.job` or :meth:`Client.wait_job`."""

    job_id: str
    index: str
    total: int
    rejected: int
    status_url: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "JobAccepted":
        return cls(job_id=data["job_id"], index=data["index"], total=data["total"], rejected=data["rejected"],
                   status_url=data["status_url"])


@dataclass(frozen=True)
class JobError:
    id: str | None
    reason: str


@dataclass(frozen=True)
class Job:
    """An ingest job: ``state`` is ``queued``, ``running`` or ``done``; ``errors`` names each refused document."""

    id: str
    index: str
    state: str
    total: int
    done: int
    failed: int
    errors: tuple[JobError, ...] = field(default_factory=tuple)
    created: float = 0.0
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state == "done"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Job":
        return cls(id=data["id"], index=data["index"], state=data["state"], total=data["total"], done=data["done"],
                   failed=data["failed"], errors=tuple(JobError(e.get("id"), e["reason"]) for e in data["errors"]),
                   created=data.get("created", 0.0), updated=data.get("updated", 0.0))


# -- one request, described once ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: Any = None
    parse: Callable[[Any], Any] = lambda data: data


def _index_path(name: str) -> str:
    return f"/v1/indexes/{quote(name, safe='')}"


def _document_path(index: str, doc_id: str) -> str:
    return f"{_index_path(index)}/documents/{quote(doc_id, safe='')}"


class _Operations:
    """Builds the :class:`_Call` of each operation; shared by :class:`Client` and :class:`AsyncClient`."""

    @staticmethod
    def health() -> _Call:
        return _Call("GET", "/healthz")

    @staticmethod
    def list_indexes() -> _Call:
        return _Call("GET", "/v1/indexes", parse=lambda data: [IndexSummary.from_json(d) for d in data])

    @staticmethod
    def create_index(name: str, config: Mapping[str, Any] | None) -> _Call:
        body: dict[str, Any] = {"name": name}
        if config is not None:
            body["config"] = dict(config)
        return _Call("POST", "/v1/indexes", body, IndexSummary.from_json)

    @staticmethod
    def index_stats(name: str) -> _Call:
        return _Call("GET", _index_path(name))

    @staticmethod
    def delete_index(name: str) -> _Call:
        return _Call("DELETE", _index_path(name), parse=lambda data: None)

    @staticmethod
    def add_documents(index: str, documents: Iterable[Mapping[str, Any]]) -> _Call:
        return _Call("POST", f"{_index_path(index)}/documents", {"documents": [dict(d) for d in documents]},
                     JobAccepted.from_json)

    @staticmethod
    def get_document(index: str, doc_id: str) -> _Call:
        return _Call("GET", _document_path(index, doc_id))

    @staticmethod
    def get_documents(index: str, ids: Iterable[str]) -> _Call:
        return _Call("POST", f"{_index_path(index)}/documents/_get", {"ids": list(ids)})

    @staticmethod
    def delete_document(index: str, doc_id: str) -> _Call:
        return _Call("DELETE", _document_path(index, doc_id), parse=lambda data: None)

    @staticmethod
    def delete_documents(index: str, ids: Iterable[str]) -> _Call:
        return _Call("POST", f"{_index_path(index)}/documents/_delete", {"ids": list(ids)})

    @staticmethod
    def job(job_id: str) -> _Call:
        return _Call("GET", f"/v1/jobs/{quote(job_id, safe='')}", parse=Job.from_json)

    @staticmethod
    def search(index: str, query: str, options: Mapping[str, Any]) -> _Call:
        return _Call("POST", f"{_index_path(index)}/search", {"query": query, **options})

    @staticmethod
    def ask(question: str, index: str, options: Mapping[str, Any]) -> _Call:
        return _Call("POST", "/v1/agent/ask", {"question": question, "index": index, **options})


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_of(response: httpx.Response) -> APIError:
    try:
        envelope = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("error"), dict):
        # not foveal's envelope (a proxy's page): keep the text, shaped like one
        envelope = {"error": {"type": "HTTPError", "message": response.text[:500] or response.reason_phrase,
                              "details": None}}
    return error_for(response.status_code, envelope, request_id=response.headers.get("x-request-id"),
                     retry_after=_retry_after(response))


class _EventParser:
    """Server-sent events, fed one line at a time; a blank line ends an event ``{"event": kind, "data": {...}}``."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line.startswith("event:"):
            self.kind = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].lstrip())
        elif not line and (self.kind is not None or self.data):
            event = {"event": self.kind or "message", "data": json.loads("\n".join(self.data)) if self.data else None}
            self.kind, self.data = None, []
            return event
        return None


class _Base:
    def __init__(self, base_url: str, api_key: str | None, max_retries: int, max_retry_wait: float) -> None:
        if max_retries < 0 or max_retry_wait < 0:
            raise ValueError("max_retries and max_retry_wait must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def _wait_for(self, response: httpx.Response, attempt: int, waited: float) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        delay = _retry_after(response)
        if delay is None or waited + delay > self.max_retry_wait:
            return None
        return delay

    @staticmethod
    def _finish(call: _Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise _error_of(response)
        if response.status_code == 204 or not response.content:
            return call.parse(None)
        return call.parse(response.json())


class Client(_Base):
    """A blocking client for foveal's REST API.

    ``api_key`` defaults to ``$FOVEAL_API_KEY`` (sent as ``Authorization: Bearer``). 429 and 503 answers with a
    ``Retry-After`` are retried after that many seconds, at most ``max_retries`` times and ``max_retry_wait``
    seconds of waiting in all; past that (or without the header) the error is raised (see
    :mod:`foveal.client.errors`). ``transport`` is any httpx transport (tests pass ``httpx.MockTransport``).

    Example::

        >>> from foveal.client import Client
        >>> with Client("http://127.0.0.1:8000") as client:           # doctest: +SKIP
        ...     client.create_index("papers")
        ...     accepted = client.add_documents("papers", [{"_id": "a", "text": "the moon pulls the sea"}])
        ...     client.wait_job(accepted.job_id)
        ...     client.search("papers", "tides", k=3)["hits"]
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, max_retry_wait: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, call: _Call) -> httpx.Response:
        waited, attempt = 0.0, 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body, headers=self._headers())
            except httpx.TransportError as exc:
                raise TransportError(f"{call.method} {self.base_url}{call.path}: {exc}") from exc
            delay = self._wait_for(response, attempt, waited)
            if delay is None:
                return response
            time.sleep(delay)
            waited += delay
            attempt += 1

    def _run(self, call: _Call) -> Any:
        return self._finish(call, self._send(call))

    # -- operations ----------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._run(_Operations.health())

    def list_indexes(self) -> list[IndexSummary]:
        return self._run(_Operations.list_indexes())

    def create_index(self, name: str, config: Mapping[str, Any] | None = None) -> IndexSummary:
        return self._run(_Operations.create_index(name, config))

    def index_stats(self, name: str) -> dict[str, Any]:
        return self._run(_Operations.index_stats(name))

    def delete_index(self, name: str) -> None:
        return self._run(_Operations.delete_index(name))

    def add_documents(self, index: str, documents: Iterable[Mapping[str, Any]]) -> JobAccepted:
        """Queue a batch (``{"_id", "title", "text", "metadata", "timestamp", "vector"}`` each); answered once
        the server durably queued it."""
        return self._run(_Operations.add_documents(index, documents))

    def get_document(self, index: str, doc_id: str) -> dict[str, Any]:
        return self._run(_Operations.get_document(index, doc_id))

    def get_documents(self, index: str, ids: Iterable[str]) -> dict[str, Any]:
        """``{"documents": [...], "missing": [...]}``."""
        return self._run(_Operations.get_documents(index, ids))

    def delete_document(self, index: str, doc_id: str) -> None:
        return self._run(_Operations.delete_document(index, doc_id))

    def delete_documents(self, index: str, ids: Iterable[str]) -> dict[str, Any]:
        """``{"deleted": [...], "missing": [...]}``."""
        return self._run(_Operations.delete_documents(index, ids))

    def job(self, job_id: str) -> Job:
        return self._run(_Operations.job(job_id))

    def wait_job(self, job_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Job:
        """Poll a job until it is done; ``TimeoutError`` when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not done after {timeout} s: {job.state}, {job.done}/{job.total}")
            time.sleep(poll)

    def search(self, index: str, query: str, **options: Any) -> dict[str, Any]:
        """Search one index; ``options`` are the other fields of the search request (``k``, ``pipeline``,
        ``filter``, ``stages``, ``explain``, ...)."""
        return self._run(_Operations.search(index, query, options))

    def ask(self, question: str, index: str, **options: Any) -> Iterator[dict[str, Any]]:
        """The agent's events as they stream (``graph``, ``node``, ``error``, ``final`` last)."""
        call = _Operations.ask(question, index, options)
        try:
            with self._http.stream(call.method, call.path, json=call.body, headers=self._headers()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                parser = _EventParser()
                for line in itertools.chain(response.iter_lines(), [""]):
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise TransportError(f"{call.method} {self.base_url}{call.path}: {exc}") from exc


class AsyncClient(_Base):
    """The same operations as :class:`Client`, as coroutines (``ask`` is an async iterator).

    Example::

        >>> async with AsyncClient("http://127.0.0.1:8000") as client:    # doctest: +SKIP
        ...     hits = (await client.search("papers", "tides", k=3))["hits"]
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, max_retry_wait: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        waited, attempt = 0.0, 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body,
                                                    headers=self._headers())
            except httpx.TransportError as exc:
                raise TransportError(f"{call.method} {self.base_url}{call.path}: {exc}") from exc
            delay = self._wait_for(response, attempt, waited)
            if delay is None:
                return response
            await asyncio.sleep(delay)
            waited += delay
            attempt += 1

    async def _run(self, call: _Call) -> Any:
        return self._finish(call, await self._send(call))

    async def health(self) -> dict[str, Any]:
        return await self._run(_Operations.health())

    async def list_indexes(self) -> list[IndexSummary]:
        return await self._run(_Operations.list_indexes())

    async def create_index(self, name: str, config: Mapping[str, Any] | None = None) -> IndexSummary:
        return await self._run(_Operations.create_index(name, config))

    async def index_stats(self, name: str) -> dict[str, Any]:
        return await self._run(_Operations.index_stats(name))

    async def delete_index(self, name: str) -> None:
        return await self._run(_Operations.delete_index(name))

    async def add_documents(self, index: str, documents: Iterable[Mapping[str, Any]]) -> JobAccepted:
        return await self._run(_Operations.add_documents(index, documents))

    async def get_document(self, index: str, doc_id: str) -> dict[str, Any]:
        return await self._run(_Operations.get_document(index, doc_id))

    async def get_documents(self, index: str, ids: Iterable[str]) -> dict[str, Any]:
        return await self._run(_Operations.get_documents(index, ids))

    async def delete_document(self, index: str, doc_id: str) -> None:
        return await self._run(_Operations.delete_document(index, doc_id))

    async def delete_documents(self, index: str, ids: Iterable[str]) -> dict[str, Any]:
        return await self._run(_Operations.delete_documents(index, ids))

    async def job(self, job_id: str) -> Job:
        return await self._run(_Operations.job(job_id))

    async def wait_job(self, job_id: str, *, timeout: float | None = None, poll: float = 0.2) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not done after {timeout} s: {job.state}, {job.done}/{job.total}")
            await asyncio.sleep(poll)

    async def search(self, index: str, query: str, **options: Any) -> dict[str, Any]:
        return await self._run(_Operations.search(index, query, options))

    async def ask(self, question: str, index: str, **options: Any) -> AsyncIterator[dict[str, Any]]:
        call = _Operations.ask(question, index, options)
        try:
            async with self._http.stream(call.method, call.path, json=call.body,
                                         headers=self._headers()) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_of(response)
                parser = _EventParser()
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
                if (event := parser.feed("")) is not None:
                    yield event
        except httpx.TransportError as exc:
            raise TransportError(f"{call.method} {self.base_url}{call.path}: {exc}") from exc
