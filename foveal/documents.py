"""Documents: the unit of ingest, and how raw JSON becomes one.

A document is ``{"_id", "title", "text", "metadata", "timestamp", "vector"}``; only ``_id`` and some text (or a
``vector``) are required. ``timestamp`` is ISO 8601 or seconds since the epoch (naive times are UTC).
``vector`` is an embedding made elsewhere; it is checked for dimension and finiteness and skips encoding.

Example::

    >>> doc = parse_document({"_id": "a1", "title": "Tides", "text": "The moon pulls the sea."})
    >>> doc.id, len(doc.content_hash)
    ('a1', 64)
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from foveal.errors import DocumentError

#: Largest accepted document (title + text), in characters. Longer texts are split by the user, not cut by us.
MAX_DOCUMENT_CHARS = 2_000_000
MAX_ID_CHARS = 512
MAX_METADATA_BYTES = 64_000


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    vector: tuple[float, ...] | None = None

    @property
    def full_text(self) -> str:
        """What is encoded and segmented: the title, a newline, the text."""
        if self.title and self.text:
            return f"{self.title}\n{self.text}"
        return self.title or self.text

    @property
    def content_hash(self) -> str:
        payload = json.dumps(
            [self.title, self.text, self.metadata, self.timestamp],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(payload.encode("utf-8"))
        if self.vector is not None:
            digest.update(np.asarray(self.vector, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_id": self.id, "title": self.title, "text": self.text, "metadata": self.metadata}
        out["timestamp"] = format_timestamp(self.timestamp)
        return out


def parse_timestamp(value: Any) -> float | None:
    """ISO 8601 text or epoch seconds -> epoch seconds (UTC). ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 text or seconds since the epoch, not a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO 8601 (e.g. 2024-05-01T12:00:00Z)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    raise ValueError(f"timestamp must be ISO 8601 text or a number, got {type(value).__name__}")


def format_timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_document(raw: Any, *, line: int | None = None, dimension: int | None = None) -> Document:
    """Validate one raw JSON object into a :class:`Document`, or raise :class:`DocumentError` saying why."""
    if not isinstance(raw, Mapping):
        raise DocumentError(f"expected a JSON object, got {type(raw).__name__}", line=line)
    doc_id = raw.get("_id", raw.get("id"))
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise DocumentError("missing '_id' (a non-empty string)", line=line)
    doc_id = str(doc_id).strip()
    if not doc_id:
        raise DocumentError("'_id' is empty", line=line)
    if len(doc_id) > MAX_ID_CHARS:
        raise DocumentError(f"'_id' is longer than {MAX_ID_CHARS} characters", line=line)

    def text_field(name: str) -> str:
        value = raw.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise DocumentError(f"'{name}' must be a string, got {type(value).__name__}", line=line, doc_id=doc_id)
        return value.strip()

    title, text = text_field("title"), text_field("text")
    if len(title) + len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentError(
            f"document is {len(title) + len(text):,} characters; the limit is {MAX_DOCUMENT_CHARS:,}: split it into "
            "several documents",
            line=line,
            doc_id=doc_id,
        )
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DocumentError("'metadata' must be a JSON object", line=line, doc_id=doc_id)
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DocumentError(f"'metadata' is not plain JSON: {exc}", line=line, doc_id=doc_id) from None
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise DocumentError(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes", line=line, doc_id=doc_id)
    try:
        timestamp = parse_timestamp(raw.get("timestamp"))
    except ValueError as exc:
        raise DocumentError(str(exc), line=line, doc_id=doc_id) from None
    vector = _parse_vector(raw.get("vector"), line=line, doc_id=doc_id, dimension=dimension)
    if not title and not text and vector is None:
        raise DocumentError("document has no title, no text and no vector: nothing to index", line=line, doc_id=doc_id)
    return Document(doc_id, title, text, dict(metadata), timestamp, vector)


def _parse_vector(value: Any, *, line: int | None, doc_id: str, dimension: int | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise DocumentError("'vector' must be a non-empty list of numbers", line=line, doc_id=doc_id)
    if not set(map(type, value)) <= {int, float}:  # bools and strings are not numbers here
        raise DocumentError("'vector' must hold numbers only", line=line, doc_id=doc_id)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DocumentError("'vector' must hold numbers only", line=line, doc_id=doc_id) from None
    if array.ndim != 1:
        raise DocumentError("'vector' must be a flat list of numbers", line=line, doc_id=doc_id)
    vector = tuple(array.tolist())
    if dimension is not None and len(vector) != dimension:
        raise DocumentError(
            f"'vector' has dimension {len(vector)}; this index's encoder has {dimension}", line=line, doc_id=doc_id
        )
    if not np.isfinite(array).all():
        raise DocumentError("'vector' holds NaN or infinite values", line=line, doc_id=doc_id)
    if not array.any():
        raise DocumentError("'vector' is all zeros", line=line, doc_id=doc_id)
    return vector
