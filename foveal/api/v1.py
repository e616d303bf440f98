"""REST routes under ``/v1`` for indexes, documents and ingest jobs (search stays in :mod:`foveal.api.app`).

Writes go through the ingest queue: ``POST /v1/indexes/{name}/documents`` answers ``202`` with a job id once the
batch is durably queued, and ``GET /v1/jobs/{id}`` reports ``{state, total, done, failed, errors[]}``.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator
from starlette.convertors import PathConvertor, register_url_convertor

from foveal.api.auth import allowed_indexes, check_index, require
from foveal.config import IndexConfig
from foveal.documents import MAX_ID_CHARS, MAX_ITEM_VECTORS, parse_document
from foveal.errors import DocumentError, DocumentNotFoundError, FovealError, InvalidInputError, NotFoundError, \
    OverloadedError
from foveal.events import MAX_EVENTS_PER_REQUEST, event_out, parse_event
from foveal.pipeline.request import SearchFilter

INDEX_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
INDEX_NAME = PathParam(pattern=INDEX_PATTERN, description="Index name.")
DOC_ID = PathParam(min_length=1, max_length=MAX_ID_CHARS,
                   description="Document id (`_id`), percent-encoded: any id fits, `/` and `%` included (or use "
                               "`documents/_get` and `documents/_delete`, which take ids in the body).")
#: Most ids one body-based get or delete may name.
MAX_IDS_PER_REQUEST = 1000
#: Seconds a refused ingest (queue too deep, disk nearly full) is told to wait (``Retry-After``).
BACKPRESSURE_RETRY_S = 5
EVENT_ID = PathParam(min_length=1, max_length=MAX_ID_CHARS, description="Event id (`_id`), percent-encoded.")
JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="Job id, as returned by a document upsert.")

#: Bodies at least this large are parsed as JSON in a worker thread, not on the event loop.
OFFLOOP_JSON_BYTES = 64 * 1024


def _parse_json(body: bytes) -> Any:
    return json.loads(body)


class OffLoopJSONRoute(APIRoute):
    """A route that parses a large JSON body in a worker thread before FastAPI looks at it.

    FastAPI reads ``await request.json()`` on the event loop: a batch near ``FOVEAL_MAX_REQUEST_BYTES`` (100 MB)
    would stall every other request while it parses. Starlette caches the parsed body on the request, so parsing it
    here first, off the loop, leaves FastAPI nothing to do. (Pydantic's validation of the parsed body still runs on
    the loop.) A body that is no JSON is answered as FastAPI would, with its line and column."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def parse_off_loop(request: Request):
            content_type = request.headers.get("content-type", "")
            if request.method in ("POST", "PUT", "PATCH") and "json" in content_type:
                body = await request.body()
                if len(body) >= OFFLOOP_JSON_BYTES:
                    try:
                        request._json = await run_in_threadpool(_parse_json, body)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        pass  # FastAPI parses it again and reports where it fails (fast: it stops at the error)
            return await handler(request)

        return parse_off_loop


class _AnyIdConvertor(PathConvertor):
    """A path parameter that is the rest of the path, whatever it holds: Starlette's ``path`` matches with ``.*``,
    which stops at a newline, so a document accepted with ``\n`` in its id (``%0A`` in the URL) answered 404 to
    its own GET and DELETE."""

    regex = "(?s:.*)"


register_url_convertor("anyid", _AnyIdConvertor())

router = APIRouter(prefix="/v1", route_class=OffLoopJSONRoute)
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]
ADMIN = [Depends(require("admin"))]


class PayloadTooLargeError(FovealError):
    status_code = 413


# -- models ------------------------------------------------------------------------------------------------------
class CreateIndex(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="1-64 of a-z, 0-9, '-', '_'.")
    config: dict[str, Any] | None = Field(default=None, description="IndexConfig (see README); omitted: defaults.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "papers", "config": {"fusion": {"method": "rrf"}}}]},
    )


