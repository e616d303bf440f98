"""The docs site builds offline with ``mkdocs build --strict``; the README stays short and shows the page and plots."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_mkdocs_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs need mkdocs and mkdocs-material (pip install -e '.[test]')")
    pytest.importorskip("material", reason="the docs need mkdocs-material (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    html = (tmp_path / "site" / "web" / "index.html").read_text()
    assert "fonts.googleapis" not in html  # offline: no web fonts


def test_readme_is_short_and_shows_the_page_and_the_plots():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / image).is_file(), image
    assert "docs/img/search.png" in readme and "docs/img/quality.png" in readme
    assert "bench/plots.py quality" in readme  # the command next to the plot
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_the_sites_home_page_is_the_readme():
    """docs/index.md is the README with its links made relative to docs/ (it had drifted a round behind)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    twin = "<!-- the README's twin: keep the two in step -->\n" + readme.replace("](docs/", "](")
    assert (ROOT / "docs" / "index.md").read_text(encoding="utf-8") == twin, (
        "docs/index.md differs from README.md; remake it with: "
        "(echo \"<!-- the README's twin: keep the two in step -->\"; sed 's#](docs/#](#g' README.md) > docs/index.md")
