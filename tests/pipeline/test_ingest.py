import gzip
import json

import pytest

from foveal.errors import InvalidInputError
from foveal.pipeline.ingest import ingest_file, read_jsonl
from tests.conftest import TINY_CORPUS


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_lines_are_reported_and_good_ones_kept(engine, tmp_path):
    lines = [json.dumps(TINY_CORPUS[0]), "{not json", json.dumps({"title": "no id"}), "", json.dumps(TINY_CORPUS[1])]
    collection = engine.create_index("ing")
    report = ingest_file(collection, _write(tmp_path / "c.jsonl", lines), batch_size=1)
    assert report.accepted == 2
    assert [line for line, _ in report.errors] == [2, 3]
    assert "malformed JSON" in report.errors[0][1] and "missing '_id'" in report.errors[1][1]
    assert collection.store.count() == 2 and len(collection.lexical) == 2


def test_strict_stops_but_keeps_what_came_before(engine, tmp_path):
    lines = [json.dumps(TINY_CORPUS[0]), "[1]", json.dumps(TINY_CORPUS[1])]
    collection = engine.create_index("strict")
    report = ingest_file(collection, _write(tmp_path / "c.jsonl", lines), strict=True)
    assert report.accepted == 1 and collection.get("tides") is not None and collection.get("bread") is None


def test_gzip_and_rerun_skips(engine, tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for doc in TINY_CORPUS:
            handle.write(json.dumps(doc) + "\n")
    collection = engine.create_index("gz")
    first = ingest_file(collection, path)
    second = ingest_file(collection, path)
    assert first.summary()["added"] == len(TINY_CORPUS)
    assert second.summary()["unchanged"] == len(TINY_CORPUS) and second.summary()["added"] == 0


def test_non_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff\xfe"}\n')
    records = list(read_jsonl(path))
    assert records[0][1]["_id"] == "a"
    assert records[1][0] == 2 and "UTF-8" in str(records[1][1])


def test_missing_file_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="no such file"):
        list(read_jsonl("/nonexistent/corpus.jsonl"))
