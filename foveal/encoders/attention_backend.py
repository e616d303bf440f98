"""Runs a Hugging Face encoder's self-attention through :func:`foveal.kernels.attention`.

transformers 5.x looks attention functions up by name (``config._attn_implementation``); this module registers
``"foveal"``, which turns the model's 4-D padding mask into a key-padding mask and calls the dispatcher (Triton on
CUDA, SDPA on the CPU). Bidirectional encoders only: a causal model is refused.
"""

from __future__ import annotations

import torch

from foveal.errors import ConfigError

NAME = "foveal"
_registered = False


def _key_padding(mask: torch.Tensor | None, n_keys: int) -> torch.Tensor | None:
    """(B, 1|H, Nq, Nk) bool (True = keep) or additive float mask -> (B, Nk) bool, from its first query row
    (an encoder's padding mask is the same for every query row)."""
    if mask is None:
        return None
    row = mask[:, 0, 0, :n_keys] if mask.dim() == 4 else mask[:, :n_keys]
    return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2


def foveal_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                             **kwargs):
    from foveal.kernels import attention

    if is_causal or getattr(module, "is_causal", False):
        raise ConfigError("the foveal attention backend is for bidirectional encoders; this module is causal")
    out = attention(query, key, value, scale=scaling, key_padding_mask=_key_padding(attention_mask, key.shape[2]))
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, foveal_attention_forward)
        # without a mask function of its own name, transformers would pass no padding mask at all
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME
