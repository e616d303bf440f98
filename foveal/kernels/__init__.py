"""Attention kernels for the encoding path: one dispatcher over a reference, PyTorch SDPA and a fused Triton kernel.

All three compute the same thing for bidirectional encoders (no causal mask)::

    O = softmax( Q Kᵀ · scale / τ_h + M ) V

* ``scale`` defaults to ``1/√D`` (Vaswani et al. 2017, "Attention Is All You Need");
* ``τ_h`` is the TempScale attention temperature, one float or one per head ("Length-Induced Embedding Collapse in
  Transformer-based Models", arXiv 2410.24200);
* ``M`` is −∞ where ``key_padding_mask`` (bool ``(B, N_k)``, ``True`` = keep) or the block-sparse ``block_mask``
  (bool, last dims ``(n_q_blocks, n_k_blocks)`` on ``block_size`` tiles; format in :mod:`foveal.kernels.reference`)
  drops a (query, key) pair. A query row with no kept key gives zeros, never NaN.

Backends:

``"reference"``
    :func:`~foveal.kernels.reference.attention_reference`, plain PyTorch in fp32: the ground truth for tests.
``"sdpa"``
    ``torch.nn.functional.scaled_dot_product_attention``: a scalar τ goes into its ``scale`` argument, a per-head τ_h
    scales the query rows (the same fold TempScale applies to W_Q), masks become one boolean ``attn_mask``, and rows
    with no kept key are zeroed afterwards (SDPA itself would return NaN there).
``"triton"``
    :func:`~foveal.kernels.triton_attention.triton_attention`, a FlashAttention-2 style fused forward kernel
    (Dao 2023, arXiv 2307.08691; structure after the Triton fused-attention tutorial) with per-head τ folded into
    its scale and a CSR block lookup table so that dropped tiles cost nothing. CUDA only (or ``TRITON_INTERPRET=1``).
``"auto"``
    Triton for CUDA tensors when the ``triton`` package is installed, SDPA otherwise (CPU).

Importing :mod:`foveal.kernels` never imports triton; the Triton module loads on the first Triton call.

Example::

    >>> import torch
    >>> from foveal.kernels import attention
    >>> q = k = v = torch.randn(2, 12, 7, 32)
    >>> keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    >>> attention(q, k, v, temperature=0.9, key_padding_mask=keep).shape
    torch.Size([2, 12, 7, 32])
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

from foveal.errors import ConfigError
from foveal.kernels.reference import attention_reference, check_qkv, dense_mask, per_head_temperature

__all__ = ["BACKENDS", "attention", "attention_reference", "resolve_backend", "sdpa_attention", "triton_available"]

#: The values ``attention(..., backend=...)`` accepts.
BACKENDS = ("auto", "reference", "sdpa", "triton")


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package is installed (checked without importing it, once per process: the dispatcher
    asks on every attention call)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """``"auto"`` -> the backend that will run for ``q``; any other allowed name is returned as is."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown attention backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if q.is_cuda and triton_available() else "sdpa"
    return backend


def _is_scalar(temperature) -> bool:
    if temperature is None or isinstance(temperature, (int, float)):
        return True
    return isinstance(temperature, torch.Tensor) and temperature.dim() == 0


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    temperature=None,
    key_padding_mask: torch.Tensor | None = None,
    block_mask: torch.Tensor | None = None,
    block_size: tuple[int, int] = (64, 64),
) -> torch.Tensor:
    """The masked, temperature-scaled attention on ``torch.nn.functional.scaled_dot_product_attention``."""
    batch, heads, n_q, n_k, dim = check_qkv(q, k, v)
    scale = dim**-0.5 if scale is None else float(scale)
    if _is_scalar(temperature):
        tau = 1.0 if temperature is None else float(temperature)
        if not (tau > 0 and tau != float("inf")):
            raise ConfigError(f"temperature must be finite and > 0; got {tau}")
        query, sdpa_scale = q, scale / tau
    else:
        tau = per_head_temperature(temperature, heads, q.device)
        query, sdpa_scale = (q.float() / tau[None, :, None, None]).to(q.dtype), scale
    keep = dense_mask(
        batch, heads, n_q, n_k, key_padding_mask=key_padding_mask, block_mask=block_mask, block_size=block_size, device=q.device
    )
    out = F.scaled_dot_product_attention(query, k, v, attn_mask=keep, scale=sdpa_scale)
    if keep is not None:
        out = out.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    temperature=None,
    key_padding_mask: torch.Tensor | None = None,
    block_mask: torch.Tensor | None = None,
    block_size: tuple[int, int] = (64, 64),
    backend: str = "auto",
) -> torch.Tensor:
    """Masked bidirectional attention ``softmax(q kᵀ · scale / τ_h + M) v`` on the chosen backend.

    Args:
        q, k, v: ``(B, H, N, D)``.
        scale: logit scale, ``1/√D`` when ``None``.
        temperature: TempScale τ: ``None`` (= 1), a float, or ``(H,)`` per head.
        key_padding_mask: bool ``(B, N_k)``, ``True`` = keep.
        block_mask: bool block table whose tiles are ``block_size = (BM, BN)`` (powers of two >= 16 for Triton).
        backend: one of :data:`BACKENDS`.

    Returns:
        ``(B, H, N_q, D)`` in ``q``'s dtype; rows with no kept key are zero.
    """
    chosen = resolve_backend(backend, q)
    kwargs = dict(
        scale=scale, temperature=temperature, key_padding_mask=key_padding_mask, block_mask=block_mask, block_size=block_size
    )
    if chosen == "reference":
        return attention_reference(q, k, v, **kwargs)
    if chosen == "sdpa":
        return sdpa_attention(q, k, v, **kwargs)
    from foveal.kernels.triton_attention import triton_attention

    return triton_attention(q, k, v, **kwargs)
