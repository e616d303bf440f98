"""What a search asks for and what it returns.

These pydantic models are both the library's types and the REST API's schema. Every hit carries its evidence:
the rank and score it had in each retriever, the fused score, and the passage that matched; rerank and other
stages add their own entries under ``evidence``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from foveal.config import FusionConfig, Pipeline

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_QUERY_CHARS = 8192


#: Metadata keys a filter may name (they become a JSON path in SQLite, so only plain names are allowed).
FILTER_KEY = r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$"
MAX_FILTER_VALUES = 1000
Scalar = str | int | float | bool


class TimeRange(BaseModel):
    """A range on the document ``timestamp``: ISO 8601 text or epoch seconds on each bound, each within the range
    documents may hold (years 0001 to 9999 UTC, see :func:`foveal.documents.parse_timestamp`)."""

    gte: str | float | None = None
    gt: str | float | None = None
    lte: str | float | None = None
    lt: str | float | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{"gte": "2024-01-01T00:00:00Z"}]})

    @model_validator(mode="after")
    def _check(self) -> "TimeRange":
        from foveal.documents import parse_timestamp

        bounds = {}
        for name in ("gte", "gt", "lte", "lt"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                bounds[name] = parse_timestamp(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"timestamp.{name}: {exc}") from None
        if not bounds:
            raise ValueError("a timestamp range needs at least one of gte, gt, lte, lt")
        return self

    def bounds(self) -> dict[str, float]:
        """The bounds as epoch seconds."""
        from foveal.documents import parse_timestamp

        return {n: parse_timestamp(getattr(self, n)) for n in ("gte", "gt", "lte", "lt") if getattr(self, n) is not None}


class SearchFilter(BaseModel):
    """Restricts a search to matching documents; applied inside retrieval, so ``k`` hits come back when ``k``
    documents match. All given conditions must hold."""

    ids: list[str] | None = Field(default=None, max_length=MAX_FILTER_VALUES, description="Only these document ids.")
    metadata: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None, description="Equality on metadata fields; a list means any of its values."
    )
    timestamp: TimeRange | None = Field(default=None, description="Range on the document timestamp.")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"metadata": {"topic": "science"}, "timestamp": {"gte": "2024-01-01"}}]},
    )

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value):
        if value is None:
            return value
        if len(value) > 32:
            raise ValueError("at most 32 metadata conditions")
        for key, wanted in value.items():
            if not re.match(FILTER_KEY, key):
                raise ValueError(f"metadata key {key!r}: use 1-64 letters, digits, '_' or '-'")
            if isinstance(wanted, list) and not 1 <= len(wanted) <= MAX_FILTER_VALUES:
                raise ValueError(f"metadata.{key}: give 1 to {MAX_FILTER_VALUES} values")
            for one in wanted if isinstance(wanted, list) else [wanted]:
                # the stores compare in SQLite (64-bit integers) and Elasticsearch (longs): a larger int is no value
                # any document can hold there, and binding it would fail inside the search
                if isinstance(one, int) and not isinstance(one, bool) and not -2**63 <= one < 2**63:
                    raise ValueError(f"metadata.{key}: integer {one} is outside the 64-bit range")
        return value


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to search for, as plain text.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many hits to return.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Hits to skip (paging).")
    pipeline: Pipeline = Field(default=Pipeline.hybrid, description="bm25, dense or hybrid.")
    explain: bool = Field(default=False, description="Add how the query was analyzed and which terms matched.")
    fusion: FusionConfig | None = Field(default=None, description="Override the index's fusion settings.")
    filter: SearchFilter | None = Field(default=None, description="Only documents matching this filter.")
    rerank: bool | None = Field(
        default=None, description="Run the Pyramid-ERNIE rerank stage (default: the index config; off without weights)."
    )
    now: datetime | None = Field(
        default=None, description="The moment the query is asked (for time-aware stages); default: the present."
    )

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"query": "why does the moon cause tides", "k": 5, "pipeline": "hybrid"}]},
    )


class PassageInfo(BaseModel):
    index: int = Field(description="Ordinal of the passage within the document.")
    start: int = Field(description="Character offset in title + newline + text.")
    end: int
    text: str


class Hit(BaseModel):
    id: str
    rank: int
    score: float
    title: str
    text: str
    metadata: dict[str, Any]
    timestamp: str | None
    passage: PassageInfo | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    index: str
    query: str
    pipeline: Pipeline
    k: int
    offset: int
    took_ms: float
    hits: list[Hit]
    #: Query-side facts: tokens cut from an over-long query (never silent), and with explain the analyzed terms.
    query_info: dict[str, Any] = Field(default_factory=dict)
