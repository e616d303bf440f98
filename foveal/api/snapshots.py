"""Admin REST routes for snapshots (see :mod:`foveal.snapshots`).

Snapshots live in the folder the operator set (``FOVEAL_SNAPSHOT_DIR``, default ``$FOVEAL_HOME/snapshots``); a
caller names a snapshot (1-64 of a-z, 0-9, '-', '_'), never a path. Creating and restoring read and write whole
stores, so they run in the threadpool; both are synchronous (the answer comes when the work is done).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from foveal.api.auth import allowed_indexes, check_index
from foveal.snapshots import Snapshots

NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
INDEX_NAME = PathParam(pattern=NAME_PATTERN, description="Index name.")
SNAPSHOT_NAME = PathParam(pattern=NAME_PATTERN, description="Snapshot name.")

router = APIRouter(prefix="/v1", tags=["snapshots"])


class CreateSnapshot(BaseModel):
    name: str | None = Field(default=None, pattern=NAME_PATTERN,
                             description="Snapshot name; omitted: <index>-<UTC time>.")
    model_config = ConfigDict(extra="forbid")


class RestoreSnapshot(BaseModel):
    index: str | None = Field(default=None, pattern=NAME_PATTERN,
                              description="Restore into this index; omitted: the index the snapshot was taken of.")
    model_config = ConfigDict(extra="forbid")


class SnapshotSummary(BaseModel):
    name: str
    index: str
    position: int = Field(description="The change-log position the snapshot holds.")
    documents: int
    created: str
    foveal_version: str
    instance: str


def _snapshots(request: Request) -> Snapshots:
    settings = request.app.state.settings
    return Snapshots(request.app.state.engine, getattr(settings, "snapshot_dir", None))


@router.post("/indexes/{name}/snapshots", status_code=201, response_model=SnapshotSummary)
async def create_snapshot(request: Request, body: CreateSnapshot | None = None,
                          name: str = INDEX_NAME) -> dict[str, Any]:
    """Snapshot an index at one change-log position; writes may continue meanwhile. 409 when the name is taken
    or the index keeps its data on Elasticsearch (unless an Elasticsearch snapshot repository is configured)."""
    snapshot = body.name if body is not None else None
    return await run_in_threadpool(_snapshots(request).create, name, snapshot)


@router.get("/snapshots", response_model=list[SnapshotSummary])
async def list_snapshots(request: Request,
                         index: str | None = Query(default=None, pattern=NAME_PATTERN,
                                                   description="Only snapshots of this index.")) -> list[dict]:
    """Complete snapshots, oldest first (for a key limited to some indexes, only theirs)."""
    found = await run_in_threadpool(_snapshots(request).list, index)
    allowed = allowed_indexes(request)
    return found if allowed is None else [s for s in found if s["index"] in allowed]


@router.get("/snapshots/{snapshot}")
async def get_snapshot(request: Request, snapshot: str = SNAPSHOT_NAME) -> dict[str, Any]:
    """A snapshot's manifest: index, config, position, documents, created, version and a sha256 per file."""
    manifest = await run_in_threadpool(_snapshots(request).manifest, snapshot)
    check_index(request, manifest["index"])  # an admin key limited to some indexes sees only their snapshots
    return manifest


@router.post("/snapshots/{snapshot}/restore")
async def restore_snapshot(request: Request, body: RestoreSnapshot | None = None,
                           snapshot: str = SNAPSHOT_NAME) -> dict[str, Any]:
    """Verify every checksum, then swap the restored index in atomically (a failed restore changes nothing).
    Batches queued for the replaced index end with their documents failed, as after a delete."""
    state = request.app.state
    snapshots = _snapshots(request)
    source = (await run_in_threadpool(snapshots.manifest, snapshot))["index"]
    target = body.index if body is not None and body.index else source
    check_index(request, source)  # a key limited to some indexes restores only their snapshots, into them
    check_index(request, target)
    from foveal.api.v1 import _instance_of

    instance = await run_in_threadpool(_instance_of, state.engine, target)
    result = await run_in_threadpool(snapshots.restore, snapshot, target)
    if instance is not None:
        await run_in_threadpool(state.queue.cancel_index, target, instance)
    return result


@router.delete("/snapshots/{snapshot}")
async def delete_snapshot(request: Request, snapshot: str = SNAPSHOT_NAME) -> dict[str, str]:
    """Delete a snapshot."""
    check_index(request, (await run_in_threadpool(_snapshots(request).manifest, snapshot))["index"])
    await run_in_threadpool(_snapshots(request).delete, snapshot)
    return {"deleted": snapshot}
