"""docs/xpool.md stays true: its config block parses, its search body is a valid request, its commands exist."""

import json
import re

from typer.main import get_command

from foveal.cli import app
from foveal.config import IndexConfig
from foveal.pipeline.request import SearchRequest
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "xpool.md").read_text(encoding="utf-8")


def test_config_and_request_examples_are_valid():
    config = IndexConfig.parse(json.loads(re.search(r"```json\n(.*?)```", DOC, re.S).group(1)))
    assert config.encoder.model == "none" and config.xpool.enabled
    bodies = re.findall(r"-d '(\{.*?\})'", DOC)
    search = [b for b in bodies if '"query"' in b]
    assert search and all(SearchRequest.model_validate(json.loads(b)) for b in search)
    create = json.loads(next(b for b in bodies if '"name"' in b))
    IndexConfig.parse(create["config"])


def test_train_commands_name_real_options():
    train = get_command(app).commands["train"].commands["xpool"]
    known = {opt for param in train.params for opt in param.opts}
    lines = [line for line in DOC.splitlines() if line.startswith("foveal train xpool")]
    assert len(lines) >= 3
    for line in lines:
        for option in re.findall(r"(--[a-z][a-z0-9-]*)", line):
            assert option in known, option
