import json

from typer.testing import CliRunner

from foveal.cli import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
QUESTION = "How does yeast make bread rise, and what causes ocean tides?"


def test_ask_prints_the_graph_as_it_grows_then_the_cited_answer(tiny):
    result = runner.invoke(app, ["ask", QUESTION, "--index", "tiny"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("+ q1") < out.index("▶ q1 running") < out.index("✓ q1 done") < out.index("+ response")
    assert "## How does yeast make bread rise?" in out and "[[1]] bread  Baking bread" in out


def test_ask_json_prints_one_event_per_line(tiny):
    result = runner.invoke(app, ["ask", QUESTION, "--index", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert events[0]["event"] == "graph" and events[-1]["event"] == "final"


def test_ask_bad_input_is_a_message(tiny):
    result = runner.invoke(app, ["ask", QUESTION, "--index", "nope"])
    assert result.exit_code == 2 and "index 'nope' does not exist" in result.output
    result = runner.invoke(app, ["ask", QUESTION, "--index", "tiny", "--planner", "oracle"])
    assert result.exit_code == 2 and "allowed: rule, llm" in result.output
