"""The newcomer's path and the everyday CLI surface: the project's home is found, explain prints, a missing file
fails before any progress bar, piped JSON is never wrapped; index list|stats|delete, jobs, list, export, delete by
filter, metadata updates without encoding."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from foveal.cli import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
#: As a pipe sees it: no COLUMNS, so rich would fall back to 80 columns.
piped = CliRunner(env={"NO_COLOR": "1", "COLUMNS": None, "TERM": "dumb"})


def test_the_cli_finds_the_projects_home_and_says_where_it_looked(tmp_path, monkeypatch, encoder):
    from foveal.documents import parse_document
    from foveal.engine import Engine
    from tests.conftest import TINY_CORPUS

    project = tmp_path / "checkout"
    engine = Engine(project / ".foveal")
    engine.create_index("default").upsert([parse_document(d) for d in TINY_CORPUS])
    engine.close()
    monkeypatch.delenv("FOVEAL_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    found = runner.invoke(app, ["search", "lava", "--index", "default", "--pipeline", "bm25"])
    assert found.exit_code == 0 and "volcano" in found.output, found.output
    missing = runner.invoke(app, ["search", "lava", "--index", "nope", "--pipeline", "bm25"])
    assert missing.exit_code == 2 and f"looked in {project / '.foveal'}" in missing.output
    monkeypatch.chdir(tmp_path)
    elsewhere = runner.invoke(app, ["search", "lava", "--index", "default", "--pipeline", "bm25"])
    assert elsewhere.exit_code == 2 and "FOVEAL_HOME is unset" in elsewhere.output
    assert str(tmp_path / "xdg" / "foveal") in elsewhere.output


def test_explain_prints_without_json(home, tiny):
    result = runner.invoke(app, ["search", "moon sea", "--index", "tiny", "--pipeline", "bm25", "--explain"])
    assert result.exit_code == 0, result.output
    assert "query terms (BM25): moon sea" in result.output and "matched_terms: moon sea" in result.output


def test_a_missing_ingest_file_fails_before_any_progress_bar(home, tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.jsonl"), "--index", "x"])
    assert result.exit_code == 2 and "no such file" in result.output
    assert result.output.startswith("error:") and "docs/s" not in result.output and "━" not in result.output


def test_json_is_not_wrapped_when_piped(home, engine):
    from foveal.documents import parse_document

    collection = engine.create_index("wide")
    long_value = "a-very-long-metadata-value-" * 8
    collection.upsert([parse_document({"_id": "w", "text": "wide words here", "metadata": {"note": long_value}})])
    result = piped.invoke(app, ["search", "wide", "--index", "wide", "--pipeline", "bm25", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["hits"][0]["metadata"]["note"] == long_value
    assert any(len(line) > 120 for line in result.output.splitlines())
    # ids with spaces, more than 80 columns of them: a wrapped line would cut a JSON string in two
    ids = [f"an id with spaces number {n}" for n in range(6)]
    collection.upsert([parse_document({"_id": i, "text": "words"}) for i in ids])
    deleted = piped.invoke(app, ["delete", *ids, "--index", "wide"])
    assert deleted.exit_code == 0 and json.loads(deleted.output)["deleted"] == ids


def test_index_list_stats_delete(home, tiny):
    listed = runner.invoke(app, ["index", "list", "--json"])
    assert json.loads(listed.output) == [{"name": "tiny", "documents": 6}]
    stats = runner.invoke(app, ["index", "stats", "tiny"])
    assert json.loads(stats.output)["documents"] == 6
    gone = runner.invoke(app, ["index", "delete", "tiny", "--yes"])
    assert gone.exit_code == 0 and "deleted index 'tiny'" in gone.output
    assert json.loads(runner.invoke(app, ["index", "list", "--json"]).output) == []


def test_list_export_update_and_delete_by_filter(home, tiny, tmp_path, monkeypatch):
    page = runner.invoke(app, ["list", "--index", "tiny", "--limit", "4"])
    assert page.exit_code == 0 and len([l for l in page.stdout.splitlines() if l.strip()]) == 4
    after = page.output.split("--after ")[1].split()[0]
    rest = runner.invoke(app, ["list", "--index", "tiny", "--after", after])
    ids = [l.split("\t")[0] for l in page.stdout.splitlines() + rest.stdout.splitlines() if l.strip()]
    assert sorted(ids) == sorted(d["_id"] for d in __import__("tests.conftest").conftest.TINY_CORPUS)

    # metadata changes never encode again
    monkeypatch.setattr(tiny.encoder, "encode_documents", lambda *a, **k: pytest.fail("encoded again"))
    monkeypatch.setattr(type(tiny), "prepare", lambda *a, **k: pytest.fail("prepared again"))
    updated = runner.invoke(app, ["update", "bread", "coffee", "nope", "--index", "tiny", "--set", "topic=baking",
                                  "--set", "stars=5", "--timestamp", "2024-02-02"])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output) == {"updated": ["bread", "coffee"], "unchanged": [], "missing": ["nope"]}
    out = tmp_path / "export.jsonl"
    exported = runner.invoke(app, ["export", "--index", "tiny", "--out", str(out), "--where",
                                   '{"metadata": {"topic": "baking"}}'])
    assert exported.exit_code == 0, exported.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["_id"] for r in records} == {"bread", "coffee"}
    assert all(r["metadata"] == {"topic": "baking", "stars": 5} and r["timestamp"].startswith("2024-02-02")
               for r in records)
    # the derived indexes follow: a filtered search sees the new metadata
    from foveal.pipeline.request import SearchRequest

    hits = tiny.store.filter_keys(None, {"topic": "baking"}, None)
    assert len(hits) == 2
    deleted = runner.invoke(app, ["delete", "--index", "tiny", "--where", '{"metadata": {"topic": "baking"}}'])
    assert sorted(json.loads(deleted.output)["deleted"]) == ["bread", "coffee"]
    assert tiny.store.count() == 4
    assert runner.invoke(app, ["delete", "--index", "tiny"]).exit_code == 2
    bad = runner.invoke(app, ["delete", "--index", "tiny", "--where", '{"metadata": {"a": {"b": 1}}}'])
    assert bad.exit_code == 2 and "--where" in bad.output
    del SearchRequest


def test_jobs_lists_the_queue_of_this_home(home, tiny):
    from foveal.service.jobs import EmbeddedQueue
    from foveal.service.settings import ServiceSettings

    queue = EmbeddedQueue(home, ServiceSettings())
    job = queue.submit("tiny", [{"_id": "q1", "text": "queued"}], [{"id": "bad", "reason": "empty"}], 2)
    listed = runner.invoke(app, ["jobs"])
    assert listed.exit_code == 0 and job["id"] in listed.output and "tiny" in listed.output
    one = runner.invoke(app, ["jobs", job["id"]])
    assert json.loads(one.output)["errors"] == [{"id": "bad", "reason": "empty"}]
    assert json.loads(runner.invoke(app, ["jobs", "--index", "other", "--json"]).output) == []
