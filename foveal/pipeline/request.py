"""What a search asks for and what it returns.

These pydantic models are both the library's types and the REST API's schema. Every hit carries its evidence:
the rank and score it had in each retriever, the fused score, and the passage that matched; rerank and other
stages add their own entries under ``evidence``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, StrictBool, Tag, StrictFloat, StrictInt, StrictStr, field_validator, \
    model_validator

from foveal.config import FusionConfig, Pipeline

MAX_K = 1000
MAX_OFFSET = 10_000
MAX_QUERY_CHARS = 8192
#: Stage names a request's ``stages`` may switch (``rerank`` is Pyramid-ERNIE, the same as the ``rerank`` option).
STAGE_NAMES = ("rerank", "lexsem", "paraformer", "events", "freshness", "xpool")
#: Longest query ``vector`` (the same bound as an index's ``encoder.dimension``).
MAX_QUERY_VECTOR = 65_536


#: Metadata keys a filter may name (they become a JSON path in SQLite, so only plain names are allowed).
FILTER_KEY = r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$"
MAX_FILTER_VALUES = 1000
#: Strict types: JSON ``true`` is a boolean, never the number 1, and ``"1"`` is text, never a number.
Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
#: A timestamp bound: ISO 8601 text or epoch seconds (a boolean is refused, not read as 1970-01-01T00:00:01Z).
TimeValue = StrictStr | StrictInt | StrictFloat
#: What a hit may carry (``id``, ``rank`` and ``score`` always come).
HIT_FIELDS = ("id", "title", "text", "metadata", "timestamp", "passage", "evidence")
#: Longest ``snippet`` (``text: "snippet"``), in characters: a window around the matched passage.
SNIPPET_CHARS = 300


def not_blank(value: str, name: str = "query") -> str:
    """Refuse text that is empty once whitespace is taken away: a query of spaces matches nothing meaningful (it
    used to return arbitrary hits)."""
    if not value.strip():
        raise ValueError(f"{name} is blank (only whitespace); give some text to search for")
    return value


class TimeRange(BaseModel):
    """A range on the document ``timestamp``: ISO 8601 text or epoch seconds on each bound, each within the range
    documents may hold (years 0001 to 9999 UTC, see :func:`foveal.documents.parse_timestamp`)."""

    gte: TimeValue | None = None
    gt: TimeValue | None = None
    lte: TimeValue | None = None
    lt: TimeValue | None = None

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


#: A bound of a metadata range: a number, or ISO 8601 date/time text (compared with metadata text that parses as
#: ISO 8601, as instants; a date alone is midnight UTC). A boolean is refused.
RangeValue = StrictStr | StrictInt | StrictFloat


class MetadataRange(BaseModel):
    """A range on one metadata field: numbers against numeric values, or dates (ISO 8601 text) against date-valued
    text. At least one bound; all bounds of one range are numbers, or all are dates."""

    gte: RangeValue | None = None
    gt: RangeValue | None = None
    lte: RangeValue | None = None
    lt: RangeValue | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> "MetadataRange":
        given = {n: getattr(self, n) for n in ("gte", "gt", "lte", "lt") if getattr(self, n) is not None}
        if not given:
            raise ValueError("a metadata range needs at least one of gte, gt, lte, lt")
        texts = [n for n, v in given.items() if isinstance(v, str)]
        if texts and len(texts) != len(given):
            raise ValueError("a metadata range compares numbers or dates: give all its bounds as numbers or all as "
                             "ISO 8601 text")
        from foveal.documents import parse_timestamp

        for name in texts:
            try:
                parse_timestamp(given[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self

    def condition(self) -> dict:
        """``{"range": {op: number}, "dates": bool}`` as the stores take it (dates as epoch seconds)."""
        from foveal.documents import parse_timestamp

        given = {n: getattr(self, n) for n in ("gte", "gt", "lte", "lt") if getattr(self, n) is not None}
        dates = any(isinstance(v, str) for v in given.values())
        return {"range": {n: parse_timestamp(v) if dates else float(v) for n, v in given.items()}, "dates": dates}


class MetadataExists(BaseModel):
    """``{"exists": true}``: the field is present (any value, null included); ``false``: it is absent."""

    exists: StrictBool

    model_config = ConfigDict(extra="forbid")


def _condition_kind(value: Any) -> str:
    """Which form a metadata condition takes (a tagged union: a wrong value gets the errors of its own form only).
    The tags end in ``[]`` so error paths leave them out (see ``foveal.api.app._field_path``)."""
    if isinstance(value, MetadataExists) or (isinstance(value, dict) and "exists" in value):
        return "exists[]"
    if isinstance(value, (MetadataRange, dict)):
        return "range[]"
    if isinstance(value, list):
        return "list[]"
    return "value[]"


MetadataCondition = Annotated[
    Annotated[Scalar, Tag("value[]")] | Annotated[list[Scalar], Tag("list[]")]
    | Annotated[MetadataRange, Tag("range[]")] | Annotated[MetadataExists, Tag("exists[]")],
    Discriminator(_condition_kind),
]


class SearchFilter(BaseModel):
    """Restricts a search to matching documents; applied inside retrieval, so ``k`` hits come back when ``k``
    documents match. All given conditions must hold; ``not`` excludes the documents its filter matches."""

    ids: list[StrictStr] | None = Field(default=None, max_length=MAX_FILTER_VALUES,
                                        description="Only these document ids.")
    metadata: dict[str, MetadataCondition] | None = Field(
        default=None, description="Conditions on metadata fields: a value (equality), a list (any of its values), "
                                  "a range ({gte, gt, lte, lt}: numbers, or ISO 8601 dates against date text) or "
                                  "{exists: true|false}."
    )
    timestamp: TimeRange | None = Field(default=None, description="Range on the document timestamp.")
    not_: "SearchFilter | None" = Field(default=None, alias="not",
                                        description="Exclude the documents this filter matches (one level deep).")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"metadata": {"topic": "science", "year": {"gte": 2020}},
                                         "timestamp": {"gte": "2024-01-01"}, "not": {"metadata": {"draft": True}}}]},
    )

    @field_validator("not_")
    @classmethod
    def _check_not(cls, value):
        if value is not None and value.not_ is not None:
            raise ValueError("'not' may not hold another 'not' (one level of negation)")
        return value

    def metadata_conditions(self) -> dict | None:
        """The metadata conditions as the stores take them: a value or list (equality), ``{"range": {op: number},
        "dates": bool}`` or ``{"exists": bool}``."""
        if self.metadata is None:
            return None
        out: dict = {}
        for key, wanted in self.metadata.items():
            if isinstance(wanted, MetadataRange):
                out[key] = wanted.condition()
            elif isinstance(wanted, MetadataExists):
                out[key] = {"exists": wanted.exists}
            else:
                out[key] = wanted
        return out

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
            if isinstance(wanted, MetadataRange):
                for name in ("gte", "gt", "lte", "lt"):
                    bound = getattr(wanted, name)
                    if isinstance(bound, int) and not -2**63 <= bound < 2**63:
                        raise ValueError(f"metadata.{key}.{name}: integer {bound} is outside the 64-bit range")
                continue
            if isinstance(wanted, MetadataExists):
                continue
            for one in wanted if isinstance(wanted, list) else [wanted]:
                # the stores compare in SQLite (64-bit integers) and Elasticsearch (longs): a larger int is no value
                # any document can hold there, and binding it would fail inside the search
                if isinstance(one, int) and not isinstance(one, bool) and not -2**63 <= one < 2**63:
                    raise ValueError(f"metadata.{key}: integer {one} is outside the 64-bit range")
        return value


class FreshnessRequest(BaseModel):
    """Per-request freshness settings; each given one overrides the index's ``freshness`` section."""

    function: Literal["exp", "gauss", "linear"] | None = None
    scale_days: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=365_000)
    offset_days: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=365_000)
    decay: StrictFloat | None = Field(default=None, gt=0, lt=1)
    floor: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1)
    undated: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1)

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{"function": "exp", "scale_days": 30, "floor": 0.2}]})


