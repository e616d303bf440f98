"""Paraformer: query-aware sparse attention over a document's sentence vectors ("Attentive Deep Neural Networks for
Legal Document Retrieval", Nguyen et al., Artificial Intelligence and Law 2022; authors' code
nguyenthanhasia/paraformer @0222c25, ``model.py`` and ``computation_units.py``).

The query ``q`` and each sentence ``c_i`` of a candidate are encoded by a *frozen* sentence encoder; only a small head
trains (IBM pytorch-seq2seq "general" attention, with sparsemax in place of softmax)::

    q'  = W_in q                          W_in  ∈ R^{H×H}, no bias
    s_i = q'ᵀ c_i
    α   = sparsemax(s)                    most sentences get exactly 0
    m   = Σ_i α_i c_i
    o   = tanh(W_out [m; q'])             W_out ∈ R^{H×2H}, no bias; the *transformed* q' is concatenated
    logits = Linear(H, 2)(o)              relevance score = logits[1], the raw logit

The score does not depend on sentence order (no positions anywhere), a one-sentence document attends fully to its
sentence (sparsemax of one value is 1), and the encoder gets no gradient (the authors' sentence-transformers 2.x
``encode`` ran under ``no_grad``; here the encoder is called under ``torch.no_grad`` and never handed to the optimiser).

Sentence vectors come from a provider (:data:`SentenceProvider`). Served (:class:`ParaformerStage`, configured by
an index's ``paraformer`` section) they are read from the document store, where an index with
``sentence_vectors.enabled`` writes them at ingest (:class:`StoredSentences`). They are made in one of two ways:
``faithful`` (:class:`EncodeSentences`): split title + text into sentences
(:func:`foveal.encoders.segment.sentence_spans`; the authors split on lines), keep the first ``max_sentences``, and
encode **each sentence on its own** with the frozen encoder, the paper's mode and the costly one; or ``pooled``
(:class:`PoolSentenceSpans`): mean-pool each sentence's span from the passage encoder's token states, from the
ingest's own forward pass. A head is trained on the kind of vectors it will serve (``foveal train paraformer
--sentences``). Candidates without stored vectors are encoded at query time.

The stage gets the query vector of the pipeline's own forward pass (``needs_query_vector``, see
:mod:`foveal.rerank.base`), so reranking encodes no query again.

Ranking: the first stage's and Paraformer's scores are z-normalised over the reranked window and combined linearly
(:func:`foveal.rerank.combine.combine`, default weights ``first_stage 0.9, paraformer 0.1``, the authors' α = 0.1).
The authors fuse raw BM25 and logit scales; normalising first is a deviation, so that the weight means the same for
every query and every first stage. Weights fitted on held-out train queries go in the checkpoint's config.

A checkpoint is a folder: ``paraformer.json`` (:class:`ParaformerSettings`) and ``paraformer.safetensors``.

Example::

    >>> head = ParaformerHead(ParaformerSettings(hidden_size=384))                       # doctest: +SKIP
    >>> stage = ParaformerReranker(head)                                                 # doctest: +SKIP
    >>> SearchPipeline(collection, rerankers=[stage]).search(SearchRequest(query="tides")).hits[0].evidence["paraformer"]
    ... # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from foveal.encoders.segment import sentence_spans
from foveal.errors import ConfigError
from foveal.pipeline.fusion import normalize_scores
from foveal.config import Normalization
from foveal.rerank.base import Candidate, order_rescored
from foveal.training import load_checkpoint, save_checkpoint
from foveal.rerank.combine import combine

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest

__all__ = [
    "EncodeSentences", "PoolSentenceSpans", "ParaformerHead", "ParaformerReranker", "ParaformerSettings",
    "ParaformerStage", "SentenceVectors", "StoredSentences",
    "sparsemax", "CONFIG_FILE", "WEIGHTS_FILE",
]

NAME = "paraformer"
CONFIG_FILE = "paraformer.json"
WEIGHTS_FILE = "paraformer.safetensors"


def sparsemax(scores: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of ``scores`` onto the simplex.

    ``sparsemax(z) = max(z − τ(z), 0)``: sort ``z`` descending, ``k = max{j : 1 + j z_(j) > Σ_{i≤j} z_(i)}``,
    ``τ = (Σ_{i≤k} z_(i) − 1) / k``. Non-negative, sums to 1, often exactly 0 on the weak entries. ``mask``
    (bool, True = real entry) gives padded entries exactly 0.

    Example::

        >>> sparsemax(torch.tensor([1.0, 0.5, -1.0])).tolist()
        [0.75, 0.25, 0.0]
    """
    z = scores.movedim(dim, -1)
    if mask is not None:
        mask = mask.movedim(dim, -1)
        # a finite floor that cannot overflow in j·z or the cumulative sum, and is never in the support
        floor = torch.finfo(z.dtype).min / (z.shape[-1] + 1)
        z = z.masked_fill(~mask, floor)
    ordered, _ = torch.sort(z, dim=-1, descending=True)
    cumulative = ordered.cumsum(dim=-1)
    positions = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = (1 + positions * ordered) > cumulative  # true on a prefix of the sorted entries
    k = support.sum(dim=-1, keepdim=True).clamp(min=1)
    tau = (cumulative.gather(-1, k - 1) - 1) / k.to(z.dtype)
    out = torch.clamp(z - tau, min=0)
    if mask is not None:
        out = out.masked_fill(~mask, 0.0)
    return out.movedim(-1, dim)


