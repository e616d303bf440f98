"""Sentence vectors for Paraformer (and X-Pool): the cost of the two ways to make them, beside the passage pass.

    .venv/bin/python bench/sentence_vectors.py [--docs 200] [--max-sentences 64] [--threads 2]

On the first ``--docs`` SciFact documents (corpus order), each timed on its own, one after the other:

* ``passages``: :meth:`encode_documents`, what ingest does today;
* ``pooled``: :meth:`encode_sentence_spans`, sentence spans mean-pooled from the passage forward pass. It runs its
  own passage pass here; folded into ingest it would share the one pass, so ``pooled - passages`` bounds its
  ingest overhead from above;
* ``faithful``: every sentence encoded on its own (the paper's mode), :func:`encode_sentence_groups`.

Also: sentences per document, float16 bytes per document, and the mean cosine between the two modes' vectors of the
same sentence. Quality (which mode reranks better) needs trained heads: that is ``bench/paraformer.py``'s job (to
come). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA as DATA_ROOT  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from foveal.config import EncoderConfig  # noqa: E402
from foveal.encoders.sentence_transformer import get_encoder  # noqa: E402
from foveal.rerank.paraformer import encode_sentence_groups  # noqa: E402

DATA = DATA_ROOT / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--max-sentences", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = []
    with open(args.data / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            title, text = record.get("title") or "", record.get("text") or ""
            texts.append(f"{title}\n{text}" if title else text)
            if len(texts) == args.docs:
                break
    encoder = get_encoder(EncoderConfig())
    encoder.encode_documents(texts[:4])  # warm up

    started = time.perf_counter()
    encoder.encode_documents(texts)
    passages_s = time.perf_counter() - started

    started = time.perf_counter()
    pooled = encoder.encode_sentence_spans(texts, args.max_sentences)
    pooled_s = time.perf_counter() - started

    groups = {i: [text[a:b] for a, b in spans] for i, (text, (_, spans)) in enumerate(zip(texts, pooled))}
    started = time.perf_counter()
    faithful = encode_sentence_groups(encoder, groups)
    faithful_s = time.perf_counter() - started

    sentences = [len(g) for g in groups.values()]
    cosines = np.concatenate([(pooled[i][0] * faithful[i].vectors).sum(axis=1) for i in groups if groups[i]])
    print(json.dumps({
        "docs": len(texts), "encoder": encoder.name, "backend": encoder.config.backend, "threads": args.threads,
        "sentences_per_doc": round(float(np.mean(sentences)), 2),
        "float16_bytes_per_doc": round(float(np.mean(sentences)) * encoder.dimension * 2, 1),
        "seconds": {"passages": round(passages_s, 3), "pooled": round(pooled_s, 3), "faithful": round(faithful_s, 3)},
        "ms_per_doc": {k: round(v * 1000 / len(texts), 2)
                       for k, v in (("passages", passages_s), ("pooled", pooled_s), ("faithful", faithful_s))},
        "mean_cosine_pooled_vs_faithful": round(float(cosines.mean()), 4),
    }, indent=2))


if __name__ == "__main__":
    main()
