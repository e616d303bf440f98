"""A tiny randomly initialised pyramid ranker (the real tokenizer, a 4-layer BERT of width 32), built once."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def _tiny_ranker():
    from transformers import AutoTokenizer, BertConfig

    from foveal.encoders.sentence_transformer import resolve_model_path
    from foveal.rerank.pyramid import PyramidRanker, PyramidSettings

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path("all-MiniLM-L6-v2")), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=256)
    settings = PyramidSettings(lower_layers=2, max_query_title_tokens=32, summary_tokens=24)
    return PyramidRanker.from_config(config, tokenizer, settings, seed=3)


@pytest.fixture()
def tiny_ranker(_tiny_ranker):
    """A fresh copy per test, so tests may change its split or settings."""
    return copy.deepcopy(_tiny_ranker)