class SearchRequest(BaseModel):
    # length checked in _check_query (a clearer message than pydantic's); the schema still states it
    query: StrictStr = Field(description=f"What to search for, as plain text (1 to {MAX_QUERY_CHARS} characters, "
                                         "not only whitespace).",
                             json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY_CHARS, "pattern": r"\S"})
    k: StrictInt = Field(default=10, ge=1, le=MAX_K, description="How many hits to return.")
    offset: StrictInt = Field(default=0, ge=0, le=MAX_OFFSET, description="Hits to skip (paging).")
    pipeline: Pipeline = Field(default=Pipeline.hybrid, description="bm25, dense or hybrid.")
    explain: StrictBool = Field(default=False, description="Add how the query was analyzed and which terms matched.")
    fusion: FusionConfig | None = Field(default=None, description="Override the index's fusion settings.")
    filter: SearchFilter | None = Field(default=None, description="Only documents matching this filter.")
    rerank: StrictBool | None = Field(
        default=None, description="Run the Pyramid-ERNIE rerank stage (default: the index config; off without weights)."
    )
    stages: dict[StrictStr, StrictBool] | None = Field(
        default=None, description="Switch stages on or off for this request by name: "
                                  f"{', '.join(STAGE_NAMES)} (rerank is the same as the `rerank` option); a stage "
                                  "left out follows the index config. An unknown name is refused.",
        json_schema_extra={"examples": [{"lexsem": True, "rerank": False}]})
    vector: list[StrictFloat] | None = Field(
        default=None, min_length=1, max_length=MAX_QUERY_VECTOR,
        description="The query as a vector (e.g. from CLIP's text tower, for an index of vector items): dense "
                    "retrieval and X-Pool use it instead of encoding `query`, which BM25 still searches. Its "
                    "dimension must be the index's.")
    now: datetime | None = Field(
        default=None, description="The moment the query is asked (for time-aware stages); default: the present."
    )
    freshness: FreshnessRequest | None = Field(
        default=None, description="Freshness decay settings over the index's (giving them runs the stage unless "
                                  "`stages.freshness` is false).")
    fields: list[Literal["id", "title", "text", "metadata", "timestamp", "passage", "evidence"]] | None = Field(
        default=None, max_length=len(HIT_FIELDS),
        description="What each hit carries besides id, rank and score; default: all of them.")
    text: Literal["full", "passage", "snippet", "none"] = Field(
        default="full", description=f"The hit's text: the whole document (full, the default, as before), the matched "
                                    f"passage, a snippet of at most {SNIPPET_CHARS} characters around it, or none.")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"query": "why does the moon cause tides", "k": 5, "pipeline": "hybrid"}]},
    )

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, value):
        if value is None:
            return value
        unknown = sorted(set(value) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGE_NAMES)}")
        return value

    @field_validator("now")
    @classmethod
    def _check_now(cls, value):
        if value is not None and value.tzinfo is None:
            from datetime import timezone

            value = value.replace(tzinfo=timezone.utc)  # a time without zone is UTC, as document timestamps
        return value

    @model_validator(mode="after")
    def _rerank_switch(self) -> "SearchRequest":
        if self.stages and "rerank" in self.stages:
            if self.rerank is not None and self.rerank != self.stages["rerank"]:
                raise ValueError("rerank and stages.rerank disagree; give one")
            object.__setattr__(self, "rerank", self.stages["rerank"])
        return self

    def stage_on(self, name: str, default: bool) -> bool:
        """Whether stage ``name`` runs for this request: ``stages[name]`` when given, else ``default`` (the
        index's setting). ``rerank`` also reads the older ``rerank`` option."""
        if self.stages is not None and name in self.stages:
            return self.stages[name]
        if name == "rerank" and self.rerank is not None:
            return self.rerank
        return default

    stage_wanted = stage_on

    @field_validator("query")
    @classmethod
    def _check_query(cls, value: str) -> str:
        if len(value) > MAX_QUERY_CHARS:
            raise ValueError(f"query is {len(value)} characters; at most {MAX_QUERY_CHARS}")
        return not_blank(value)


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
    #: Query-side facts: tokens cut from an over-long query (never silent), and with explain the analyzed terms
    #: and the stage timings (``timings_ms``).
    query_info: dict[str, Any] = Field(default_factory=dict)
    _timings: dict[str, float] = PrivateAttr(default_factory=dict)

    @property
    def timings(self) -> dict[str, float]:
        """Milliseconds per stage of this search (:mod:`foveal.pipeline.timing`), also without ``explain``."""
        return self._timings


