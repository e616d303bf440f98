"""TempScale: a temperature on every self-attention softmax of an encoder, against length-induced embedding collapse.

Paper: Zhou et al., "Length-Induced Embedding Collapse in PLM/Transformer-based Models" (arXiv 2410.24200, ACL 2025;
authors' code Yuqi-Zhou/Length_Collapse). Long inputs make self-attention act as a stronger low-pass filter, so
embeddings of long texts crowd together. Dividing the attention logits by a temperature τ < 1 sharpens every
attention row and weakens that averaging. Every self-attention of every layer, for queries and documents alike,
becomes::

    A = softmax( Q Kᵀ / (τ √d_h) + M ) V

where ``M`` is the additive padding mask. The paper divides ``(Q Kᵀ/√d_h + M)`` by τ, which is the same thing because
``M`` is 0 or very negative. The paper uses one τ for all layers and heads; here τ may also be one value per head
(``τ_h``), the same for every layer. No training.

Two exact ways to apply it (both change the model in place, so deep-copy a shared model first):

* :func:`set_attention_temperature`, *unfolded*: sets ``BertSelfAttention.scaling`` (``d_h^-0.5`` in transformers 5.x,
  passed to the eager, SDPA and FlashAttention backends) to ``d_h^-0.5 / τ``. It is absolute, so calling it again
  replaces the temperature and τ = 1 restores the model. A per-head τ_h makes ``scaling`` an ``(H, 1, 1)`` tensor,
  which only the eager backend accepts.
* :func:`fold_attention_temperature`, *folded*: divides the rows of the query projection (weight and bias) of head
  ``h`` by τ_h, so ``Q`` itself is scaled. It costs nothing at run time and works with any attention backend or an
  ONNX export. It is cumulative: folding τ twice applies τ².

Two measurements for tests and ablations: :func:`attention_entropy` (falls as τ falls) and
:func:`mean_pairwise_cosine` (the collapse metric: lower means embeddings are more spread out).

Example::

    >>> import copy
    >>> model = copy.deepcopy(encoder.model)                # doctest: +SKIP
    >>> fold_attention_temperature(model, 0.9)              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from foveal.errors import ConfigError, InvalidInputError

__all__ = [
    "attention_entropy",
    "fold_attention_temperature",
    "mean_pairwise_cosine",
    "self_attention_modules",
    "set_attention_temperature",
]


def self_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every self-attention module (``BertSelfAttention`` and its look-alikes) in ``model``, with its name.

    ``model`` may be a ``SentenceTransformer``, a Hugging Face ``PreTrainedModel`` or any module containing one.
    Cross-attention modules are left out: TempScale patches self-attention only.
    """
    found = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if (
            kind.endswith("SelfAttention")
            and isinstance(getattr(module, "query", None), nn.Linear)
            and hasattr(module, "num_attention_heads")
            and hasattr(module, "attention_head_size")
        ):
            found.append((name, module))
    if not found:
        raise ConfigError(f"no self-attention module (query projection, num_attention_heads) found in {type(model).__name__}")
    return found


def _temperatures(temperature, heads: int) -> torch.Tensor:
    """A float or one value per head -> a float64 ``(H,)`` CPU tensor of finite, positive temperatures."""
    tau = torch.as_tensor(temperature, dtype=torch.float64).detach().cpu()
    if tau.dim() == 0:
        tau = tau.expand(heads)
    if tau.shape != (heads,):
        raise ConfigError(f"temperature must be one float or {heads} values (one per head); got shape {tuple(tau.shape)}")
    if not bool(torch.isfinite(tau).all()) or not bool((tau > 0).all()):
        raise ConfigError(f"temperature values must be finite and > 0; got {tau.tolist()}")
    return tau


def _is_per_head(temperature) -> bool:
    return torch.as_tensor(temperature).dim() > 0


def set_attention_temperature(model: nn.Module, temperature) -> nn.Module:
    """Unfolded TempScale: set ``scaling = d_h^-0.5 / τ`` on every self-attention of ``model`` (in place).

    Args:
        model: a ``SentenceTransformer``, a ``PreTrainedModel``, or any module containing BERT-style self-attention.
        temperature: one float τ, or one τ_h per head (the latter needs ``attn_implementation="eager"``, since only
            the eager backend multiplies by a tensor ``scaling``; :func:`fold_attention_temperature` has no such limit).

    Returns:
        ``model``, patched. τ = 1 restores the original scaling exactly.
    """
    modules = self_attention_modules(model)
    per_head = _is_per_head(temperature)
    for name, module in modules:
        if not hasattr(module, "scaling"):
            raise ConfigError(
                f"{name} ({type(module).__name__}) has no 'scaling' attribute (transformers older than 5.x?); "
                "use fold_attention_temperature instead"
            )
        heads, head_size = module.num_attention_heads, module.attention_head_size
        tau = _temperatures(temperature, heads)
        base = head_size**-0.5
        if not per_head:
            module.scaling = base / float(tau[0])
            continue
        implementation = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if implementation != "eager":
            raise ConfigError(
                f"a per-head temperature in unfolded form needs attn_implementation='eager' (this model uses "
                f"{implementation!r}); use fold_attention_temperature, which works with every backend"
            )
        weight = module.query.weight
        # (H, 1, 1) broadcasts over (B, H, N_q, N_k) scores; the dtype matches so fp16 models stay fp16
        module.scaling = (base / tau).to(device=weight.device, dtype=weight.dtype).reshape(heads, 1, 1)
    return model


