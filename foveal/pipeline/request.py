"""What a search asks for and what it returns.

These pydantic models are both the library's types and the REST API's schema. Every hit carries its evidence:
the rank and score it had in each retriever, the fused score, and the passage that matched; rerank and other
stages add their own entries under ``evidence``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from foveal.config import FusionConfig, Pipeline

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_QUERY_CHARS = 8192


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to search for, as plain text.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many hits to return.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Hits to skip (paging).")
    pipeline: Pipeline = Field(default=Pipeline.hybrid, description="bm25, dense or hybrid.")
    explain: bool = Field(default=False, description="Add how the query was analyzed and which terms matched.")
    fusion: FusionConfig | None = Field(default=None, description="Override the index's fusion settings.")
    rerank: bool | None = Field(
        default=None, description="Run the Pyramid-ERNIE rerank stage (default: the index config; off without weights)."
    )
    now: datetime | None = Field(
        default=None, description="The moment the query is asked (for time-aware stages); default: the present."
    )

    model_config = ConfigDict(
        extra="forbid",
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
