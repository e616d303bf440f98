"""Training the Pyramid-ERNIE reranker ("Pre-trained Language Model based Ranking in Baidu Search", Zou et al., KDD
2021, arXiv 2105.11108) on a BEIR data set's train qrels, with hard negatives from foveal's own first stage.

* Candidates: hybrid search (k = 100) over the full index for every train query, cached as JSON.
* Train queries are split (seeded) into a training part and a held-out part (``dev_fraction``). Each training
  step takes ``batch_queries`` queries; for each, one judged-relevant document and ``negatives`` documents drawn
  from the first stage's top ``hard_pool`` that are not judged relevant.
* Objective, the paper's human-anchored fine-tuning on the calibrated score ``f = sigmoid(logit)``:
  ``pairwise = mean max(0, f(q, d-) - f(q, d+) + tau)`` plus ``lambda * pointwise`` with
  ``pointwise = mean max((f - (y/5 + 0.1))^2 - eps, 0)``; grades are binary here, so a relevant document is
  anchored at grade 4 (0.9) and a negative at grade 0 (0.1). The pointwise term keeps scores comparable across
  queries, which is what lets :mod:`foveal.rerank.combine` mix them with the first stage.
* The combination weights are fitted on the held-out train queries (never test) and saved with the model.

The word-embedding matrix stays frozen (it is half the parameters and the optimizer's most expensive part on a CPU).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from foveal.config import Pipeline
from foveal.errors import ConfigError


@dataclass
class TrainOptions:
    lower_layers: int = 4
    max_query_title_tokens: int = 64
    summary_tokens: int = 96
    negatives: int = 3
    hard_pool: int = 30
    batch_queries: int = 4
    epochs: int = 3
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    margin: float = 0.1
    pointwise_weight: float = 1.0
    pointwise_epsilon: float = 0.01
    dev_fraction: float = 0.15
    dev_window: int = 20
    max_minutes: float = 25.0
    threads: int = 2
    seed: int = 13


def _corpus(folder: Path) -> dict[str, tuple[str, str]]:
    path = folder / "corpus.jsonl"
    if not path.exists():
        raise ConfigError(f"no corpus.jsonl in {folder}")
    docs = {}
    with open(path) as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                docs[str(record["_id"])] = (record.get("title") or "", record.get("text") or "")
    return docs


def held_out_split(query_ids, dev_fraction: float = TrainOptions.dev_fraction,
                   seed: int = TrainOptions.seed) -> tuple[list[str], list[str]]:
    """(held-out ids, training ids): the seeded split of the train queries that training uses. The held-out part
    is never trained on, so the combination and the confidence gate may be fitted on it."""
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    n_dev = int(round(len(ids) * dev_fraction))
    return ids[:n_dev], ids[n_dev:]


def mine_candidates(engine, index: str, queries: dict[str, str], cache: Path | None, k: int = 100):
    """qid -> [(doc id, first-stage score)] from hybrid search, best first; cached as JSON."""
    if cache is not None and cache.exists():
        cached = json.loads(cache.read_text())
        if set(queries) <= set(cached):
            return {q: [tuple(x) for x in cached[q]] for q in queries}
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline

    searcher = SearchPipeline(engine.get(index), rerankers=[])
    ids = list(queries)
    out = {}
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        asked = [q for q in chunk if (queries[q] or "").strip()]  # a blank query retrieves nothing (SearchRequest refuses it)
        out.update({q: [] for q in chunk if not (queries[q] or "").strip()})
        requests = [SearchRequest(query=queries[q], k=k, pipeline=Pipeline.hybrid) for q in asked]
        for qid, response in zip(asked, searcher.search_many(requests) if requests else []):
            out[qid] = [(hit.id, hit.score) for hit in response.hits]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out))
    return out


def human_anchored_loss(logits: torch.Tensor, options: TrainOptions) -> tuple[torch.Tensor, dict[str, float]]:
    """``logits``: (G, 1 + n), column 0 the relevant document. Pairwise hinge plus the anchored pointwise term."""
    f = torch.sigmoid(logits)
    pairwise = torch.relu(f[:, 1:] - f[:, :1] + options.margin).mean()
    targets = torch.full_like(f, 0.1)
    targets[:, 0] = 0.9
    pointwise = torch.relu((f - targets) ** 2 - options.pointwise_epsilon).mean()
    loss = pairwise + options.pointwise_weight * pointwise
    return loss, {"pairwise": float(pairwise.detach()), "pointwise": float(pointwise.detach())}


@dataclass
class TrainQuery:
    """One training query: its text, the (title, text) of its judged-relevant documents, and its hard-negative pool
    (documents of the first stage's top ``hard_pool`` not judged relevant), best first."""

    text: str
    positives: list[tuple[str, str]]
    pool: list[tuple[str, str]]

    @classmethod
    def judged(cls, text: str, judged: dict[str, int], ranked, corpus: dict[str, tuple[str, str]],
               hard_pool: int) -> "TrainQuery":
        """From a query's judgments (doc id -> grade) and its first-stage ranking ([(doc id, score)], best
        first): the relevant documents, and the first ``hard_pool`` ranked that are not judged."""
        return cls(text, [corpus[d] for d, g in judged.items() if g > 0 and d in corpus],
                   [corpus[d] for d, _ in ranked[:hard_pool] if d not in judged and d in corpus])


def fit_pyramid(examples: list[TrainQuery], options: TrainOptions | None = None,
                log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)):
    """Fine-tune a Pyramid ranker from the base model on ``examples`` with the human-anchored loss; returns the
    ranker (in eval mode; its ``settings.combination`` untouched) and ``{"steps", "stopped_early",
    "train_seconds"}``. Each step takes ``batch_queries`` examples, each one relevant document and ``negatives``
    drawn from its pool (an example with no relevant document or too small a pool is skipped when its turn comes,
    as the single-collection training always did)."""
    from foveal.rerank.pyramid import PyramidRanker, PyramidSettings

    options = options or TrainOptions()
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    settings = PyramidSettings(
        lower_layers=options.lower_layers,
        max_query_title_tokens=options.max_query_title_tokens,
        summary_tokens=options.summary_tokens,
    )
    ranker = PyramidRanker.from_base(settings.base_model, settings)
    model = ranker.model
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": options.learning_rate},
         {"params": model.head.parameters(), "lr": options.head_learning_rate}],
        weight_decay=0.01,
    )
    steps_per_epoch = (len(examples) + options.batch_queries - 1) // options.batch_queries
    total_steps = max(1, steps_per_epoch * options.epochs)
    warmup = max(1, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )
    summaries: dict[tuple[int, str, int], str] = {}

    def summary(i: int, side: str, j: int) -> str:
        key = (i, side, j)
        if key not in summaries:
            docs = examples[i].positives if side == "p" else examples[i].pool
            summaries[key] = ranker.summarize(examples[i].text, docs[j][1])
        return summaries[key]

    rng = random.Random(options.seed)
    step = 0
    stopped_early = False
    model.train()
    train_started = time.perf_counter()
    for epoch in range(options.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), options.batch_queries):
            if (time.perf_counter() - train_started) / 60 > options.max_minutes:
                stopped_early = True
                break
            batch_q, titles, texts = [], [], []
            for i in order[start : start + options.batch_queries]:
                example = examples[i]
                if not example.positives or len(example.pool) < options.negatives:
                    continue
                group = [("p", rng.randrange(len(example.positives)))]
                group += [("n", j) for j in rng.sample(range(len(example.pool)), options.negatives)]
                for side, j in group:
                    docs = example.positives if side == "p" else example.pool
                    batch_q.append(example.text)
                    titles.append(docs[j][0])
                    texts.append(summary(i, side, j))
            if not batch_q:
                continue
            logits = model(*ranker.encode(batch_q, titles, texts)).view(-1, 1 + options.negatives)
            loss, parts = human_anchored_loss(logits, options)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 10 == 0 or step == 1:
                log(f"epoch {epoch + 1} step {step}/{total_steps} loss {float(loss.detach()):.4f} "
                    f"(pairwise {parts['pairwise']:.4f}, pointwise {parts['pointwise']:.4f}) "
                    f"{time.perf_counter() - train_started:.0f} s")
        if stopped_early:
            log(f"stopped at the {options.max_minutes} min cap after {step} steps")
            break
    model.eval()
    return ranker, {"steps": step, "stopped_early": stopped_early,
                    "train_seconds": time.perf_counter() - train_started}


