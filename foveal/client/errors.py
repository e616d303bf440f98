"""What :class:`foveal.client.Client` raises, in one tree.

::

    ClientError                      base of everything the client raises
    ├── TransportError               no HTTP answer: connection refused, reset, timed out (``__cause__``: httpx's)
    └── APIError                     the server answered 4xx/5xx; carries its JSON envelope
        ├── BadRequestError          400
        ├── AuthenticationError      401  no API key, or one the server does not know
        ├── PermissionDeniedError    403  the key lacks the scope or may not use that index
        ├── NotFoundError            404  no such index, document, job or route
        ├── ConflictError            409  the index exists, is locked, or was built with another config
        ├── PayloadTooLargeError     413  a batch, document or body over the server's limits
        ├── InvalidInputError        422  the request does not validate (``details`` lists the fields)
        ├── RateLimitedError         429  the key's share is spent (``retry_after``)
        ├── InternalServerError      500  a bug on the server; quote ``request_id`` to its operator
        └── UnavailableError         503  overloaded, a backend down, or an index damaged (``retry_after``)

Every :class:`APIError` keeps the server's envelope ``{"error": {"type", "message", "details"}}``: ``type`` is the
server's own error name (``IndexNotFoundError``, ``OverloadedError``, ...), ``message`` its sentence, ``details``
its structured part, and ``request_id`` the ``X-Request-ID`` the server answered with. 429 and 503 answers that
carry ``Retry-After`` are retried by the client within its bound before one of these is raised.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of every error the foveal client raises."""


class TransportError(ClientError):
    """The request got no HTTP answer (the server is down or unreachable, or the answer took too long)."""


class APIError(ClientError):
    """The server answered with an error status; the attributes come from its JSON envelope."""

    status_code: int = 0

    def __init__(self, status_code: int, envelope: dict[str, Any], *, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        error = envelope.get("error") if isinstance(envelope, dict) else None
        error = error if isinstance(error, dict) else {}
        self.status_code = status_code
        self.envelope = envelope
        self.type: str = str(error.get("type") or "HTTPError")
        self.message: str = str(error.get("message") or f"HTTP {status_code}")
        self.details: Any = error.get("details")
        self.request_id = request_id
        #: seconds the server asked the caller to wait (``Retry-After``), when it said
        self.retry_after = retry_after
        super().__init__(f"{status_code} {self.type}: {self.message}")


class BadRequestError(APIError):
    status_code = 400


class AuthenticationError(APIError):
    status_code = 401


class PermissionDeniedError(APIError):
    status_code = 403


class NotFoundError(APIError):
    status_code = 404


class ConflictError(APIError):
    status_code = 409


class PayloadTooLargeError(APIError):
    status_code = 413


class InvalidInputError(APIError):
    status_code = 422


class RateLimitedError(APIError):
    status_code = 429


class InternalServerError(APIError):
    status_code = 500


class UnavailableError(APIError):
    status_code = 503


_BY_STATUS: dict[int, type[APIError]] = {
    cls.status_code: cls
    for cls in (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError,
                PayloadTooLargeError, InvalidInputError, RateLimitedError, InternalServerError, UnavailableError)
}


def error_for(status_code: int, envelope: dict[str, Any], *, request_id: str | None = None,
              retry_after: float | None = None) -> APIError:
    """The exception for an error answer: the class of its status (other 4xx/5xx: :class:`APIError`)."""
    cls = _BY_STATUS.get(status_code, APIError)
    return cls(status_code, envelope, request_id=request_id, retry_after=retry_after)
