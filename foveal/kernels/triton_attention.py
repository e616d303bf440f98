"""A fused Triton forward attention kernel for bidirectional encoders (FlashAttention style).

Sources: FlashAttention (Dao et al. 2022, arXiv 2205.14135) and FlashAttention-2 (Dao 2023, arXiv 2307.08691) for
the tiling and the online softmax; the Triton fused-attention tutorial (triton-lang/triton,
``python/tutorials/06-fused-attention.py``) for the exp2 formulation; FlexAttention / FlexPrefill (bytedance,
``flex_prefill_attention.py``) for the CSR-like block lookup table; TempScale (arXiv 2410.24200) for the attention
temperature. Written for foveal from the notes in ``METHODS.md`` section 8, not copied.

What one program does (grid ``(ceil(N_q / BM), B·H)``):

* load one ``BM × D`` tile of Q and keep it resident;
* walk the key/value tiles it must see: every tile up to the key length when dense, or only the tiles listed in
  the block LUT (``count[b, h, q_block]`` entries of ``index[b, h, q_block, :]``), so skipped tiles cost nothing;
* per tile: ``s = (q kᵀ) · scale·log₂e / τ_h`` in fp32, masked keys to −∞, then the online softmax with a running
  maximum ``m``, running sum ``l`` and fp32 accumulator, rescaled by ``exp2(m_old − m_new)``;
* epilogue ``acc / l``; rows that saw no kept key have ``l = 0`` and are written as zeros (no NaN): the running
  maximum is replaced by 0 while it is still −∞, so ``exp2(−∞ − 0) = 0`` everywhere.

Per-head TempScale temperature is folded into the per-head logit scale (one fp32 per head), so it costs nothing.
Masking is plain pointer arithmetic with load masks (no ``tl.make_block_ptr``, which newer Triton removed).

Triton is optional: this module imports without it (``TRITON_AVAILABLE`` is then ``False`` and calling raises), and
it never touches ``triton.runtime.driver`` at import time (that raises on a machine without a GPU).

CPU tensors run in Triton's interpreter, which Triton enables only when ``TRITON_INTERPRET=1`` is in the environment
*before triton is first imported*: its own ``triton.language`` helpers (``tl.sum``, ``tl.max``, ...) are wrapped for
one mode at that moment. :func:`interpreter_enabled` reports the mode the imported triton is in, and a call refuses
to run when this module's kernel was wrapped for the other one.

Example (on a GPU)::

    >>> q = k = v = torch.randn(2, 12, 512, 32, device="cuda", dtype=torch.float16)   # doctest: +SKIP
    >>> out = triton_attention(q, k, v, temperature=0.9, key_lengths=torch.tensor([512, 300]))  # doctest: +SKIP
"""

import contextlib
import math

import torch

from foveal.errors import ConfigError, InvalidInputError
from foveal.kernels.reference import check_qkv, expand_block_mask, per_head_temperature

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is an optional, GPU-side dependency
    triton = None
    tl = None

__all__ = ["TRITON_AVAILABLE", "block_mask_to_lut", "interpreter_enabled", "triton_attention"]

TRITON_AVAILABLE = triton is not None
_LOG2E = 1.4426950408889634


def _interpreted(function) -> bool:
    return type(function).__name__ == "InterpretedFunction"


def interpreter_enabled() -> bool:
    """Whether the imported triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` before its import)."""
    return triton is not None and _interpreted(tl.sum)