def train_rerank(
    data: Path,
    out: Path,
    home: Path | None = None,
    index: str = "scifact",
    options: TrainOptions | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
    cache_dir: Path | None = None,
    also: Sequence[tuple[Path, str]] = (),
    also_split: str = "train",
) -> dict:
    """Train, fit the combination, save to ``out``; returns a summary of the run. The mined candidates are cached
    in ``cache_dir`` (default: beside ``out``); ``foveal train rerank`` passes a folder outside the model folder,
    since ``out`` is then a temporary folder in the models directory (:func:`foveal.models_dir.register_model`).

    ``also``: more (BEIR folder, index holding its corpus) pairs whose judged queries (``qrels/<also_split>.tsv``)
    train too, every one of them: a model trained on several collections (docs/robust.md: the union of the
    development judgments hurts no held-out collection by more than 0.005 where one trained on SciFact alone lowered
    all of them). The combination is still fitted on ``data``'s held-out train queries."""
    from foveal.engine import Engine
    from foveal.evaluation import evaluate, read_qrels, read_queries
    from foveal.rerank.combine import fit_two_weights, minmax

    options = options or TrainOptions()
    started = time.perf_counter()
    random.seed(options.seed)
    np.random.seed(options.seed)
    data = Path(data)
    qrels_path = data / "qrels" / "train.tsv"
    if not qrels_path.exists():
        raise ConfigError(f"no train qrels at {qrels_path}")
    qrels = read_qrels(qrels_path)
    queries = {q: t for q, t in read_queries(data / "queries.jsonl").items() if q in qrels}
    corpus = _corpus(data)
    engine = Engine(home)
    if not engine.exists(index):
        raise ConfigError(f"index {index!r} does not exist under {engine.home}; ingest {data}/corpus.jsonl first")
    cache_dir = Path(cache_dir if cache_dir is not None else Path(out).parent)
    cache = cache_dir / f"candidates-{index}-train.json"
    candidates = mine_candidates(engine, index, queries, cache)
    log(f"candidates for {len(candidates)} train queries ({time.perf_counter() - started:.0f} s)")

    dev_ids, train_ids = held_out_split(queries, options.dev_fraction, options.seed)
    examples = [TrainQuery.judged(queries[q], qrels[q], candidates[q], corpus, options.hard_pool) for q in train_ids]
    extra: dict[str, int] = {}
    for folder, other in also:
        folder = Path(folder)
        path = folder / "qrels" / f"{also_split}.tsv"
        if not path.exists():
            raise ConfigError(f"no {also_split} qrels at {path}")
        if not engine.exists(other):
            raise ConfigError(f"index {other!r} does not exist under {engine.home}; ingest {folder}/corpus.jsonl "
                              "first")
        judged = read_qrels(path)
        texts = {q: t for q, t in read_queries(folder / "queries.jsonl").items() if q in judged}
        docs = _corpus(folder)
        mined = mine_candidates(engine, other, texts, cache_dir / f"candidates-{other}-{also_split}.json")
        examples += [TrainQuery.judged(texts[q], judged[q], mined[q], docs, options.hard_pool) for q in sorted(texts)]
        extra[str(folder)] = len(texts)
        log(f"also {folder} ({other}, {also_split}): {len(texts)} judged queries")
    ranker, fitted = fit_pyramid(examples, options, log)
    step, stopped_early, train_seconds = fitted["steps"], fitted["stopped_early"], fitted["train_seconds"]
    settings = ranker.settings

    def summary(qid: str, doc: str) -> str:
        return ranker.summarize(queries[qid], corpus.get(doc, ("", ""))[1])

    # fit the combination on the held-out train queries
    features: dict[str, dict[str, dict[str, float]]] = {}
    dev_qrels = {q: qrels[q] for q in dev_ids}
    for qid in dev_ids:
        ranked = candidates[qid]
        normalised = minmax([s for _, s in ranked])
        top = ranked[: options.dev_window]
        scores = ranker.score(queries[qid], [corpus.get(d, ("", ""))[0] for d, _ in top],
                              [summary(qid, d) for d, _ in top])
        features[qid] = {d: {"first_stage": normalised[i], "pyramid": float(scores[i])} for i, (d, _) in
                         enumerate(top)}
    weights, curve = fit_two_weights(features, dev_qrels)
    first_stage_only = evaluate(dev_qrels, {q: {d: f["first_stage"] for d, f in docs.items()}
                                            for q, docs in features.items()})["ndcg@10"]
    settings.combination = weights
    record = {
        "data": str(data),
        "index": index,
        "train_queries": len(train_ids) + sum(extra.values()),
        "also": {"split": also_split, "queries": extra} if extra else None,
        "dev_queries": len(dev_ids),
        "steps": step,
        "stopped_early": stopped_early,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "dev_ndcg10_first_stage": round(first_stage_only, 4),
        "dev_ndcg10_curve": [(a, round(v, 4)) for a, v in curve],
        "options": dict(options.__dict__),
    }
    try:
        import os

        record["load_average"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    settings.training = record
    ranker.save(out)
    log(f"weights {weights}; dev nDCG@10 first stage {first_stage_only:.4f}, "
        f"combined {max(v for _, v in curve):.4f}; saved to {out} ({record['total_seconds']} s)")
    return record
