"""``foveal ingest PATH --server URL``: interrupted by Ctrl-C and run again, it sends every document exactly once,
everything ends indexed, and refused documents (bad JSON, refused on sight, refused by validation) are summarised
with exit status 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from tests.client.conftest import SECRET, LiveServer
from tests.conftest import ROOT, TINY_CORPUS


class CountingSlowApp:
    """Records the ids of the documents in every POST to an index that was accepted (202), and answers those POSTs
    0.4 s late."""

    def __init__(self, app) -> None:
        self.app = app
        self.accepted: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/documents"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        await asyncio.sleep(0.4)

        async def recording_send(message):
            if message["type"] == "http.response.start" and message["status"] == 202:
                self.accepted.extend(d.get("_id") for d in json.loads(body)["documents"])
            await send(message)

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, recording_send)


def _ingest(url: str, corpus, journal, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOVEAL_API_KEY": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "foveal.cli", "ingest", str(corpus), "--index", "remote", "--server", url,
         "--batch-size", "3", "--in-flight", "1", "--journal", str(journal), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_interrupted_ingest_resumes_without_sending_twice(engine, tmp_path):
    from foveal.api.app import create_app
    from foveal.service.settings import ServiceSettings

    good = TINY_CORPUS + [{"_id": f"note-{i}", "text": f"Field note {i} on glaciers and rivers."} for i in range(5)]
    lines = [json.dumps(d) for d in good[:4]]
    lines += ['{"_id": "broken", "text": ', json.dumps({"_id": "empty", "text": ""}),
              json.dumps({"_id": 5, "text": "an id that is no string"})]
    lines += [json.dumps(d) for d in good[4:]]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    journal = tmp_path / "journal.jsonl"

    app = CountingSlowApp(create_app(engine, settings=ServiceSettings(api_keys=f"tester admin {SECRET}")))
    with LiveServer(app) as live:
        first = _ingest(live.url, corpus, journal)
        deadline = time.monotonic() + 120
        while not (journal.exists() and len(journal.read_text().splitlines()) >= 2):  # header + one batch
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130, err
        assert json.loads(err.strip().splitlines()[-1])["interrupted"] is True
        assert 0 < len(app.accepted) < len(good)

        second = _ingest(live.url, corpus, journal)
        _, err = second.communicate(timeout=180)
        assert second.returncode == 1, err  # refused documents: summarised, non-zero
        summary = json.loads(err.strip().splitlines()[-2])
        assert summary["batches_resumed"] >= 1 and not summary["interrupted"]

    # over both runs every document was accepted exactly once (the batch answered 422 for the document with a
    # numeric id was not accepted; it was sent again without that document)
    assert sorted(app.accepted) == sorted([d["_id"] for d in good] + ["empty"])
    collection = engine.get("remote")
    collection.refresh()
    assert collection.store.count() == len(good)
    assert summary["documents"] == 14 and summary["rejected"] == 3
    refused = sorted((r.get("line") or 0, r.get("id"), r["reason"]) for r in summary["rejected_documents"])
    assert [(line, doc_id) for line, doc_id, _ in refused] == [(0, "empty"), (5, None), (7, None)], refused
    assert "malformed JSON" in refused[1][2] and "_id" in refused[2][2]
