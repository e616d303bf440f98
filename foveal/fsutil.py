"""Durable file-system steps shared by the writers that publish by rename (FAISS files, snapshots, models).

A rename publishes a file or folder atomically, but only a flushed folder makes the rename itself survive a power
cut; and the files must be flushed before the rename, or a crash can publish empty ones.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the renames and creations in it)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file below ``folder``, then each folder, before a rename publishes it."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)
