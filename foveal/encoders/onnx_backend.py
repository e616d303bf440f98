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
   ``mixed`` (``quantize`` or ``query_quantize``) quantizes the same way but leaves the feed-forward output
   projections (the MatMul after GELU) of the first two-thirds of the layers in fp32. Kept in fp32 one group at a
   time, these moved the vectors most toward fp32, the earliest layers' most (their errors pass through every
   later layer). On 517 development queries (ADI, TIME, CACM, LISA, 300 SciFact train; ``bench/query_quantize.py``)
   the vectors' mean distance to fp32 (1 - cosine) is 0.0035 against int8's 0.0063, at 4.3 ms a query on one
   thread against 3.4 (fp32: 7.9); keeping all six in fp32 costs 4.9 ms for 0.0034 (docs/performance.md).

The cache file name is a hash of the weights (after TempScale), the options and the torch/onnxruntime versions, so
changing any of them exports again; files are written to a temporary name and renamed, so concurrent processes never
read a half-written model.

The cache is bounded: after each use, the least recently used exports (by access time, set explicitly on every use)
are deleted until at most ``$FOVEAL_ONNX_CACHE_MAX_MODELS`` (default 4) files of at most
``$FOVEAL_ONNX_CACHE_MAX_BYTES`` (default 1 GiB) in all remain; the file just used is always kept, and so are files
that are not foveal exports. Temporary files left by a killed export are deleted after an hour. Exporting, opening
and pruning hold one lock file per cache folder (``.lock``, flock), so no process deletes a model another is about
to open; a session already open keeps running on its model (onnxruntime reads the file when the session is made).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from foveal.errors import ConfigError

#: Bumped when the export recipe changes, so old cache files are not reused.
RECIPE_VERSION = 1
OPSET = 17

