"""Documents: the unit of ingest, and how raw JSON becomes one.

A document is ``{"_id", "title", "text", "metadata", "timestamp", "vector"}``; only ``_id`` and some text (or a
``vector``) are required. ``timestamp`` is ISO 8601 or seconds since the epoch (naive times are UTC); after its offset is applied it must
lie in years 0001 to 9999 UTC, from ``0001-01-01T00:00:00Z`` (epoch seconds :data:`MIN_TIMESTAMP`) to
``9999-12-31T23:59:59Z`` (:data:`MAX_TIMESTAMP`), the range every reader can render back as ISO 8601.
``vector`` is an embedding made elsewhere; it skips encoding. It is checked as it will be stored, in float32: every
component finite there (``1e39`` overflows to infinity), none so small that float32 loses it (below
``1.18e-38``, it would be subnormal or zero), and a norm that float32 can compute, so the unit vector indexed is a
real one and never NaN.

``vectors`` makes a *vector item* (a video as its frame vectors, from whatever image encoder the user runs): a list
of 1 to :data:`MAX_ITEM_VECTORS` vectors of the index's dimension, each checked as ``vector`` is (and within
float16's range, the precision frames are stored in), with an optional title and text. The item's ``vector``
becomes the mean of its frames (normalised when indexed): the first stage searches that; the frames themselves
are kept as the document's ``frames`` vector set, for X-Pool (:mod:`foveal.rerank.xpool`). An item gives
``vectors`` or ``vector``, not both.

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
#: Most vectors (frames) one vector item may hold. X-Pool samples 12 frames per video; 128 frames of 512
#: components also fit the REST size limit on one document (FOVEAL_MAX_DOC_BYTES, 2.5 MB by default).
MAX_ITEM_VECTORS = 128
_FLOAT16_MAX = float(np.finfo(np.float16).max)
#: The vector-set kind (see :mod:`foveal.index.sqlite_store`) under which a vector item's frames are stored.
FRAMES_KIND = "frames"
#: The accepted range of ``timestamp`` in epoch seconds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z. Outside it
#: Python (and so every read of the document and every hit list that holds it) cannot render the time.
MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
_FLOAT32 = np.finfo(np.float32)


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    vector: tuple[float, ...] | None = None
    #: A vector item's frames, ``(n, dimension)`` float32 (``vector`` is then their mean).
    vectors: np.ndarray | None = field(default=None, compare=False)

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
        if self.vectors is not None:
            digest.update(b"frames:%d:" % len(self.vectors))
            digest.update(np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_id": self.id, "title": self.title, "text": self.text, "metadata": self.metadata}
        out["timestamp"] = format_timestamp(self.timestamp)
        return out


def parse_timestamp(value: Any) -> float | None:
    """ISO 8601 text or epoch seconds -> epoch seconds (UTC). ``None`` stays ``None``.

    Raises :class:`ValueError` for anything outside :data:`MIN_TIMESTAMP` .. :data:`MAX_TIMESTAMP` (checked after
    the offset is applied: ``9999-12-31T23:59:59-05:00`` is in year 10000 UTC and refused)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 text or seconds since the epoch, not a boolean")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:  # compared before float(): a huge int would overflow it
            raise ValueError(f"timestamp {_show(value)} is out of range: {_RANGE}")
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
        seconds = moment.timestamp()
        if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {value!r} is out of range once converted to UTC: {_RANGE}")
        return seconds
    raise ValueError(f"timestamp must be ISO 8601 text or a number, got {type(value).__name__}")


_RANGE = (f"accepted from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z UTC ({MIN_TIMESTAMP:.0f} to "
          f"{MAX_TIMESTAMP:.0f} epoch seconds)")


