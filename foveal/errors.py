"""The exceptions foveal raises, in one tree.

::

    FovealError                      base of everything foveal raises on purpose
    ├── InvalidInputError            the caller sent something unusable          -> HTTP 422 / CLI message
    │   └── DocumentError            one document is malformed (carries its line number when read from a file)
    ├── NotFoundError                                                            -> HTTP 404
    │   ├── IndexNotFoundError       no index of that name
    │   └── DocumentNotFoundError    no document with that id
    ├── ConflictError                the request fights the state it meets       -> HTTP 409
    │   ├── IndexExistsError         creating an index that is already there
    │   ├── IncompatibleIndexError   an index folder built with another config than the one asked for
    │   └── IndexLockedError         another process already writes this index
    ├── ConfigError                  a configuration value is wrong (lists the allowed values)
    ├── BackendUnavailableError      a server-side backend (Elasticsearch, Redis) cannot be reached or failed -> 503
    ├── OverloadedError              too much at once: ingest backpressure (queue depth, free disk)   -> HTTP 503
    ├── RateLimitedError             a key's request rate or concurrent-run quota is spent          -> HTTP 429
    ├── AuthenticationError          no API key, or one that is not configured                      -> HTTP 401
    ├── PermissionDeniedError        the key lacks the route's scope or may not use that index      -> HTTP 403
    └── IndexDamagedError            an index that cannot be trusted (its document store failed its check, or is
                                     behind what its derived indexes recorded); refused, named   -> HTTP 503

An error whose ``details`` carry ``retry_after`` (seconds) is answered with a ``Retry-After`` header.
The API maps these to HTTP statuses in one place (``foveal.api.app``); the CLI prints their message.
"""

from __future__ import annotations


class FovealError(Exception):
    """Base class of every error foveal raises on purpose."""

    status_code = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInputError(FovealError, ValueError):
    status_code = 422


class DocumentError(InvalidInputError):
    """A malformed document; ``line`` is its 1-based line number when it was read from a file."""

    def __init__(self, message: str, *, line: int | None = None, doc_id: str | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(where + message, line=line, doc_id=doc_id)
        #: the message without the line number
        self.reason = message
        self.line = line
        self.doc_id = doc_id


class NotFoundError(FovealError, KeyError):
    status_code = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class IndexNotFoundError(NotFoundError):
    pass


class DocumentNotFoundError(NotFoundError):
    pass


class ConflictError(FovealError):
    status_code = 409


class IndexExistsError(ConflictError):
    pass


class IncompatibleIndexError(ConflictError):
    pass


class IndexLockedError(ConflictError):
    pass


class ConfigError(FovealError, ValueError):
    status_code = 422


class BackendUnavailableError(FovealError):
    """A server-side storage backend (Elasticsearch) could not be reached or refused the request."""

    status_code = 503


class IndexDamagedError(FovealError):
    """An index whose document store cannot be trusted: refused (the other indexes keep serving), with a message
    naming the index, what was found and how to get it back. Derived indexes (vectors, BM25) are never refused
    for damage: they are rebuilt from the store."""

    status_code = 503


class OverloadedError(FovealError):
    """The service refuses more work for now (ingest queue too deep, disk nearly full); ``retry_after`` in
    seconds is in its details and becomes the ``Retry-After`` header."""

    status_code = 503


class RateLimitedError(FovealError):
    """A key sent more than its share (requests per second, concurrent agent runs); ``retry_after`` in details."""

    status_code = 429


class AuthenticationError(FovealError):
    """No API key, or one the server does not know; answered with ``WWW-Authenticate: Bearer``."""

    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750 section 3: a request with a wrong token is told so; one without is only told the scheme
        if self.details.get("invalid"):
            return {"WWW-Authenticate": 'Bearer realm="foveal", error="invalid_token"'}
        return {"WWW-Authenticate": 'Bearer realm="foveal"'}


class PermissionDeniedError(FovealError):
    """The key is valid but lacks the route's scope, or is limited to other indexes."""

    status_code = 403