class DocumentIn(BaseModel):
    id: StrictStr = Field(alias="_id", min_length=1, max_length=MAX_ID_CHARS,
                          description="Unique id; upserts replace.")
    title: StrictStr = ""
    text: StrictStr = ""
    metadata: dict[str, Any] = Field(default_factory=dict, description="Any JSON object; filterable by equality.")
    # strict: a boolean is no time (``true`` used to be stored as 1970-01-01T00:00:01Z), nor a vector component
    timestamp: StrictStr | StrictInt | StrictFloat | None = Field(
        default=None, description="ISO 8601 or epoch seconds, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z in UTC.")
    vector: list[StrictFloat] | None = Field(default=None, description="A precomputed embedding (skips encoding).")
    vectors: list[list[StrictFloat]] | None = Field(
        default=None, max_length=MAX_ITEM_VECTORS,
        description=f"A vector item: its frames (1 to {MAX_ITEM_VECTORS} vectors of the index's dimension, e.g. a "
                    "video's CLIP image features). The item is searched by their mean and reranked by X-Pool over "
                    "them. A bad frame refuses the whole request (422, naming the item and the frame).")

    # NaN and Infinity are no JSON; Python's parser reads them, so they are refused here, for the whole request
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @field_validator("metadata")
    @classmethod
    def _finite_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("metadata holds NaN or an infinity, which JSON cannot carry") from None
        return value


class UpsertDocuments(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, description="The batch (at most FOVEAL_MAX_BATCH_DOCS).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"documents": [
            {"_id": "tides", "title": "Ocean tides", "text": "The moon pulls the sea.",
             "metadata": {"topic": "science"}, "timestamp": "2024-01-05T00:00:00Z"}]}]},
    )


class DocumentIds(BaseModel):
    ids: list[StrictStr] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST,
                                 description=f"1 to {MAX_IDS_PER_REQUEST} document ids, any characters.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"ids": ["tides", "a/b"]}]})

    @field_validator("ids")
    @classmethod
    def _check_ids(cls, value: list[str]) -> list[str]:
        for one in value:
            if not 1 <= len(one) <= MAX_ID_CHARS:
                raise ValueError(f"each id has 1 to {MAX_ID_CHARS} characters")
        return value


class DocumentsFound(BaseModel):
    documents: list["DocumentOut"] = Field(description="The documents found, in the order asked.")
    missing: list[str] = Field(description="Ids asked for that are not in the index.")


class DocumentsDeleted(BaseModel):
    deleted: list[str]
    missing: list[str] = Field(description="Ids asked for that were not in the index.")


class JobAccepted(BaseModel):
    job_id: str
    index: str
    total: int = Field(description="Documents in the batch.")
    rejected: int = Field(description="Refused at once (listed in the job's errors).")
    status_url: str


class JobError(BaseModel):
    id: str | None = Field(description="The document id, when it had one.")
    reason: str


class Job(BaseModel):
    id: str
    index: str
    state: str = Field(description="queued, running or done.")
    total: int
    done: int = Field(description="Documents indexed (an unchanged re-upsert counts as indexed).")
    failed: int = Field(description="Documents refused; each is in errors (the first 1000).")
    errors: list[JobError]
    created: float
    updated: float


class IndexSummary(BaseModel):
    name: str
    documents: int | None = Field(description="Documents in the index; absent when it cannot be opened.")
    error: str | None = Field(default=None, description="Why the index cannot be opened (the others still list).")


class DocumentOut(BaseModel):
    id: str = Field(serialization_alias="_id")
    title: str
    text: str
    metadata: dict[str, Any]
    timestamp: str | None
    passages: int


DocumentsFound.model_rebuild()


# -- indexes -----------------------------------------------------------------------------------------------------
@router.post("/indexes", status_code=201, tags=["indexes"], response_model=IndexSummary, dependencies=ADMIN)
async def create_index(body: CreateIndex, request: Request) -> IndexSummary:
    """Create an index with its config (validated; unknown keys are refused). 409 when it exists."""
    check_index(request, body.name)  # a key limited to some indexes creates only those
    engine = request.app.state.engine
    # a REST caller is a tenant: no dotted-path backends, paths, server URLs or unbounded factories
    config = IndexConfig.parse(body.config, source="rest") if body.config is not None else None
    collection = await run_in_threadpool(engine.create_index, body.name, config)
    return IndexSummary(name=body.name, documents=collection.store.count())


