"""What the bench scripts share: where the datasets are (never copied into the repository), and the commit.

``FOVEAL_BENCH_DATA`` when set; else the first of ``../shared/data`` beside the checkout and ``../../shared/data``
(a git worktree one folder further down) that exists.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    if os.environ.get("FOVEAL_BENCH_DATA"):
        return Path(os.environ["FOVEAL_BENCH_DATA"])
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return ROOT.parent / "shared" / "data"


DATA = data_root()


def commit() -> str:
    """The checkout's short commit, named beside every figure a bench writes ("unknown" outside git)."""
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:  # no git on this machine
        return "unknown"
    return done.stdout.strip() or "unknown"
