"""LexSemBridge: token-aware modulation of a query embedding (arXiv 2508.17858; authors' code Jasaxion/LexSemBridge,
``modeling/LexSemBridgeModeling.py`` @4272241).

A vocabulary vector ``w ∈ R^V`` is built from the query's tokens, mapped to one weight per hidden dimension by a
linear layer and a softmax over the ``H`` dimensions, and the query embedding is re-weighted element-wise::

    z  = softmax(W w + b)          W ∈ R^{H×V}, b ∈ R^H   (nn.Linear(V, H))
    q~ = normalize(z ⊙ e_q)

``e_q`` is the pooled query embedding. Passages stay plain (``p~ = normalize(pool(h_p))``): the modulation is query-side
only. Three ways to build ``w``, as the authors' code does them (not as the paper's summary writes them):

* **SLR** (statistical): ``w[t] = s`` for every id ``t`` that occurs in the unpadded input, 0 elsewhere; ``s`` is a
  learnable scalar (initial ``scale = 1.0``). With ``ignore_special_tokens`` (the release's setting) CLS, PAD and UNK
  are 0; SEP is *not* excluded, as in the code.
* **LLR** (learned): ``u_j = ReLU(w_s · h_j + b_s)``, one scalar per token (the BGE-M3 sparse head,
  ``nn.Linear(H, 1)``), then ``w[t] = max_{j: t_j = t} u_j``; CLS, PAD and UNK are always 0.
* **CLR** (contextual): ``w = log1p(ReLU(l))`` with ``l`` the masked-language-model logits at the CLS position. The
  authors load the backbone as ``AutoModelForMaskedLM``; all-MiniLM-L6-v2 ships no MLM head, so here the head is
  part of this module (transform ``Linear(H, H)`` + GELU + LayerNorm, decoder ``Linear(H, V)``), its decoder
  initialised from the encoder's word embeddings (the tie BERT uses), and it trains with ``W``.

Not ported: the release's ``vocabulary_filter`` (it writes only batch row 0; off in the release's README command).

Where it applies. The public release saves only the fine-tuned backbone and evaluates it as a plain encoder: the
modulation shapes *training*. foveal serves both ways: the fine-tuned encoder alone, and this module at query time as
:class:`LexSemBridgeStage` (experimental: not what the release evaluates).

Numerics. ``normalize(z ⊙ e)`` is computed as ``normalize((z / max z) ⊙ e)``, equal for any positive ``z`` (the
normalisation removes every positive scale) and exact for uniform ``z``: with ``W = 0, b = 0`` the factor is exactly 1
and the result is ``normalize(e_q)`` bit for bit.

A checkpoint is a folder: ``lexsem.json`` (:class:`LexSemConfig`) and ``lexsem.safetensors`` (the weights); a torch
state dict (``.pt``) with a config beside it loads too.

Example::

    >>> bridge = LexSemBridge(LexSemConfig(paradigm="slr", vocab_size=30522, hidden_size=384))     # doctest: +SKIP
    >>> stage = LexSemBridgeStage(bridge, tokenizer=encoder.model.tokenizer)                      # doctest: +SKIP
    >>> SearchPipeline(collection, query_stages=[stage]).search(SearchRequest(query="tides"))     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from foveal.encoders.base import QueryTokens
from foveal.errors import ConfigError

if TYPE_CHECKING:
    from foveal.pipeline.request import SearchRequest

__all__ = ["LexSemBridge", "LexSemBridgeStage", "default_query_stages", "load_bridge", "LexSemConfig", "Paradigm", "CONFIG_FILE", "WEIGHTS_FILE"]

NAME = "lexsem"
_log = logging.getLogger("foveal.lexsem")
CONFIG_FILE = "lexsem.json"
WEIGHTS_FILE = "lexsem.safetensors"
TORCH_WEIGHTS_FILE = "lexsem.pt"


class Paradigm(str, Enum):
    """How the vocabulary vector is built: statistical, learned or contextual lexical representation."""

    slr = "slr"
    llr = "llr"
    clr = "clr"

    @classmethod
    def parse(cls, value: "str | Paradigm") -> "Paradigm":
        try:
            return cls(str(getattr(value, "value", value)).lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ConfigError(f"lexsem.paradigm {value!r} is not known; allowed: {allowed}") from None


@dataclass
class LexSemConfig:
    """What a checkpoint needs to be rebuilt: paradigm, sizes, the special ids, the SLR scale."""

    paradigm: str = Paradigm.slr.value
    vocab_size: int = 30522
    hidden_size: int = 384
    #: SLR's initial ``s`` (learnable).
    scale: float = 1.0
    #: SLR: leave CLS, PAD and UNK out of ``w`` (the release sets it). LLR always does.
    ignore_special_tokens: bool = True
    cls_id: int | None = 101
    pad_id: int | None = 0
    unk_id: int | None = 100
    #: How the encoder pools ``e_q`` (recorded, not applied here: the stage gets the encoder's pooled vector).
    pooling: str = "mean"
    #: The encoder the weights were trained with (a model name), for the record.
    encoder: str | None = None

    def __post_init__(self) -> None:
        self.paradigm = Paradigm.parse(self.paradigm).value
        if self.vocab_size < 1 or self.hidden_size < 1:
            raise ConfigError(f"lexsem: vocab_size and hidden_size must be >= 1; got {self.vocab_size}, {self.hidden_size}")

    @property
    def special_ids(self) -> list[int]:
        return [i for i in (self.cls_id, self.pad_id, self.unk_id) if i is not None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LexSemConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"lexsem config: unknown keys {unknown}; allowed: {sorted(known)}")
        return cls(**data)


class _MaskedLanguageModelHead(nn.Module):
    """BERT's MLM head: ``decoder(LayerNorm(GELU(dense(h))))``, logits over the vocabulary."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(nn.functional.gelu(self.dense(states))))


