"""Plain PyTorch reference attention for bidirectional encoders, and the mask helpers every backend shares.

This is the ground truth the fast paths (:mod:`foveal.kernels.triton_attention`, PyTorch SDPA) are tested
against (STYLE lesson 6: reference first, then the fast path). It computes, per batch ``b`` and head ``h``::

    O = softmax( Q Kᵀ · scale / τ_h  +  M ) V          (Vaswani et al. 2017, "Attention Is All You Need")

where ``scale`` defaults to ``1/√D``, ``τ_h`` is the TempScale attention temperature ("Length-Induced Embedding
Collapse in Transformer-based Models", arXiv 2410.24200) and ``M`` is 0 on kept (query, key) pairs and −∞ on masked
ones. A query row whose keys are all masked yields zeros, never NaN.

Masks
-----
``key_padding_mask``
    bool ``(B, N_k)``, ``True`` = keep the key (the Hugging Face ``attention_mask`` convention).

``block_mask``
    a block lookup table: a bool tensor whose last two dimensions are ``(n_q_blocks, n_k_blocks)`` with
    ``n_q_blocks = ceil(N_q / BM)`` and ``n_k_blocks = ceil(N_k / BN)`` for ``block_size = (BM, BN)``; entry
    ``[.., i, j]`` = ``True`` keeps the tile of queries ``i·BM … (i+1)·BM−1`` against keys ``j·BN … (j+1)·BN−1``.
    Accepted leading shapes (``G`` broadcasts like the FlexAttention ``BlockMask`` of PyTorch):

    * ``(n_q_blocks, n_k_blocks)``: one pattern for every batch and head;
    * ``(G, n_q_blocks, n_k_blocks)`` with ``G`` in ``{1, H, B·H}`` (``B·H`` is ordered ``b·H + h``);
    * ``(B or 1, H or 1, n_q_blocks, n_k_blocks)``.

    The Triton kernel turns it into a CSR-like list of kept key blocks per query block
    (:func:`foveal.kernels.triton_attention.block_mask_to_lut`), so skipped tiles cost nothing there.

Example::

    >>> import torch
    >>> q = k = v = torch.randn(1, 2, 5, 8)
    >>> attention_reference(q, k, v, temperature=torch.tensor([1.0, 0.5])).shape
    torch.Size([1, 2, 5, 8])
"""

from __future__ import annotations

import math
import torch

from foveal.errors import InvalidInputError

__all__ = [
    "attention_reference",
    "check_qkv",
    "dense_mask",
    "expand_block_mask",
    "per_head_temperature",
]

