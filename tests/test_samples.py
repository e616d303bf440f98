"""The sample corpus that `make run` indexes is valid, and its judgments point at real documents."""

import json

from foveal.documents import parse_document
from foveal.evaluation import read_qrels, read_queries
from tests.conftest import SAMPLES


def test_sample_corpus_is_clean():
    lines = (SAMPLES / "documents.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [parse_document(json.loads(line), line=n) for n, line in enumerate(lines, start=1)]
    assert len(docs) >= 300 and len({d.id for d in docs}) == len(docs)
    years = {d.metadata.get("year") for d in docs if d.metadata.get("category") == "larkport"}
    assert years >= {2022, 2023, 2024, 2025, 2026}  # dated items for the page's date filters
    assert all(d.timestamp is not None and d.metadata.get("category") for d in docs)
    assert sum(len(d.full_text) > 1300 for d in docs) >= 2  # some exceed the 256-token window (160 passages)


def test_sample_qrels_point_to_documents_and_queries():
    ids = {json.loads(line)["_id"] for line in (SAMPLES / "documents.jsonl").read_text(encoding="utf-8").splitlines()}
    qrels = read_qrels(SAMPLES / "qrels.tsv")
    queries = read_queries(SAMPLES / "queries.jsonl")
    assert set(qrels) == set(queries)
    assert all(doc in ids for judged in qrels.values() for doc in judged)
