"""GPU vector search: foveal's FAISS index on the CPU vs its GPU replica, unfiltered and filtered, and the cost of
keeping the replica in step with writes.

    .venv/bin/python bench/gpu_search.py                          # 100k x 384 synthetic unit vectors, Flat
    .venv/bin/python bench/gpu_search.py --docs 20000 --quick     # a fraction of a minute
    .venv/bin/python bench/gpu_search.py --factory IVF1024,Flat --out bench/out/gpu_search.md

Needs faiss-gpu (the GPU image: ``FAISS_PACKAGE=faiss-gpu==1.15.1``, docs/gpu.md) and a GPU for the replica
columns; without them it says so and measures the CPU index alone. With torch on a CUDA device it adds a reference
column: the same exact search as one torch matrix product + ``topk`` on the GPU (what a flat GPU search costs at
least; no FAISS involved).

Tables (markdown): per batch of 1 and of 32 queries, k=10, the median milliseconds of
``FaissVectorIndex.search`` on the CPU (``vector.gpu=off``) and with the replica, unfiltered and with allow-lists
of 1%, 10% and 50% of the vectors, plus the share of GPU answers equal to the CPU's (ids); then the seconds to copy
the index to the GPU once vs to add 1,000 vectors to it in place (the replica's incremental update), and how many
copies a run of writes made. Every table names the commit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def median_ms(function, repeats: int) -> float:
    function()  # warm-up (the first GPU search also builds the replica)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def unit(rng, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def allow(index, passage_ids: np.ndarray):
    """An allow-list as the search pipeline builds it: ``index.doc_filter(doc_keys)`` where the index has it."""
    from foveal.index.base import PASSAGE_BITS

    if hasattr(index, "doc_filter"):
        return index.doc_filter(np.unique(passage_ids >> PASSAGE_BITS))
    return passage_ids


def torch_reference(vectors: np.ndarray):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    stored = torch.from_numpy(vectors).cuda()

    def search(queries: np.ndarray, k: int, allowed_rows: np.ndarray | None = None):
        q = torch.from_numpy(queries).cuda()
        scores = q @ stored.T
        if allowed_rows is not None:
            mask = torch.full((stored.shape[0],), float("-inf"), device="cuda")
            mask[torch.from_numpy(allowed_rows).cuda()] = 0
            scores = scores + mask
        top = torch.topk(scores, k, dim=1)
        torch.cuda.synchronize()
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--factory", default="Flat")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 repeats, filters 10% only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats
    fractions = [0.1] if args.quick else [0.01, 0.1, 0.5]

    import faiss

    from foveal.index.base import PASSAGE_BITS
    from foveal.index.faiss_index import FaissVectorIndex, gpu_count

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or os.environ.get("FOVEAL_COMMIT", "?")
    rng = np.random.default_rng(0)
    vectors = unit(rng, args.docs, args.dim)
    ids = (np.arange(1, args.docs + 1, dtype=np.int64) << PASSAGE_BITS)
    queries = {1: unit(rng, 1, args.dim), 32: unit(rng, 32, args.dim)}

    started = time.perf_counter()
    cpu = FaissVectorIndex(args.dim, args.factory, gpu="off")
    cpu.add(ids, vectors)
    cpu_build = time.perf_counter() - started
    gpus = gpu_count()
    gpu = None
    if gpus:
        gpu = FaissVectorIndex(args.dim, args.factory, gpu="auto")
        gpu.add(ids, vectors)
    reference = torch_reference(vectors)
    lines = [f"# GPU search: {args.docs:,} x {args.dim} synthetic unit vectors, {args.factory}, k={args.k}; "
             f"commit {commit}; faiss {faiss.__version__}, GPUs seen by faiss: {gpus}"
             + ("" if gpus else " (faiss-cpu: the replica columns are not run)"), ""]
    lines += ["| queries | filter | CPU ms | GPU replica ms | torch GPU ms | same ids as CPU |",
              "|---|---|---|---|---|---|"]
    for batch, q in queries.items():
        for fraction in [None] + fractions:
            cpu_allowed = gpu_allowed = rows = None
            if fraction is not None:
                rows = np.sort(rng.choice(args.docs, max(args.k, int(fraction * args.docs)), replace=False))
                # the form searches use: documents resolved once per query (a DocFilter), else passage ids
                cpu_allowed = allow(cpu, ids[rows])
                gpu_allowed = allow(gpu, ids[rows]) if gpu is not None else None
            cpu_ms = median_ms(lambda: cpu.search(q, args.k, cpu_allowed), repeats)
            gpu_ms = same = "-"
            if gpu is not None:
                gpu_ms = f"{median_ms(lambda: gpu.search(q, args.k, gpu_allowed), repeats):.2f}"
                want, got = cpu.search(q, args.k, cpu_allowed)[1], gpu.search(q, args.k, gpu_allowed)[1]
                same = f"{(want == got).all(axis=1).mean():.2f}"
            torch_ms = "-"
            if reference is not None:
                torch_ms = f"{median_ms(lambda: reference(q, args.k, rows), repeats):.2f}"
            label = "none" if fraction is None else f"{fraction:.0%}"
            lines.append(f"| {batch} | {label} | {cpu_ms:.2f} | {gpu_ms} | {torch_ms} | {same} |")
    lines += ["", f"CPU index built in {cpu_build:.1f} s."]
    if gpu is not None:
        lines += ["", f"GPU status: {gpu.gpu_status}", "",
                  "| what | seconds |", "|---|---|"]
        from foveal.index.faiss_gpu import GpuReplica

        started = time.perf_counter()
        GpuReplica(gpu._main, gpu._tombstones, nprobe=gpu.nprobe)
        lines.append(f"| copy the whole index to the GPU | {time.perf_counter() - started:.3f} |")
        builds = gpu.gpu_builds
        more = unit(rng, 1000, args.dim)
        more_ids = (np.arange(args.docs + 1, args.docs + 1001, dtype=np.int64) << PASSAGE_BITS)
        started = time.perf_counter()
        gpu.add(more_ids, more)
        lines.append(f"| add 1,000 vectors (CPU index + replica in place) | {time.perf_counter() - started:.3f} |")
        started = time.perf_counter()
        cpu.add(more_ids, more)
        lines.append(f"| add 1,000 vectors (CPU index alone) | {time.perf_counter() - started:.3f} |")
        for start in range(0, 1000, 100):  # ten writes (removals + adds), each followed by a search
            gpu.remove_documents(range(start + 1, start + 51))
            gpu.search(queries[1], args.k)
        lines.append(f"| copies to the GPU during 1 add + 10 removals with searches between | "
                     f"{gpu.gpu_builds - builds} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
