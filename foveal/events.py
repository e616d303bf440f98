"""Event-aware queries, after "Event-driven Real-time Retrieval in Web Search" (Tencent PCG, arXiv 2312.00372).

The paper expands a query with recent event information fused by **cross-attention** into a "time-context query
representation", and strengthens the event representation by multi-task training; only its abstract is public (see
METHODS.md section 3), so what follows is the reconstruction written there.

* **Event store.** Each index keeps timestamped events (``id``, ``title``, ``text``, optional ``source``,
  ``timestamp``) in its document store (table ``events``), encoded at ingest with the index's encoder (one vector
  per event, ``title + newline + text`` cut to the model's window), with their own small vector index
  (:class:`~foveal.index.derived.EventPart`) replayed from the shared change log like every derived index.
* **Query time** (:class:`EventStage`, a :class:`~foveal.encoders.base.QueryStage`): the events dated at or before
  the request's ``now`` (default: the present), within ``window_days``, are scored by
  ``relevance = cos(e_q, e_ev) * exp(-ln 2 * age / half_life)``; the ``top_k`` are attended. **Gate**: when the best
  cosine among them is below ``gate``, the query is evergreen for this store and its vector is returned unchanged
  (the same array). Otherwise the training-free default fuses them by a single-step cross-attention with identity
  projections, ``a = softmax(relevance / T)``, ``q_t = normalize(e_q + alpha * sum_i a_i e_i)``; a trained layer
  (``foveal train events``, :mod:`foveal.events_train`) replaces that step with learned projections:
  ``q_t = normalize(LN(e_q + alpha * W_o sum_i a_i W_v e_i))``, ``a = softmax((W_q e_q . W_k e_i) / sqrt(d) +
  log recency_i)``, the paper's ``Z = LN(H_q + MHA(H_q, H_e, H_e))`` with a single query vector.
* Nothing dated after ``now`` is ever attended. Documents dated after ``now`` are cut when the request sets
  ``now`` or the index sets ``events.cutoff_documents`` (see :func:`document_cutoff`).

Example::

    >>> collection.add_events([{"_id": "e1", "title": "Storm hits coast", "timestamp": "2024-05-01"}])  # doctest: +SKIP
    >>> engine.search("news", SearchRequest(query="storm damage", now="2024-05-02")).query_info["stages"]["events"]
    ... # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from foveal.config import EventsConfig
from foveal.documents import MAX_ID_CHARS, format_timestamp, parse_timestamp
from foveal.errors import DocumentError

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest

NAME = "events"
DAY = 86_400.0
#: Longest event (title + text), in characters; only the first model window of it is encoded.
MAX_EVENT_CHARS = 100_000
MAX_SOURCE_CHARS = 512
#: Most events one REST request may add (the CLI sends files in batches of this size).
MAX_EVENTS_PER_REQUEST = 1000
#: Files of a trained layer (``foveal train events``).
LAYER_FILE = "events_layer.npz"
LAYER_CONFIG = "events_layer.json"


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    title: str
    text: str
    source: str | None
    timestamp: float

    @property
    def full_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.title and self.text else self.title or self.text

    @property
    def content_hash(self) -> str:
        payload = json.dumps([self.title, self.text, self.source, self.timestamp], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def parse_event(raw: Any, *, line: int | None = None, position: int | None = None) -> Event:
    """One raw JSON object -> :class:`Event`, or :class:`DocumentError` saying why (with the line or position)."""
    where = f"event {position}: " if position is not None and line is None else ""
    if not isinstance(raw, Mapping):
        raise DocumentError(f"{where}expected a JSON object, got {type(raw).__name__}", line=line)
    unknown = set(raw) - {"_id", "id", "title", "text", "source", "timestamp"}
    if unknown:
        raise DocumentError(f"{where}unknown field(s) {sorted(unknown)}; an event has _id, title, text, source, "
                            "timestamp", line=line)
    event_id = raw.get("_id", raw.get("id"))
    if isinstance(event_id, bool) or not isinstance(event_id, (str, int)) or not str(event_id).strip():
        raise DocumentError(f"{where}missing '_id' (a non-empty string)", line=line)
    event_id = str(event_id).strip()
    if len(event_id) > MAX_ID_CHARS:
        raise DocumentError(f"{where}'_id' is longer than {MAX_ID_CHARS} characters", line=line, doc_id=event_id)
    where = f"event {event_id!r}: "

    def text_field(name: str, limit: int) -> str:
        value = raw.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise DocumentError(f"{where}'{name}' must be a string, got {type(value).__name__}", line=line,
                                doc_id=event_id)
        if len(value) > limit:
            raise DocumentError(f"{where}'{name}' is longer than {limit:,} characters", line=line, doc_id=event_id)
        return value.strip()

    title, text = text_field("title", MAX_EVENT_CHARS), text_field("text", MAX_EVENT_CHARS)
    source = text_field("source", MAX_SOURCE_CHARS) or None
    if not title and not text:
        raise DocumentError(f"{where}no title and no text", line=line, doc_id=event_id)
    if raw.get("timestamp") in (None, ""):
        raise DocumentError(f"{where}missing 'timestamp' (ISO 8601 or epoch seconds): every event is dated",
                            line=line, doc_id=event_id)
    try:
        stamp = parse_timestamp(raw["timestamp"])
    except ValueError as exc:
        raise DocumentError(f"{where}{exc}", line=line, doc_id=event_id) from None
    return Event(event_id, title, text, source, stamp)


def event_out(event) -> dict[str, Any]:
    return {"_id": event.id, "title": event.title, "text": event.text, "source": event.source,
            "timestamp": format_timestamp(event.timestamp)}


# -- time --------------------------------------------------------------------------------------------------------
def now_seconds(request: "SearchRequest | None") -> float:
    """The request's ``now`` as epoch seconds (a time without zone is UTC); the present when it sets none."""
    moment = getattr(request, "now", None)
    if moment is None:
        return time.time()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def document_cutoff(request: "SearchRequest", config: EventsConfig) -> float | None:
    """The moment after which documents are not retrieved: the request's ``now`` when it sets one, the present when
    the index opts in (``events.cutoff_documents``); ``None`` otherwise (ordinary search keeps documents dated in
    the future: schedules, expiry dates)."""
    if request.now is not None:
        return now_seconds(request)
    if config.cutoff_documents:
        return time.time()
    return None


