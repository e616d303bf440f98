"""constraints.txt pins the whole dependency tree a clean `make setup` installs (pyproject.toml pins only foveal's
direct dependencies, so a fresh clone could resolve a newer transitive package than the one CI passed with)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: not a plain pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def test_every_direct_pin_agrees_with_the_constraints():
    """A pin changed in pyproject.toml without regenerating constraints.txt would make `make setup` fail to resolve."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = constraints()
    requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            assert name not in pins  # pinned in pyproject.toml; its build (CPU or CUDA) is the installer's choice
            continue
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])
        else:
            # only the GPU extra's packages may be missing (not installed by `make setup`)
            assert text in project["optional-dependencies"]["gpu"], f"{text} is not in constraints.txt"


def test_the_environment_is_the_constrained_tree():
    """What `make setup` installed is what constraints.txt pins (run in the project's .venv)."""
    pins = constraints()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drifted = {name: (installed[name], version) for name, version in pins.items()
               if name in installed and installed[name] != version}
    assert not drifted, f"installed version differs from constraints.txt: {drifted}"
    missing = sorted(name for name in pins if name not in installed)
    assert not missing, f"pinned in constraints.txt but not installed: {missing}"
