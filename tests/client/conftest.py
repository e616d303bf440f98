"""A real foveal server for the client tests: the app served by uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time

import pytest

SECRET = "sk-client-test-secret"


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def serve(engine, **settings):
    from foveal.api.app import create_app
    from foveal.service.settings import ServiceSettings

    return LiveServer(create_app(engine, settings=ServiceSettings(**settings)))


@pytest.fixture()
def server(engine):
    """Keyed (admin key ``SECRET``), embedded queue, small task size."""
    with serve(engine, api_keys=f"tester admin {SECRET}", task_docs=4) as live:
        yield live
