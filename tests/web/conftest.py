"""A live server on the sample corpus and a headless Chromium (Debian's, driven by Playwright) for the page tests.

Playwright is a test dependency (``pip install -e '.[test]'``); the browser is Debian's ``chromium`` package
(``make test`` installs it with apt-get when it runs as root), never one Playwright downloads. Where either is
missing the browser tests are skipped with a message saying what to install. Screenshots go to
``$FOVEAL_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")
#: Indexed with the sample corpus: the page must show it as text, and nothing in it may run.
XSS_DOCUMENT = {"_id": "xss-<b>bold</b>", "title": "<img src=x onerror=alert(1)> harbour lantern",
                "text": "<img src=x onerror=alert(1)><script>alert(2)</script> The harbour lantern glows "
                        "<b>amber</b> at dusk.", "metadata": {"category": "<i>test</i>"},
                "timestamp": "2024-03-01T00:00:00Z"}


def chromium_path() -> str | None:
    found = os.environ.get("FOVEAL_CHROMIUM") or next((p for p in CHROMIUM_CANDIDATES if os.path.exists(p)), None)
    return found or shutil.which("chromium")


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("FOVEAL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def playwright_browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need playwright (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip("browser tests need Debian's chromium (apt-get install chromium; `make test` does it as root)")
    manager = sync_playwright().start()
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    try:
        browser = manager.chromium.launch(executable_path=executable, args=args, headless=True)
    except Exception as exc:  # noqa: BLE001 - a browser that does not start: say why
        manager.stop()
        pytest.skip(f"chromium at {executable} did not start: {exc}")
    yield browser
    browser.close()
    manager.stop()


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _sample_engine(home: Path):
    from foveal.documents import parse_document
    from foveal.engine import Engine

    engine = Engine(home)
    collection = engine.create_index("default")
    lines = (SAMPLES / "documents.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [parse_document(json.loads(line)) for line in lines] + [parse_document(XSS_DOCUMENT)]
    collection.upsert(docs)
    collection.flush()
    return engine


@pytest.fixture(scope="session")
def sample_home(tmp_path_factory, encoder):
    """FOVEAL_HOME with the sample corpus (and the XSS document) in index ``default``, built once."""
    home = tmp_path_factory.mktemp("web") / "home"
    _sample_engine(home).close()
    return home


@pytest.fixture(scope="session")
def live(sample_home):
    """The API on a free port, open (no keys), serving the sample index."""
    from foveal.api.app import create_app
    from foveal.engine import Engine
    from foveal.service.settings import ServiceSettings

    engine = Engine(sample_home)
    with LiveServer(create_app(engine, settings=ServiceSettings())) as server:
        server.engine = engine
        yield server
    engine.close()


@pytest.fixture()
def page(playwright_browser, live):
    context = playwright_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.console_errors = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