def stage_wanted(request: "SearchRequest", name: str, default: bool) -> bool:
    """Whether stage ``name`` runs for ``request``: its ``stages`` switch when it names the stage, else ``default``."""
    stages = getattr(request, "stages", None) or {}
    return bool(stages[name]) if name in stages else default


# -- the stage ---------------------------------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _normalize(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def training_free(query: np.ndarray, events: np.ndarray, relevance: np.ndarray, temperature: float,
                  alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Single-step cross-attention with identity projections: ``(q_t, attention weights)``."""
    weights = _softmax(relevance.astype(np.float64) / temperature)
    if alpha == 0.0:
        return query, weights
    return _normalize(query.astype(np.float64) + alpha * (weights @ events.astype(np.float64))), weights


class CrossAttentionLayer:
    """A trained single-head cross-attention layer (numpy inference; trained by :mod:`foveal.events_train`).

    ``q_t = normalize(LN(e_q + alpha * W_o sum_i a_i W_v e_i))``, ``a = softmax(W_q e_q . W_k e_i / sqrt(d) +
    log recency_i)``. The projections start at the identity, LN at gain 1 and bias 0."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.dimension = self.p["wq"].shape[0]

    @classmethod
    def load(cls, folder: Path) -> "CrossAttentionLayer":
        with np.load(Path(folder) / LAYER_FILE) as data:
            return cls({k: data[k] for k in data.files})

    def __call__(self, query: np.ndarray, events: np.ndarray, recency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        q = query.astype(np.float64)
        e = events.astype(np.float64)
        logits = (e @ p["wk"].T) @ (p["wq"] @ q) / math.sqrt(self.dimension) + np.log(np.maximum(recency, 1e-12))
        weights = _softmax(logits)
        context = p["wo"] @ (weights @ (e @ p["wv"].T))
        z = q + float(p["alpha"]) * context
        z = (z - z.mean()) / math.sqrt(z.var() + 1e-5) * p["ln_gain"] + p["ln_bias"]
        return _normalize(z), weights


_LAYERS: dict[str, CrossAttentionLayer] = {}
_LAYERS_LOCK = threading.Lock()


def load_layer(name: str) -> CrossAttentionLayer:
    """A registered layer by name (``$FOVEAL_MODELS_DIR``), loaded once per process."""
    from foveal.config import resolve_model_name
    from foveal.errors import ConfigError

    path = Path(resolve_model_name(name))
    if not (path / LAYER_FILE).exists():
        raise ConfigError(f"events.model: {name!r} is not a trained events layer (no {LAYER_FILE}); train one with "
                          "`foveal train events`", field="events.model")
    with _LAYERS_LOCK:
        key = str(path.resolve())
        if key not in _LAYERS:
            _LAYERS[key] = CrossAttentionLayer.load(path)
        return _LAYERS[key]


class EventStage:
    """The event-aware :class:`~foveal.encoders.base.QueryStage`. ``config`` overrides the index's ``events``
    section (bench, tests); ``layer`` a trained layer object."""

    name = NAME

    def __init__(self, collection: "Collection", config: EventsConfig | None = None,
                 layer: CrossAttentionLayer | None = None) -> None:
        self.collection = collection
        self._config = config
        self._layer = layer

    @property
    def config(self) -> EventsConfig:
        return self._config or self.collection.config.events

    @property
    def enabled(self) -> bool:
        """On by default for this index (``events.enabled``); a request's ``stages.events`` overrides it."""
        return self.config.enabled

    #: Whether a skipped run is worth a word in ``query_info`` (only when the index uses the stage).
    configured = enabled

    def select(self, vector: np.ndarray, now: float) -> dict[str, np.ndarray] | None:
        """The events eligible at ``now`` and their scores: keys, vectors, cosine, recency, relevance."""
        config = self.config
        part = getattr(self.collection, "event_part", None)
        if part is None or len(part) == 0:
            return None
        keys, stamps, vectors = part.keys, part.timestamps, part.vectors  # one consistent view (replaced, not mutated)
        mask = stamps <= now
        if config.window_days is not None:
            mask &= stamps >= now - config.window_days * DAY
        if config.retention_days is not None:
            mask &= stamps >= time.time() - config.retention_days * DAY
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return None
        cosine = vectors[rows] @ vector.astype(np.float32)
        age = np.maximum(now - stamps[rows], 0.0)
        recency = np.exp(-math.log(2) * age / (config.half_life_days * DAY))
        relevance = cosine * recency
        top = np.argsort(-relevance, kind="stable")[: config.top_k]
        return {"keys": keys[rows][top], "vectors": vectors[rows][top], "cosine": cosine[top],
                "recency": recency[top], "relevance": relevance[top], "timestamps": stamps[rows][top]}

    def apply(self, request: "SearchRequest", vector: np.ndarray, tokens=None) -> tuple[np.ndarray, dict]:
        config = self.config
        if not stage_wanted(request, NAME, config.enabled):
            return vector, None
        now = now_seconds(request)
        chosen = self.select(vector, now)
        evidence: dict[str, Any] = {"now": format_timestamp(now), "gate_open": False, "events": []}
        if chosen is None:
            evidence["reason"] = "no event at or before now in the window"
            return vector, evidence
        best = float(chosen["cosine"].max())
        evidence["max_cosine"] = round(best, 6)
        if best < config.gate:
            evidence["reason"] = f"best event cosine {best:.3f} < gate {config.gate}"
            return vector, evidence
        layer = self._layer
        if layer is None and config.model is not None:
            layer = load_layer(config.model)
        if layer is not None:
            new, weights = layer(vector, chosen["vectors"], chosen["recency"])
        else:
            new, weights = training_free(vector, chosen["vectors"], chosen["relevance"], config.temperature,
                                         config.alpha)
        stored = getattr(self.collection.store, "get_events", lambda keys: {})(chosen["keys"].tolist())
        evidence["gate_open"] = True
        evidence["attention"] = "trained" if layer is not None else "training-free"
        for i, key in enumerate(chosen["keys"].tolist()):
            event = stored.get(key)
            evidence["events"].append({
                "id": event.id if event else None, "title": event.title if event else None,
                "timestamp": format_timestamp(float(chosen["timestamps"][i])),
                "weight": round(float(weights[i]), 6), "cosine": round(float(chosen["cosine"][i]), 6),
                "relevance": round(float(chosen["relevance"][i]), 6)})
        return new, evidence
