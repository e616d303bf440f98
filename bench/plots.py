"""PNG plots from bench JSON outputs (matplotlib, no display needed).

* ``quality``: nDCG@10 (and Recall@100) per pipeline and dataset, from ``bench/quality.py --json-out`` files, with
  the mean query time per pipeline beside it.
* ``load``: throughput (QPS) and latency percentiles (p50, p99) against the number of concurrent clients, per
  system, from ``bench/peers.py``'s JSON (which records its commit and each system's encoder backend).

Every figure names the encoder backend and the commit that produced the numbers (``--encoder``, ``--commit``: the
JSON files of ``bench/quality.py`` do not record them, so say what produced them).

Example::

    .venv/bin/python bench/plots.py quality bench/results/base/*.json --out docs/img/quality.png \\
        --encoder "all-MiniLM-L6-v2, torch CPU" --commit 3507883
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def quality(files: list[Path], out: Path, encoder: str, commit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(f).read_text()) for f in files]
    runs.sort(key=lambda r: r["dataset"])
    pipelines = []
    for run in runs:
        for row in run["rows"]:
            if row["pipeline"] not in pipelines:
                pipelines.append(row["pipeline"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / max(1, len(pipelines))
    for n, pipeline in enumerate(pipelines):
        xs, ys = [], []
        for i, run in enumerate(runs):
            row = next((r for r in run["rows"] if r["pipeline"] == pipeline), None)
            if row is not None:
                xs.append(i + (n - (len(pipelines) - 1) / 2) * width)
                ys.append(row["ndcg@10"])
        bars = left.bar(xs, ys, width, label=pipeline)
        left.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    left.set_xticks(range(len(runs)), [f"{r['dataset']}\n({r['rows'][0].get('queries', '?')} q)" for r in runs])
    left.set_ylabel("nDCG@10")
    left.set_ylim(0, 1)
    left.legend(loc="upper left", fontsize=8)
    left.set_title("Retrieval quality per pipeline and dataset")
    for n, pipeline in enumerate(pipelines):
        times = [r["ms_per_query"] for run in runs for r in run["rows"] if r["pipeline"] == pipeline
                 and "ms_per_query" in r]
        right.boxplot([times], positions=[n], widths=0.6, tick_labels=[pipeline])
    right.set_ylabel("ms per query (one value per dataset)")
    right.set_title("Query time")
    fig.text(0.01, 0.01, f"encoder: {encoder} · commit {commit} · bench/quality.py, test splits", fontsize=8,
             color="#555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def load(file: Path, out: Path) -> None:
    """QPS and p50/p99 latency against concurrent clients, one line per system (``bench/peers.py`` JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = json.loads(Path(file).read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for result in run["results"]:
        rows = sorted(result["load"], key=lambda r: r["clients"])
        clients = [r["clients"] for r in rows]
        label = f"{result['system']} ({result['backend']})"
        left.plot(clients, [r["qps"] for r in rows], marker="o", label=label)
        for r in rows:
            left.annotate(f"{r['qps']:.1f}", (r["clients"], r["qps"]), fontsize=7, textcoords="offset points",
                          xytext=(0, 5), ha="center")
        line = right.plot(clients, [r["p50_ms"] for r in rows], marker="o", label=f"{result['system']} p50")[0]
        right.plot(clients, [r["p99_ms"] for r in rows], marker="^", linestyle="--", color=line.get_color(),
                   label=f"{result['system']} p99")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks([r["clients"] for r in run["results"][0]["load"]],
                        [str(r["clients"]) for r in run["results"][0]["load"]])
        axis.set_xlabel("concurrent clients")
        axis.legend(fontsize=8)
    left.set_ylabel("queries per second")
    left.set_ylim(bottom=0)
    left.set_title("Throughput against concurrency (each system's REST API)")
    right.set_yscale("log")
    right.set_ylabel("latency seen by the clients, ms")
    right.set_title("Latency percentiles against concurrency")
    versions = run.get("txtai") or ", ".join(run.get("versions", []))
    fig.text(0.01, 0.01, f"bench/peers.py · commit {run.get('commit', '?')} · {versions} · "
             "same 1,000 SciFact documents, model files and queries", fontsize=8, color="#555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    q = sub.add_parser("quality", help="nDCG@10 per pipeline and dataset from bench/quality.py JSON files")
    q.add_argument("files", nargs="+", type=Path)
    q.add_argument("--out", type=Path, default=Path("docs/img/quality.png"))
    q.add_argument("--encoder", required=True, help="The encoder backend that produced the numbers.")
    q.add_argument("--commit", required=True, help="The commit that produced the numbers.")
    ld = sub.add_parser("load", help="QPS and p50/p99 against concurrent clients from bench/peers.py JSON")
    ld.add_argument("file", type=Path)
    ld.add_argument("--out", type=Path, default=Path("docs/img/load.png"))
    args = parser.parse_args()
    if args.kind == "quality":
        quality(args.files, args.out, args.encoder, args.commit)
    elif args.kind == "load":
        load(args.file, args.out)


if __name__ == "__main__":
    main()
