"""Registering a trained model in the operator's model folder (``$FOVEAL_MODELS_DIR``, default
``$FOVEAL_HOME/models``), where an index config names it (``"rerank": {"model": "<name>"}``): REST callers choose
models by name only, never by path, so whatever ``foveal train …`` makes must land there under a name.

A registration is atomic: the model is written into a hidden temporary folder beside its final place (same file
system) and renamed into place once complete, so a reader never meets a half-written model and a failed run leaves
nothing under the name. An existing name is refused unless ``force`` is given; with ``force`` the old folder is
moved aside and the new one renamed in (two renames: for an instant the name is absent, never half-written), then
the old one is removed.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

from foveal.config import _NAME, models_dir
from foveal.fsutil import fsync_dir, fsync_tree
from foveal.errors import ConfigError, ConflictError


def default_model_name(command: str, now: float | None = None) -> str:
    """``<command>-YYYYMMDD-HHMMSS`` (UTC), e.g. ``rerank-20261204-131500``."""
    return f"{command}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


def check_model_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"--name: {name!r} is not a model name (letters, digits, '_', '-', '.'; starting with a "
                          "letter or digit; at most 128 characters)", field="name")


def check_available(name: str, *, force: bool = False, root: Path | None = None) -> Path:
    """Refuse a bad or taken name (unless ``force``) before anything is trained; returns the models folder."""
    check_model_name(name)
    root = Path(root) if root is not None else models_dir()
    if (root / name).exists() and not force:
        raise ConflictError(f"model {name!r} already exists in {root}; choose another --name or pass --force",
                            name=name)
    return root


def move_into(source: Path, folder: Path) -> None:
    """Move everything in ``source`` into ``folder`` (both on the models folder's file system: renames)."""
    for item in Path(source).iterdir():
        os.rename(item, folder / item.name)


def register_model(write: Callable[[Path], object], name: str, *, force: bool = False,
                   root: Path | None = None) -> Path:
    """Run ``write(folder)`` into a temporary folder and register the result as model ``name``; returns its folder.

    Checked before ``write`` runs (a long training run is not wasted on a name that is taken) and again at the
    rename (another registration may have taken it meanwhile)."""
    root = check_available(name, force=force, root=root)
    target = root / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        fsync_tree(tmp)
        if target.exists():
            if not force:
                raise ConflictError(f"model {name!r} was registered meanwhile in {root}; choose another --name or "
                                    "pass --force", name=name)
            old = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
