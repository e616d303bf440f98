"""Print foveal's pinned dependencies, one a line, with ``faiss-cpu`` swapped for another FAISS build.

    python deploy/requirements.py [--faiss faiss-gpu==1.15.1] [--extras gpu] > requirements.txt

faiss-cpu and faiss-gpu both ship the ``faiss`` module, so an extra cannot add one on top of the other: the GPU
image installs this list, then foveal itself with ``--no-deps`` (see the Dockerfile).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(faiss: str | None = None, extras: list[str] | None = None, pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras or []:
        listed += project["optional-dependencies"][extra]
    out = []
    for requirement in listed:
        if faiss and re.match(r"^faiss-cpu\b", requirement):
            requirement = faiss
        if requirement not in out:
            out.append(requirement)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faiss", default=None, help="what replaces faiss-cpu (default: keep it)")
    parser.add_argument("--extras", default="", help="comma-separated extras of the foveal package")
    args = parser.parse_args()
    extras = [e for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(args.faiss, extras)))


if __name__ == "__main__":
    main()
