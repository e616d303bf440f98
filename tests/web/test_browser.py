"""The web page in a real browser (headless Chromium): search, evidence, pipelines, the agent's graph, XSS, keys."""

from __future__ import annotations

import os
import re

import pytest

from tests.web.conftest import ROOT, XSS_DOCUMENT, LiveServer, artifacts_dir

pytestmark = pytest.mark.browser


def search(page, query: str) -> None:
    page.fill("#q", query)
    page.click("#search-button")
    page.wait_for_selector("#results li.hit")


def test_search_shows_hits_with_the_matched_passage_marked(page, live):
    page.goto(live.url)
    page.wait_for_selector("#index option[value=default]", state="attached")
    search(page, "what makes the sea rise and fall twice a day")
    assert "tide" in page.inner_text("#results").lower()
    first = page.locator("#results li.hit").first
    assert first.locator("mark").count() == 1 and first.locator("mark").inner_text().strip()
    assert re.search(r"\d+ hits", page.inner_text("#search-info"))
    page.screenshot(path=str(artifacts_dir() / "search.png"), full_page=True)
    if os.environ.get("FOVEAL_UPDATE_DOCS_SCREENSHOTS") == "1":  # the picture in the docs (committed)
        page.screenshot(path=str(ROOT / "docs" / "img" / "search.png"))
    assert not page.console_errors, page.console_errors


def test_evidence_panel_shows_rank_and_score_per_stage(page, live):
    page.goto(live.url)
    search(page, "inverted index BM25")
    hit = page.locator("#results li.hit").first
    panel = hit.locator(".evidence")
    assert panel.is_hidden()
    hit.locator(".evidence-toggle").click()
    assert panel.is_visible()
    stages = set(panel.locator("tr[data-stage]").evaluate_all("rows => rows.map(r => r.dataset.stage)"))
    assert {"bm25", "dense", "fused"} <= stages, stages
    text = panel.inner_text()
    assert "rank" in text and "score" in text and "rrf" in text.lower() or "method" in text


def test_switching_pipelines_searches_again_with_that_pipeline(page, live):
    page.goto(live.url)
    search(page, "why does bread dough get bigger")
    assert "pipeline hybrid" in page.inner_text("#search-info")
    for pipeline in ("bm25", "dense"):
        page.check(f"input[name=pipeline][value={pipeline}]")
        page.wait_for_function("p => document.getElementById('search-info').textContent.includes('pipeline ' + p)",
                               arg=pipeline)
        hit = page.locator("#results li.hit").first
        hit.locator(".evidence-toggle").click()
        stages = set(hit.locator("tr[data-stage]").evaluate_all("rows => rows.map(r => r.dataset.stage)"))
        assert pipeline in stages and "fused" not in stages, (pipeline, stages)
    assert page.locator("input[name=stage][value=rerank]").count() == 1


def test_ask_draws_the_graph_and_a_clickable_citation(page, live):
    page.goto(live.url)
    page.click("button[data-tab=ask]")
    page.fill("#question", "How does yeast make bread rise, and what causes ocean tides?")
    page.click("#ask-button")
    page.wait_for_selector("#references li", timeout=120_000)
    nodes = page.locator("#graph g.node")
    assert nodes.count() >= 4  # the question, two sub-questions at least, the answer
    assert page.locator("#graph g.node.searcher").count() >= 2
    assert page.locator("#graph path.edge").count() >= 3
    assert page.locator("#graph g.node.response.done").count() == 1
    cite = page.locator("#answer a.cite").first
    number = cite.get_attribute("data-ref")
    cite.click()
    assert "flash" in page.locator(f"#ref-{number}").get_attribute("class")
    page.locator(f"#ref-{number} a").first.click()  # opens the cited document
    page.wait_for_selector("#doc-dialog[open]")
    assert page.inner_text("#doc-text").strip()
    page.keyboard.press("Escape")
    page.locator("#graph g.node.searcher").first.click()
    assert page.inner_text("#node-detail").strip()
    page.screenshot(path=str(artifacts_dir() / "ask.png"), full_page=True)
    if os.environ.get("FOVEAL_UPDATE_DOCS_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "img" / "ask.png"))
    assert not page.console_errors, page.console_errors


def test_indexed_markup_is_shown_as_text_and_never_runs(page, live):
    page.goto(live.url)
    search(page, "harbour lantern amber dusk")
    hit = page.locator("#results li.hit", has_text="harbour lantern").first
    assert "<img src=x onerror=alert(1)>" in hit.inner_text()
    assert "<script>alert(2)</script>" in hit.inner_text()
    assert XSS_DOCUMENT["_id"] in hit.inner_text()
    hit.locator(".evidence-toggle").click()
    hit.locator(".hit-title").click()
    page.wait_for_selector("#doc-dialog[open]")
    assert "<b>amber</b>" in page.inner_text("#doc-text")
    # nothing from the document became an element, and no alert ever opened
    assert page.locator("#results img, #results script, #results b, #results i, #doc-dialog img").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []
    assert page.evaluate("() => performance.getEntriesByType('resource').some(r => r.name.endsWith('/x'))") is False


def test_the_page_works_with_an_api_key(playwright_browser, sample_home, monkeypatch):
    from foveal.api.app import create_app
    from foveal.engine import Engine
    from foveal.service.settings import ServiceSettings

    secret = "sk-page-test-0123456789"
    engine = Engine(sample_home)
    settings = ServiceSettings(api_keys=f"page read,write {secret}")
    try:
        with LiveServer(create_app(engine, settings=settings)) as server:
            context = playwright_browser.new_context()
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_selector("#error:not([hidden])")
            assert "API key" in page.inner_text("#error")
            page.fill("#apikey", secret)
            page.dispatch_event("#apikey", "change")
            page.wait_for_selector("#index option[value=default]", state="attached")
            search(page, "tallest mountain on earth")
            assert page.is_hidden("#error")
            assert page.evaluate("() => sessionStorage.getItem('foveal.apiKey')") == secret
            page.click("button[data-tab=status]")
            page.wait_for_function("() => document.querySelectorAll('#stats tr').length > 0")
            assert "documents" in page.inner_text("#stats")
            context.close()
    finally:
        engine.close()


def test_index_tab_shows_stats_and_job_progress(page, live):
    page.goto(live.url)
    page.click("button[data-tab=status]")
    page.wait_for_function("() => document.querySelectorAll('#stats tr').length > 0")
    assert re.search(r"documents\s+\d+", page.inner_text("#stats"))
    page.click("#add-docs summary")
    page.fill("#docs-input", '{"_id": "page-added", "title": "Added from the page", "text": "A lighthouse keeper."}\n'
                             '{"_id": "page-empty", "title": "", "text": ""}')
    page.click("#docs-submit")
    page.wait_for_selector("#jobs li[data-state=done]", timeout=60_000)
    job = page.locator("#jobs li").first
    assert "1 indexed, 1 failed of 2" in job.inner_text()
    assert job.locator("progress").get_attribute("value") == "2"


def test_docs_page_loads_swagger_from_this_server(page, live):
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(live.url + "docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=60_000)
    assert requested and all(url.startswith(live.url) for url in requested), requested
