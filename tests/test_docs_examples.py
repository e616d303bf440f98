"""Every shell and Python example in README.md and docs/*.md runs, except those marked with a reason.

A fenced ``bash``/``sh``/``shell``/``python`` block runs as it is written, in a scratch folder holding a copy of
``samples/``, with ``foveal`` on the PATH (this interpreter's ``foveal.cli``), ``FOVEAL_HOME`` a copy of a home
with the sample corpus in the index ``default``, and a live server standing in for ``localhost:8000``. A block
that cannot run here says so on the line just above it, and this test lists those reasons:

* ``<!-- example: skip REASON -->``: not run (Docker, Elasticsearch, a GPU, a long benchmark...); the reason is
  required and shown in the test report as a skip.
* ``<!-- example: synopsis -->``: a command synopsis (``[--k 10]``, ``NAME``): not run, but every ``foveal``
  command and ``--option`` in it must exist.

``.venv/bin/`` in a block means this interpreter's environment. Pages added on other branches are held to the same
rule: their blocks run unless marked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

RUNNABLE = ("bash", "sh", "shell", "python")
MARKER = re.compile(r"<!--\s*example:\s*(skip|synopsis)\b\s*(.*?)\s*-->")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks() -> list[tuple[str, int, str, str, str | None]]:
    """``(page, line, language, code, marker line)`` for every runnable fenced block."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            match = re.match(r"^```(\w+)\s*$", lines[i])
            if match:
                language = match.group(1)
                end = i + 1
                while end < len(lines) and not lines[end].startswith("```"):
                    end += 1
                if language in RUNNABLE:
                    above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                    marker = above if MARKER.search(above) else None
                    found.append((page.relative_to(ROOT).as_posix(), i + 1, language, "\n".join(lines[i + 1:end]),
                                  marker))
                i = end
            i += 1
    return found


BLOCKS = blocks()


def test_the_docs_have_examples_and_every_skip_says_why():
    assert len(BLOCKS) >= 10
    skipped = []
    for page, line, _language, _code, marker in BLOCKS:
        if marker is None:
            continue
        kind, reason = MARKER.search(marker).groups()
        if kind == "skip":
            assert len(reason) >= 8, f"{page}:{line}: a skipped example needs its reason"
            skipped.append(f"{page}:{line}: {reason}")
    print("examples not run:\n" + "\n".join(skipped))


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory, encoder):
    """A scratch folder, a home with the sample index, a live server and a ``foveal`` on the PATH."""
    from foveal.api.app import create_app
    from foveal.engine import Engine
    from foveal.service.settings import ServiceSettings
    from tests.web.conftest import LiveServer, _sample_engine

    base = tmp_path_factory.mktemp("docs")
    home = base / "home"
    _sample_engine(home).close()
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "foveal").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m foveal.cli "$@"\n')
    (bin_dir / "foveal").chmod(0o755)
    engine = Engine(home)
    with LiveServer(create_app(engine, settings=ServiceSettings())) as server:
        yield {"base": base, "home": home, "bin": bin_dir, "port": server.port}
    engine.close()


def _env(docs_env, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FOVEAL_HOME": str(work / "home"), "PATH": f"{docs_env['bin']}:{os.environ.get('PATH', '')}",
                "PYTHONPATH": f"{ROOT}:{env.get('PYTHONPATH', '')}", "NO_COLOR": "1", "COLUMNS": "200",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def _adapt(code: str, port: int) -> str:
    code = code.replace("localhost:8000", f"127.0.0.1:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return code.replace(".venv/bin/python", sys.executable).replace(".venv/bin/foveal", "foveal")


@pytest.mark.parametrize("page, line, language, code, marker", BLOCKS,
                         ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_example_runs(page, line, language, code, marker, request):
    if marker is not None:
        kind, reason = MARKER.search(marker).groups()
        if kind == "skip":
            pytest.skip(f"{page}:{line}: {reason}")
        check_synopsis(code, f"{page}:{line}")
        return
    if "curl " in code and shutil.which("curl") is None:
        pytest.skip(f"{page}:{line}: needs curl (apt-get install curl)")
    docs_env = request.getfixturevalue("docs_env")
    work = docs_env["base"] / f"run-{page.replace('/', '-')}-{line}"
    shutil.copytree(docs_env["home"], work / "home")
    shutil.copytree(ROOT / "samples", work / "samples")
    shutil.copytree(ROOT / "bench", work / "bench", ignore=shutil.ignore_patterns("out", "__pycache__"))
    (work / "docs" / "img").mkdir(parents=True)
    if language == "python":
        command = [sys.executable, "-c", _adapt(code, docs_env["port"])]
    else:
        command = ["bash", "-euo", "pipefail", "-c", _adapt(code, docs_env["port"])]
    done = subprocess.run(command, cwd=work, env=_env(docs_env, work), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{page}:{line} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def check_synopsis(code: str, where: str) -> None:
    from typer.main import get_command

    from foveal.cli import app

    command = get_command(app)
    for text in code.strip().splitlines():
        words = text.split()
        if not words or words[0] != "foveal":
            continue
        sub = command.commands.get(words[1])
        assert sub is not None, f"{where}: no command foveal {words[1]}"
        if hasattr(sub, "commands"):  # a group such as `foveal train rerank`
            sub = sub.commands.get(words[2])
            assert sub is not None, f"{where}: no command foveal {words[1]} {words[2]}"
        known = {opt for param in sub.params for opt in param.opts}
        for option in re.findall(r"(--[a-z][a-z0-9-]*)", text.split("#")[0]):
            assert option in known, f"{where}: foveal {words[1]} has no option {option}"
