"""What the three Elasticsearch backends share: the server's url, the names of a foveal index's ES indexes and the
``_id`` of a foveal document, one client per process, the call and bulk wrappers that turn client failures into
:class:`~foveal.errors.BackendUnavailableError`, index creation, the allow-list filter both searches use, and
:func:`drop_indexes` (used when a foveal index is deleted)."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterable

from foveal.config import ElasticsearchConfig, es_servers
from foveal.errors import BackendUnavailableError, ConfigError

#: The most hits one kNN or term search asks for (ES's index.max_result_window default).
MAX_RESULTS = 10_000
_MAX_ES_ID_BYTES = 512
#: Retry-After (seconds) sent with a 503 while Elasticsearch is unreachable.
RETRY_AFTER_S = 5

log = logging.getLogger(__name__)


def es_server(config: ElasticsearchConfig) -> tuple[str, str]:
    """(label, url) of the index's server: ``elasticsearch.url`` (CLI config files), else the server the operator
    named ``elasticsearch.server`` (``default`` when unset: ``$FOVEAL_ES_URL``). The label is what errors say."""
    if config.url:
        return "elasticsearch.url", config.url
    name = config.server or "default"
    servers = es_servers()
    if name not in servers:
        if config.server is None:
            raise ConfigError("an elasticsearch backend needs a server: set FOVEAL_ES_URL (the server named "
                              "'default') or name servers in FOVEAL_ES_SERVERS and pick one with elasticsearch.server"
                              f"; known: {', '.join(sorted(servers)) or 'none'}", field="elasticsearch.server")
        known = ", ".join(sorted(servers)) or "none"
        raise ConfigError(f"elasticsearch.server: unknown server {name!r}; known: {known} (the operator names "
                          "servers in FOVEAL_ES_SERVERS)", field="elasticsearch.server")
    return f"server {name!r}", servers[name]


def es_url(config: ElasticsearchConfig) -> str:
    return es_server(config)[1]


def index_names(prefix: str, name: str) -> dict[str, str]:
    """The Elasticsearch indexes of foveal index ``name``."""
    return {kind: f"{prefix}{name}-{kind}" for kind in ("lexical", "vectors", "docs", "meta")}


def es_doc_id(doc_id: str) -> str:
    """The ``_id`` of a foveal document: itself, or a hash when it is longer than ES's 512-byte limit."""
    if len(doc_id.encode("utf-8")) <= _MAX_ES_ID_BYTES and not doc_id.startswith("sha256:"):
        return doc_id
    return "sha256:" + hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


TERMS_CHUNK = 10_000  # values per terms clause, well under index.max_terms_count (65,536)


def allowed_filter(field: str, values: Iterable[int]) -> dict[str, Any]:
    """A filter clause matching ``field`` (``"_id"`` uses an ids query) against any of ``values``.

    Large sets are split into terms clauses of :data:`TERMS_CHUNK` values OR-ed in one bool, so no single clause
    passes ES's max_terms_count; an empty set matches nothing."""
    keys = sorted({int(v) for v in values})

    def clause(chunk: list[int]) -> dict[str, Any]:
        if field == "_id":
            return {"ids": {"values": [str(v) for v in chunk]}}
        return {"terms": {field: chunk}}

    chunks = [keys[i : i + TERMS_CHUNK] for i in range(0, len(keys), TERMS_CHUNK)] or [[]]
    if len(chunks) == 1:
        return clause(chunks[0])
    return {"bool": {"should": [clause(c) for c in chunks], "minimum_should_match": 1}}


_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()
#: id(client) -> what errors call its server ("server 'main'"), never its address
_labels: dict[int, str] = {}


def client_for(config: ElasticsearchConfig):
    """One client per (url, timeout) per process (the client pools its connections and is thread-safe)."""
    from elasticsearch import Elasticsearch

    label, url = es_server(config)
    key = (url, config.request_timeout)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Elasticsearch(key[0], request_timeout=key[1], retry_on_timeout=True, max_retries=3)
        _labels[id(_clients[key])] = label
        return _clients[key]


def unavailable(client, what: str, exc: BaseException) -> BackendUnavailableError:
    """The error a caller sees when Elasticsearch fails: which server (by name) and whether it is unreachable or
    refused, with a ``Retry-After``; never the exception text, which can carry addresses and request bodies (it is
    logged instead)."""
    from elasticsearch import ApiError

    label = _labels.get(id(getattr(client, "_client", client)), "its server")
    log.warning("elasticsearch (%s): %s failed: %s: %s", label, what, type(exc).__name__, exc)
    if isinstance(exc, ApiError):
        kind = exc.error if isinstance(exc.error, str) and exc.error.isidentifier() else "error"
        return BackendUnavailableError(f"Elasticsearch at {label} refused {what} ({exc.status_code} {kind})",
                                       backend="elasticsearch", retry_after=RETRY_AFTER_S)
    return BackendUnavailableError(f"Elasticsearch at {label} is unreachable", backend="elasticsearch",
                                   retry_after=RETRY_AFTER_S)


def _call(what: str, fn, *args, **kwargs):
    """Run a client call, turning transport and API failures into :class:`BackendUnavailableError`."""
    from elasticsearch import ApiError, TransportError

    try:
        return fn(*args, **kwargs)
    except (ApiError, TransportError) as exc:
        raise unavailable(getattr(fn, "__self__", None), what, exc) from exc


def _ensure_index(client, name: str, body: dict[str, Any]) -> None:
    from elasticsearch import ApiError, BadRequestError, TransportError

    if _call("index check", client.indices.exists, index=name):
        return
    try:
        client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    except BadRequestError as exc:  # created by another process in the meantime, or refused
        if "resource_already_exists_exception" not in str(exc):
            raise unavailable(client, f"creating index {name!r}", exc) from exc
    except (ApiError, TransportError) as exc:
        raise unavailable(client, f"creating index {name!r}", exc) from exc


def _bulk(client, actions: Iterable[dict[str, Any]], what: str, refresh: str | bool = "wait_for") -> int:
    from elasticsearch import helpers

    try:
        done, _ = helpers.bulk(client, actions, refresh=refresh, chunk_size=500, max_retries=3)
    except helpers.BulkIndexError as exc:
        first = exc.errors[0] if exc.errors else {}
        log.warning("elasticsearch: %s: %d action(s) failed, first: %s", what, len(exc.errors), first)
        raise BackendUnavailableError(f"Elasticsearch at {_labels.get(id(client), 'its server')} refused {what}: "
                                      f"{len(exc.errors)} action(s) failed", backend="elasticsearch",
                                      retry_after=RETRY_AFTER_S) from None
    except Exception as exc:  # transport errors
        from elasticsearch import ApiError, TransportError

        if isinstance(exc, (ApiError, TransportError)):
            raise unavailable(client, what, exc) from exc
        raise
    return done


def drop_indexes(name: str, es: ElasticsearchConfig) -> None:
    """Delete every Elasticsearch index of foveal index ``name`` (used when the foveal index is deleted)."""
    client = client_for(es)
    for index in index_names(es.index_prefix, name).values():
        _call("delete index", client.indices.delete, index=index, ignore_unavailable=True)


def _name_from_path(path: Path | str | None, fallback: str = "default") -> str:
    """The foveal index name from a path inside its folder (``<home>/indexes/<name>/<file>``)."""
    if path is None:
        return fallback
    return Path(path).parent.name or fallback
