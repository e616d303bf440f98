"""X-Pool: text-conditioned pooling over a set of vectors ("X-Pool: Cross-Modal Language-Video Attention for
Text-Video Retrieval", Gorti et al., CVPR 2022; authors' code layer6ai-labs/xpool, ``modules/transformer.py``,
``model/clip_transformer.py``, ``modules/metrics.py``, ``modules/loss.py``).

An item is a set of vectors ``F ∈ R^{N×D}`` (a video's frame features from the user's image encoder, or a document's
sentence vectors); a query is one vector ``t ∈ R^D`` in the same space (the user's text tower). The item is pooled
*for that query* and the two compared by cosine::

    t̂ = LN1(t),  F̂ = LN1(F)                                   one LayerNorm shared by text and frames
    q = W_q t̂ + b_q,  K = F̂ W_kᵀ + b_k,  V = F̂ W_vᵀ + b_v      split into ``heads`` heads of size d_h = D / heads
    a = softmax_over_frames(K q / √d_h),  r = Σ_f a_f V_f      heads concatenated
    o = LN2(W_o r + b_o)
    y = LN3(o + Dropout(W_l o + b_l))                          the residual feed-forward block
    s(t, F) = cos(t, y)                                        the raw t, normalised

Every projection (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, ``linear_proj``) starts as the identity with
zero bias; the LayerNorms start at their default (weight 1, bias 0). Training is CLIP's symmetric InfoNCE on
``s · exp(logit_scale)`` over in-batch pairs, ``logit_scale`` learned from ``log(1/0.07)`` and clamped to at most
``log 100`` after each step (:func:`train_xpool`). There are no positions anywhere, so the pooled vector does not
depend on frame order; if all frames are equal, the attention cannot matter and the pooled vector does not depend
on the text. Padding (items with fewer frames in a batch) is masked out of the softmax, a deviation only in form:
the authors sample a fixed number of frames.

Pooling depends on the query, so it cannot be indexed: :class:`XPoolReranker` rescores the first stage's top
``window`` (the first stage searches each item's mean vector) and records, on each hit, the attention weights over
its frames (``evidence["xpool"]``).

A checkpoint is a folder: ``xpool.json`` (:class:`XPoolSettings`) and ``xpool.safetensors``.

Example::

    >>> model = XPool(XPoolSettings(dim=4)).eval()
    >>> text, frames = torch.randn(2, 4), torch.randn(3, 5, 4)
    >>> pooled, attention = model(text, frames)
    >>> tuple(pooled.shape), tuple(attention.shape)       # [items, texts, D], [items, texts, frames]
    ((3, 2, 4), (3, 2, 5))
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foveal.documents import FRAMES_KIND
from foveal.errors import ConfigError, InvalidInputError
from foveal.rerank.base import Candidate, order_rescored
from foveal.training import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest

__all__ = ["XPool", "XPoolSettings", "XPoolReranker", "train_xpool", "pad_frames", "CONFIG_FILE", "WEIGHTS_FILE",
           "NAME", "FRAMES_KIND"]

NAME = "xpool"
CONFIG_FILE = "xpool.json"
WEIGHTS_FILE = "xpool.safetensors"
#: CLIP's initial temperature 0.07, and the clamp on the learned scale (100).
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100)


@dataclass
class XPoolSettings:
    """What a checkpoint needs besides its weights."""

    dim: int = 512
    #: Attention heads (the authors' default is 1); ``dim`` must divide by it.
    heads: int = 1
    #: Dropout in the residual block while training (the authors' 0.3; 0.4 for MSR-VTT-7k and MSVD).
    dropout: float = 0.3
    #: What the vectors are, for the record (``all-MiniLM-L6-v2`` sentences, ``clip-vit-b32`` frames, ...).
    encoder: str = ""
    #: How many first-stage candidates are rescored (an index's ``xpool.window`` overrides it).
    window: int = 50
    #: X-Pool's weight in ``(1 - w)·z(first stage) + w·z(xpool)``; ``None``: rank by X-Pool alone, as the paper.
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ConfigError(f"xpool: dim ({self.dim}) must be >= 1 and divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("xpool: dropout must be in [0, 1)")
        if self.window < 1:
            raise ConfigError("xpool: window must be >= 1")
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise ConfigError("xpool: weight must be in [0, 1]")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "XPoolSettings":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"xpool config: unknown keys {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


class XPool(nn.Module):
    """The pooling transformer and the learned logit scale (used only by the loss)."""

    def __init__(self, settings: XPoolSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or XPoolSettings()
        d = self.settings.dim
        self.layer_norm1 = nn.LayerNorm(d)
        self.layer_norm2 = nn.LayerNorm(d)
        self.layer_norm3 = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.linear_proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(self.settings.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.reset_projections()

    def reset_projections(self) -> None:
        """Every projection to the identity, every projection bias to zero (the authors' ``_init_parameters``)."""
        with torch.no_grad():
            for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
                nn.init.eye_(layer.weight)
                layer.bias.zero_()

    def keys_values(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query-independent part: ``K`` and ``V`` of ``frames`` ``(V, N, D)``, each ``(V, heads, N, d_h)``."""
        n_items, n_frames, d = frames.shape
        heads = self.settings.heads
        normed = self.layer_norm1(frames)
        k = self.k_proj(normed).reshape(n_items, n_frames, heads, d // heads).transpose(1, 2)
        v = self.v_proj(normed).reshape(n_items, n_frames, heads, d // heads).transpose(1, 2)
        return k, v

    def forward(
        self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``text`` ``(T, D)``, ``frames`` ``(V, N, D)``, ``mask`` ``(V, N)`` bool (True = a real frame) ->
        the pooled vectors ``(V, T, D)`` and the attention over frames ``(V, T, N)`` (mean over heads)."""
        n_texts, d = text.shape
        heads = self.settings.heads
        head_dim = d // heads
        k, v = self.keys_values(frames)  # (V, h, N, d_h)
        q = self.q_proj(self.layer_norm1(text)).reshape(n_texts, heads, head_dim).permute(1, 2, 0)  # (h, d_h, T)
        logits = (k @ q) / math.sqrt(head_dim)  # (V, h, N, T)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, :, None], float("-inf"))
        weights = torch.softmax(logits, dim=2)
        mixed = v.transpose(2, 3) @ weights  # (V, h, d_h, T)
        mixed = mixed.permute(0, 3, 1, 2).reshape(frames.shape[0], n_texts, d)  # heads concatenated
        o = self.layer_norm2(self.out_proj(mixed))
        y = self.layer_norm3(o + self.dropout(self.linear_proj(o)))
        return y, weights.mean(dim=1).transpose(1, 2)

    def similarity(
        self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine of each text with each item pooled for it: ``(T, V)``, and the attention ``(V, T, N)``."""
        pooled, attention = self(text, frames, mask)
        sims = torch.einsum("td,vtd->tv", F.normalize(text, dim=-1), F.normalize(pooled, dim=-1))
        return sims, attention

    def save(self, path: Path | str) -> Path:
        return save_checkpoint(self, self.settings, path, CONFIG_FILE, WEIGHTS_FILE)

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> "XPool":
        return load_checkpoint(cls, XPoolSettings.from_dict, path, CONFIG_FILE, WEIGHTS_FILE, "X-Pool", device)


def pad_frames(groups: Sequence[np.ndarray], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item ``(n_i, D)`` arrays -> a padded ``(V, N, D)`` float32 tensor and its ``(V, N)`` bool mask. An item
    must have at least one frame (a row of padding only would make the softmax NaN)."""
    width = max([len(g) for g in groups] + [1])
    frames = torch.zeros(len(groups), width, dim)
    mask = torch.zeros(len(groups), width, dtype=torch.bool)
    for row, group in enumerate(groups):
        if not len(group):
            raise ValueError("pad_frames: an item without frames")
        frames[row, : len(group)] = torch.from_numpy(np.asarray(group, dtype=np.float32))
        mask[row, : len(group)] = True
    return frames, mask


# -- training -----------------------------------------------------------------------------------------------------
@dataclass
class XPoolTrainOptions:
    """The authors' recipe (AdamW, weight decay 0.2, cosine schedule with 10% warm-up, batch 32, grad-clip 1.0,
    dropout 0.3) with a learning rate and an epoch count for training the pooling head alone from scratch: their
    1e-5 for the non-CLIP weights over 5 epochs barely moves an identity-initialised head on a few hundred pairs.
    Chosen on held-out train pairs (``bench/xpool.py``), never on test."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.2
    warmup: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.3
    heads: int = 1
    window: int = 50
    seed: int = 24
    threads: int = 2


def train_xpool(
    texts: np.ndarray, items: Sequence[np.ndarray], options: XPoolTrainOptions | None = None, *,
    encoder: str = "", model: XPool | None = None,
    evaluate: Callable[[XPool], float] | None = None, log: Callable[[str], None] = lambda message: None,
) -> tuple[XPool, dict]:
    """Train on pairs ``(texts[i], items[i])`` (a text vector and the frames of its item) with symmetric InfoNCE
    over in-batch negatives. Pairs that share an item in a batch would be false negatives: each batch holds an
    item once. With ``evaluate`` (a held-out score, higher is better) the best epoch's weights are kept.
    Returns the model (eval mode) and a record of the run."""
    options = options or XPoolTrainOptions()
    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    texts = np.asarray(texts, dtype=np.float32)
    if len(texts) != len(items) or not len(items):
        raise ConfigError("xpool: texts and items must be non-empty and pair up one to one")
    dim = texts.shape[1]
    model = model or XPool(XPoolSettings(dim=dim, heads=options.heads, dropout=options.dropout, encoder=encoder,
                                         window=options.window))
    if model.settings.dim != dim or any(np.asarray(f).shape[-1] != dim for f in items):
        raise ConfigError(f"xpool: the model is {model.settings.dim}-d; the vectors are not all {dim}-d")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and n != "logit_scale"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                                   {"params": no_decay + [model.logit_scale], "weight_decay": 0.0}],
                                  lr=options.learning_rate)
    generator = np.random.default_rng(options.seed)
    item_key = [id(f) for f in items]  # the same array object = the same item
    batches_per_epoch = math.ceil(len(items) / options.batch_size)
    total = max(1, batches_per_epoch * options.epochs)
    warm = max(1, int(options.warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    record: dict = {"pairs": len(items), "epochs": [], "options": asdict(options)}
    best = (-math.inf, None, -1)
    started = time.perf_counter()
    for epoch in range(options.epochs):
        model.train()
        order = generator.permutation(len(items)).tolist()
        losses = []
        while order:
            batch, seen, rest = [], set(), []
            for i in order:
                if len(batch) < options.batch_size and item_key[i] not in seen:
                    batch.append(i)
                    seen.add(item_key[i])
                else:
                    rest.append(i)
            order = rest
            if len(batch) < 2:
                continue
            text = torch.from_numpy(texts[batch])
            frames, mask = pad_frames([items[i] for i in batch], dim)
            sims, _ = model.similarity(text, frames, mask)  # (T, V): text i's positive is item i
            logits = sims * model.logit_scale.exp()
            target = torch.arange(len(batch))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(max=LOGIT_SCALE_MAX)
            losses.append(float(loss.detach()))
        model.eval()
        entry = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)) if losses else float("nan"), 5),
                 "logit_scale": round(float(model.logit_scale.detach().exp()), 3)}
        if evaluate is not None:
            entry["held_out"] = round(float(evaluate(model)), 5)
            if entry["held_out"] > best[0]:
                best = (entry["held_out"], {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch + 1)
        record["epochs"].append(entry)
        log(json.dumps(entry))
    if best[1] is not None:
        model.load_state_dict(best[1])
        record["best_epoch"] = best[2]
    record["train_seconds"] = round(time.perf_counter() - started, 2)
    return model.eval(), record


def read_pairs(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """A JSONL file of training pairs, one per line: ``{"vector": [...], "vectors": [[...], ...]}`` (the text's
    vector and its item's frames). Lines with the same ``item`` key (optional) share one item."""
    texts, items, by_key = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = np.asarray(record["vector"], dtype=np.float32)
                frames = np.asarray(record["vectors"], dtype=np.float32)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InvalidInputError(f"{path}: line {line_no}: not a pair {{vector, vectors}} ({exc})") from None
            if text.ndim != 1 or frames.ndim != 2 or not len(frames) or frames.shape[1] != text.shape[0] \
                    or not (np.isfinite(text).all() and np.isfinite(frames).all()):
                raise InvalidInputError(f"{path}: line {line_no}: 'vector' must be one finite vector and 'vectors' "
                                        "a non-empty list of finite vectors of the same dimension")
            key = record.get("item")
            if key is not None and str(key) in by_key:
                frames = by_key[str(key)]
            elif key is not None:
                by_key[str(key)] = frames
            texts.append(text)
            items.append(frames)
    if not texts:
        raise InvalidInputError(f"{path}: no training pairs")
    dims = {t.shape[0] for t in texts}
    if len(dims) != 1:
        raise InvalidInputError(f"{path}: the pairs have different dimensions {sorted(dims)}")
    return np.stack(texts), items


def train_from_beir(data: Path, options: XPoolTrainOptions, encoder_name: str = "all-MiniLM-L6-v2",
                    max_sentences: int = 64, max_queries: int | None = None,
                    log: Callable[[str], None] = lambda message: None) -> tuple[XPool, dict]:
    """The text stand-in: each train query paired with each of its relevant documents, a document being the set
    of its sentences' vectors (each sentence encoded on its own by ``encoder_name``)."""
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder
    from foveal.rerank.paraformer import split_sentences
    from foveal.training import read_train_split

    split = read_train_split(Path(data), 0.0, options.seed, max_queries)
    encoder = get_encoder(EncoderConfig(model=encoder_name))
    doc_ids = sorted({d for q in split.train_ids for d in split.qrels[q]})
    groups = {d: split_sentences(split.text(d), max_sentences) or [split.text(d)[:1000]] for d in doc_ids}
    flat = [s for d in doc_ids for s in groups[d]]
    vectors = encoder.encode_queries(flat).vectors
    frames, cursor = {}, 0
    for d in doc_ids:
        frames[d] = vectors[cursor: cursor + len(groups[d])]
        cursor += len(groups[d])
    pairs = [(q, d) for q in split.train_ids for d in sorted(split.qrels[q])]
    query_vectors = encoder.encode_queries([split.queries[q] for q, _ in pairs]).vectors
    log(f"{len(pairs)} pairs from {len(split.train_ids)} queries, {len(doc_ids)} documents, {len(flat)} sentences")
    model, record = train_xpool(query_vectors, [frames[d] for _, d in pairs], options, encoder=encoder_name, log=log)
    record.update({"data": str(data), "encoder": encoder_name, "queries": len(split.train_ids)})
    return model, record


# -- the rerank stage ---------------------------------------------------------------------------------------------
def frames_of(collection: "Collection", doc_keys: Sequence[int]) -> dict[int, np.ndarray]:
    """Each candidate's set of vectors: a vector item's frames from the store's vector sets, else (text documents)
    its passage vectors."""
    keys = list(doc_keys)
    out: dict[int, np.ndarray] = {}
    store = collection.store
    if hasattr(store, "vector_sets"):
        out.update({int(k): np.asarray(v, dtype=np.float32) for k, v in store.vector_sets(keys, FRAMES_KIND).items()
                    if len(v)})
    rest = [k for k in keys if k not in out]
    if rest:
        ids, vectors = store.vectors_of(rest)
        from foveal.index.base import doc_key_of

        for pid, vector in zip(np.asarray(ids).tolist(), vectors):
            out.setdefault(doc_key_of(int(pid)), []).append(vector)
        for k in rest:
            if isinstance(out.get(k), list):
                out[k] = np.stack(out[k]).astype(np.float32)
    return out


def stage_wanted(request: "SearchRequest", default: bool) -> bool:
    """The request's ``stages.xpool`` if it sets one, else the index's ``xpool.enabled``."""
    return request.stage_on(NAME, default)


def combined_scores(first_stage: Sequence[float], xpool: Sequence[float], weight: float) -> list[float]:
    """``(1 - w)·z(first stage) + w·z(xpool)``, z-scores over the reranked window."""
    from foveal.config import Normalization
    from foveal.pipeline.fusion import normalize_scores

    first = normalize_scores([float(x) for x in first_stage], Normalization.zscore)
    deep = normalize_scores([float(x) for x in xpool], Normalization.zscore)
    return [round((1 - weight) * f + weight * d, 12) for f, d in zip(first, deep)]


_MODELS: dict[str, XPool] = {}
_MODELS_LOCK = threading.Lock()


def load_model(name: str) -> XPool:
    """One loaded checkpoint per process and model (a name of ``$FOVEAL_MODELS_DIR``, else an operator's path)."""
    from foveal.config import resolve_model_name

    path = Path(resolve_model_name(name)).expanduser()
    key = str(path.resolve())
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = XPool.load(path)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
        return model


class XPoolReranker:
    """The :class:`~foveal.rerank.base.Reranker`: rescores the first ``window`` candidates by X-Pool's cosine,
    records the attention over each candidate's frames in ``evidence["xpool"]``, and keeps the rest in first-stage
    order below them. The query vector is the request's ``vector`` when it gives one (a vector-item index), else
    the index encoder's vector of the query text."""

    name = NAME
    #: The pipeline hands over the query vector it searched with (the request's ``vector``, else the encoder's).
    needs_query_vector = True

    def __init__(self, model: XPool | None = None, *, config=None, window: int | None = None,
                 enabled: bool = True, weight: float | None = None) -> None:
        self._model = model
        self.config = config
        self._weight = weight if weight is not None else (config.weight if config is not None else None)
        self.window = window or (config.window if config is not None else None) or \
            (model.settings.window if model is not None else 50)
        self.enabled = config.enabled if config is not None else enabled
        self._lock = threading.Lock()

    @property
    def model(self) -> XPool:
        if self._model is None:
            self._model = load_model(self.config.model)
        return self._model

    @property
    def weight(self) -> float | None:
        """X-Pool's weight against the first stage (:class:`XPoolSettings`), or None: X-Pool alone."""
        return self._weight if self._weight is not None else self.model.settings.weight

    def query_vector(self, request: "SearchRequest", collection: "Collection") -> np.ndarray:
        given = getattr(request, "vector", None)
        if given is not None:
            return np.asarray(given, dtype=np.float32)
        return collection.encoder.encode_queries([request.query]).vectors[0]

    def score(self, query: np.ndarray, items: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """X-Pool's cosine of ``query`` with each item, and each item's attention over its frames."""
        model = self.model
        dim = model.settings.dim
        if query.shape != (dim,):
            raise InvalidInputError(f"xpool: the model takes {dim}-d vectors; the query vector has {query.shape[-1]}")
        frames, mask = pad_frames(items, dim)
        with self._lock, torch.inference_mode():
            sims, attention = model.similarity(torch.from_numpy(np.asarray(query, np.float32))[None], frames, mask)
        return sims[0].numpy(), [attention[i, 0, : len(f)].numpy() for i, f in enumerate(items)]

    def rerank(
        self, request: "SearchRequest", candidates: Sequence[Candidate], collection: "Collection",
        query_vector: np.ndarray | None = None,
    ) -> list[Candidate]:
        candidates = list(candidates)
        if not stage_wanted(request, self.enabled) or not candidates:
            return candidates
        window, rest = candidates[: self.window], candidates[self.window:]
        frames = frames_of(collection, [c.doc_key for c in window])
        present = [c for c in window if c.doc_key in frames]
        query = query_vector if query_vector is not None else self.query_vector(request, collection)
        scores, attention = self.score(np.asarray(query, dtype=np.float32), [frames[c.doc_key] for c in present]) \
            if present else (np.zeros(0), [])
        weight = self.weight
        final = scores.tolist() if weight is None else combined_scores([c.score for c in present], scores, weight)
        scored = []
        for c, score, total, weights in zip(present, scores.tolist(), final, attention):
            order = np.argsort(-weights, kind="stable")
            c.evidence[NAME] = {"score": float(score), "first_stage_score": c.score, "frames": len(weights),
                                "attention": [{"frame": int(i), "weight": round(float(weights[i]), 6)}
                                              for i in order]}
            if weight is not None:
                c.evidence[NAME].update({"weight": weight, "combined": float(total)})
            scored.append((float(total), c))
        left = [(c, "document not found") for c in window if c.doc_key not in frames]
        left += [(c, "outside the rerank window") for c in rest]
        return order_rescored(scored, left, NAME)
