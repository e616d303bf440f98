import json

import pytest
from typer.testing import CliRunner

from foveal.cli import app
from tests.conftest import TINY_CORPUS

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps(d) for d in TINY_CORPUS]
    lines.insert(2, '{"_id": "broken"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ingest_search_run_eval(home, encoder, corpus, tmp_path):
    result = runner.invoke(app, ["ingest", str(corpus), "--index", "t"])
    assert result.exit_code == 1, result.output  # one line was rejected...
    assert f"{corpus}:3" in result.output and "malformed JSON" in result.output
    assert '"accepted": 6' in result.output  # ...and every good one was kept

    again = runner.invoke(app, ["ingest", str(corpus), "--index", "t", "--if-empty"])
    assert again.exit_code == 0 and "already has 6 documents" in again.output

    result = runner.invoke(app, ["search", "how does dough rise", "--index", "t", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["hits"][0]["id"] == "bread" and "bm25" in payload["hits"][0]["evidence"]

    text = runner.invoke(app, ["search", "lava", "--index", "t", "--pipeline", "bm25"])
    assert "volcano" in text.output

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "1", "text": "moon and sea"}\n{"_id": "2", "text": "chess defence"}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\ttides\t1\n2\tchess\t1\n")
    run_file = tmp_path / "run.trec"
    result = runner.invoke(app, ["run", "--index", "t", "--queries", str(queries), "--out", str(run_file), "--k", "5"])
    assert result.exit_code == 0, result.output
    lines = run_file.read_text().splitlines()
    assert len(lines) == 10 and lines[0].split()[:4] == ["1", "Q0", "tides", "1"]
    result = runner.invoke(app, ["eval", "--run", str(run_file), "--qrels", str(qrels), "--json"])
    assert json.loads(result.output)["ndcg@10"] == pytest.approx(1.0)


def test_clear_errors(home, encoder):
    result = runner.invoke(app, ["search", "x", "--index", "missing"])
    assert result.exit_code == 2 and "index 'missing' does not exist" in result.output
    result = runner.invoke(app, ["search", "x", "--k", "0"])
    assert result.exit_code == 2 and "greater than or equal to 1" in result.output
    result = runner.invoke(app, ["ingest", "/no/such.jsonl", "--index", "t2"])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["search", "x", "--pipeline", "magic"])
    assert result.exit_code == 2 and "magic" in result.output