@router.get("/indexes", tags=["indexes"], response_model=list[IndexSummary], response_model_exclude_none=True,
            dependencies=READ)
def list_indexes(request: Request) -> list[IndexSummary]:
    """Every index with its document count. One that cannot be opened is listed with its ``error`` instead, so a
    damaged index never hides the others."""
    engine = request.app.state.engine
    allowed = allowed_indexes(request)
    summaries = []
    for name in engine.list_indexes():
        if allowed is not None and name not in allowed:
            continue
        try:
            summaries.append(IndexSummary(name=name, documents=engine.get(name).store.count()))
        except Exception as exc:  # noqa: BLE001 - reported in the listing, not raised
            message = exc.message if isinstance(exc, FovealError) else f"{type(exc).__name__}: {exc}"
            summaries.append(IndexSummary(name=name, documents=None, error=message))
    return summaries


@router.get("/indexes/{name}", tags=["indexes"], dependencies=READ)
def index_stats(request: Request, name: str = INDEX_NAME) -> dict[str, Any]:
    """Counts in every store (documents, passages, vectors, lexical documents), change-log position, config."""
    collection = request.app.state.engine.get(name)
    collection.refresh()
    return collection.stats()


@router.delete("/indexes/{name}", tags=["indexes"], dependencies=ADMIN)
async def delete_index(request: Request, name: str = INDEX_NAME) -> dict[str, str]:
    """Delete an index and its files. Its queued batches end with their documents failed ("index deleted"); a
    batch already running is refused under the index's write lock (its job reports the same)."""
    state = request.app.state
    engine = state.engine
    instance = await run_in_threadpool(_instance_of, engine, name)
    await run_in_threadpool(engine.delete_index, name)
    await run_in_threadpool(state.queue.cancel_index, name, instance)
    return {"deleted": name}


def _instance_of(engine, name: str) -> str | None:
    """The instance id of the index as it is on disk now (None when it has none: made before instance ids, or
    missing, which delete_index then reports); read from the file so that no model is loaded to delete an index."""
    try:
        return (engine.path_of(name) / "instance").read_text() or None
    except OSError:
        return None


# -- documents ---------------------------------------------------------------------------------------------------
@router.post("/indexes/{name}/documents", status_code=202, tags=["documents"], response_model=JobAccepted,
             dependencies=WRITE)
async def upsert_documents(body: UpsertDocuments, request: Request, response: Response,
                           name: str = INDEX_NAME) -> JobAccepted:
    """Queue a batch of documents for indexing. Answered 202 once the batch is durably queued; follow the job at
    ``status_url``. Documents refused on sight (empty, bad timestamp, wrong vector size) are listed in the job's
    errors; the rest of the batch is indexed."""
    state = request.app.state
    settings = state.settings
    if len(body.documents) > settings.max_batch_docs:
        raise PayloadTooLargeError(
            f"batch of {len(body.documents)} documents; at most {settings.max_batch_docs} per request "
            "(FOVEAL_MAX_BATCH_DOCS)", limit=settings.max_batch_docs)
    await run_in_threadpool(_check_backpressure, state)
    # as it is on disk now (another process may have deleted and re-created it): the batch is fenced to this creation
    collection = await run_in_threadpool(state.engine.get_current, name)
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for position, doc in enumerate(body.documents):
        raw = doc.model_dump(by_alias=True, exclude_none=True)
        size = len(json.dumps(raw, ensure_ascii=False).encode("utf-8"))
        if size > settings.max_doc_bytes:
            raise PayloadTooLargeError(
                f"document {doc.id!r} (position {position}) is {size} bytes as JSON; at most {settings.max_doc_bytes} "
                "(FOVEAL_MAX_DOC_BYTES)", doc_id=doc.id, limit=settings.max_doc_bytes)
        try:
            parse_document(raw, **collection.document_rules())
            accepted.append(raw)
        except DocumentError as exc:
            if doc.vectors is not None:  # a vector item's frames are checked as a request: nothing of it is queued
                raise DocumentError(f"document {doc.id!r} (position {position}): {exc.reason}", doc_id=doc.id) from None
            rejected.append({"id": doc.id, "reason": exc.reason})
    # the index itself, never an alias: the batch goes where the alias pointed when it was accepted
    job = await run_in_threadpool(state.queue.submit, collection.name, accepted, rejected, len(body.documents),
                                  collection.instance or None)
    url = f"/v1/jobs/{job['id']}"
    response.headers["Location"] = url
    return JobAccepted(job_id=job["id"], index=collection.name, total=job["total"], rejected=len(rejected), status_url=url)


