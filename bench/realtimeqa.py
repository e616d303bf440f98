"""RealTimeQA 2020-2022: event-aware queries and freshness (issue 13), placeholder: build step only so far."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foveal.engine import Engine  # noqa: E402
from foveal.pipeline.ingest import ingest_records  # noqa: E402

DATA = ROOT.parent.parent / "shared" / "data" / "realtimeqa-2020-2022"


#: News articles average 11,000 characters; the bench indexes each article's first NEWS_CHARS characters (its lead)
#: so the corpus encodes in minutes on two CPU cores. Quiz evidence passages (the judged documents) are kept whole.
NEWS_CHARS = 2000


def corpus_records(folder: Path, dated: bool):
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as handle:
        for line_no, line in enumerate(handle, start=1):
            raw = json.loads(line)
            if raw.get("metadata", {}).get("kind") == "news_search_result":
                raw["text"] = raw["text"][:NEWS_CHARS]
            if dated:
                raw["timestamp"] = raw.get("metadata", {}).get("date") + "T00:00:00Z"
            yield line_no, raw


def build(engine: Engine, name: str, folder: Path, dated: bool) -> None:
    collection = engine.open_or_create(name)
    t0 = time.perf_counter()
    report = ingest_records(collection, corpus_records(folder, dated), batch_size=256)
    print(f"{name}: {json.dumps(report.summary())} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default=str(ROOT / "bench" / "out" / "home"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    engine = Engine(args.home)
    build(engine, "realtimeqa", Path(args.data), dated=True)
