"""A typed Python client for foveal's REST API, sync (:class:`Client`) and async (:class:`AsyncClient`), on httpx.

Example::

    >>> from foveal.client import Client, NotFoundError
    >>> with Client("http://127.0.0.1:8000", api_key="...") as client:      # doctest: +SKIP
    ...     accepted = client.add_documents("papers", [{"_id": "a", "text": "the moon pulls the sea"}])
    ...     job = client.wait_job(accepted.job_id)
    ...     hits = client.search("papers", "tides", k=3)["hits"]

Errors are typed (:mod:`foveal.client.errors` draws the tree) and carry the server's JSON envelope. The client
imports neither torch nor faiss: it needs httpx only.
"""

from foveal.client._client import API_KEY_ENV, AsyncClient, Client, IndexSummary, Job, JobAccepted, JobError
from foveal.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    InternalServerError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    TransportError,
    UnavailableError,
)

__all__ = [
    "API_KEY_ENV",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientError",
    "ConflictError",
    "IndexSummary",
    "InternalServerError",
    "InvalidInputError",
    "Job",
    "JobAccepted",
    "JobError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "TransportError",
    "UnavailableError",
]