def _check_backpressure(state) -> None:
    """Refuse a batch (503 + Retry-After) while the queue holds ``FOVEAL_MAX_QUEUE_DEPTH`` tasks not done, or
    ``FOVEAL_HOME``'s disk has less than ``FOVEAL_MIN_FREE_DISK_MB`` free: better a clear "come back later" than a
    queue that grows without end or a write that fails half way on a full disk."""
    settings = state.settings
    try:
        depth = state.queue.stats()["queue_depth"]
    except Exception:  # noqa: BLE001 - a queue backend that cannot answer is refused by submit, in its own words
        depth = 0
    if depth >= settings.max_queue_depth:
        raise OverloadedError(
            f"the ingest queue holds {depth} tasks not done; at most {settings.max_queue_depth} "
            "(FOVEAL_MAX_QUEUE_DEPTH): retry later", queue_depth=depth, limit=settings.max_queue_depth,
            retry_after=BACKPRESSURE_RETRY_S)
    free_mb = shutil.disk_usage(state.engine.home).free // (1024 * 1024)
    if free_mb < settings.min_free_disk_mb:
        raise OverloadedError(
            f"{free_mb} MB free on the index disk; ingest needs at least {settings.min_free_disk_mb} MB "
            "(FOVEAL_MIN_FREE_DISK_MB): retry later", free_mb=free_mb, limit=settings.min_free_disk_mb,
            retry_after=BACKPRESSURE_RETRY_S)


def _document_out(doc) -> "DocumentOut":
    from foveal.documents import format_timestamp

    return DocumentOut(id=doc.id, title=doc.title, text=doc.text, metadata=doc.metadata,
                       timestamp=format_timestamp(doc.timestamp), passages=len(doc.passages))


class DocumentPage(BaseModel):
    documents: list[DocumentOut]
    next: str | None = Field(description="Pass as `after` for the next page; null at the end.")


