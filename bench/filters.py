"""Filtered vs unfiltered dense search time on FaissVectorIndex, per index type and filter share.

    .venv/bin/python bench/filters.py [--vectors 20000] [--dim 384] [--queries 50] [--k 10]

Random unit vectors (search cost does not depend on what they hold). Each filter is a random allow-list of that
share of the ids; selective ones (below ``FaissVectorIndex.exact_search_min`` / ``exact_search_fraction``) are
searched exactly, broader ones through the index with a selector, widened until k are found. Prints a markdown
table of the median milliseconds per query and the mean number of hits returned (k unless the filter allows fewer).
Run it on a quiet machine: it times the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foveal.index.base import passage_id  # noqa: E402
from foveal.index.faiss_index import FaissVectorIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--factories", default="Flat,HNSW32,IVF128,Flat")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.vectors, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.array([passage_id(i + 1, 0) for i in range(args.vectors)], np.int64)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    factories = _split_factories(args.factories)
    shares = [None, 0.01, 0.10, 0.50]
    print(f"{args.vectors:,} vectors of {args.dim} dims, k={args.k}, {args.queries} queries, one at a time\n")
    print("| index | " + " | ".join("unfiltered" if s is None else f"{s:.0%} filter" for s in shares) + " |")
    print("|---|" + "---|" * len(shares))
    for factory in factories:
        index = FaissVectorIndex(args.dim, factory, gpu="off")
        index.add(ids, vectors)
        cells = []
        for share in shares:
            allowed = None if share is None else ids[rng.random(args.vectors) < share]
            index.search(queries[:1], args.k, allowed=allowed)  # warm up
            times, hits = [], []
            for query in queries:
                started = time.perf_counter()
                _, found = index.search(query[None, :], args.k, allowed=allowed)
                times.append((time.perf_counter() - started) * 1000)
                hits.append(int((found >= 0).sum()))
            cells.append(f"{statistics.median(times):.2f} ms ({statistics.mean(hits):.0f} hits)")
        print(f"| {factory} | " + " | ".join(cells) + " |")


def _split_factories(text: str) -> list[str]:
    # "Flat,HNSW32,IVF128,Flat": a part that names no index type continues the previous factory string
    out: list[str] = []
    for part in text.split(","):
        if out and part in ("Flat", "PQ16", "SQ8") and out[-1].startswith(("IVF", "OPQ")) and "," not in out[-1]:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


if __name__ == "__main__":
    main()