def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Validate ``(B, H, N, D)`` inputs; returns ``(B, H, N_q, N_k, D)``."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InvalidInputError(f"q, k, v must be 4-d (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, n_q, dim = q.shape
    if k.shape[0] != batch or k.shape[1] != heads or k.shape[3] != dim:
        raise InvalidInputError(f"k {tuple(k.shape)} does not match q {tuple(q.shape)} in B, H or D")
    if v.shape[:3] != k.shape[:3]:
        raise InvalidInputError(f"v {tuple(v.shape)} does not match k {tuple(k.shape)} in B, H or N")
    if v.shape[3] != dim:
        raise InvalidInputError(f"v head size {v.shape[3]} differs from q's {dim}; only equal head sizes are supported")
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidInputError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    return batch, heads, n_q, k.shape[2], dim


def per_head_temperature(temperature, heads: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``None``, a float, a sequence or a ``(H,)``/0-d tensor -> a float32 ``(H,)`` tensor of positive τ_h."""
    if temperature is None:
        return torch.ones(heads, dtype=torch.float32, device=device)
    tau = torch.as_tensor(temperature, dtype=torch.float32)
    if tau.dim() == 0:
        tau = tau.expand(heads)
    if tau.shape != (heads,):
        raise InvalidInputError(f"temperature must be a float or have one value per head ({heads}); got shape {tuple(tau.shape)}")
    # values are checked on the host only: checking a CUDA tensor would sync the stream on every call
    if tau.device.type == "cpu" and (not bool(torch.isfinite(tau).all()) or not bool((tau > 0).all())):
        raise InvalidInputError(f"temperature must be finite and > 0; got {tau.tolist()}")
    return tau.to(device).contiguous()


def expand_block_mask(block_mask: torch.Tensor, batch: int, heads: int, n_q_blocks: int, n_k_blocks: int) -> torch.Tensor:
    """Any accepted block-mask shape -> a bool ``(B or 1, H or 1, n_q_blocks, n_k_blocks)`` view (no copy)."""
    mask = torch.as_tensor(block_mask).to(torch.bool)
    if mask.shape[-2:] != (n_q_blocks, n_k_blocks):
        raise InvalidInputError(
            f"block_mask must end in (n_q_blocks, n_k_blocks) = ({n_q_blocks}, {n_k_blocks}); got {tuple(mask.shape)}"
        )
    if mask.dim() == 2:
        return mask[None, None]
    if mask.dim() == 3:
        groups = mask.shape[0]
        if groups == 1 or groups == heads:
            return mask[None]
        if groups == batch * heads:
            return mask.reshape(batch, heads, n_q_blocks, n_k_blocks)
        raise InvalidInputError(f"a 3-d block_mask must have 1, H={heads} or B*H={batch * heads} groups; got {groups}")
    if mask.dim() == 4:
        if mask.shape[0] not in (1, batch) or mask.shape[1] not in (1, heads):
            raise InvalidInputError(f"a 4-d block_mask must be (B or 1, H or 1, ...); got {tuple(mask.shape)} for B={batch}, H={heads}")
        return mask
    raise InvalidInputError(f"block_mask must have 2, 3 or 4 dimensions; got {mask.dim()}")


def dense_mask(
    batch: int,
    heads: int,
    n_q: int,
    n_k: int,
    *,
    key_padding_mask: torch.Tensor | None = None,
    block_mask: torch.Tensor | None = None,
    block_size: tuple[int, int] = (64, 64),
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """The element-wise keep mask, bool and broadcastable to ``(B, H, N_q, N_k)``; ``None`` when nothing is masked."""
    keep = None
    if key_padding_mask is not None:
        kpm = torch.as_tensor(key_padding_mask, device=device).to(torch.bool)
        if kpm.shape != (batch, n_k):
            raise InvalidInputError(f"key_padding_mask must be (B, N_k) = ({batch}, {n_k}); got {tuple(kpm.shape)}")
        keep = kpm[:, None, None, :]
    if block_mask is not None:
        block_m, block_n = block_size
        blocks = expand_block_mask(block_mask, batch, heads, math.ceil(n_q / block_m), math.ceil(n_k / block_n))
        blocks = blocks.to(device)
        elementwise = blocks.repeat_interleave(block_m, dim=-2)[..., :n_q, :]
        elementwise = elementwise.repeat_interleave(block_n, dim=-1)[..., :n_k]
        keep = elementwise if keep is None else keep & elementwise
    return keep


def attention_reference(
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
    """Exact masked attention, computed in float32 (float64 stays float64) and returned in ``q``'s dtype.

    Args:
        q, k, v: ``(B, H, N, D)``; ``N`` may differ between q and k/v.
        scale: the logit scale, ``1/√D`` when ``None``.
        temperature: TempScale τ: ``None`` (= 1), a float, or one value per head (``(H,)``); the logits become
            ``q kᵀ · scale / τ_h``.
        key_padding_mask: bool ``(B, N_k)``, ``True`` = keep.
        block_mask: block lookup table (see the module docstring) on tiles of ``block_size = (BM, BN)``.

    Returns:
        ``(B, H, N_q, D)``; rows whose keys are all masked are zero.
    """
    batch, heads, n_q, n_k, dim = check_qkv(q, k, v)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = dim**-0.5 if scale is None else float(scale)
    tau = per_head_temperature(temperature, heads, q.device).to(compute)
    logits = torch.matmul(q.to(compute), k.to(compute).transpose(-1, -2))
    logits = logits * (scale / tau)[None, :, None, None]
    keep = dense_mask(
        batch, heads, n_q, n_k, key_padding_mask=key_padding_mask, block_mask=block_mask, block_size=block_size, device=q.device
    )
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    # a softmax that tolerates all -inf rows: subtract a finite row maximum, normalise by a guarded sum
    row_max = logits.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(logits - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    weights = weights / torch.where(total > 0, total, torch.ones_like(total))
    return torch.matmul(weights, v.to(compute)).to(q.dtype)
