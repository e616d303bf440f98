"""GPU benchmark: the fused Triton attention kernel vs PyTorch SDPA vs the reference, and fp16 encoder throughput.

    .venv/bin/python bench/kernels_gpu.py                      # full grid, N = 128 .. 8192, D = 32 and 64, fp16
    .venv/bin/python bench/kernels_gpu.py --quick              # N = 512 and 2048 only, a fraction of a minute
    .venv/bin/python bench/kernels_gpu.py --skip-encoder --out bench/out/kernels_gpu.md

Needs a CUDA GPU (and the ``triton`` package for the Triton columns); it exits with a message otherwise. It prints
markdown tables:

1. dense attention, no mask: Triton, SDPA (PyTorch picks its flash kernel), the fp32 reference (skipped past
   ``--reference-max-n`` to bound memory), Triton TFLOP/s and its max error against SDPA;
2. right padding (a quarter of the rows padded) with per-head TempScale τ: Triton with ``key_lengths`` (padded tiles
   skipped), Triton with a ``key_padding_mask`` (tiles visited, keys masked), SDPA with a boolean mask through
   :func:`foveal.kernels.sdpa_attention`;
3. block-sparse: Triton with half of the key blocks dropped per query block vs dense Triton;
4. encoding throughput of all-MiniLM-L6-v2 in fp16 and fp32 on the GPU: plain ``SentenceTransformer.encode``
   (max_seq_length 512) vs foveal's encoder (:class:`foveal.encoders.sentence_transformer.SentenceTransformerEncoder`,
   256-token passages, length-sorted batches) with SDPA and with the foveal attention (Triton), in documents/s and as
   ratios to plain; SciFact abstracts when ``--encoder-corpus`` exists, synthetic documents otherwise.

Times are medians of CUDA-event timings after warm-up (the first call also compiles the Triton kernel).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA  # noqa: E402

import torch  # noqa: E402


def require_gpu() -> None:
    if not torch.cuda.is_available():
        sys.exit(
            "bench/kernels_gpu.py needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False, "
            f"torch {torch.__version__}). Run it on a GPU machine; on CPU the tests cover correctness."
        )
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: the interpreter would time numpy on the CPU, not the GPU kernel")


def time_ms(function, warmup: int = 3, repeats: int = 20) -> float:
    """Median milliseconds of ``function()`` measured with CUDA events."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def guarded(function, warmup: int = 3, repeats: int = 20) -> str:
    try:
        return f"{time_ms(function, warmup, repeats):.3f}"
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def shapes(lengths: list[int], head_dims: list[int], tokens: int, heads: int):
    for head_dim in head_dims:
        for length in lengths:
            yield max(1, tokens // length), heads, length, head_dim


def bench_dense(args, triton_attention) -> str:
    from foveal.kernels.reference import attention_reference

    rows = []
    for batch, heads, length, head_dim in shapes(args.lengths, args.head_dims, args.tokens, args.heads):
        q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", dtype=torch.float16) for _ in range(3))
        flops = 4 * batch * heads * length * length * head_dim
        sdpa = guarded(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        triton_ms, tflops, error = "n/a", "n/a", "n/a"
        if triton_attention is not None:
            out = triton_attention(q, k, v, block_size=args.block_size)
            error = f"{(out.float() - torch.nn.functional.scaled_dot_product_attention(q, k, v).float()).abs().max().item():.1e}"
            triton_ms = guarded(lambda: triton_attention(q, k, v, block_size=args.block_size))
            if triton_ms != "OOM":
                tflops = f"{flops / (float(triton_ms) * 1e-3) / 1e12:.1f}"
        reference = "skipped"
        if length <= args.reference_max_n:
            reference = guarded(lambda: attention_reference(q, k, v), warmup=1, repeats=5)
        rows.append([batch, heads, length, head_dim, triton_ms, sdpa, reference, tflops, error])
        del q, k, v
        torch.cuda.empty_cache()
    header = ["B", "H", "N", "D", "Triton ms", "SDPA ms", "reference ms", "Triton TFLOP/s", "max abs err vs SDPA"]
    return "### Dense attention, fp16, no mask\n\n" + table(header, rows)


def bench_padding(args, triton_attention) -> str:
    from foveal.kernels import sdpa_attention

    rows = []
    for batch, heads, length, head_dim in shapes(args.lengths, args.head_dims, args.tokens, args.heads):
        q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", dtype=torch.float16) for _ in range(3))
        generator = torch.Generator(device="cuda").manual_seed(0)
        # a quarter of the rows padded to between 25 % and 100 % of the length
        lengths = torch.full((batch,), length, device="cuda", dtype=torch.int32)
        padded = max(1, batch // 4)
        lengths[:padded] = torch.randint(length // 4, length + 1, (padded,), device="cuda", generator=generator).to(torch.int32)
        keep = torch.arange(length, device="cuda")[None, :] < lengths[:, None]
        tau = torch.linspace(0.7, 1.0, heads, device="cuda")
        sdpa = guarded(lambda: sdpa_attention(q, k, v, temperature=tau, key_padding_mask=keep))
        by_lengths = by_mask = "n/a"
        if triton_attention is not None:
            by_lengths = guarded(lambda: triton_attention(q, k, v, temperature=tau, key_lengths=lengths, block_size=args.block_size))
            by_mask = guarded(lambda: triton_attention(q, k, v, temperature=tau, key_padding_mask=keep, block_size=args.block_size))
        rows.append([batch, heads, length, head_dim, by_lengths, by_mask, sdpa])
        del q, k, v
        torch.cuda.empty_cache()
    header = ["B", "H", "N", "D", "Triton key_lengths ms", "Triton key_padding_mask ms", "SDPA bool mask ms"]
    return "### Right padding (1/4 of rows) + per-head τ, fp16\n\n" + table(header, rows)


def bench_sparse(args, triton_attention) -> str:
    if triton_attention is None:
        return "### Block-sparse\n\ntriton is not installed"
    rows = []
    block_m, block_n = args.block_size
    for batch, heads, length, head_dim in shapes(args.lengths, args.head_dims, args.tokens, args.heads):
        q, k, v = (torch.randn(batch, heads, length, head_dim, device="cuda", dtype=torch.float16) for _ in range(3))
        n_q_blocks, n_k_blocks = math.ceil(length / block_m), math.ceil(length / block_n)
        generator = torch.Generator(device="cuda").manual_seed(1)
        mask = torch.rand(batch * heads, n_q_blocks, n_k_blocks, device="cuda", generator=generator) < 0.5
        mask[..., 0] = True
        kept = mask.float().mean().item()
        dense = guarded(lambda: triton_attention(q, k, v, block_size=args.block_size))
        sparse = guarded(lambda: triton_attention(q, k, v, block_mask=mask, block_size=args.block_size))
        rows.append([batch, heads, length, head_dim, f"{kept:.2f}", dense, sparse])
        del q, k, v
        torch.cuda.empty_cache()
    header = ["B", "H", "N", "D", "blocks kept", "Triton dense ms", "Triton block-sparse ms"]
    return f"### Block-sparse, {block_m}x{block_n} tiles, fp16\n\n" + table(header, rows)


def encoder_texts(args) -> tuple[list[str], str]:
    """SciFact abstracts (title + text) when the shared data is there, else seeded synthetic documents."""
    corpus = args.encoder_corpus
    if corpus is not None and corpus.exists():
        import json

        texts = []
        with open(corpus, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                texts.append(f"{record.get('title', '')} {record.get('text', '')}".strip())
                if len(texts) >= args.encoder_docs:
                    break
        return texts, f"{len(texts)} documents of {corpus.parent.name}"
    words = "tides moon gravity ocean bread yeast dough chess opening pawn volcano magma crust coffee roast bean".split()
    generator = torch.Generator().manual_seed(0)
    texts = []
    for _ in range(args.encoder_docs):
        picks = torch.randint(0, len(words), (args.encoder_words,), generator=generator).tolist()
        texts.append(" ".join(words[i] for i in picks) + ".")
    return texts, f"{len(texts)} synthetic documents of {args.encoder_words} words"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_encoder(args, device: str = "cuda", precisions: tuple[bool, ...] = (True, False)) -> str:
    """docs/s of plain ``SentenceTransformer.encode`` (max_seq_length 512) vs foveal's encoder (256-token passages,
    length-sorted batches) with SDPA and with the foveal attention (Triton on CUDA), in fp16 and fp32."""
    from sentence_transformers import SentenceTransformer

    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import SentenceTransformerEncoder, resolve_model_path

    texts, what = encoder_texts(args)
    rows = []
    for fp16 in precisions:
        precision = "fp16" if fp16 else "fp32"
        for batch_size in args.encoder_batch_sizes:
            plain = SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device=device)
            plain.max_seq_length = 512
            if fp16:
                plain.half()
            plain.encode(texts[: 2 * batch_size], batch_size=batch_size)  # warm-up
            _sync(device)
            start = time.perf_counter()
            plain.encode(texts, batch_size=batch_size)
            _sync(device)
            plain_s = time.perf_counter() - start
            rows.append(["plain encode (512)", precision, batch_size, len(texts), f"{plain_s:.2f}",
                         f"{len(texts) / plain_s:,.0f}", "n/a", "1.00"])  # fmt: skip
            del plain
            for attention in ("sdpa", "foveal"):
                encoder = SentenceTransformerEncoder(
                    EncoderConfig(device=device, fp16=fp16, batch_size=batch_size, attention=attention)
                )
                encoder.encode_documents(texts[: 2 * batch_size])  # warm-up (and Triton compile)
                _sync(device)
                start = time.perf_counter()
                documents = encoder.encode_documents(texts)
                _sync(device)
                seconds = time.perf_counter() - start
                tokens = sum(p.n_tokens for doc in documents for p in doc.passages)
                rows.append([f"foveal passages, {attention}", precision, batch_size, len(texts), f"{seconds:.2f}",
                             f"{len(texts) / seconds:,.0f}", f"{tokens / seconds:,.0f}",
                             f"{plain_s / seconds:.2f}"])  # fmt: skip
                del encoder
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    header = ["variant", "precision", "batch", "documents", "seconds", "docs/s", "tokens/s", "ratio to plain"]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else device
    return f"### Encoding throughput, all-MiniLM-L6-v2 on {name}, {what}\n\n" + table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=16384, help="B = tokens // N, so each row does similar work")
    parser.add_argument("--block-size", type=int, nargs=2, default=[64, 64])
    parser.add_argument("--reference-max-n", type=int, default=4096, help="skip the fp32 reference above this N")
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--encoder-docs", type=int, default=2000)
    parser.add_argument("--encoder-corpus", type=Path,
                        default=DATA / "scifact" / "corpus.jsonl", help="BEIR corpus.jsonl to encode (synthetic documents when it is missing)")
    parser.add_argument("--encoder-words", type=int, default=300, help="words per synthetic document")
    parser.add_argument("--encoder-batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--quick", action="store_true", help="N = 512 and 2048, 500 documents")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.encoder_docs, args.encoder_batch_sizes = [512, 2048], 500, [64]
    args.block_size = tuple(args.block_size)

    require_gpu()
    triton_attention = None
    try:
        from foveal.kernels.triton_attention import TRITON_AVAILABLE
        from foveal.kernels.triton_attention import triton_attention as kernel

        if TRITON_AVAILABLE:
            triton_attention = kernel
    except ImportError:
        pass
    if triton_attention is None:
        print("note: triton is not installed; the Triton columns read n/a", file=sys.stderr)

    sections = [
        f"## Attention kernels on {torch.cuda.get_device_name()} (torch {torch.__version__})",
        bench_dense(args, triton_attention),
        bench_padding(args, triton_attention),
        bench_sparse(args, triton_attention),
    ]
    if not args.skip_encoder:
        sections.append(bench_encoder(args))
    report = "\n\n".join(sections) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