_EXPORT_LOCK = threading.Lock()
#: Defaults of the cache bound (environment variables override them).
MAX_CACHED_MODELS = 4
MAX_CACHE_BYTES = 1 << 30
#: Temporary files of an export older than this are from a process that died mid-export.
STALE_TEMP_S = 3600.0
_EXPORT_NAME = re.compile(r"^minilm-[0-9a-f]{24}(-opt)?(-int8|-mixed)?\.onnx$")
_TEMP_NAME = re.compile(r"^\.minilm-.*\.tmp$")


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
        if quantize in ("int8", "mixed"):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = work / "int8.onnx"
            keep = fp32_nodes(onnx.load(str(current)), model_layers(model)) if quantize == "mixed" else []
            quantize_dynamic(
                str(current), str(quantized), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                # the fused contrib ops (Attention, SkipLayerNormalization...) carry no inferred types
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            current = quantized
        _atomic_save(lambda tmp: shutil.copyfile(current, tmp), target)


#: A BERT-family export names each layer's feed-forward output projection ``/encoder/layer.<i>/output/dense/MatMul``
#: (``attention/output/dense`` is the attention's, which this leaves out).
_FFN_OUTPUT = re.compile(r"/encoder/layer\.(\d+)/output/dense/MatMul$")


def model_layers(model) -> int:
    """The transformer's layer count (0 when the model does not say)."""
    try:
        return int(model[0].auto_model.config.num_hidden_layers)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return 0


def _ffn_outputs(graph_model) -> list[tuple[int, str]]:
    """``(layer, name)`` of every layer's feed-forward output projection (a MatMul named like ``_FFN_OUTPUT``),
    in layer order."""
    found = []
    for node in graph_model.graph.node:
        match = _FFN_OUTPUT.search(node.name) if node.op_type == "MatMul" else None
        if match:
            found.append((int(match.group(1)), node.name))
    return sorted(found)


def ffn_output_nodes(graph_model) -> list[str]:
    """Every layer's feed-forward output projection, in layer order."""
    return [name for _, name in _ffn_outputs(graph_model)]


def fp32_nodes(graph_model, layers: int) -> list[str]:
    """The MatMuls that ``mixed`` precision keeps in fp32: the feed-forward output projections of the first
    ``ceil(2 * layers / 3)`` layers (4 of all-MiniLM-L6-v2's 6). A graph without such names keeps none (then
    ``mixed`` is plain ``int8``)."""
    first = -(-2 * layers // 3)
    return [name for layer, name in _ffn_outputs(graph_model) if layer < first]


def cache_limits() -> tuple[int, int]:
    """(most files, most bytes) the cache keeps, from ``$FOVEAL_ONNX_CACHE_MAX_MODELS`` / ``_MAX_BYTES``."""
    try:
        models = int(os.environ.get("FOVEAL_ONNX_CACHE_MAX_MODELS", MAX_CACHED_MODELS))
        size = int(os.environ.get("FOVEAL_ONNX_CACHE_MAX_BYTES", MAX_CACHE_BYTES))
    except ValueError as exc:
        raise ConfigError(f"FOVEAL_ONNX_CACHE_MAX_MODELS / _MAX_BYTES must be integers: {exc}") from exc
    return max(1, models), max(0, size)


@contextmanager
def _cache_lock(cache_dir: Path):
    """This process's threads and every other process that uses ``cache_dir``, one at a time."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _EXPORT_LOCK, open(cache_dir / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mark_used(path: Path) -> None:
    """Record a use in the file's access time (explicitly: mounts with relatime/noatime do not), keeping its
    modification time, which says when it was exported."""
    stat = path.stat()
    os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))


def prune_cache(cache_dir: Path, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used exports beyond :func:`cache_limits` (never ``keep``) and stale temporary
    files; returns what was deleted. Call with the cache lock held."""
    max_models, max_bytes = cache_limits()
    removed: list[Path] = []
    exports = []
    now = time.time()
    for entry in Path(cache_dir).iterdir():
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        if _TEMP_NAME.match(entry.name) and now - stat.st_mtime > STALE_TEMP_S:
            entry.unlink(missing_ok=True)
            removed.append(entry)
        elif _EXPORT_NAME.match(entry.name) and entry.is_file():
            exports.append((entry == keep, stat.st_atime_ns, stat.st_size, entry))
    exports.sort(key=lambda item: (item[0], item[1]), reverse=True)  # the kept file first, then newest use
    count = total = 0
    for kept, _atime, size, entry in exports:
        if kept or (count < max_models and total + size <= max_bytes):
            count += 1
            total += size
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def export_path(model, *, cache_dir: Path, quantize: str, optimize: bool, hidden_size: int, num_heads: int,
                use: Callable[[Path], Any] | None = None) -> Path:
    """The cached ONNX file for ``model`` and these options, exported first if it is not there yet. ``use(path)``
    runs under the cache lock (so the file cannot be pruned before it is opened); the cache is pruned after."""
    key = cache_key(model, quantize=quantize, optimize=optimize)
    suffix = ("-opt" if optimize else "") + ("" if quantize == "none" else f"-{quantize}")
    cache_dir = Path(cache_dir)
    target = cache_dir / f"minilm-{key}{suffix}.onnx"
    with _cache_lock(cache_dir):
        if not target.exists():
            _export(model, target, hidden_size, num_heads, optimize=optimize, quantize=quantize)
        _mark_used(target)
        if use is not None:
            use(target)
        prune_cache(cache_dir, keep=target)
    return target


class OnnxForward:
    """The forward pass on onnxruntime: ``(input_ids, attention_mask)`` int64 arrays -> embeddings (float32)."""

    def __init__(self, model, *, cache_dir: Path, quantize: str = "none", optimize: bool = True,
                 threads: int | None = None, lanes: int = 1) -> None:
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - a pinned dependency
            raise ConfigError("encoder.backend 'onnx' needs the onnxruntime package") from exc
        #: ``int8`` quantizes activations per tensor, on the fly: a row's vector then depends on the rows (and the
        #: padding) that share its pass, so callers that need a row's vector to be its own run one row per pass
        self.quantize = quantize
        #: Query lanes (:meth:`run_lanes`): a second session of the same export, single-threaded, that up to
        #: ``lanes`` passes run on at once, one thread each. Small passes side by side keep every core busy, with
        #: little padding and no handoffs between threads inside a pass (measured: docs/performance.md, "Query
        #: lanes"). 1: no lane session.
        self.lanes = max(1, int(lanes))
        self._lane_session = None
        self._lane_pool = None
        transformer = model[0].auto_model
        config = transformer.config
        previous = getattr(config, "_attn_implementation", None)
        transformer.set_attn_implementation("eager")  # plain MatMul/Softmax in the graph, which the optimizer fuses
        def session_on(path: Path, threads: int | None):
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # onnxruntime's pool spins between runs by default: CPU that a server's other threads (fetch, fusion,
            # HTTP) need; off, 32 clients on 2 cores got 86 QPS instead of 70 (docs/performance.md)
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             os.environ.get("FOVEAL_ONNX_SPIN", "0"))
            return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def open_session(path: Path) -> None:  # under the cache's lock: no other process prunes the file meanwhile
            self.session = session_on(path, threads)
            if self.lanes > 1:
                self._lane_session = session_on(path, 1)

        try:
            self.path = export_path(
                model, cache_dir=Path(cache_dir), quantize=quantize, optimize=optimize,
                hidden_size=int(config.hidden_size), num_heads=int(config.num_attention_heads), use=open_session,
            )
        finally:
            if previous is not None:
                try:
                    transformer.set_attn_implementation(previous)
                except (ValueError, KeyError):  # pragma: no cover - a custom backend that cannot be set again
                    pass

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return _run(self.session, input_ids, attention_mask)

    def run_lanes(self, passes: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Each ``(input_ids, attention_mask)`` pass on the single-threaded lane session, up to ``lanes`` at once
        (onnxruntime runs a session from several threads); results in the order of ``passes``. Without lanes, the
        passes run one after the other on the main session."""
        if self._lane_session is None:
            return [self(ids, mask) for ids, mask in passes]
        if self._lane_pool is None:
            with _LANE_POOL_LOCK:
                if self._lane_pool is None:
                    self._lane_pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="foveal-query-lane")
        session = self._lane_session
        return list(self._lane_pool.map(lambda p: _run(session, p[0], p[1]), passes))


_LANE_POOL_LOCK = threading.Lock()


def _run(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    (out,) = session.run(
        None, {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
    )
    return np.asarray(out, dtype=np.float32)
