"""``foveal train events``: the trainable cross-attention layer of the event stage (:mod:`foveal.events`), trained
with the multi-task idea of "Event-driven Real-time Retrieval in Web Search" (arXiv 2312.00372; METHODS.md
section 3: the loss is InfoNCE of the time-context query against its document plus an auxiliary event task).

Data: a RealTimeQA-style folder (``queries.jsonl`` with ``metadata.date``, ``qrels/test.tsv`` to one evidence passage
per question, ``corpus.jsonl(.gz)`` whose ``news_search_result`` records are the event feed). Only questions dated up
to ``until`` are read (default 2021-12-31, so 2022 stays for reporting), and only events dated at or before each
question. The encoder is frozen; everything is encoded once.

For each question the events are chosen as at query time (window, recency decay, top-k, gate); only questions whose
gate opens train the layer (it never runs otherwise). Loss, per batch:

* **retrieval**: InfoNCE (scale 20, as the same team's EER code) of ``q_t`` against the batch's evidence vectors;
* **event task** (weight ``event_weight``): cross-entropy of the attention logits towards the attended event
  closest to the question's evidence (query-event matching).

The projections start at the identity and the best epoch on a held-out part of the training questions (15%, seeded)
is kept.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from foveal.errors import ConfigError
from foveal.events import DAY, LAYER_CONFIG, LAYER_FILE

#: Characters of a news article used as its event text (as bench/realtimeqa.py).
NEWS_CHARS = 1000


@dataclass
class EventsTrainOptions:
    encoder: str = "all-MiniLM-L6-v2"
    until: str = "2021-12-31"
    top_k: int = 5
    window_days: float = 30.0
    half_life_days: float = 14.0
    gate: float = 0.4
    alpha: float = 0.5
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    event_weight: float = 0.5
    seed: int = 13


def _epoch(date: str) -> float:
    return datetime.fromisoformat(date[:10] + "T00:00:00+00:00").timestamp()


def read_event_data(data: Path, until: str):
    """(questions [(id, text, date)], evidence {question id: text}, events [(title + text, timestamp)])."""
    data = Path(data)
    corpus_file = data / "corpus.jsonl.gz" if (data / "corpus.jsonl.gz").exists() else data / "corpus.jsonl"
    for needed in (corpus_file, data / "queries.jsonl", data / "qrels" / "test.tsv"):
        if not needed.exists():
            raise ConfigError(f"{data} has no {needed.name} (a RealTimeQA-style folder is needed)")
    from foveal.evaluation import read_qrels

    qrels = read_qrels(data / "qrels" / "test.tsv")
    opener = gzip.open if corpus_file.suffix == ".gz" else open
    docs, events = {}, []
    with opener(corpus_file, "rt") as handle:
        for line in handle:
            raw = json.loads(line)
            meta = raw.get("metadata") or {}
            text = f"{raw.get('title') or ''}\n{raw.get('text') or ''}".strip()
            if meta.get("kind") == "news_search_result" and meta.get("date", "9999") <= until:
                title = raw.get("title") or ""
                body = (raw.get("text") or "")[:NEWS_CHARS]
                events.append((f"{title}\n{body}" if title and body else title or body, _epoch(meta["date"])))
            else:
                docs[raw["_id"]] = text
    questions, evidence = [], {}
    with open(data / "queries.jsonl") as handle:
        for line in handle:
            raw = json.loads(line)
            date = (raw.get("metadata") or {}).get("date")
            relevant = [d for d, r in qrels.get(raw["_id"], {}).items() if r > 0 and d in docs]
            if date and date <= until and relevant:
                questions.append((raw["_id"], raw["text"], date))
                evidence[raw["_id"]] = docs[relevant[0]]
    if not questions:
        raise ConfigError(f"{data}: no judged question dated up to {until}")
    return questions, evidence, events


def train_events(data: Path, out: Path, options: EventsTrainOptions,
                 log: Callable[[str], None] = print) -> dict:
    import torch

    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder

    started = time.time()
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    questions, evidence, events = read_event_data(data, options.until)
    encoder = get_encoder(EncoderConfig(model=options.encoder))
    log(f"encoding {len(questions)} questions, {len(evidence)} evidence passages, {len(events)} events")
    q_vec = encoder.encode_queries([t for _, t, _ in questions]).vectors
    d_vec = encoder.encode_queries([evidence[q] for q, _, _ in questions]).vectors
    e_vec = encoder.encode_queries([t for t, _ in events]).vectors if events else np.zeros((0, encoder.dimension))
    e_time = np.asarray([s for _, s in events], dtype=np.float64)

    examples = []
    for row, (qid, _, date) in enumerate(questions):
        now = _epoch(date)
        mask = (e_time <= now) & (e_time >= now - options.window_days * DAY)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        cosine = e_vec[idx] @ q_vec[row]
        recency = np.exp(-math.log(2) * (now - e_time[idx]) / (options.half_life_days * DAY))
        top = np.argsort(-(cosine * recency), kind="stable")[: options.top_k]
        if cosine[top].max() < options.gate:
            continue
        chosen = idx[top]
        padded = np.zeros((options.top_k, e_vec.shape[1]), np.float32)
        rec = np.full(options.top_k, 1e-12)
        padded[: len(chosen)] = e_vec[chosen]
        rec[: len(chosen)] = recency[top]
        target = int(np.argmax(e_vec[chosen] @ d_vec[row]))
        examples.append((row, padded, rec, target))
    if len(examples) < 8:
        raise ConfigError(f"only {len(examples)} training questions open the gate (gate {options.gate}); lower it")
    rng.shuffle(examples)
    n_dev = max(1, int(round(0.15 * len(examples))))
    dev, train = examples[:n_dev], examples[n_dev:]
    log(f"{len(examples)} questions open the gate: {len(train)} train, {len(dev)} held out")

    d = e_vec.shape[1]
    eye = torch.eye(d)
    params = {name: torch.nn.Parameter(eye.clone()) for name in ("wq", "wk", "wv", "wo")}
    params["alpha"] = torch.nn.Parameter(torch.tensor(float(options.alpha)))
    params["ln_gain"] = torch.nn.Parameter(torch.ones(d))
    params["ln_bias"] = torch.nn.Parameter(torch.zeros(d))
    optimizer = torch.optim.Adam(params.values(), lr=options.learning_rate)
    Q, D = torch.from_numpy(q_vec), torch.from_numpy(d_vec)

    def forward(batch):
        rows = torch.tensor([r for r, _, _, _ in batch])
        q = Q[rows]
        E = torch.from_numpy(np.stack([e for _, e, _, _ in batch]))
        rec = torch.from_numpy(np.stack([r for _, _, r, _ in batch])).float()
        logits = torch.einsum("bkd,bd->bk", E @ params["wk"].T, q @ params["wq"].T) / math.sqrt(d) + rec.log()
        weights = torch.softmax(logits, dim=1)
        context = torch.einsum("bk,bkd->bd", weights, E @ params["wv"].T) @ params["wo"].T
        z = q + params["alpha"] * context
        z = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + 1e-5)
        z = z * params["ln_gain"] + params["ln_bias"]
        q_t = torch.nn.functional.normalize(z, dim=1)
        return q_t, logits, D[rows], torch.tensor([t for _, _, _, t in batch])

    def losses(batch):
        q_t, logits, positives, targets = forward(batch)
        retrieval = torch.nn.functional.cross_entropy(20.0 * q_t @ positives.T, torch.arange(len(batch)))
        event = torch.nn.functional.cross_entropy(logits, targets)
        return retrieval, event, q_t, positives

    def dev_score():
        with torch.no_grad():
            retrieval, event, q_t, positives = losses(dev)
            ranks = (q_t @ positives.T).argsort(dim=1, descending=True)
            hit = (ranks[:, :1] == torch.arange(len(dev))[:, None]).float().mean().item()
        return float(retrieval + options.event_weight * event), hit

    best_loss, start_hit = dev_score()
    best = {k: v.detach().clone() for k, v in params.items()}
    best_epoch, curve = 0, [round(best_loss, 4)]
    for epoch in range(1, options.epochs + 1):
        rng.shuffle(train)
        for start in range(0, len(train), options.batch_size):
            batch = train[start:start + options.batch_size]
            if len(batch) < 2:
                continue
            retrieval, event, _, _ = losses(batch)
            loss = retrieval + options.event_weight * event
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        dev_loss, _ = dev_score()
        curve.append(round(dev_loss, 4))
        if dev_loss < best_loss:
            best_loss, best_epoch = dev_loss, epoch
            best = {k: v.detach().clone() for k, v in params.items()}
        log(f"epoch {epoch}: held-out loss {dev_loss:.4f}")
    for k, v in best.items():
        params[k].data.copy_(v)
    _, end_hit = dev_score()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / LAYER_FILE, **{k: v.detach().numpy().astype(np.float32) for k, v in best.items()})
    record = {"options": asdict(options), "questions": len(questions), "events": len(events),
              "gate_open": len(examples), "best_epoch": best_epoch, "dev_loss_curve": curve,
              "dev_top1_in_batch_before": round(start_hit, 4), "dev_top1_in_batch_after": round(end_hit, 4),
              "seconds": round(time.time() - started, 1)}
    (out / LAYER_CONFIG).write_text(json.dumps(record, indent=2))
    return record
