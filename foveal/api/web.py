"""The web page at ``/`` and the API docs at ``/docs`` and ``/redoc``, all served from this package (no CDN).

The page (``foveal/web/``: one HTML file, a stylesheet, a script) is plain HTML, CSS and JavaScript; it calls the
same REST API as any client, with the API key the user types (kept in ``sessionStorage``, sent as
``Authorization: Bearer``). Everything it shows from an index is inserted as text (``textContent``), never as
HTML, and the page is sent with a Content-Security-Policy that allows scripts from this origin only, so an indexed
``<img src=x onerror=...>`` stays text twice over.

Swagger UI and ReDoc are served from the files the ``fastapi-offline`` package ships (Swagger UI 5, which reads
the OpenAPI 3.1 document FastAPI writes), so ``/docs`` works without internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"
#: Paths that need no API key: the page, its files, and the docs (the API calls they make do).
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
#: Scripts, styles, images and requests from this origin only; no inline script, no plugin, no framing.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def docs_assets() -> Path | None:
    """The folder with swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def install(app: FastAPI) -> None:
    """Mount the page and the docs on ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    assets = docs_assets()
    if assets is not None:
        app.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html", headers={
            "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(WEB / "favicon.svg", media_type="image/svg+xml")

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        base = root(request)
        if assets is None:
            return HTMLResponse("<p>Swagger UI needs the fastapi-offline package (pip install fastapi-offline); the "
                                f"OpenAPI document is at <a href='{base}/openapi.json'>/openapi.json</a>.</p>",
                                status_code=503)
        return get_swagger_ui_html(
            openapi_url=f"{base}{app.openapi_url}", title=f"{app.title} - API docs",
            oauth2_redirect_url=f"{base}/docs/oauth2-redirect",
            swagger_js_url=f"{base}/static/docs/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/static/docs/swagger-ui.css",
            swagger_favicon_url=f"{base}/static/docs/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        if assets is None:
            return HTMLResponse("<p>ReDoc needs the fastapi-offline package.</p>", status_code=503)
        return get_redoc_html(openapi_url=f"{base}{app.openapi_url}", title=f"{app.title} - API docs",
                              redoc_js_url=f"{base}/static/docs/redoc.standalone.js",
                              redoc_favicon_url=f"{base}/static/docs/favicon.png", with_google_fonts=False)
