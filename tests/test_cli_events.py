"""``foveal events add/list/delete``: a bad line is reported by number and skipped, the good ones are committed."""

import json

from typer.testing import CliRunner

from foveal.cli import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_events_add_list_delete(home, tiny, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        json.dumps({"_id": "a", "title": "Storm hits the coast", "timestamp": "2024-05-01"}),
        json.dumps({"_id": "b", "title": "bad date", "timestamp": "yesterday"}),
        '{"_id": "c"',
        json.dumps({"_id": "d", "text": "Election results are in", "source": "wire", "timestamp": 1714550400}),
    ]) + "\n")
    result = runner.invoke(app, ["events", "add", str(path), "--index", "tiny"])
    assert result.exit_code == 1, result.output
    assert "line 2: event 'b': timestamp 'yesterday' is not ISO 8601" in result.output
    assert "line 3: malformed JSON" in result.output
    assert '"added": 2' in result.output and '"rejected": 2' in result.output
    listed = runner.invoke(app, ["events", "list", "--index", "tiny", "--limit", "1"])
    assert listed.exit_code == 0 and '"_id": "a"' in listed.output and "more: --after" in listed.output
    gone = runner.invoke(app, ["events", "delete", "a", "zz", "--index", "tiny"])
    assert json.loads(gone.output.strip().splitlines()[-1]) == {"deleted": ["a"], "missing": ["zz"]}
    missing = runner.invoke(app, ["events", "add", str(path), "--index", "nope"])
    assert missing.exit_code == 2 and "index 'nope' does not exist" in missing.output
