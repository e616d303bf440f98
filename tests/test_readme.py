"""The README's and the docs' examples stay true: the config block parses, the CLI synopsis names real commands
and options, the search example is a valid request."""

import json
import re

from typer.main import get_command

from foveal.cli import app
from foveal.config import IndexConfig
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
CLI = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_config_example_is_the_valid_default():
    block = re.search(r"# Configuration.*?```json\n(.*?)```", CONFIGURATION, re.S).group(1)
    parsed = IndexConfig.parse(json.loads(block))
    assert parsed == IndexConfig()


def test_cli_examples_name_real_commands_and_options():
    command = get_command(app)
    block = re.search(r"# CLI\n\n<!-- example: synopsis -->\n```bash\n(.*?)```", CLI, re.S).group(1)
    for line in block.strip().splitlines():
        words = line.split()
        assert words[0] == "foveal"
        sub = command.commands[words[1]]
        if hasattr(sub, "commands"):  # a group such as `foveal train rerank`
            sub = sub.commands[words[2]]
        known = {opt for param in sub.params for opt in param.opts}
        for option in re.findall(r"(--[a-z][a-z0-9-]*)", line):
            assert option in known, f"{words[1]} has no option {option}"


def test_search_example_request_is_valid():
    from foveal.pipeline.request import SearchRequest

    body = re.search(r"-d '(\{.*?\})'", README).group(1)
    SearchRequest.model_validate(json.loads(body))
