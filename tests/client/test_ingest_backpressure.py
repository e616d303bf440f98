"""RemoteIngest against a server that keeps answering 503 + Retry-After: it waits, and a stop request ends it
without journaling the batch that was never accepted (so a rerun sends it)."""

from __future__ import annotations

import json

import httpx

from foveal.client import Client
from foveal.client.ingest import RemoteIngest


def test_stop_while_the_server_pushes_back(tmp_path):
    posts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"documents": 0})
        posts.append(request)
        return httpx.Response(503, headers={"Retry-After": "0"},
                              json={"error": {"type": "OverloadedError", "message": "queue full", "details": None}})

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) for i in range(3)) + "\n")
    journal = tmp_path / "journal.jsonl"
    with Client("http://foveal.test", max_retries=1, transport=httpx.MockTransport(handler)) as client:
        ingest = RemoteIngest(client, corpus, "docs", batch_size=2, journal=journal,
                              should_stop=lambda: len(posts) >= 6)
        report = ingest.run()
    assert report.interrupted and report.batches_sent == 0 and len(posts) == 6
    assert len(journal.read_text().splitlines()) == 1  # the header only: nothing was accepted