class LexSemBridge(nn.Module):
    """The modulation module: vocabulary vector (one paradigm) -> softmax weights over dims -> modulated query."""

    def __init__(self, config: LexSemConfig) -> None:
        super().__init__()
        self.config = config
        self.paradigm = Paradigm.parse(config.paradigm)
        self.modulation = nn.Linear(config.vocab_size, config.hidden_size)  # W, b (PyTorch default init)
        if self.paradigm is Paradigm.slr:
            self.scale = nn.Parameter(torch.tensor(float(config.scale)))
        elif self.paradigm is Paradigm.llr:
            self.sparse_linear = nn.Linear(config.hidden_size, 1)
        else:
            self.mlm_head = _MaskedLanguageModelHead(config.hidden_size, config.vocab_size)
        special = torch.tensor(config.special_ids, dtype=torch.long)
        self.register_buffer("special_ids", special, persistent=False)

    @classmethod
    def for_encoder(cls, model, paradigm: str = "slr", **overrides) -> "LexSemBridge":
        """A fresh module sized for a sentence-transformers ``model``, the special ids from its tokenizer; for CLR
        the MLM decoder starts as the encoder's word embeddings (BERT ties them)."""
        transformer = model[0].auto_model
        tokenizer = model.tokenizer
        config = LexSemConfig(
            paradigm=paradigm, vocab_size=int(transformer.config.vocab_size),
            hidden_size=int(transformer.config.hidden_size), cls_id=tokenizer.cls_token_id,
            pad_id=tokenizer.pad_token_id, unk_id=tokenizer.unk_token_id, **overrides,
        )
        bridge = cls(config)
        if bridge.paradigm is Paradigm.clr:
            with torch.no_grad():
                bridge.mlm_head.decoder.weight.copy_(transformer.get_input_embeddings().weight.detach().float())
                bridge.mlm_head.decoder.bias.zero_()
        return bridge

    # -- the three paradigms -----------------------------------------------------------------------------------
    def _zero_special(self, w: torch.Tensor) -> torch.Tensor:
        if len(self.special_ids):
            w = w.index_fill(1, self.special_ids.to(w.device), 0.0)
        return w

    def vocabulary_vector(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``w``: ``(B, V)`` from padded ``input_ids``/``attention_mask`` ``(B, L)`` and ``states`` ``(B, L, H)``."""
        batch = input_ids.shape[0]
        vocab = self.config.vocab_size
        input_ids = input_ids.long()
        if self.paradigm is Paradigm.slr:
            values = self.scale * attention_mask.to(self.scale.dtype)
            # amax without the initial 0, so a learned s < 0 still marks the tokens present; PAD positions carry 0
            # into PAD's slot, which is zeroed below (as it is in the release, ignore_special_tokens)
            w = torch.zeros(batch, vocab, dtype=values.dtype, device=values.device)
            w = w.scatter_reduce(1, input_ids, values, reduce="amax", include_self=False)
            return self._zero_special(w) if self.config.ignore_special_tokens else w
        if states is None:
            raise ValueError(f"LexSemBridge {self.paradigm.value} needs the token states")
        if self.paradigm is Paradigm.llr:
            weights = torch.relu(self.sparse_linear(states)).squeeze(-1)  # (B, L)
            w = torch.zeros(batch, vocab, dtype=weights.dtype, device=weights.device)
            # the release does not mask padded positions before the max; PAD's slot is zeroed afterwards
            w = w.scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)
            return self._zero_special(w)
        logits = self.mlm_head(states[:, 0])  # CLS position only
        return torch.log1p(torch.relu(logits))

    def dimension_weights(self, w: torch.Tensor) -> torch.Tensor:
        """``z = softmax(W w + b)`` over the hidden dimensions: positive, each row sums to 1.

        Without gradients, a vocabulary vector that is mostly zeros (SLR and LLR: non-zero only at the query's own
        ids) multiplies only ``W``'s columns at its non-zero entries, the same sum without the ``V - L`` zero terms
        (a query costs ``L x H`` instead of ``V x H``); CLR's dense vector takes the full product."""
        if not torch.is_grad_enabled() and w.dim() == 2:
            rows, cols = torch.nonzero(w, as_tuple=True)
            if len(cols) * 8 < w.numel():
                logits = self.modulation.bias.expand(w.shape[0], -1).clone()
                for row in range(w.shape[0]):
                    ids = cols[rows == row]
                    if len(ids):
                        logits[row] += self.modulation.weight[:, ids] @ w[row, ids]
                return torch.softmax(logits, dim=-1)
        return torch.softmax(self.modulation(w), dim=-1)

    def forward(
        self, embedding: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        states: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``embedding`` ``(B, H)`` (pooled, any positive scale) -> ``{"embedding": q~, "weights": z, "vocabulary": w}``."""
        w = self.vocabulary_vector(input_ids, attention_mask, states)
        z = self.dimension_weights(w)
        factor = z / z.max(dim=-1, keepdim=True).values  # same direction as z ⊙ e, exactly 1 for uniform z
        modulated = nn.functional.normalize(factor * embedding, dim=-1)
        return {"embedding": modulated, "weights": z, "vocabulary": w}

    # -- checkpoints -------------------------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write ``lexsem.json`` and ``lexsem.safetensors`` into folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        (path / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu") -> "LexSemBridge":
        """Load a folder written by :meth:`save` (or holding ``lexsem.pt``, a torch state dict, beside the config)."""
        path = Path(path)
        config_file = path / CONFIG_FILE
        if not config_file.exists():
            raise ConfigError(f"{path} is not a LexSemBridge checkpoint: {CONFIG_FILE} is missing")
        config = LexSemConfig.from_dict(json.loads(config_file.read_text()))
        bridge = cls(config)
        if (path / WEIGHTS_FILE).exists():
            from safetensors.torch import load_file

            state = load_file(str(path / WEIGHTS_FILE))
        elif (path / TORCH_WEIGHTS_FILE).exists():
            state = torch.load(path / TORCH_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        else:
            raise ConfigError(f"{path}: neither {WEIGHTS_FILE} nor {TORCH_WEIGHTS_FILE} found")
        missing, unexpected = bridge.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{path}: weights do not fit a {config.paradigm} module (missing {missing}, "
                              f"unexpected {unexpected})")
        return bridge.to(device).eval()


@dataclass
class LexSemBridgeStage:
    """The query-time :class:`~foveal.encoders.base.QueryStage`: modulates the query vector with a trained
    :class:`LexSemBridge`. Experimental (the release evaluates the fine-tuned encoder alone).

    ``tokenizer`` (optional) names the tokens in the evidence. ``top`` bounds the evidence lists."""

    bridge: LexSemBridge
    tokenizer: Any = None
    top: int = 8
    enabled: bool = True
    #: The name the weights were loaded by (shown in ``query_info.stages.lexsem``).
    source: str | None = None
    name: str = NAME
    needs_tokens: bool = field(default=True, init=False)

    @classmethod
    def from_checkpoint(cls, path: Path | str, tokenizer: Any = None, **options) -> "LexSemBridgeStage":
        from foveal.config import resolve_model_name  # a name of $FOVEAL_MODELS_DIR, else an operator's path

        return cls(LexSemBridge.load(Path(resolve_model_name(str(path))).expanduser()), tokenizer=tokenizer, **options)

    def modulate(self, vector: np.ndarray, tokens: QueryTokens) -> tuple[np.ndarray, dict]:
        """The modulated unit vector and its evidence, for one query."""
        bridge = self.bridge
        device = next(bridge.parameters()).device
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(tokens.ids, dtype=np.int64), device=device)[None]
            mask = torch.as_tensor(tokens.attention_mask, device=device)[None]
            states = torch.as_tensor(np.asarray(tokens.states, dtype=np.float32), device=device)[None]
            embedding = torch.as_tensor(np.asarray(vector, dtype=np.float32), device=device)[None]
            out = bridge(embedding, ids, mask, states)
        z = out["weights"][0].float().cpu().numpy()
        if np.all(z == z.max()):  # uniform weights: q~ = normalize(e_q) = e_q, the encoder's unit vector as it is
            modulated = np.array(vector, dtype=np.float32, copy=True)  # (re-normalising may move its last bits)
        else:
            modulated = out["embedding"][0].float().cpu().numpy()
        w = out["vocabulary"][0].float().cpu().numpy()
        return modulated, self._evidence(z, w)

    def _evidence(self, z: np.ndarray, w: np.ndarray) -> dict:
        hidden = len(z)
        order = np.argsort(-z, kind="stable")[: self.top]
        nonzero = np.flatnonzero(w)
        tokens = nonzero[np.argsort(-w[nonzero], kind="stable")][: self.top]
        names = (self.tokenizer.convert_ids_to_tokens([int(t) for t in tokens])
                 if self.tokenizer is not None else [None] * len(tokens))
        return {
            "paradigm": self.bridge.paradigm.value,
            # z * H: 1 is the uniform weight, so > 1 means the dimension was boosted
            "dimensions": [{"index": int(i), "weight": round(float(z[i] * hidden), 6)} for i in order],
            "tokens": [{"id": int(t), "token": name, "weight": round(float(w[t]), 6)} for t, name in zip(tokens, names)],
        }

    def apply(
        self, request: "SearchRequest", vector: np.ndarray, tokens: QueryTokens | None = None
    ) -> tuple[np.ndarray, dict]:
        """``enabled`` is the default; a request's ``stages: {"lexsem": ...}`` overrides it."""
        wanted = self.enabled if request is None else request.stage_wanted(self.name, self.enabled)
        if not wanted:
            return vector, {"skipped": "disabled"}
        if tokens is None:
            return vector, {"skipped": "the encoder gave no query tokens"}
        modulated, evidence = self.modulate(vector, tokens)
        return modulated, {"applied": True, "modulation": self.source, **evidence}


def default_query_stages(collection) -> list:
    """The query stages an index's config asks for: :class:`LexSemBridgeStage` when ``lexsem.modulation`` names
    weights (loaded once per process and path; the stage is the index's default when ``lexsem.enabled``)."""
    section = getattr(getattr(collection, "config", None), "lexsem", None)
    if section is None or not section.modulation:
        return []
    try:
        bridge = load_bridge(section.modulation)
        if section.paradigm is not None and bridge.paradigm.value != section.paradigm:
            raise ConfigError(f"lexsem.paradigm is {section.paradigm!r} but the weights {section.modulation!r} were "
                              f"trained as {bridge.paradigm.value!r}", field="lexsem.paradigm")
    except ConfigError as exc:  # the index still serves (BM25, dense without the stage); each query says why
        _log.error("index %r: LexSemBridge stage unavailable: %s", getattr(collection, "name", "?"), exc.message)
        return [UnavailableStage(NAME, exc.message, enabled=section.enabled)]
    tokenizer = None
    try:
        tokenizer = collection.encoder.model.tokenizer
    except AttributeError:  # an encoder without a tokenizer (ONNX keeps its own): evidence names token ids only
        tokenizer = getattr(collection.encoder, "tokenizer", None)
    return [LexSemBridgeStage(bridge, tokenizer=tokenizer, top=section.top, enabled=section.enabled,
                              source=section.modulation)]


@dataclass
class UnavailableStage:
    """Stands in for a query stage whose weights cannot be loaded: the vector passes unchanged and the response
    says why (``query_info.stages.<name>``), so one bad checkpoint never takes the index's search down."""

    name: str
    why: str
    enabled: bool = False

    def apply(self, request, vector, tokens=None):
        return vector, {"applied": False, "why": self.why}


_BRIDGES: dict[str, LexSemBridge] = {}
_BRIDGES_LOCK = threading.Lock()


def load_bridge(name: str) -> LexSemBridge:
    """Modulation weights by registered name (``$FOVEAL_MODELS_DIR``; a path from CLI config files), one per
    process and folder. A name that holds no weights is a :class:`ConfigError` naming ``lexsem.modulation``."""
    from foveal.config import resolve_model_name

    path = Path(resolve_model_name(name)).expanduser()
    key = str(path.resolve()) if path.exists() else str(path)
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.get(key)
        if bridge is None:
            if not (path / CONFIG_FILE).exists():
                raise ConfigError(f"lexsem.modulation: {name!r} holds no LexSemBridge weights (train them with "
                                  "'foveal train lexsem', which registers NAME-modulation)", field="lexsem.modulation")
            bridge = _BRIDGES[key] = LexSemBridge.load(path)
        return bridge