def block_mask_to_lut(
    block_mask: torch.Tensor, batch: int, heads: int, n_q_blocks: int, n_k_blocks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A boolean block mask -> the CSR-like lookup table the kernel walks.

    Returns ``(count, index)``: ``count[b, h, i]`` (int32) is how many key blocks query block ``i`` keeps, and
    ``index[b, h, i, :count]`` (int32, ascending) are those key blocks; entries past ``count`` are unused. Both are
    broadcast views (stride 0) over the batch and head dimensions the mask does not vary in. No host sync.
    """
    blocks = expand_block_mask(block_mask, batch, heads, n_q_blocks, n_k_blocks)
    count = blocks.sum(dim=-1, dtype=torch.int32)
    # a stable sort of "dropped?" puts the kept blocks first, in ascending block order
    index = torch.argsort((~blocks).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
    return count.expand(batch, heads, n_q_blocks), index.expand(batch, heads, n_q_blocks, n_k_blocks)


if triton is not None:

    @triton.jit
    def _attention_forward(
        Q, K, V, O, HEAD_SCALE, KEEP, KEY_LENGTHS, LUT_COUNT, LUT_INDEX,
        stride_qb, stride_qh, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_on, stride_od,
        stride_keep_b, stride_keep_n,
        stride_count_b, stride_count_h, stride_count_m,
        stride_index_b, stride_index_h, stride_index_m, stride_index_n,
        heads, n_q, n_k, head_dim,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        HAS_KEEP: tl.constexpr,
        HAS_LENGTHS: tl.constexpr,
        HAS_LUT: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
    ):  # fmt: skip
        q_block = tl.program_id(0)
        batch_head = tl.program_id(1)
        # 64-bit offsets: batch * stride can pass 2**31 elements for large batches of long sequences
        b = (batch_head // heads).to(tl.int64)
        h = (batch_head % heads).to(tl.int64)

        rows = q_block * BLOCK_M + tl.arange(0, BLOCK_M)
        tile_cols = tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)
        row_ok = rows < n_q
        dim_ok = dims < head_dim

        q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + dims[None, :] * stride_qd
        q = tl.load(q_ptrs, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        # scale · log2(e) / tau_h, precomputed per head on the host
        qk_scale = tl.load(HEAD_SCALE + h)

        if HAS_LENGTHS:
            key_length = tl.minimum(tl.load(KEY_LENGTHS + b), n_k)
        else:
            key_length = n_k
        if HAS_LUT:
            n_steps = tl.load(LUT_COUNT + b * stride_count_b + h * stride_count_h + q_block * stride_count_m)
            index_base = LUT_INDEX + b * stride_index_b + h * stride_index_h + q_block * stride_index_m
        else:
            n_steps = tl.cdiv(key_length, BLOCK_N)

        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        running_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        running_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

        for step in range(0, n_steps):
            if HAS_LUT:
                k_block = tl.load(index_base + step * stride_index_n)
            else:
                k_block = step
            cols = k_block * BLOCK_N + tile_cols
            in_range = cols < n_k
            keep = cols < key_length
            if HAS_KEEP:
                kept = tl.load(KEEP + b * stride_keep_b + cols * stride_keep_n, mask=in_range, other=0)
                keep = keep & (kept != 0)

            k = tl.load(
                k_base + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
                mask=in_range[:, None] & dim_ok[None, :],
                other=0.0,
            )
            scores = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale
            scores = tl.where(keep[None, :], scores, float("-inf"))

            new_max = tl.maximum(running_max, tl.max(scores, 1))
            # while a row has seen no kept key its maximum is -inf; subtract 0 instead so exp2 gives 0, not NaN
            base = tl.where(new_max == float("-inf"), 0.0, new_max)
            correction = tl.math.exp2(running_max - base)
            probs = tl.math.exp2(scores - base[:, None])
            running_sum = running_sum * correction + tl.sum(probs, 1)

            v = tl.load(
                v_base + cols[:, None] * stride_vn + dims[None, :] * stride_vd,
                mask=in_range[:, None] & dim_ok[None, :],
                other=0.0,
            )
            acc = acc * correction[:, None]
            acc = tl.dot(probs.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
            running_max = new_max

        denominator = tl.where(running_sum > 0.0, running_sum, 1.0)
        out = acc / denominator[:, None]
        o_ptrs = O + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + dims[None, :] * stride_od
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def _check_mode() -> bool:
    """The interpreter mode, after checking that the kernel and triton's own library agree on it."""
    interpret = interpreter_enabled()
    if _interpreted(_attention_forward) != interpret:
        raise ConfigError(
            "TRITON_INTERPRET changed between importing triton and importing foveal.kernels.triton_attention; "
            "set it (or unset it) before either is imported"
        )
    return interpret


def _check_block(size: int, name: str) -> None:
    if size < 16 or size & (size - 1):
        raise InvalidInputError(f"{name} must be a power of two >= 16 (tl.dot tiles); got {size}")


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    temperature=None,
    key_padding_mask: torch.Tensor | None = None,
    key_lengths: torch.Tensor | None = None,
    block_mask: torch.Tensor | None = None,
    block_lut: tuple[torch.Tensor, torch.Tensor] | None = None,
    block_size: tuple[int, int] = (64, 64),
    allow_tf32: bool = False,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Fused masked attention ``softmax(q kᵀ · scale / τ_h + M) v``; same contract as
    :func:`foveal.kernels.reference.attention_reference`.

    Args:
        q, k, v: ``(B, H, N, D)`` CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``), fp16/bf16/fp32,
            any strides.
        scale: logit scale, ``1/√D`` when ``None``.
        temperature: ``None``, a float, or ``(H,)`` per-head τ_h, folded into the per-head scale.
        key_padding_mask: bool ``(B, N_k)``, ``True`` = keep; any pattern.
        key_lengths: int ``(B,)``: keys ``>= key_lengths[b]`` are masked *and their tiles are never visited*
            (right padding; cheaper than an equivalent ``key_padding_mask``). Both may be given.
        block_mask: bool block table on ``block_size`` tiles (format in :mod:`foveal.kernels.reference`).
        block_lut: the same, already converted by :func:`block_mask_to_lut` (reuse it across layers); its indices
            are trusted, so build it with that function.
        block_size: ``(BM, BN)``, powers of two >= 16; the block mask's tiles.
        allow_tf32: let fp32 inputs use TF32 ``tl.dot`` on GPU (faster, about 1e-3 error); exact IEEE otherwise.

    Returns:
        ``(B, H, N_q, D)`` in ``q``'s dtype; rows with no kept key are zero.
    """
    if triton is None:
        raise ConfigError("the triton backend needs the 'triton' package, which is not installed")
    batch, heads, n_q, n_k, head_dim = check_qkv(q, k, v)
    block_m, block_n = block_size
    _check_block(block_m, "block_size[0]")
    _check_block(block_n, "block_size[1]")
    interpret = _check_mode()
    if not q.is_cuda and not interpret:
        raise InvalidInputError(
            f"triton_attention needs CUDA tensors (got {q.device}); for CPU tensors set TRITON_INTERPRET=1 before "
            "triton is imported"
        )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise InvalidInputError(f"triton_attention supports float16, bfloat16 and float32; got {q.dtype}")
    if interpret and q.dtype == torch.bfloat16:
        raise InvalidInputError("Triton's interpreter computes bfloat16 tl.dot wrongly (triton#11584); use fp16 or fp32 on CPU")
    if block_mask is not None and block_lut is not None:
        raise InvalidInputError("give block_mask or block_lut, not both")
    block_d = max(16, triton.next_power_of_2(head_dim))
    n_q_blocks, n_k_blocks = math.ceil(n_q / block_m), math.ceil(n_k / block_n)
    device = q.device

    scale = head_dim**-0.5 if scale is None else float(scale)
    tau = per_head_temperature(temperature, heads, device)
    head_scale = (scale * _LOG2E / tau).to(torch.float32).contiguous()

    placeholder = head_scale  # stands in for absent optional tensors; never read (the HAS_* flags are off)
    keep = placeholder
    keep_strides = (0, 0)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, n_k):
            raise InvalidInputError(f"key_padding_mask must be (B, N_k) = ({batch}, {n_k}); got {tuple(key_padding_mask.shape)}")
        keep = key_padding_mask.to(device=device, dtype=torch.uint8)
        keep_strides = keep.stride()
    lengths = placeholder
    if key_lengths is not None:
        lengths = torch.as_tensor(key_lengths).to(device=device, dtype=torch.int32).contiguous()
        if lengths.shape != (batch,):
            raise InvalidInputError(f"key_lengths must be (B,) = ({batch},); got {tuple(lengths.shape)}")
    if block_mask is not None:
        block_lut = block_mask_to_lut(block_mask.to(device), batch, heads, n_q_blocks, n_k_blocks)
    count = index = placeholder
    count_strides, index_strides = (0, 0, 0), (0, 0, 0, 0)
    if block_lut is not None:
        count, index = block_lut
        count = count.to(device=device, dtype=torch.int32).expand(batch, heads, n_q_blocks)
        index = index.to(device=device, dtype=torch.int32)
        if index.shape[-2] != n_q_blocks or index.dim() != 4:
            raise InvalidInputError(f"block_lut index must be (B|1, H|1, {n_q_blocks}, max_blocks); got {tuple(index.shape)}")
        index = index.expand(batch, heads, n_q_blocks, index.shape[-1])
        count_strides, index_strides = count.stride(), index.stride()

    if q.dtype == torch.float32:
        precision = "tf32" if (allow_tf32 and not interpret) else "ieee"
    else:
        precision = "tf32"  # Triton's default; it only changes fp32 operands
    out = torch.empty((batch, heads, n_q, head_dim), dtype=q.dtype, device=device)
    grid = (n_q_blocks, batch * heads)
    launch = dict(num_warps=num_warps, num_stages=num_stages)
    with torch.cuda.device(device) if q.is_cuda else contextlib.nullcontext():
        _attention_forward[grid](
            q, k, v, out, head_scale, keep, lengths, count, index,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            *keep_strides, *count_strides, *index_strides,
            heads, n_q, n_k, head_dim,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
            HAS_KEEP=key_padding_mask is not None,
            HAS_LENGTHS=key_lengths is not None,
            HAS_LUT=block_lut is not None,
            INPUT_PRECISION=precision,
            **launch,
        )  # fmt: skip
    return out

