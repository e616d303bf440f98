"""The page and the API docs are served from this package: no CDN, no key needed for the files, CSP on the page."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from foveal.api.app import create_app
from foveal.service.settings import ServiceSettings

SECRET = "sk-web-test-0123456789"


@pytest.fixture()
def keyed(engine, tiny):
    settings = ServiceSettings(api_keys=f"writer write {SECRET}; reader read sk-web-reader-0123456789")
    with TestClient(create_app(engine, settings=settings)) as c:
        yield c


def test_page_and_its_files_are_served_without_a_key_and_nothing_comes_from_elsewhere(keyed):
    page = keyed.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page loads something from another host"
    for asset in re.findall(r"(?:src|href)=\"(static/[^\"]+)\"", html):
        assert keyed.get("/" + asset).status_code == 200, asset
    script = keyed.get("/static/app.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
    # the API itself still needs the key
    assert keyed.get("/v1/indexes").status_code == 401
    assert keyed.get("/static/../foveal/api/auth.py").status_code in (401, 404)


def test_docs_and_redoc_load_their_assets_from_this_server(keyed):
    for path in ("/docs", "/redoc"):
        html = keyed.get(path)
        assert html.status_code == 200, path
        urls = re.findall(r"(?:src|href|url)\s*[=:]\s*['\"]([^'\"]+)['\"]", html.text)
        assert urls and not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for url in urls:
            if url.startswith("/static/"):
                assert keyed.get(url).status_code == 200, url
    assert "swagger-ui-bundle.js" in keyed.get("/docs").text
    assert keyed.get("/openapi.json").status_code == 200


def test_jobs_listing_needs_the_write_scope_and_shows_progress(keyed):
    assert keyed.get("/v1/jobs", headers={"Authorization": "Bearer sk-web-reader-0123456789"}).status_code == 403
    auth = {"Authorization": f"Bearer {SECRET}"}
    job = keyed.post("/v1/indexes/tiny/documents", headers=auth,
                     json={"documents": [{"_id": "n1", "text": "new"}, {"_id": "n2", "text": ""}]}).json()
    deadline = time.monotonic() + 60
    while keyed.get(f"/v1/jobs/{job['job_id']}", headers=auth).json()["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    listed = keyed.get("/v1/jobs?index=tiny", headers=auth).json()
    assert [j["id"] for j in listed] == [job["job_id"]]
    assert (listed[0]["state"], listed[0]["total"], listed[0]["done"], listed[0]["failed"]) == ("done", 2, 1, 1)
    assert keyed.get("/v1/jobs?index=other", headers=auth).json() == []
    assert keyed.get("/v1/jobs?limit=0", headers=auth).status_code == 422
