"""What the research stages' training commands share: a BEIR folder's train split, a seeded held-out part of its train
queries, and BM25 hard negatives.

The negatives come from an in-memory BM25 Okapi (``k1 = 1.5, b = 0.75``, lower-cased word tokens), the same family
as the ``rank_bm25.BM25Okapi`` the Paraformer authors mine with, so training needs no foveal index and never encodes
the corpus. It is built over the whole corpus of the folder; only train qrels and train queries are read.

Example::

    >>> split = read_train_split(Path("../shared/data/scifact"))                      # doctest: +SKIP
    >>> Bm25Okapi(split.corpus).top("vitamin d deficiency", 10)                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foveal.errors import ConfigError

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class TrainSplit:
    """A BEIR folder's train side: corpus (id -> (title, text)), train queries, train qrels, and the seeded split of
    the queries into a training part and a held-out part (for fitting score combinations, never test)."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    train_ids: list[str]
    dev_ids: list[str]

    def text(self, doc_id: str) -> str:
        """Title and text as the index stores them (``title + "\\n" + text``)."""
        title, text = self.corpus[doc_id]
        return f"{title}\n{text}" if title else text


def read_train_split(
    data: Path, dev_fraction: float = 0.15, seed: int = 13, max_queries: int | None = None
) -> TrainSplit:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/train.tsv`` of ``data``; keep train queries that have a
    relevant document in the corpus (at most ``max_queries``, a seeded sample)."""
    from foveal.evaluation import read_qrels, read_queries

    data = Path(data)
    for needed in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        if not (data / needed).exists():
            raise ConfigError(f"{data} has no {needed} (a BEIR folder with a train split is needed)")
    corpus: dict[str, tuple[str, str]] = {}
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                corpus[str(record["_id"])] = (record.get("title") or "", record.get("text") or "")
    qrels = {q: {d: r for d, r in docs.items() if r > 0 and d in corpus}
             for q, docs in read_qrels(data / "qrels" / "train.tsv").items()}
    queries = {q: t for q, t in read_queries(data / "queries.jsonl").items() if qrels.get(q)}
    if not queries:
        raise ConfigError(f"{data}: no train query has a relevant document in the corpus")
    ids = sorted(queries)
    rng = random.Random(seed)
    rng.shuffle(ids)
    if max_queries is not None:
        ids = ids[:max_queries]
    n_dev = int(round(len(ids) * dev_fraction)) if len(ids) > 1 else 0
    return TrainSplit(corpus, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids}, ids[n_dev:], ids[:n_dev])


class Bm25Okapi:
    """BM25 Okapi over a corpus held in memory: ``idf = ln((N − n + 0.5) / (n + 0.5) + 1)``."""

    def __init__(self, corpus: dict[str, tuple[str, str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.ids = list(corpus)
        self.k1, self.b = k1, b
        self.postings: dict[str, list[tuple[int, int]]] = {}
        lengths = []
        for row, doc_id in enumerate(self.ids):
            title, text = corpus[doc_id]
            tokens = words(f"{title} {text}")
            lengths.append(len(tokens))
            for term, count in Counter(tokens).items():
                self.postings.setdefault(term, []).append((row, count))
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.average = float(self.lengths.mean()) if len(lengths) else 0.0
        n = len(self.ids)
        self.idf = {t: math.log((n - len(p) + 0.5) / (len(p) + 0.5) + 1) for t, p in self.postings.items()}

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(len(self.ids))
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.average, 1e-9))
        for term in set(words(query)):
            for row, count in self.postings.get(term, ()):
                out[row] += self.idf[term] * count * (self.k1 + 1) / (count + norm[row])
        return out

    def top(self, query: str, k: int) -> list[tuple[str, float]]:
        """The best ``k`` (doc id, score), best first; ties broken by corpus order; zero scores left out."""
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[i], float(scores[i])) for i in order if scores[i] > 0]


def save_checkpoint(module, settings, path: Path | str, config_file: str, weights_file: str) -> Path:
    """Write a small torch head as a checkpoint folder: its settings (a dataclass) as JSON and its weights as
    safetensors. The research stages' heads (Paraformer, X-Pool) share this layout."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path / weights_file))
    (path / config_file).write_text(json.dumps(asdict(settings), indent=2))
    return path


def load_checkpoint(build, read_settings, path: Path | str, config_file: str, weights_file: str, what: str,
                    device: str = "cpu"):
    """Read a folder written by :func:`save_checkpoint`: ``build(read_settings(config dict))`` makes the module, the
    weights are loaded into it, and it is returned in eval mode on ``device``. A folder that is not such a checkpoint,
    or weights that do not fit the settings, is a :class:`ConfigError` naming ``what`` it should have been."""
    path = Path(path)
    if not (path / config_file).exists() or not (path / weights_file).exists():
        raise ConfigError(f"{path} is not a {what} checkpoint: {config_file} and {weights_file} are needed")
    from safetensors.torch import load_file

    module = build(read_settings(json.loads((path / config_file).read_text())))
    try:
        module.load_state_dict(load_file(str(path / weights_file)))
    except RuntimeError as exc:
        raise ConfigError(f"{path}: the weights do not fit the config ({exc})") from None
    return module.to(device).eval()