class FilterBody(BaseModel):
    filter: SearchFilter = Field(description="The same conditions as a search filter (all must hold).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"filter": {"metadata": {"topic": "old"}}}]})


class MetadataUpdate(BaseModel):
    id: StrictStr = Field(alias="_id", min_length=1, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] | None = Field(default=None, description="Keys to set (null removes a key with merge).")
    timestamp: StrictStr | StrictInt | StrictFloat | None = Field(default=None, description="A new timestamp.")
    clear_timestamp: bool = Field(default=False, description="Remove the timestamp.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @field_validator("metadata")
    @classmethod
    def _finite(cls, value):
        return DocumentIn._finite_metadata(value) if value is not None else value


class UpdateDocuments(BaseModel):
    documents: list[MetadataUpdate] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)
    merge: bool = Field(default=True, description="Merge into the stored metadata (true) or replace it (false).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"documents": [{"_id": "tides", "metadata": {"reviewed": True}}], "merge": True}]})


class DocumentsUpdated(BaseModel):
    updated: list[str]
    unchanged: list[str]
    missing: list[str]


@router.get("/indexes/{name}/documents", tags=["documents"], response_model=DocumentPage,
            response_model_by_alias=True, dependencies=READ)
def list_documents(request: Request, name: str = INDEX_NAME,
                   after: str | None = Query(default=None, pattern=r"^-?[0-9]{1,19}$",
                                             description="The `next` of the previous page."),
                   limit: int = Query(default=100, ge=1, le=1000)) -> DocumentPage:
    """Every document, a page at a time in a stable order (scroll with ``after`` = the previous ``next``)."""
    collection = request.app.state.engine.get(name)
    docs = collection.store.list_documents(int(after) if after is not None else -1, limit)
    return DocumentPage(documents=[_document_out(d) for d in docs],
                        next=str(docs[-1].doc_key) if len(docs) == limit else None)


@router.post("/indexes/{name}/documents/_export", tags=["documents"], dependencies=READ,
             responses={200: {"content": {"application/x-ndjson": {}}, "description": "One document a line."}})
async def export_documents(request: Request, name: str = INDEX_NAME, body: FilterBody | None = None):
    """Every document (or those matching ``filter``) as JSON lines in the ingest format (``_id``, ``title``,
    ``text``, ``metadata``, ``timestamp``), streamed."""
    from fastapi.responses import StreamingResponse

    collection = request.app.state.engine.get(name)
    keys = None
    if body is not None:
        f = body.filter
        keys = await run_in_threadpool(collection.store.filter_keys, f.ids, f.metadata,
                                       f.timestamp.bounds() if f.timestamp is not None else None)

    def lines():
        after = -1
        while True:
            docs = collection.store.list_documents(after, 500, keys)
            for doc in docs:
                yield (json.dumps(export_record(doc), ensure_ascii=False) + "\n").encode()
            if len(docs) < 500:
                return
            after = docs[-1].doc_key

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/indexes/{name}/documents/_delete_by_filter", tags=["documents"], dependencies=WRITE)
async def delete_by_filter(body: FilterBody, request: Request, name: str = INDEX_NAME) -> dict[str, Any]:
    """Delete every document matching the filter (committed when this returns); answers the ids deleted."""
    collection = request.app.state.engine.get(name)
    f = body.filter
    result = await run_in_threadpool(collection.delete_where, f.ids, f.metadata,
                                     f.timestamp.bounds() if f.timestamp is not None else None)
    return {"deleted": len(result.deleted), "ids": result.deleted[:MAX_IDS_PER_REQUEST]}


@router.post("/indexes/{name}/documents/_update", tags=["documents"], response_model=DocumentsUpdated,
             dependencies=WRITE)
async def update_documents(body: UpdateDocuments, request: Request, name: str = INDEX_NAME) -> DocumentsUpdated:
    """Change metadata and timestamps without encoding again (the stored passages and vectors are kept);
    committed when this returns."""
    from foveal.documents import parse_timestamp

    collection = request.app.state.engine.get(name)
    updates = []
    for one in body.documents:
        try:
            stamp = parse_timestamp(one.timestamp) if one.timestamp is not None else None
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"document {one.id!r}: timestamp: {exc}", id=one.id) from None
        updates.append((one.id, one.metadata, stamp, one.clear_timestamp))
    result = await run_in_threadpool(lambda: collection.update_metadata(updates, merge=body.merge))
    return DocumentsUpdated(updated=result.updated, unchanged=result.unchanged, missing=result.missing)


def export_record(doc) -> dict[str, Any]:
    """A stored document in the ingest format (what ``foveal ingest`` reads back)."""
    from foveal.documents import format_timestamp

    record: dict[str, Any] = {"_id": doc.id, "title": doc.title, "text": doc.text, "metadata": doc.metadata}
    if doc.timestamp is not None:
        record["timestamp"] = format_timestamp(doc.timestamp)
    return record


# The body-based routes come first: ``POST .../documents/_get`` can never be taken for a document id (the
# ``{doc_id:anyid}`` routes answer GET and DELETE only, so a document named ``_get`` stays reachable too).
@router.post("/indexes/{name}/documents/_get", tags=["documents"], response_model=DocumentsFound,
             response_model_by_alias=True, dependencies=READ)
def get_documents(body: DocumentIds, request: Request, name: str = INDEX_NAME) -> DocumentsFound:
    """Several documents by id, the ids in the body (any characters, no encoding needed)."""
    collection = request.app.state.engine.get(name)
    found, missing = [], []
    for doc_id in dict.fromkeys(body.ids):
        doc = collection.get(doc_id)
        if doc is None:
            missing.append(doc_id)
        else:
            found.append(_document_out(doc))
    return DocumentsFound(documents=found, missing=missing)


@router.post("/indexes/{name}/documents/_delete", tags=["documents"], response_model=DocumentsDeleted,
             dependencies=WRITE)
async def delete_documents(body: DocumentIds, request: Request, name: str = INDEX_NAME) -> DocumentsDeleted:
    """Delete several documents by id, the ids in the body (committed when this returns)."""
    collection = request.app.state.engine.get(name)
    ids = list(dict.fromkeys(body.ids))
    result = await run_in_threadpool(collection.delete, ids)
    deleted = set(result.deleted)
    return DocumentsDeleted(deleted=[i for i in ids if i in deleted], missing=[i for i in ids if i not in deleted])


@router.get("/indexes/{name}/documents/{doc_id:anyid}", tags=["documents"], response_model=DocumentOut,
            response_model_by_alias=True, dependencies=READ)
def get_document(request: Request, name: str = INDEX_NAME, doc_id: str = DOC_ID) -> DocumentOut:
    """One document as stored (committed writes only). The id is percent-encoded in the path (``a%2Fb``)."""
    collection = request.app.state.engine.get(name)
    doc = collection.get(doc_id)
    if doc is None:
        raise DocumentNotFoundError(f"document {doc_id!r} is not in index {name!r}", index=name, id=doc_id)
    return _document_out(doc)


@router.delete("/indexes/{name}/documents/{doc_id:anyid}", tags=["documents"], dependencies=WRITE)
async def delete_document(request: Request, name: str = INDEX_NAME, doc_id: str = DOC_ID) -> dict[str, str]:
    """Delete one document from every store (committed when this returns)."""
    collection = request.app.state.engine.get(name)
    result = await run_in_threadpool(collection.delete, [doc_id])
    if not result.deleted:
        raise DocumentNotFoundError(f"document {doc_id!r} is not in index {name!r}", index=name, id=doc_id)
    return {"deleted": doc_id}


# -- jobs --------------------------------------------------------------------------------------------------------
@router.get("/jobs", tags=["jobs"], response_model=list[Job], dependencies=WRITE)
async def list_jobs(request: Request, index: str | None = Query(default=None, pattern=INDEX_PATTERN,
                                                                 description="Only this index's jobs."),
                    limit: int = Query(default=20, ge=1, le=200, description="Most jobs to list.")
                    ) -> list[dict[str, Any]]:
    """The latest ingest jobs, newest first (within ``FOVEAL_JOB_TTL_S``), of the indexes the key may use."""
    if index is not None:
        check_index(request, index)
    allowed = allowed_indexes(request)
    jobs = await run_in_threadpool(request.app.state.queue.recent, index, limit if allowed is None else 10 * limit)
    return [job for job in jobs if allowed is None or job["index"] in allowed][:limit]


@router.get("/jobs/{job_id}", tags=["jobs"], response_model=Job, dependencies=WRITE)
async def get_job(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
    """Progress of an ingest job: state, counts, and the reason for every refused document."""
    job = await run_in_threadpool(request.app.state.queue.job, job_id)
    check_index(request, job["index"])  # a key limited to some indexes follows only their jobs
    return job


# -- aliases -----------------------------------------------------------------------------------------------------
ALIAS_NAME = PathParam(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="Alias name (an index name's rules).")


class AliasIn(BaseModel):
    index: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$", description="The index the alias points to.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"index": "papers-v2"}]})