def fold_attention_temperature(model: nn.Module, temperature) -> nn.Module:
    """Folded TempScale: divide the query projection rows of head ``h`` (weight and bias) by τ_h, in place.

    ``Q_h / τ_h`` gives ``softmax(Q_h K_hᵀ / (τ_h √d_h) + M)`` exactly, with no run-time cost and any backend.
    Cumulative: folding twice applies the product of the temperatures.

    Returns:
        ``model``, patched.
    """
    for _, module in self_attention_modules(model):
        heads, head_size = module.num_attention_heads, module.attention_head_size
        tau = _temperatures(temperature, heads)
        projection = module.query
        # one factor per output row: the rows h*d_h:(h+1)*d_h produce head h's queries
        factor = (1.0 / tau).repeat_interleave(head_size)
        with torch.no_grad():
            projection.weight.mul_(factor.to(projection.weight.device, projection.weight.dtype)[:, None])
            if projection.bias is not None:
                projection.bias.mul_(factor.to(projection.bias.device, projection.bias.dtype))
    return model


def _transformer(model: nn.Module):
    """The first Hugging Face ``PreTrainedModel`` inside ``model`` (``model`` itself when it is one)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise ConfigError(f"no Hugging Face PreTrainedModel found in {type(model).__name__}")


@contextmanager
def _eager_attention(transformer):
    """Temporarily switch to eager attention: the only backend that returns attention probabilities."""
    previous = transformer.config._attn_implementation
    if previous == "eager":
        yield
        return
    transformer.set_attn_implementation("eager")
    try:
        yield
    finally:
        transformer.set_attn_implementation(previous)


def attention_entropy(model: nn.Module, tokenizer_output: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the self-attention rows, per layer and head: a ``(layers, heads)`` tensor.

    Each row's entropy ``-Σ_j A_ij log A_ij`` is averaged over the real (non-padding) query tokens of the batch.
    ``tokenizer_output`` is what the model's tokenizer returns (``input_ids``, ``attention_mask``, optionally
    ``token_type_ids``). Runs without gradients, in eager attention for the duration of the call.

    Example::

        >>> batch = tokenizer(["a long text ..."], return_tensors="pt")        # doctest: +SKIP
        >>> attention_entropy(model, batch).mean()                            # doctest: +SKIP
    """
    transformer = _transformer(model)
    device = next(transformer.parameters()).device
    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = {key: tokenizer_output[key].to(device) for key in names if key in tokenizer_output}
    if "input_ids" not in inputs:
        raise InvalidInputError("tokenizer_output must contain input_ids")
    valid = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).to(torch.float64)
    with torch.no_grad(), _eager_attention(transformer):
        outputs = transformer(**inputs, output_attentions=True, return_dict=True)
    rows = []
    for probabilities in outputs.attentions:  # (B, H, N, N) per layer
        entropy = torch.special.entr(probabilities.to(torch.float64)).sum(dim=-1)  # (B, H, N); entr(0) = 0
        weighted = (entropy * valid[:, None, :]).sum(dim=(0, 2)) / valid.sum()
        rows.append(weighted)
    return torch.stack(rows).to(torch.float32).cpu()


def mean_pairwise_cosine(vectors) -> float:
    """Mean cosine similarity over all pairs of distinct rows: the length-collapse metric (lower = more spread).

    ``vectors``: an ``(n, d)`` numpy array or tensor, ``n >= 2``; rows need not be normalised.

    Example::

        >>> mean_pairwise_cosine(np.eye(3))
        0.0
    """
    matrix = np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        raise InvalidInputError(f"mean_pairwise_cosine needs an (n, d) array with n >= 2; got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInputError("mean_pairwise_cosine: a zero vector has no direction")
    unit = matrix / norms
    similarity = unit @ unit.T
    count = matrix.shape[0]
    return float((similarity.sum() - np.trace(similarity)) / (count * (count - 1)))
