"""Which matrix products of the query model can run in int8: the choice behind ``encoder.query_quantize: mixed``.

    .venv/bin/python bench/query_quantize.py [--data-root ../shared/data] [--queries-per-set 0]

onnxruntime's dynamic int8 quantization (``quantize_dynamic``, per-channel int8 weights, activations scaled per
tensor on the fly; what ``query_quantize: int8`` runs) moves each query vector away from fp32. This script exports
all-MiniLM-L6-v2 once (fp32, transformer-optimized, as foveal does) and quantizes it again with different groups of
MatMuls left in fp32 (``nodes_to_exclude``), then encodes the **development** queries one per pass on a
single-threaded session (as foveal's query lanes do) and prints, per variant:

* CPU ms a query (process time over all queries, after a warm-up pass over them);
* the mean, 95th percentile and largest ``1 - cosine`` between its vectors and the fp32 export's.

No judgments are read: the choice is label-free and never sees the collections the quality gate reports on
(Cranfield, SciFact test). Development queries: ADI, TIME, CACM and LISA, and the first 300 SciFact *train*
queries (``--queries-per-set`` caps each set, 0 = all). The variant that ships as ``mixed`` is
``ffn-out 0-3`` (``foveal.encoders.onnx_backend.fp32_nodes``); its nDCG@10 against fp32 queries on Cranfield and full
SciFact comes from ``bench/encoders.py --docs 0 --variants torch,int8q,mixedq``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import DATA, commit  # noqa: E402

import numpy as np  # noqa: E402

from foveal.config import EncoderConfig  # noqa: E402
from foveal.encoders.onnx_backend import OnnxForward, ffn_output_nodes, fp32_nodes  # noqa: E402
from foveal.encoders.sentence_transformer import LoadedModel  # noqa: E402
from foveal.evaluation import read_queries  # noqa: E402

DEV_SETS = ("adi", "time", "cacm", "lisa")


def dev_queries(root: Path, per_set: int) -> list[str]:
    out: list[str] = []
    for name in DEV_SETS:
        texts = list(read_queries(root / name / "queries.jsonl").values())
        out += texts[:per_set] if per_set else texts
    scifact = read_queries(root / "scifact" / "queries.jsonl")
    train: list[str] = []
    for line in (root / "scifact" / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        query_id = line.split("\t")[0]
        if query_id not in train:
            train.append(query_id)
    train = train[:300]
    out += [scifact[q] for q in (train[:per_set] if per_set else train)]
    return out


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encode(path: Path, feeds: list[dict]) -> tuple[np.ndarray, float]:
    """Unit vectors of every query, one per pass, and the CPU ms a query (after one warm-up pass over all)."""
    run = session(path)
    for feed in feeds:
        run.run(None, feed)
    t0 = time.process_time()
    rows = [run.run(None, feed)[0][0] for feed in feeds]
    cpu_ms = (time.process_time() - t0) * 1000 / len(feeds)
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--queries-per-set", type=int, default=0)
    args = parser.parse_args()

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    loaded = LoadedModel(EncoderConfig())
    work = Path(tempfile.mkdtemp(prefix="foveal-query-quantize-"))
    fp32 = OnnxForward(loaded.model, cache_dir=work / "cache", quantize="none", optimize=True, threads=1).path
    graph = onnx.load(str(fp32))
    layers = int(loaded.model[0].auto_model.config.num_hidden_layers)
    tokenizer = loaded.model.tokenizer
    texts = dev_queries(args.data_root, args.queries_per_set)
    feeds = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, max_length=256, return_tensors="np")
        feeds.append({"input_ids": encoded["input_ids"].astype(np.int64),
                      "attention_mask": encoded["attention_mask"].astype(np.int64)})

    names = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Attention")]
    qkv = [n for n in names if n.startswith("Attention")]  # the optimizer's fused attention: Q, K, V in one product
    attention_out = [n for n in names if "/attention/output/dense/MatMul" in n]
    ffn_in = [n for n in names if "/intermediate/dense/MatMul" in n]
    ffn_out = ffn_output_nodes(graph)
    variants: dict[str, list[str]] = {
        "int8 (every product)": [],
        "qkv fp32": qkv,
        "attention output fp32": attention_out,
        "ffn-in fp32": ffn_in,
        "ffn-out fp32 (all layers)": ffn_out,
        **{f"ffn-out {i} fp32": [ffn_out[i]] for i in range(layers)},
        "ffn-out 0-1 fp32": ffn_out[:2],
        "ffn-out 0-2 fp32": ffn_out[:3],
        "ffn-out 0-3 fp32 (mixed)": fp32_nodes(graph, layers),
    }
    reference, fp32_ms = encode(fp32, feeds)
    rows = [("fp32 (nothing quantized)", fp32_ms, 0.0, 0.0, 0.0)]
    print(f"fp32: {fp32_ms:.2f} ms a query", file=sys.stderr)
    for name, keep in variants.items():
        target = work / "variant.onnx"
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=keep, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        vectors, cpu_ms = encode(target, feeds)
        distance = 1 - np.sum(vectors * reference, axis=1)
        rows.append((name, cpu_ms, float(distance.mean()), float(np.quantile(distance, 0.95)), float(distance.max())))
        print(json.dumps({"variant": name, "cpu_ms": round(cpu_ms, 2), "mean": float(distance.mean())}),
              file=sys.stderr)

    print(f"\n{len(texts)} development queries ({', '.join(DEV_SETS)}, SciFact train), one per pass, one thread; "
          f"all-MiniLM-L6-v2 ONNX export (transformer-optimized), onnxruntime dynamic int8 with the named MatMuls "
          f"left in fp32; {platform.processor() or platform.machine()}; bench/query_quantize.py at {commit()}\n")
    print("| variant | CPU ms a query | mean 1 - cos to fp32 | p95 | max |")
    print("|---|---|---|---|---|")
    for name, cpu_ms, mean, p95, worst in rows:
        print(f"| {name} | {cpu_ms:.2f} | {mean:.4f} | {p95:.4f} | {worst:.4f} |")


if __name__ == "__main__":
    main()