@dataclass
class ParaformerSettings:
    """What a checkpoint needs besides its weights."""

    hidden_size: int = 384
    #: The frozen sentence encoder the head was trained on (a model name), for the record and a dimension check.
    encoder: str = "all-MiniLM-L6-v2"
    #: Sentences kept per document (the first ones); the rest are not attended to.
    max_sentences: int = 64
    #: How many of the first-stage candidates are rescored (the authors rerank the BM25 top 10).
    window: int = 10
    #: Final combination of z-normalised scores (see the module docstring).
    weights: dict[str, float] = field(default_factory=lambda: {"first_stage": 0.9, NAME: 0.1})
    #: How the training sentence vectors were made: ``faithful`` (each sentence encoded on its own) or ``pooled``
    #: (spans pooled from the passage pass); a served index without stored vectors makes them the same way.
    sentences: str = "faithful"

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.max_sentences < 1 or self.window < 1:
            raise ConfigError("paraformer: hidden_size, max_sentences and window must be >= 1")
        if self.sentences not in ("faithful", "pooled"):
            raise ConfigError(f"paraformer: sentences is 'faithful' or 'pooled', not {self.sentences!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ParaformerSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"paraformer config: unknown keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)


class ParaformerHead(nn.Module):
    """The trainable part: general attention with sparsemax, the ``tanh(W_out [m; q'])`` block, the 2-way head."""

    def __init__(self, settings: ParaformerSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or ParaformerSettings()
        hidden = self.settings.hidden_size
        self.linear_in = nn.Linear(hidden, hidden, bias=False)  # W_in
        self.linear_out = nn.Linear(2 * hidden, hidden, bias=False)  # W_out
        self.classifier = nn.Linear(hidden, 2)

    def forward(
        self, query: torch.Tensor, sentences: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` ``(B, H)``, ``sentences`` ``(B, N, H)``, ``mask`` ``(B, N)`` bool -> logits ``(B, 2)`` and the
        attention ``(B, N)``."""
        transformed = self.linear_in(query)  # q'
        scores = torch.einsum("bh,bnh->bn", transformed, sentences)
        attention = sparsemax(scores, dim=-1, mask=mask)
        mixed = torch.einsum("bn,bnh->bh", attention, sentences)  # m
        output = torch.tanh(self.linear_out(torch.cat([mixed, transformed], dim=-1)))
        return self.classifier(output), attention

    def score(self, query: torch.Tensor, sentences: torch.Tensor, mask: torch.Tensor | None = None):
        """Relevance = the raw logit of class 1 (as the authors' ``get_score``), and the attention."""
        logits, attention = self(query, sentences, mask)
        return logits[:, 1], attention

    def save(self, path: Path | str) -> Path:
        return save_checkpoint(self, self.settings, path, CONFIG_FILE, WEIGHTS_FILE)

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> "ParaformerHead":
        return load_checkpoint(cls, ParaformerSettings.from_dict, path, CONFIG_FILE, WEIGHTS_FILE, "Paraformer", device)


def pad_sentences(groups: Sequence[np.ndarray], hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-document ``(n_i, H)`` arrays -> a padded ``(B, N, H)`` float32 tensor and its ``(B, N)`` bool mask."""
    width = max([len(g) for g in groups] + [1])
    sentences = torch.zeros(len(groups), width, hidden)
    mask = torch.zeros(len(groups), width, dtype=torch.bool)
    for row, group in enumerate(groups):
        if len(group):
            sentences[row, : len(group)] = torch.from_numpy(np.asarray(group, dtype=np.float32))
            mask[row, : len(group)] = True
    return sentences, mask


# -- sentence vectors ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class SentenceVectors:
    """One document's sentences: unit vectors ``(n, H)`` float32 and the sentences' texts (same order)."""

    vectors: np.ndarray
    texts: list[str]


#: ``provider(collection, doc_keys) -> {doc_key: SentenceVectors}``; a key it cannot serve (deleted) is left out.
SentenceProvider = Callable[["Collection", Sequence[int]], Mapping[int, SentenceVectors]]


def split_sentences(text: str, max_sentences: int) -> list[str]:
    """The first ``max_sentences`` sentences of ``text`` (lines and sentence ends split it)."""
    return [text[a:b] for a, b in sentence_spans(text)][:max_sentences]


class EncodeSentences:
    """The faithful provider: split each document into sentences and encode each one on its own with the frozen
    encoder (``encoder``, else the collection's). A sentence longer than the encoder's window is truncated to it.
    One encoder call per rerank, so its cost is the candidates' sentence count."""

    def __init__(self, encoder=None, max_sentences: int = 64) -> None:
        self.encoder = encoder
        self.max_sentences = max_sentences

    def __call__(self, collection: "Collection", doc_keys: Sequence[int]) -> dict[int, SentenceVectors]:
        encoder = self.encoder or collection.encoder
        documents = collection.store.get_documents(doc_keys)
        texts: dict[int, list[str]] = {}
        for key in doc_keys:
            doc = documents.get(key)
            if doc is not None:
                texts[key] = split_sentences(doc.full_text, self.max_sentences)
        return encode_sentence_groups(encoder, texts)


class PoolSentenceSpans:
    """The one-pass provider: each sentence's vector is the mean of its token states in the passage encoding of its
    document (:meth:`~foveal.encoders.sentence_transformer.SentenceTransformerEncoder.encode_sentence_spans`), so
    sentences see their context and cost nearly nothing beyond the passage pass. Not the paper's mode: which of the
    two serves better per ingest second is for the bench to say."""

    def __init__(self, encoder=None, max_sentences: int = 64) -> None:
        self.encoder = encoder
        self.max_sentences = max_sentences

    def __call__(self, collection: "Collection", doc_keys: Sequence[int]) -> dict[int, SentenceVectors]:
        encoder = self.encoder or collection.encoder
        documents = collection.store.get_documents(doc_keys)
        keys = [k for k in doc_keys if documents.get(k) is not None]
        texts = [documents[k].full_text for k in keys]
        out = {}
        for key, text, (vectors, spans) in zip(keys, texts, encoder.encode_sentence_spans(texts, self.max_sentences)):
            out[key] = SentenceVectors(vectors, [text[a:b] for a, b in spans])
        return out


class StoredSentences:
    """The served provider: each candidate's sentence vectors from the document store (vector set
    ``"sentences"``, written at ingest by an index with ``sentence_vectors`` on), the texts cut from the document
    by the stored spans. Candidates without a stored set (an index without sentence vectors, a document that came
    with its own vector) are handed to ``fallback``; its vectors are rounded to float16, as stored ones are, so a
    document scores the same either way."""

    def __init__(self, fallback: SentenceProvider) -> None:
        self.fallback = fallback

    def __call__(self, collection: "Collection", doc_keys: Sequence[int]) -> dict[int, SentenceVectors]:
        from foveal.index.collection import SENTENCES

        store = collection.store
        sets = store.vector_sets(doc_keys, SENTENCES, with_spans=True) if hasattr(store, "vector_sets") else {}
        documents = store.get_documents(doc_keys) if sets else {}
        out: dict[int, SentenceVectors] = {}
        for key, vset in sets.items():
            doc = documents.get(key)
            if doc is not None and vset.spans is not None:
                full = doc.full_text
                out[key] = SentenceVectors(vset.vectors.astype(np.float32), [full[a:b] for a, b in vset.spans])
        missing = [k for k in doc_keys if k not in out]
        if missing:
            for key, found in self.fallback(collection, missing).items():
                out[key] = SentenceVectors(as_stored(found.vectors), found.texts)
        return out


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """What the store gives back for these vectors (float16, read as float32)."""
    return np.asarray(vectors, dtype=np.float16).astype(np.float32)


def encode_sentence_groups(encoder, texts: Mapping[Any, list[str]]) -> dict[Any, SentenceVectors]:
    """Encode every group's sentences in one batch, each sentence on its own (as a query: one window, no passages)."""
    flat = [s for group in texts.values() for s in group]
    vectors = encoder.encode_queries(flat).vectors if flat else np.zeros((0, encoder.dimension), np.float32)
    out, cursor = {}, 0
    for key, group in texts.items():
        out[key] = SentenceVectors(vectors[cursor : cursor + len(group)], list(group))
        cursor += len(group)
    return out


# -- the rerank stage ---------------------------------------------------------------------------------------------
class ParaformerReranker:
    """The :class:`~foveal.rerank.base.Reranker`: rescores the first ``window`` candidates, records the attended
    sentences in ``evidence["paraformer"]``, and keeps the rest in first-stage order below them.

    ``encoder`` (default: the collection's) encodes the query; ``provider`` gives the sentence vectors (default
    :class:`EncodeSentences` on the same encoder)."""

    name = NAME
    #: The pipeline passes the query vector of its own forward pass (see :mod:`foveal.rerank.base`).
    needs_query_vector = True

    def __init__(
        self, head: ParaformerHead, encoder=None, provider: SentenceProvider | None = None,
        weights: Mapping[str, float] | None = None, window: int | None = None, enabled: bool = True,
    ) -> None:
        self.head = head.eval()
        for parameter in self.head.parameters():
            parameter.requires_grad_(False)
        self.encoder = encoder
        self.provider = provider or EncodeSentences(encoder, head.settings.max_sentences)
        self.weights = dict(weights or head.settings.weights)
        self.window = window or head.settings.window
        self.enabled = enabled
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: Path | str, **options) -> "ParaformerReranker":
        from foveal.config import resolve_model_name  # a name of $FOVEAL_MODELS_DIR, else an operator's path

        return cls(ParaformerHead.load(Path(resolve_model_name(str(path))).expanduser()), **options)

    def score_documents(
        self, query_vector: np.ndarray, documents: Sequence[SentenceVectors]
    ) -> list[tuple[float, np.ndarray]]:
        """(score, attention over that document's sentences) per document; a document without sentences scores
        from an all-zero attention (m = 0)."""
        hidden = self.head.settings.hidden_size
        if query_vector.shape[-1] != hidden:
            raise ConfigError(f"paraformer: the head expects {hidden}-d vectors; the encoder gives {query_vector.shape[-1]}")
        sentences, mask = pad_sentences([d.vectors for d in documents], hidden)
        query = torch.from_numpy(np.asarray(query_vector, dtype=np.float32)).expand(len(documents), -1)
        with self._lock, torch.inference_mode():
            scores, attention = self.head.score(query, sentences, mask)
        return [(float(scores[i]), attention[i, : len(d.vectors)].numpy()) for i, d in enumerate(documents)]

    def rerank(
        self, request: "SearchRequest", candidates: Sequence[Candidate], collection: "Collection",
        query_vector: np.ndarray | None = None,
    ) -> list[Candidate]:
        """Rescore the first ``window`` candidates (when ``stages.paraformer``, else the stage's ``enabled``, says
        so). ``query_vector``: the pipeline's encoding of the query (encoded here when not given, or when this
        stage has an encoder of its own)."""
        candidates = list(candidates)
        if not request.stage_on(NAME, self.enabled) or not candidates:
            return candidates
        window, rest = candidates[: self.window], candidates[self.window :]
        if query_vector is None or self.encoder is not None:
            encoder = self.encoder or collection.encoder
            query_vector = encoder.encode_queries([request.query]).vectors[0]
        sentences = self.provider(collection, [c.doc_key for c in window])
        present = [c for c in window if c.doc_key in sentences]
        results = self.score_documents(query_vector, [sentences[c.doc_key] for c in present])
        first = normalize_scores([c.score for c in present], Normalization.zscore)
        deep = normalize_scores([s for s, _ in results], Normalization.zscore)
        scored = []
        for c, (score, attention), first_z, deep_z in zip(present, results, first, deep):
            features = {"first_stage": first_z, NAME: deep_z}
            combined = combine(features, self.weights)
            texts = sentences[c.doc_key].texts
            attended = [
                {"index": int(i), "weight": round(float(attention[i]), 6), "text": texts[i]}
                for i in np.argsort(-attention, kind="stable") if attention[i] > 0
            ]
            c.evidence[NAME] = {"score": score, "features": features, "weights": self.weights, "combined": combined,
                                "first_stage_score": c.score, "sentences": attended}
            scored.append((combined, c))
        left = [(c, "document not found") for c in window if c.doc_key not in sentences]
        left += [(c, "outside the rerank window") for c in rest]
        return order_rescored(scored, left, NAME)


_HEADS: dict[str, ParaformerHead] = {}
_HEADS_LOCK = threading.Lock()


def load_head(name: str) -> ParaformerHead:
    """One loaded checkpoint per process and model (a name of ``$FOVEAL_MODELS_DIR``, else an operator's path)."""
    from foveal.config import resolve_model_name

    path = str(Path(resolve_model_name(name)).expanduser().resolve())
    with _HEADS_LOCK:
        head = _HEADS.get(path)
        if head is None:
            head = _HEADS[path] = ParaformerHead.load(path)
            for parameter in head.parameters():
                parameter.requires_grad_(False)
        return head


class ParaformerStage:
    """The stage an index's ``paraformer`` config section serves: the checkpoint ``model`` (loaded on first use),
    the ``window``, and the combination weight (``weight``, else the one fitted on held-out train queries and saved
    in the checkpoint). It runs when ``stages.paraformer`` says so, else when ``enabled``. Sentence vectors come
    from the store (:class:`StoredSentences`); candidates without stored ones are encoded the way the index's
    ``sentence_vectors.mode`` says when it stores them, else the way the head was trained."""

    name = NAME
    needs_query_vector = True

    def __init__(self, config, sentence_config=None) -> None:
        self.config = config
        self.sentence_config = sentence_config
        self._reranker: ParaformerReranker | None = None
        self._lock = threading.Lock()

    @property
    def reranker(self) -> ParaformerReranker:
        with self._lock:
            if self._reranker is None:
                head = load_head(self.config.model)
                stored = self.sentence_config is not None and self.sentence_config.enabled
                mode = self.sentence_config.mode if stored else head.settings.sentences
                cap = self.sentence_config.max_sentences if stored else head.settings.max_sentences
                fallback = PoolSentenceSpans(None, cap) if mode == "pooled" else EncodeSentences(None, cap)
                weight = self.config.weight
                weights = None if weight is None else {"first_stage": round(1 - weight, 6), NAME: weight}
                self._reranker = ParaformerReranker(head, provider=StoredSentences(fallback), weights=weights,
                                                    window=self.config.window, enabled=self.config.enabled)
            return self._reranker

    def rerank(
        self, request: "SearchRequest", candidates: Sequence[Candidate], collection: "Collection",
        query_vector: np.ndarray | None = None,
    ) -> list[Candidate]:
        if not request.stage_on(NAME, self.config.enabled) or not candidates:
            return list(candidates)
        if self.config.model is None:  # the pipeline adds this stage only with a model; a direct caller may not
            from foveal.errors import InvalidInputError

            raise InvalidInputError("stage 'paraformer' needs paraformer.model (train one with "
                                    "'foveal train paraformer')")
        if collection.dimension != self.reranker.head.settings.hidden_size:
            raise ConfigError(f"paraformer.model {self.config.model!r} takes {self.reranker.head.settings.hidden_size}"
                              f"-d vectors; index {collection.name!r} holds {collection.dimension}-d ones",
                              field="paraformer.model")
        return self.reranker.rerank(request, candidates, collection, query_vector=query_vector)


# -- training -----------------------------------------------------------------------------------------------------
@dataclass
class ParaformerExample:
    """One training pair: a query, a document's sentences and a label (1 relevant, 0 not)."""

    query: str
    sentences: list[str]
    label: int


def train_head(
    encoder, examples: Sequence[ParaformerExample], settings: ParaformerSettings | None = None, epochs: int = 1,
    learning_rate: float = 3e-5, seed: int = 13, head: ParaformerHead | None = None,
    groups: Mapping[tuple, SentenceVectors] | None = None,
) -> tuple[ParaformerHead, list[float]]:
    """Cross-entropy over {0, 1}, batch 1, Adam (lr 3e-5, eps 1e-8) as the authors train; the encoder stays frozen
    (its vectors are computed once, under no_grad, and it is not given to the optimiser). ``groups``: the sentence
    vectors of each example's ``tuple(sentences[:max_sentences])``, made elsewhere (pooled ones); by default every
    sentence is encoded on its own. Returns the head and the mean loss of each epoch."""
    torch.manual_seed(seed)
    head = head or ParaformerHead(settings or ParaformerSettings(hidden_size=encoder.dimension))
    if head.settings.hidden_size != encoder.dimension:
        raise ConfigError(f"paraformer: hidden_size {head.settings.hidden_size} != encoder dimension {encoder.dimension}")
    cap = head.settings.max_sentences
    with torch.no_grad():  # the encoder is frozen: its vectors are inputs, computed once
        queries = {q: v for q, v in zip(*_unique_encode(encoder, [e.query for e in examples]))}
        if groups is None:
            groups = encode_sentence_groups(encoder, {tuple(e.sentences[:cap]): list(e.sentences[:cap])
                                                      for e in examples})
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate, eps=1e-8)
    loss_function = nn.CrossEntropyLoss()
    order = list(range(len(examples)))
    generator = np.random.default_rng(seed)
    losses = []
    head.train()
    for _ in range(epochs):
        generator.shuffle(order)
        total = 0.0
        for i in order:
            example = examples[i]
            sentences, mask = pad_sentences([groups[tuple(example.sentences[:cap])].vectors], head.settings.hidden_size)
            query = torch.from_numpy(queries[example.query])[None]
            logits, _ = head(query, sentences, mask)
            loss = loss_function(logits, torch.tensor([int(example.label)]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        losses.append(total / max(1, len(examples)))
    head.eval()
    return head, losses


def _unique_encode(encoder, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    unique = list(dict.fromkeys(texts))
    return unique, encoder.encode_queries(unique).vectors


@dataclass
class ParaformerTrainOptions:
    """``foveal train paraformer``: the authors' recipe (BM25 top-10 negatives, CE, batch 1, Adam 3e-5) with an
    epoch count and a time bound fit for a CPU instead of 200 epochs with early stopping."""

    encoder: str = "all-MiniLM-L6-v2"
    negatives_from_top: int = 10
    epochs: int = 2
    learning_rate: float = 3e-5
    max_sentences: int = 64
    window: int = 10
    dev_fraction: float = 0.15
    max_queries: int | None = None
    threads: int = 2
    seed: int = 13
    #: ``faithful`` (each sentence encoded on its own, as the paper) or ``pooled`` (spans pooled from the passage
    #: pass): train on the vectors the served index will hold.
    sentences: str = "faithful"


def train_paraformer(
    data: Path, out: Path, options: ParaformerTrainOptions | None = None,
    log: Callable[[str], None] = lambda message: None,
    sentence_vectors: Callable[[Sequence[str]], Mapping[str, SentenceVectors]] | None = None,
    first_stage: Callable[[str, int], list[tuple[str, float]]] | None = None,
) -> dict:
    """Train the head on ``data``'s train qrels (positives: the judged documents; negatives: BM25's top
    ``negatives_from_top`` minus them), fit the combination weights on the held-out train queries, save the
    checkpoint to ``out`` and return a summary (also ``out/train.json``).

    ``first_stage(query, n) -> [(doc_id, score), ...]`` is the ranking the weights are fitted over: the pipeline
    the head will be served behind (``foveal train paraformer --index``), since a weight fitted over one first stage
    does not carry to another. By default, the in-memory BM25's top ``window``.

    ``sentence_vectors(doc_ids) -> {doc_id: SentenceVectors}`` supplies the documents' sentence vectors (a bench's
    cache); by default they are computed here in ``options.sentences`` mode."""
    import time

    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder
    from foveal.rerank.combine import fit_two_weights
    from foveal.training import Bm25Okapi, read_train_split

    options = options or ParaformerTrainOptions()
    if options.sentences not in ("faithful", "pooled"):
        raise ConfigError(f"paraformer: sentences is 'faithful' or 'pooled', not {options.sentences!r}")
    started = time.perf_counter()
    torch.set_num_threads(options.threads)
    split = read_train_split(Path(data), options.dev_fraction, options.seed, options.max_queries)
    bm25 = Bm25Okapi(split.corpus)
    encoder = get_encoder(EncoderConfig(model=options.encoder))
    cap = options.max_sentences

    def compute(doc_ids: Sequence[str]) -> dict[str, SentenceVectors]:
        if options.sentences == "pooled":
            texts = [split.text(d) for d in doc_ids]
            return {d: SentenceVectors(as_stored(v), [t[a:b] for a, b in spans])
                    for d, t, (v, spans) in zip(doc_ids, texts, encoder.encode_sentence_spans(texts, cap))}
        found = encode_sentence_groups(encoder, {d: split_sentences(split.text(d), cap) for d in doc_ids})
        return {d: SentenceVectors(as_stored(v.vectors), v.texts) for d, v in found.items()}

    vectors_of = sentence_vectors or compute
    pairs: list[tuple[str, str, int]] = []
    for qid in split.train_ids:
        query, positives = split.queries[qid], split.qrels[qid]
        pairs += [(query, d, 1) for d in positives]
        pairs += [(query, d, 0) for d, _ in bm25.top(query, options.negatives_from_top) if d not in positives]
    rank = first_stage or bm25.top
    dev_top = {qid: [(d, score) for d, score in rank(split.queries[qid], options.window) if d in split.corpus]
               for qid in split.dev_ids}
    needed = list(dict.fromkeys([d for _, d, _ in pairs] + [d for top in dev_top.values() for d, _ in top]))
    log(f"{len(pairs)} training pairs from {len(split.train_ids)} queries; sentence vectors ({options.sentences}) "
        f"of {len(needed)} documents")
    vectors = dict(vectors_of(needed))
    examples = [ParaformerExample(query, vectors[d].texts, label) for query, d, label in pairs]
    groups = {tuple(vectors[d].texts): vectors[d] for _, d, _ in pairs}
    vectors_s = time.perf_counter() - started
    settings = ParaformerSettings(hidden_size=encoder.dimension, encoder=options.encoder,
                                  max_sentences=options.max_sentences, window=options.window,
                                  sentences=options.sentences)
    head, losses = train_head(encoder, examples, settings, options.epochs, options.learning_rate, options.seed,
                              groups=groups)
    trained_s = time.perf_counter() - started
    log(f"trained in {trained_s:.1f} s ({vectors_s:.1f} s of it making sentence vectors); loss per epoch "
        f"{[round(x, 4) for x in losses]}")

    features: dict[str, dict[str, dict[str, float]]] = {}
    stage = ParaformerReranker(head, encoder=encoder)
    for qid, top in dev_top.items():
        if not top:
            continue
        query_vector = encoder.encode_queries([split.queries[qid]]).vectors[0]
        results = stage.score_documents(query_vector, [vectors[d] for d, _ in top])
        first = normalize_scores([s for _, s in top], Normalization.zscore)
        deep = normalize_scores([s for s, _ in results], Normalization.zscore)
        features[qid] = {d: {"first_stage": f, NAME: p} for (d, _), f, p in zip(top, first, deep)}
    curve: list = []
    if features:
        head.settings.weights, curve = fit_two_weights(features, {q: split.qrels[q] for q in features},
                                                       names=("first_stage", NAME))
    head.save(out)
    record = {
        "data": str(data), "encoder": options.encoder, "sentences": options.sentences,
        "train_queries": len(split.train_ids), "dev_queries": len(features), "dev_ids": sorted(features),
        "pairs": len(examples), "epochs": options.epochs, "losses": losses, "weights": head.settings.weights,
        "weights_fitted_over": "bm25 (in memory)" if first_stage is None else "the given first stage",
        "dev_ndcg10_curve": curve, "sentence_vector_seconds": round(vectors_s, 2),
        "train_seconds": round(trained_s, 2), "seconds": round(time.perf_counter() - started, 2),
    }
    (Path(out) / "train.json").write_text(json.dumps(record, indent=2))
    return record