class AliasOut(BaseModel):
    alias: str
    index: str
    previous: str | None = Field(default=None, description="The index it pointed to before (a swap), if any.")


@router.get("/aliases", tags=["aliases"], response_model=dict[str, str], dependencies=READ)
def list_aliases(request: Request) -> dict[str, str]:
    """Every alias and the index it points to (a key limited to some indexes sees the aliases of those only)."""
    allowed = allowed_indexes(request)
    table = request.app.state.engine.list_aliases()
    return {a: i for a, i in table.items() if allowed is None or i in allowed}


@router.put("/aliases/{alias}", tags=["aliases"], response_model=AliasOut, dependencies=ADMIN)
async def set_alias(body: AliasIn, request: Request, alias: str = ALIAS_NAME) -> AliasOut:
    """Point an alias at an index: creates it, or moves it in one atomic step (a search through the alias meanwhile
    gets the old index or the new one, never an error). 409 when the alias name is an index's; 404 when the index
    does not exist. Searches, gets and ingest through the alias reach the index it points to."""
    engine = request.app.state.engine
    check_index(request, body.index)
    current = engine.aliases.get(alias)
    if current is not None:  # a key limited to some indexes may not take over an alias of another index
        check_index(request, current)
    previous = await run_in_threadpool(engine.set_alias, alias, body.index)
    return AliasOut(alias=alias, index=body.index, previous=previous)


