import json
from pathlib import Path

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


HEAVY_MODULES = ("torch", "transformers", "sentence_transformers")

#: Runs CLI commands in one fresh process, as `foveal ...` would, and records after each which of the heavy
#: modules are imported (sys.modules is the ground truth: a lazy import that happened shows there).
_PROBE = """
import json, sys
from foveal.cli import app
heavy = {heavy!r}
report = []
for argv in json.loads(sys.argv[1]):
    try:
        code = app(argv, standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # a usage error: recorded, so the check of every step still runs
        code = repr(exc)
    report.append({{"argv": argv, "code": code or 0, "heavy": sorted(m for m in heavy if m in sys.modules)}})
with open(sys.argv[2], "w") as handle:
    json.dump(report, handle)
"""


def _vector_docs(path, start, count):
    import numpy as np

    rng = np.random.default_rng(start)
    with open(path, "w") as handle:
        for i in range(start, start + count):
            vector = [float(x) for x in rng.normal(size=384)]
            handle.write(json.dumps({"_id": f"v{i}", "title": f"vector doc {i}", "text": f"river moon token{i}",
                                     "vector": vector}) + "\n")


def test_commands_that_do_not_encode_never_import_torch(home, engine, tmp_path):
    """BM25 search, vector-carrying ingest, stats, listing and deletes start without torch or the model: the
    index's dimension comes from its config. (On the old code every command loaded the model at open.)"""
    import os
    import subprocess
    import sys

    from foveal.documents import parse_document

    first = tmp_path / "first.jsonl"
    _vector_docs(first, 0, 5)
    collection = engine.create_index("vec")  # creating loads the model (it records the dimension)
    collection.upsert([parse_document(json.loads(line)) for line in first.read_text().splitlines()])
    collection.flush()
    engine.close()
    more = tmp_path / "more.jsonl"
    _vector_docs(more, 5, 5)
    commands = [
        ["search", "river", "--pipeline", "bm25", "--index", "vec"],
        ["ingest", str(more), "--index", "vec"],
        ["stats", "--index", "vec"],
        ["indexes"],
        ["delete", "v1", "--index", "vec"],
        ["drop", "vec"],
    ]
    report_file = tmp_path / "report.json"
    import foveal

    code = str(Path(foveal.__file__).resolve().parent.parent)  # the foveal under test, wherever it is installed
    env = dict(os.environ, FOVEAL_HOME=str(home), PYTHONPATH=os.pathsep.join([code, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY_MODULES), json.dumps(commands),
                           str(report_file)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    for step in report:
        assert step["heavy"] == [], f"{step['argv']} imported {step['heavy']}"
        assert step["code"] == 0, (step, proc.stdout, proc.stderr)
    assert '"documents": 10' in proc.stdout  # stats saw the ingest
    assert not (home / "indexes" / "vec").exists()


def test_stats_delete_drop_report_clear_errors(home):
    result = runner.invoke(app, ["stats", "--index", "missing"])
    assert result.exit_code == 2 and "index 'missing' does not exist" in result.output
    result = runner.invoke(app, ["delete", "x", "--index", "missing"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["drop", "Bad Name"])
    assert result.exit_code == 2 and "invalid index name" in result.output
    result = runner.invoke(app, ["indexes"])
    assert result.exit_code == 0 and result.output == ""
