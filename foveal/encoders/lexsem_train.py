"""``foveal train lexsem``: LexSemBridge contrastive fine-tuning, as the authors' release trains
(Jasaxion/LexSemBridge ``train/train_lexsem.py``, ``train/trainer.py``, ``modeling/LexSemBridgeModeling.py``).

* Query side modulated, passage side plain: ``q~ = normalize(softmax(W w + b) ⊙ e_q)``, ``p~ = normalize(e_p)``.
* InfoNCE ``CE(q~ · p~ᵀ / T)`` at ``T = 0.02`` over the batch's passages: each query has its positive and one hard
  negative (``train_group_size = 2``), so the target of query ``i`` is passage ``2i`` and every other passage of the
  batch is a negative (in-batch). The hard negative is drawn (seeded) from BM25's top ``hard_pool`` minus the judged
  documents (:class:`foveal.training.Bm25Okapi`); the release mines its own. No cross-device negatives (one CPU).
* Everything trains (backbone, ``W``, ``b``, and ``s`` / the sparse head / the MLM head), with AdamW at the release's
  ``lr = 1e-5``. ``e_q`` and ``e_p`` use the encoder's own pooling (mean for MiniLM; the release's default is CLS).
* Lengths: queries 64 tokens, passages 256, as the release's command.

Output (``out``): ``encoder/``, a sentence-transformers folder of the fine-tuned backbone (what the release evaluates:
serve it as ``encoder.model``, plain on both sides), ``lexsem/``, the modulation weights
(:meth:`foveal.encoders.lexsem.LexSemBridge.save`, for :class:`~foveal.encoders.lexsem.LexSemBridgeStage`), and
``train.json``, the run's summary.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from foveal.encoders.lexsem import LexSemBridge, Paradigm


@dataclass
class LexSemTrainOptions:
    encoder: str = "all-MiniLM-L6-v2"
    paradigm: str = Paradigm.slr.value
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-5
    temperature: float = 0.02
    query_max_length: int = 64
    passage_max_length: int = 256
    hard_pool: int = 30
    dev_fraction: float = 0.15
    max_queries: int | None = None
    max_minutes: float = 45.0
    threads: int = 2
    seed: int = 13


def _features(model, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def encode_with_states(model, texts: list[str], max_length: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The pooled embedding (before normalisation) and the transformer's features (ids, mask, token states)."""
    features = model[0](_features(model, texts, max_length))
    pooled = model[1](dict(features))["sentence_embedding"]
    return pooled, features


def train_lexsem(
    data: Path, out: Path, options: LexSemTrainOptions | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Fine-tune on ``data``'s train split, save to ``out``; returns the run's summary (also ``out/train.json``)."""
    from sentence_transformers import SentenceTransformer

    from foveal.encoders.sentence_transformer import resolve_model_path
    from foveal.training import Bm25Okapi, read_train_split

    options = options or LexSemTrainOptions()
    started = time.perf_counter()
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    split = read_train_split(Path(data), options.dev_fraction, options.seed, options.max_queries)
    bm25 = Bm25Okapi(split.corpus)
    triples = []
    for qid in split.train_ids:
        query, positives = split.queries[qid], split.qrels[qid]
        pool = [d for d, _ in bm25.top(query, options.hard_pool) if d not in positives]
        if not pool:  # nothing lexically close: any other document is the negative
            pool = [d for d in split.corpus if d not in positives]
        for positive in sorted(positives):
            if pool:
                triples.append((query, split.text(positive), split.text(rng.choice(pool))))
    log(f"{len(triples)} (query, positive, hard negative) triples from {len(split.train_ids)} queries")

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = SentenceTransformer(str(resolve_model_path(options.encoder)), device="cpu", local_files_only=True)
    bridge = LexSemBridge.for_encoder(model, options.paradigm)
    model.train()
    bridge.train()
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(bridge.parameters()), lr=options.learning_rate)
    loss_function = nn.CrossEntropyLoss()
    losses: list[float] = []
    steps = 0
    stopped_early = False
    for _ in range(options.epochs):
        rng.shuffle(triples)
        total, batches = 0.0, 0
        for begin in range(0, len(triples), options.batch_size):
            if time.perf_counter() - started > options.max_minutes * 60:
                stopped_early = True
                break
            batch = triples[begin : begin + options.batch_size]
            queries = [q for q, _, _ in batch]
            passages = [p for _, positive, negative in batch for p in (positive, negative)]
            pooled, features = encode_with_states(model, queries, options.query_max_length)
            modulated = bridge(pooled, features["input_ids"], features["attention_mask"],
                               features["token_embeddings"])["embedding"]
            passage_pooled, _ = encode_with_states(model, passages, options.passage_max_length)
            passage_vectors = nn.functional.normalize(passage_pooled, dim=-1)
            logits = modulated @ passage_vectors.T / options.temperature
            target = torch.arange(len(batch)) * 2
            loss = loss_function(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
            steps += 1
        losses.append(total / max(1, batches))
        if stopped_early:
            break
    model.eval()
    bridge.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "encoder"))
    bridge.config.encoder = options.encoder
    bridge.save(out / "lexsem")
    record = {
        "data": str(data), "options": asdict(options), "train_queries": len(split.train_ids),
        "triples": len(triples), "steps": steps, "losses": losses, "stopped_early": stopped_early,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "train.json").write_text(json.dumps(record, indent=2))
    return record
