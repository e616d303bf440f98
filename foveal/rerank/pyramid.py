"""Pyramid cross-encoder, after Pyramid-ERNIE ("Pre-trained Language Model based Ranking in Baidu Search", Zou et
al., KDD 2021, arXiv 2105.11108).

A BERT of ``L`` layers scores a (query, document) pair. Part A is ``[CLS] query [SEP] title [SEP]`` and part B is
``summary [SEP]`` (the QUITE summary, :mod:`foveal.rerank.quite`). The lower ``L_low`` layers run on A and on B
*apart* (each attends only within itself); the upper ``L - L_low`` layers run on the concatenation with full
attention, and a linear head on the final ``[CLS]`` gives the logit; the score is its sigmoid.

B gets ``token_type_ids = 1`` and ``position_ids`` that continue after A's real length, so the concatenation is
exactly the input of a plain cross-encoder: with ``L_low = 0`` the model *is* that cross-encoder, and with
``L_low = L`` the score never sees B. Lower-layer self-attention costs ``n_a^2 + n_b^2`` instead of
``(n_a + n_b)^2``; the feed-forward blocks cost the same either way.

A saved model is a folder: ``pyramid.json`` (split, lengths, combination weights), ``model.safetensors`` (the
encoder and the head) and the tokenizer files.

Example::

    >>> model = PyramidRanker.from_base("all-MiniLM-L6-v2", lower_layers=4)                     # doctest: +SKIP
    >>> model.score("moon tides", ["Tides"], ["The moon pulls the sea."])                          # doctest: +SKIP
    array([0.52], dtype=float32)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from torch import nn

from foveal.errors import ConfigError

CONFIG_FILE = "pyramid.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class PyramidSettings:
    """What a saved pyramid model was trained with; written beside its weights."""

    lower_layers: int = 4
    #: Tokens of part A (``[CLS] query [SEP] title [SEP]``), special tokens included.
    max_query_title_tokens: int = 64
    #: QUITE budget: word pieces of the summary (its closing ``[SEP]`` not counted).
    summary_tokens: int = 128
    #: QUITE decay of a covered query word's weight.
    decay: float = 0.5
    #: Final combination: feature -> weight (see :mod:`foveal.rerank.combine`).
    combination: dict[str, float] = field(default_factory=lambda: {"first_stage": 0.5, "pyramid": 0.5})
    #: Rerank a query only when its best calibrated score reaches this (:func:`foveal.rerank.combine.gate_open`);
    #: None: every query. Set with the weights by the leave-one-collection-out fit (``bench/robust_rerank.py``).
    gate: float | None = None
    base_model: str = "all-MiniLM-L6-v2"
    #: Facts about the training run (data, steps, wall time), for the record.
    training: dict = field(default_factory=dict)


class PyramidCrossEncoder(nn.Module):
    """The split BERT plus its scoring head. ``forward`` takes the two parts already tokenized and padded."""

    def __init__(self, bert, lower_layers: int) -> None:
        super().__init__()
        self.bert = bert
        self.num_layers = len(bert.encoder.layer)
        self.head = nn.Linear(bert.config.hidden_size, 1)
        self.dropout = nn.Dropout(bert.config.hidden_dropout_prob)
        self.lower_layers = lower_layers

    @property
    def lower_layers(self) -> int:
        return self._lower

    @lower_layers.setter
    def lower_layers(self, value: int) -> None:
        if not 0 <= value <= self.num_layers:
            raise ConfigError(f"lower_layers must be in 0..{self.num_layers}, got {value}")
        self._lower = int(value)

    def _additive(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, N) keep-mask -> (B, 1, 1, N) additive mask for BertLayer."""
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _run(self, hidden: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        additive = self._additive(mask, hidden.dtype)
        for layer in layers:
            hidden = layer(hidden, additive)
        return hidden

    def forward(
        self, a_ids: torch.Tensor, a_mask: torch.Tensor, b_ids: torch.Tensor, b_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits, shape (B,). ``a_*`` and ``b_*`` are (B, N_a) and (B, N_b), right-padded."""
        embeddings = self.bert.embeddings
        n_a, n_b = a_ids.shape[1], b_ids.shape[1]
        device = a_ids.device
        a_positions = torch.arange(n_a, device=device)[None, :].expand(a_ids.shape[0], -1)
        a_lengths = a_mask.sum(dim=1, keepdim=True)
        b_positions = a_lengths + torch.arange(n_b, device=device)[None, :]
        b_positions = b_positions.clamp(max=self.bert.config.max_position_embeddings - 1)
        hidden_a = embeddings(input_ids=a_ids, token_type_ids=torch.zeros_like(a_ids), position_ids=a_positions)
        hidden_b = embeddings(input_ids=b_ids, token_type_ids=torch.ones_like(b_ids), position_ids=b_positions)
        layers = self.bert.encoder.layer
        lower, upper = layers[: self._lower], layers[self._lower :]
        if lower:
            hidden_a = self._run(hidden_a, a_mask, lower)
            hidden_b = self._run(hidden_b, b_mask, lower)
        if upper:
            joint = self._run(torch.cat([hidden_a, hidden_b], dim=1), torch.cat([a_mask, b_mask], dim=1), upper)
            cls = joint[:, 0]
        else:
            cls = hidden_a[:, 0]
        return self.head(self.dropout(cls)).squeeze(-1)


class PyramidRanker:
    """Tokenization, QUITE summaries, batched scoring, save and load around :class:`PyramidCrossEncoder`."""

    def __init__(self, model: PyramidCrossEncoder, tokenizer, settings: PyramidSettings, device: str = "cpu"):
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.model.eval()

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base: str = "all-MiniLM-L6-v2", settings: PyramidSettings | None = None, **overrides):
        """A fresh ranker on a pre-trained BERT (the packaged MiniLM by default); the head is random."""
        from transformers import AutoTokenizer, BertModel

        from foveal.encoders.sentence_transformer import resolve_model_path

        settings = settings or PyramidSettings(base_model=base)
        for key, value in overrides.items():
            setattr(settings, key, value)
        path = resolve_model_path(base)
        bert = BertModel.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa",
                                         add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        torch.manual_seed(0)
        return cls(PyramidCrossEncoder(bert, settings.lower_layers), tokenizer, settings)

    @classmethod
    def from_config(cls, bert_config, tokenizer, settings: PyramidSettings, seed: int = 0) -> "PyramidRanker":
        """A randomly initialised ranker (tests)."""
        from transformers import BertModel

        torch.manual_seed(seed)
        bert_config._attn_implementation = "sdpa"
        bert = BertModel(bert_config, add_pooling_layer=False)
        return cls(PyramidCrossEncoder(bert, settings.lower_layers), tokenizer, settings)

    def save(self, path: Path | str) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.bert.config.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.settings), indent=2))
        return path

    @classmethod
    def load(cls, path: Path | str, device: str = "cpu", lower_layers: int | None = None) -> "PyramidRanker":
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, BertConfig, BertModel

        path = Path(path).expanduser()
        if not (path / CONFIG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
            raise ConfigError(f"no pyramid rerank model in {path} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
        settings = PyramidSettings(**json.loads((path / CONFIG_FILE).read_text()))
        if lower_layers is not None:
            settings.lower_layers = lower_layers
        bert_config = BertConfig.from_pretrained(str(path), local_files_only=True)
        bert_config._attn_implementation = "sdpa"
        bert = BertModel(bert_config, add_pooling_layer=False)
        model = PyramidCrossEncoder(bert, settings.lower_layers)
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(model, tokenizer, settings, device)

    # -- inputs --------------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def summarize(self, query: str, text: str) -> str:
        from foveal.rerank.quite import quite

        return quite(query, text, self.settings.summary_tokens, self.count_tokens, decay=self.settings.decay).text

    def encode(self, query: str | Sequence[str], titles: Sequence[str], summaries: Sequence[str]):
        """Tensors for :meth:`PyramidCrossEncoder.forward`: A = [CLS] q [SEP] title [SEP], B = summary [SEP]."""
        queries = [query] * len(titles) if isinstance(query, str) else list(query)
        tok = self.tokenizer
        a = tok(queries, list(titles), truncation="longest_first", max_length=self.settings.max_query_title_tokens,
                padding=True, return_tensors="pt")
        b_ids = [ids[: self.settings.summary_tokens] + [tok.sep_token_id]
                 for ids in tok(list(summaries), add_special_tokens=False)["input_ids"]]
        width = max(len(ids) for ids in b_ids)
        b = torch.full((len(b_ids), width), tok.pad_token_id or 0, dtype=torch.long)
        b_mask = torch.zeros((len(b_ids), width), dtype=torch.long)
        for row, ids in enumerate(b_ids):
            b[row, : len(ids)] = torch.tensor(ids)
            b_mask[row, : len(ids)] = 1
        return (a["input_ids"].to(self.device), a["attention_mask"].to(self.device), b.to(self.device),
                b_mask.to(self.device))

    # -- scoring -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, query: str | Sequence[str], titles: Sequence[str], summaries: Sequence[str]) -> np.ndarray:
        if not titles:
            return np.zeros(0, dtype=np.float32)
        self.model.eval()
        return self.model(*self.encode(query, titles, summaries)).float().cpu().numpy()

    def score(self, query: str, titles: Sequence[str], summaries: Sequence[str]) -> np.ndarray:
        """Calibrated relevance in (0, 1): the sigmoid of the head's logit."""
        return 1.0 / (1.0 + np.exp(-self.logits(query, titles, summaries)))
