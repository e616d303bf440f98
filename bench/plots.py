"""PNG plots from bench JSON outputs (matplotlib, no display needed).

* ``quality``: nDCG@10 (and Recall@100) per pipeline and dataset, from ``bench/quality.py --json-out`` files, with
  the mean query time per pipeline beside it.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    q = sub.add_parser("quality", help="nDCG@10 per pipeline and dataset from bench/quality.py JSON files")
    q.add_argument("files", nargs="+", type=Path)
    q.add_argument("--out", type=Path, default=Path("docs/img/quality.png"))
    q.add_argument("--encoder", required=True, help="The encoder backend that produced the numbers.")
    q.add_argument("--commit", required=True, help="The commit that produced the numbers.")
    args = parser.parse_args()
    if args.kind == "quality":
        quality(args.files, args.out, args.encoder, args.commit)


if __name__ == "__main__":
    main()