@router.delete("/aliases/{alias}", tags=["aliases"], response_model=AliasOut, dependencies=ADMIN)
async def remove_alias(request: Request, alias: str = ALIAS_NAME) -> AliasOut:
    """Remove an alias (the index stays)."""
    engine = request.app.state.engine
    current = engine.aliases.get(alias)
    if current is not None:
        check_index(request, current)
    index = await run_in_threadpool(engine.remove_alias, alias)
    return AliasOut(alias=alias, index=index)


# -- events (foveal.events) --------------------------------------------------------------------------------------
class AddEvents(BaseModel):
    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_REQUEST,
        description=f"1 to {MAX_EVENTS_PER_REQUEST} events: `_id`, `title` and/or `text`, optional `source`, "
                    "`timestamp` (ISO 8601 or epoch seconds, required).")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"events": [
        {"_id": "storm-0501", "title": "Storm hits the coast", "text": "Thousands without power.",
         "source": "wire", "timestamp": "2024-05-01T08:00:00Z"}]}]})


class EventsAdded(BaseModel):
    added: list[str]
    updated: list[str]
    unchanged: list[str] = Field(description="Sent again with the same content: nothing to do.")
    expired: list[str] = Field(description="Older than `events.retention_days`: not kept (stored ones removed).")


class EventOut(BaseModel):
    id: str = Field(serialization_alias="_id")
    title: str
    text: str
    source: str | None
    timestamp: str | None


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


def _event_model(event) -> EventOut:
    out = event_out(event)
    return EventOut(id=out["_id"], title=out["title"], text=out["text"], source=out["source"],
                    timestamp=out["timestamp"])


@router.post("/indexes/{name}/events", tags=["events"], response_model=EventsAdded, dependencies=WRITE)
async def add_events(body: AddEvents, request: Request, name: str = INDEX_NAME) -> EventsAdded:
    """Add or replace events (by `_id`), encoded with the index's encoder, committed when this returns. The batch
    is checked whole first: one bad event (no timestamp, a date that does not parse) refuses the batch with a 422
    naming it, and nothing of it is written."""
    collection = await run_in_threadpool(request.app.state.engine.get_current, name)
    events = [parse_event(raw, position=i) for i, raw in enumerate(body.events)]
    result = await run_in_threadpool(collection.add_events, events)
    return EventsAdded(**result)


@router.get("/indexes/{name}/events", tags=["events"], response_model=EventPage, response_model_by_alias=True,
            dependencies=READ)
def list_events(request: Request, name: str = INDEX_NAME,
                after: int = Query(default=0, ge=0, le=2**62, description="The `next_after` of the previous page."),
                limit: int = Query(default=100, ge=1, le=1000)) -> EventPage:
    """The index's events in the order they were first added, `limit` at a time."""
    collection = request.app.state.engine.get(name)
    events = collection._event_store().list_events(after, limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return EventPage(events=[_event_model(e) for e in events],
                     next_after=events[-1].event_key if more and events else None)


@router.get("/indexes/{name}/events/{event_id:anyid}", tags=["events"], response_model=EventOut,
            response_model_by_alias=True, dependencies=READ)
def get_event(request: Request, name: str = INDEX_NAME, event_id: str = EVENT_ID) -> EventOut:
    """One event by id (percent-encoded in the path)."""
    collection = request.app.state.engine.get(name)
    event = collection._event_store().get_event(event_id)
    if event is None:
        raise NotFoundError(f"event {event_id!r} is not in index {name!r}", index=name, id=event_id)
    return _event_model(event)


@router.delete("/indexes/{name}/events/{event_id:anyid}", tags=["events"], dependencies=WRITE)
async def delete_event(request: Request, name: str = INDEX_NAME, event_id: str = EVENT_ID) -> dict[str, str]:
    """Delete one event (committed when this returns)."""
    collection = request.app.state.engine.get(name)
    result = await run_in_threadpool(collection.delete_events, [event_id])
    if not result["deleted"]:
        raise NotFoundError(f"event {event_id!r} is not in index {name!r}", index=name, id=event_id)
    return {"deleted": event_id}