class SelectedHit(BaseModel):
    """A hit as the REST API returns it: ``id``, ``rank`` and ``score`` always; the others as the request's
    ``fields`` and ``text`` choose (all of them by default)."""

    id: str
    rank: int
    score: float
    title: str | None = None
    text: str | None = Field(default=None, description="The whole text, the passage, a snippet, or absent (`text`).")
    metadata: dict[str, Any] | None = None
    timestamp: str | None = None
    passage: PassageInfo | None = None
    evidence: dict[str, Any] | None = None


class SelectedSearchResponse(SearchResponse):
    """:class:`SearchResponse` with each hit cut to what was asked for (the REST answer's schema)."""

    hits: list[SelectedHit]


def snippet(hit: "Hit", limit: int = SNIPPET_CHARS) -> str:
    """At most ``limit`` characters of the document around its matched passage (the passage's offsets are in
    title + newline + text): the passage's start, widened on both sides when the passage is shorter."""
    full = f"{hit.title}\n{hit.text}" if hit.title and hit.text else hit.title or hit.text
    if hit.passage is None:
        return full[:limit].strip()
    start, end = max(0, hit.passage.start), min(len(full), hit.passage.end)
    if end - start >= limit:
        return full[start:start + limit].strip()
    spare = limit - (end - start)
    left = max(0, start - spare // 2)
    right = min(len(full), left + limit)
    left = max(0, right - limit)
    return full[left:right].strip()


def shape_response_json(response: SearchResponse, request: SearchRequest) -> bytes:
    """The REST answer: the response as JSON, each hit cut to the fields and the text form the request asked for.
    Written by pydantic's own serializer straight from the models (no intermediate dicts, no second pass through
    the ``json`` module), so it costs the server's one Python thread less. Scores that are not finite come out as
    ``null``."""
    wanted = set(request.fields) if request.fields is not None else set(HIT_FIELDS)
    if request.text == "none":
        wanted.discard("text")
    if "text" in wanted and request.text in ("passage", "snippet"):
        response = response.model_copy(update={"hits": [
            hit.model_copy(update={"text": _text_form(hit, request.text)}) for hit in response.hits]})
    dropped = {name for name in HIT_FIELDS if name != "id" and name not in wanted}
    return response.model_dump_json(exclude={"hits": {"__all__": dropped}} if dropped else None)


def _text_form(hit: "Hit", form: str) -> str:
    """A hit's text in the form ``passage`` (its matched passage; a snippet where none matched) or ``snippet``."""
    if form == "passage" and hit.passage is not None:
        return hit.passage.text
    return snippet(hit)