def _show(value: Any) -> str:
    """A value for an error message, cut short (an int of 400 digits is a valid JSON number)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


def format_timestamp(value: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC. A value outside the accepted range (only an index written before the range
    was enforced can hold one) is shown as its epoch seconds rather than failing the read that meets it."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return repr(float(value))


def parse_document(raw: Any, *, line: int | None = None, dimension: int | None = None,
                   vectors_only: bool = False) -> Document:
    """Validate one raw JSON object into a :class:`Document`, or raise :class:`DocumentError` saying why.
    ``vectors_only``: the index has no text encoder, so every document must bring ``vector`` or ``vectors``."""
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
    frames = None
    if raw.get("vectors") is not None:
        if vector is not None:
            raise DocumentError("give 'vectors' (the item's frames) or 'vector', not both: an item's vector is the "
                                "mean of its frames", line=line, doc_id=doc_id)
        frames = parse_item_vectors(raw["vectors"], line=line, doc_id=doc_id, dimension=dimension)
        mean = frames.astype(np.float64).mean(axis=0)
        reason = vector_problem(mean)
        if reason is not None:
            raise DocumentError(f"the mean of 'vectors' cannot be indexed: {reason.replace(chr(39) + 'vector' + chr(39), 'mean')}",
                                line=line, doc_id=doc_id)
        vector = tuple(mean.tolist())
    if vectors_only and vector is None:
        raise DocumentError("this index has no text encoder (encoder.model 'none'): each item brings 'vectors' (its "
                            "frames) or 'vector'", line=line, doc_id=doc_id)
    if not title and not text and vector is None:
        raise DocumentError("document has no title, no text and no vector: nothing to index", line=line, doc_id=doc_id)
    return Document(doc_id, title, text, dict(metadata), timestamp, vector, frames)


def parse_item_vectors(value: Any, *, line: int | None = None, doc_id: str | None = None,
                       dimension: int | None = None) -> np.ndarray:
    """A vector item's frames -> ``(n, d)`` float32, or :class:`DocumentError` naming the item and the frame."""
    if not isinstance(value, (list, tuple)) or not value:
        raise DocumentError("'vectors' must be a non-empty list of vectors (lists of numbers)", line=line, doc_id=doc_id)
    if len(value) > MAX_ITEM_VECTORS:
        raise DocumentError(f"'vectors' holds {len(value)} vectors; at most {MAX_ITEM_VECTORS} per item (sample the "
                            "frames)", line=line, doc_id=doc_id)
    rows = []
    for frame, row in enumerate(value):
        where = f"'vectors'[{frame}]"
        if not isinstance(row, (list, tuple)) or not row:
            raise DocumentError(f"{where} must be a non-empty list of numbers", line=line, doc_id=doc_id)
        if not set(map(type, row)) <= {int, float}:
            raise DocumentError(f"{where} must hold numbers only", line=line, doc_id=doc_id)
        expected = dimension if dimension is not None else (len(rows[0]) if rows else None)
        if expected is not None and len(row) != expected:
            raise DocumentError(f"{where} has dimension {len(row)}; this index's vectors have {expected}",
                                line=line, doc_id=doc_id)
        array = np.asarray(row, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(array) | (np.abs(array) > _FLOAT16_MAX))
        if bad.size:
            raise DocumentError(f"{where}[{bad[0]}] is {float(array[bad[0]])!r}: frame vectors must be finite and within "
                                f"float16's range (±{_FLOAT16_MAX:.0f}), the precision they are stored in",
                                line=line, doc_id=doc_id)
        if not array.any():
            raise DocumentError(f"{where} is all zeros", line=line, doc_id=doc_id)
        rows.append(array)
    return np.stack(rows).astype(np.float32)


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
    reason = vector_problem(array)
    if reason is not None:
        raise DocumentError(reason, line=line, doc_id=doc_id)
    return vector


def vector_problem(array: np.ndarray) -> str | None:
    """Why ``array`` (float64, one dimension) cannot be indexed as the float32 unit vector it becomes, naming the
    first offending position; ``None`` when it can. The checks run on the float32 values, because that is what is
    stored: a component finite in float64 may overflow (``1e39``) or vanish (``1e-46``) there, and a vector of
    tiny or huge components has a norm float32 cannot compute, which would make its unit vector NaN."""
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        return f"'vector'[{bad[0]}] is {float(array[bad[0]])!r}: NaN or infinite values cannot be indexed"
    magnitude = np.abs(array)
    bad = np.flatnonzero(magnitude > _FLOAT32.max)
    if bad.size:
        return (f"'vector'[{bad[0]}] is {float(array[bad[0]])!r}: beyond float32's range (largest {float(_FLOAT32.max):.4g});"
                " scale the vector down")
    bad = np.flatnonzero((magnitude > 0) & (magnitude < _FLOAT32.tiny))
    if bad.size:
        return (f"'vector'[{bad[0]}] is {float(array[bad[0]])!r}: below float32's smallest normal value "
                f"({float(_FLOAT32.tiny):.4g}), it would be lost; use 0 or scale the vector up")
    if not array.any():
        return "'vector' is all zeros"
    single = array.astype(np.float32)
    with np.errstate(all="ignore"):
        unit = single / np.linalg.norm(single)  # exactly as the index normalizes it
        norm = float(np.linalg.norm(unit.astype(np.float64)))
    if not np.isfinite(unit).all() or abs(norm - 1.0) > 1e-3:
        return "'vector' has a norm float32 cannot compute (its components are too large or too small); scale it"
    return None
