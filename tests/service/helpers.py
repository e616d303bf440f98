"""Helpers shared by the service tests."""

from __future__ import annotations

import time


def wait_done(client, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> dict:
    """Poll ``GET /v1/jobs/{job_id}`` until the job is done (or ``timeout`` passes); returns the last job body."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "done" or time.monotonic() > deadline:
            return job
        time.sleep(poll)
