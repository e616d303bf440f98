"""The Pyramid-ERNIE rerank stage ("Pre-trained Language Model based Ranking in Baidu Search", Zou et al., KDD
2021, arXiv 2105.11108) behind the :class:`~foveal.rerank.base.Reranker` seam.

For the first ``window`` candidates it builds a QUITE summary of each document, scores (query + title, summary)
with the pyramid cross-encoder in batches, and ranks them by the final combination
(:mod:`foveal.rerank.combine`) of the normalised first-stage score and the calibrated rerank score, plus any other
stage's score that has a weight. Candidates past the window, and any left unscored when the latency budget ran
out, keep their first-stage order below the rescored ones, and their evidence says why.

Every rescored candidate carries ``evidence["pyramid"]``: the rerank score, the summary, the features and
weights of the combination and the combined score. With a confidence gate (``rerank.gate``, else the model's own;
:func:`foveal.rerank.combine.gate_open`) a query whose best rerank score stays below it keeps its first-stage order
and scores, and every hit's evidence says so (``gated``: the confidence and the gate).

Example::

    >>> stage = PyramidReranker(RerankConfig(model="bench/out/rerank/model"))      # doctest: +SKIP
    >>> SearchPipeline(collection, rerankers=[stage]).search(SearchRequest(query="tides")).hits[0].evidence["pyramid"]
    ... # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from foveal.config import RerankConfig
from foveal.rerank.base import Candidate
from foveal.rerank.combine import combine, confidence, gate_open, minmax

if TYPE_CHECKING:
    from foveal.index.collection import Collection
    from foveal.pipeline.request import SearchRequest
    from foveal.rerank.pyramid import PyramidRanker

NAME = "pyramid"
MODEL_ENV = "FOVEAL_RERANK_MODEL"

_MODELS: dict[tuple, "PyramidRanker"] = {}
_MODELS_LOCK = threading.Lock()


def model_path(config: RerankConfig) -> Path | None:
    """Where the weights are (config, else ``$FOVEAL_RERANK_MODEL``), or None when there are none."""
    raw = config.model or os.environ.get(MODEL_ENV)
    if not raw:
        return None
    from foveal.config import resolve_model_name  # a name of $FOVEAL_MODELS_DIR (what REST callers pick)

    path = Path(resolve_model_name(raw)).expanduser()
    from foveal.rerank.pyramid import CONFIG_FILE, WEIGHTS_FILE

    if (path / CONFIG_FILE).exists() and (path / WEIGHTS_FILE).exists():
        return path
    return None


def load_ranker(path: Path, device: str = "cpu", lower_layers: int | None = None) -> "PyramidRanker":
    """One loaded model per process, path and split."""
    from foveal.encoders.sentence_transformer import pick_device
    from foveal.rerank.pyramid import PyramidRanker

    device = pick_device(device)
    key = (str(path.resolve()), device, lower_layers)
    with _MODELS_LOCK:
        ranker = _MODELS.get(key)
        if ranker is None:
            ranker = _MODELS[key] = PyramidRanker.load(path, device=device, lower_layers=lower_layers)
        return ranker


class PyramidReranker:
    """The rerank stage. ``ranker`` may be given directly (bench, tests); otherwise it loads from the config."""

    name = NAME

    def __init__(self, config: RerankConfig | None = None, ranker: "PyramidRanker | None" = None) -> None:
        self.config = config or RerankConfig()
        self._ranker = ranker
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self._ranker is not None or model_path(self.config) is not None

    @property
    def ranker(self) -> "PyramidRanker | None":
        if self._ranker is None:
            path = model_path(self.config)
            if path is None:
                return None
            self._ranker = load_ranker(path, self.config.device, self.config.lower_layers)
        return self._ranker

    def weights(self) -> dict[str, float]:
        ranker = self.ranker
        return dict(self.config.weights or (ranker.settings.combination if ranker else {}))

    def gate(self) -> float | None:
        """The confidence gate: the config's, else the model's (fitted leave-one-collection-out), else none."""
        if self.config.gate is not None:
            return self.config.gate
        ranker = self.ranker
        return getattr(ranker.settings, "gate", None) if ranker else None

    def rerank(
        self, request: "SearchRequest", candidates: Sequence[Candidate], collection: "Collection"
    ) -> list[Candidate]:
        wanted = request.stage_on("rerank", self.config.enabled)  # stages.rerank, else rerank, else the config
        ranker = self.ranker if wanted else None
        if ranker is None or not candidates:
            return list(candidates)
        started = time.perf_counter()
        candidates = list(candidates)
        first_stage = minmax([c.score for c in candidates])
        window = candidates[: self.config.window]
        documents = collection.store.get_documents(c.doc_key for c in window)
        weights = self.weights()
        scored: list[tuple[float, Candidate]] = []
        unscored: list[tuple[int, Candidate, str]] = []
        batch = self.config.batch_size
        with self._lock:  # torch modules are not re-entrant across threads
            for start in range(0, len(window), batch):
                chunk = window[start : start + batch]
                elapsed_ms = (time.perf_counter() - started) * 1000
                if self.config.budget_ms is not None and start > 0 and elapsed_ms > self.config.budget_ms:
                    unscored += [(start + i, c, "latency budget") for i, c in enumerate(chunk)]
                    continue
                titles, summaries = [], []
                for c in chunk:
                    doc = documents.get(c.doc_key)
                    titles.append(doc.title if doc else "")
                    summaries.append(ranker.summarize(request.query, doc.text if doc else ""))
                scores = ranker.score(request.query, titles, summaries)
                for i, (c, summary, score) in enumerate(zip(chunk, summaries, scores.tolist())):
                    features = {"first_stage": first_stage[start + i], NAME: float(score)}
                    for stage, evidence in c.evidence.items():
                        if stage in weights and stage not in features and isinstance(evidence, dict):
                            features[stage] = float(evidence.get("score", 0.0))
                    combined = combine(features, weights)
                    c.evidence[NAME] = {
                        "score": float(score),
                        "summary": summary,
                        "features": features,
                        "weights": weights,
                        "combined": combined,
                        "first_stage_score": c.score,
                    }
                    scored.append((combined, c))
        gate = self.gate()
        rerank_scores = [c.evidence[NAME]["score"] for _, c in scored]
        if not gate_open(rerank_scores, gate):
            # no candidate looked relevant to the reranker: the query keeps its first-stage order and scores
            closed = {"confidence": round(confidence(rerank_scores), 6), "gate": gate}
            for c in candidates:
                evidence = c.evidence.get(NAME)
                if evidence is not None and "score" in evidence:
                    evidence["gated"] = closed
                else:
                    c.evidence[NAME] = {"gated": closed, "first_stage_score": c.score}
            return candidates
        scored.sort(key=lambda pair: -pair[0])
        out = []
        for combined, c in scored:
            c.score = combined
            out.append(c)
        # the rest keep first-stage order below the rescored block; scores stay monotone
        floor = min((s for s, _ in scored), default=0.0)
        rest = [(i, c, why) for i, c, why in unscored] + [
            (i, c, "outside the rerank window") for i, c in enumerate(candidates[len(window) :], start=len(window))
        ]
        rest.sort(key=lambda item: item[0])
        top_first_stage = first_stage[rest[0][0]] if rest else 0.0
        for i, c, why in rest:
            c.evidence[NAME] = {"skipped": why, "first_stage_score": c.score}
            c.score = floor - 1e-6 - (top_first_stage - first_stage[i])
            out.append(c)
        return out


def default_rerankers(config: RerankConfig) -> list[PyramidReranker]:
    """The stage for an index: present whenever weights can be found, so a request can turn it on."""
    stage = PyramidReranker(config)
    return [stage] if stage.available else []
