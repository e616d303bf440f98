"""ONNX Runtime forward pass for the sentence-transformers encoder, optionally int8-quantized.

Only the forward pass changes: tokenization, sentence-aware segmentation, length-sorted batching and the final
normalisation stay in :class:`~foveal.encoders.sentence_transformer.SentenceTransformerEncoder`. The exported graph
is the model's own module chain (transformer, then pooling, then normalize) from ``(input_ids, attention_mask)`` to
the sentence embedding, traced from the already-loaded weights (TempScale's temperature, when set, is folded into the
query projection before export, so it is part of the exported weights). Nothing is downloaded.

Three steps, each cached:

1. export with ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``; dynamic batch and sequence axes) on the
   eager attention path, so that the graph holds plain MatMul/Softmax attention;
2. optionally (``encoder.onnx_optimize``) onnxruntime's transformer optimizer (``model_type="bert"``) fuses the
   embeddings + LayerNorm, attention, bias + GELU and skip + LayerNorm into single kernels;
3. optionally (``encoder.quantize: int8``) dynamic quantization (``onnxruntime.quantization.quantize_dynamic``):
   the weights of every MatMul stored as signed int8 with one scale per output channel (one scale per tensor moved
   the embeddings much further from fp32), activations quantized to uint8 on the fly; u8·s8 products are what
   AVX2 without VNNI runs fastest. Measured: README "Speed" (bench/encoders.py).

The cache file name is a hash of the weights (after TempScale), the options and the torch/onnxruntime versions, so
changing any of them exports again; files are written to a temporary name and renamed, so concurrent processes never
read a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foveal.errors import ConfigError

#: Bumped when the export recipe changes, so old cache files are not reused.
RECIPE_VERSION = 1
OPSET = 17

_EXPORT_LOCK = threading.Lock()


class _Embedder(torch.nn.Module):
    """``(input_ids, attention_mask) -> sentence_embedding`` through a SentenceTransformer's module chain."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros_like(input_ids),
        }
        for module in self.model:
            features = module(features)
        return features["sentence_embedding"]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names, shapes, bytes): identifies the exact weights exported."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def cache_key(model: torch.nn.Module, *, quantize: str, optimize: bool) -> str:
    import onnxruntime

    options = {
        "recipe": RECIPE_VERSION,
        "opset": OPSET,
        "quantize": quantize,
        "optimize": optimize,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "weights": weights_digest(model),
    }
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:24]


def _atomic_save(write, target: Path) -> None:
    """Call ``write(tmp_path)`` into a temporary file next to ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(model: torch.nn.Module, target: Path, hidden_size: int, num_heads: int, *, optimize: bool,
            quantize: str) -> None:
    """Export ``model`` (a SentenceTransformer on the CPU, eager attention) to ``target``."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="foveal-onnx-") as workdir:
        work = Path(workdir)
        fp32 = work / "model.onnx"
        # a padded sample (the second row is shorter), so the traced mask path is the general one
        ids = torch.full((2, 16), 1000, dtype=torch.long)
        mask = torch.ones_like(ids)
        mask[1, 9:] = 0
        import warnings

        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Embedder(model).eval(),
                (ids, mask),
                str(fp32),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=OPSET,
            )
        current = fp32
        if optimize:
            from onnxruntime.transformers import optimizer

            optimized = optimizer.optimize_model(
                str(current), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1,
            )
            current = work / "optimized.onnx"
            optimized.save_model_to_file(str(current))
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = work / "int8.onnx"
            quantize_dynamic(
                str(current), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                # the fused contrib ops (Attention, SkipLayerNormalization...) carry no inferred types
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            current = quantized
        _atomic_save(lambda tmp: shutil.copyfile(current, tmp), target)


def export_path(model, *, cache_dir: Path, quantize: str, optimize: bool, hidden_size: int, num_heads: int) -> Path:
    """The cached ONNX file for ``model`` and these options, exported first if it is not there yet."""
    key = cache_key(model, quantize=quantize, optimize=optimize)
    suffix = ("-opt" if optimize else "") + ("-int8" if quantize == "int8" else "")
    target = cache_dir / f"minilm-{key}{suffix}.onnx"
    with _EXPORT_LOCK:
        if not target.exists():
            _export(model, target, hidden_size, num_heads, optimize=optimize, quantize=quantize)
    return target


class OnnxForward:
    """The forward pass on onnxruntime: ``(input_ids, attention_mask)`` int64 arrays -> embeddings (float32)."""

    def __init__(self, model, *, cache_dir: Path, quantize: str = "none", optimize: bool = True,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - a pinned dependency
            raise ConfigError("encoder.backend 'onnx' needs the onnxruntime package") from exc
        transformer = model[0].auto_model
        config = transformer.config
        previous = getattr(config, "_attn_implementation", None)
        transformer.set_attn_implementation("eager")  # plain MatMul/Softmax in the graph, which the optimizer fuses
        try:
            self.path = export_path(
                model, cache_dir=Path(cache_dir), quantize=quantize, optimize=optimize,
                hidden_size=int(config.hidden_size), num_heads=int(config.num_attention_heads),
            )
        finally:
            if previous is not None:
                try:
                    transformer.set_attn_implementation(previous)
                except (ValueError, KeyError):  # pragma: no cover - a custom backend that cannot be set again
                    pass
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(
            None, {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        )
        return np.asarray(out, dtype=np.float32)
