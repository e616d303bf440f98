"""Index aliases: a name that points to one index, moved to another in one atomic step (as Elasticsearch's).

Aliases live in ``$FOVEAL_HOME/aliases.json`` (``{"alias": "index"}``), shared by every process on the home (server,
workers, CLI). A change is made under ``aliases.lock`` (flock): the table is re-read, changed, written to a temporary
file, fsynced and renamed over the old one, and the folder fsynced, so a reader (any process) sees the old table or
the new one, never a half-written file, and a change that returned survives a crash or a power loss.

Readers re-read the file when its identity (inode, size, mtime) changes: a swap is one rename, so a search that
resolves a name during a swap gets the old index or the new one, both open and whole. Aliases and index names share
one namespace: an alias may not take an index's name and an index may not take an alias's. An index that an alias
points to cannot be deleted (409 naming the aliases): move or remove the alias first. Deleting the old index after a
swap is safe once searches that resolved the alias before the swap have finished.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from foveal.fsutil import fsync_dir

FILE = "aliases.json"
LOCK = "aliases.lock"


class AliasTable:
    def __init__(self, home: Path) -> None:
        self.path = Path(home) / FILE
        self.lock_path = Path(home) / LOCK
        self._cache: tuple[tuple, dict[str, str]] | None = None
        self._mutex = threading.Lock()

    def _identity(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> dict[str, str]:
        """The current table (a copy); cheap when the file has not changed (one stat)."""
        identity = self._identity()
        if identity is None:
            return {}
        with self._mutex:
            if self._cache is not None and self._cache[0] == identity:
                return dict(self._cache[1])
        try:
            table = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(table, dict):
            raise ValueError(f"{self.path} does not hold an alias table")
        with self._mutex:
            self._cache = (identity, table)
        return dict(table)

    def get(self, name: str) -> str | None:
        if self._identity() is None:
            return None
        return self.read().get(name)

    def pointing_to(self, index: str) -> list[str]:
        return sorted(a for a, target in self.read().items() if target == index)

    @contextmanager
    def locked(self):
        """Hold ``aliases.lock`` (every change, and index deletion's alias check, run under it)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def write(self, table: dict[str, str]) -> None:
        """Replace the table (call under :meth:`locked`): temporary file, fsync, rename, fsync the folder."""
        tmp = self.path.with_name(f".{FILE}.tmp-{os.getpid()}-{threading.get_ident()}")
        with open(tmp, "w") as handle:
            json.dump(dict(sorted(table.items())), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
