"""The forecast page (SPEC 11): `GET /` and `/static/...`, static files shipped in the package.

The page is plain HTML, CSS and JavaScript (uPlot vendored under static/vendor/) that reads the same JSON
API as every other client. These routes serve files, not JSON, so they are not in the OpenAPI document.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import tornado.web

from http_api.base import error_body, not_allowed_message, write_error_json

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static/"

# No inline script and no inline style: everything comes from this origin's files. Scripts set styles
# only through the CSSOM (element.style), which style-src does not restrict.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

IMMUTABLE_SECONDS = 365 * 24 * 3600  # a URL with ?v=<content hash> never changes


class PageHeaders(tornado.web.RequestHandler):
    """Headers of every page response: CSP, nosniff, no referrer, no framing; metrics per route."""

    def initialize_page(self, context: Any, route: str) -> None:
        self.ctx = context
        self.route = route
        self.started = time.perf_counter()

    def set_page_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors in the API's JSON envelope (404 for a missing file, 405 for a wrong method)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if status_code in (403, 404):  # 403: a path outside the static folder; it is just not there
            status_code, message = 404, f"no such file: {self.request.path}"
        elif status_code == 405:
            message = not_allowed_message(self.request, [])
        duration_ms = round((time.perf_counter() - self.started) * 1000, 3)
        write_error_json(self, status_code, error_body(status_code, message), duration_ms)

    def on_finish(self) -> None:
        method = self.request.method
        method = method if method in ("GET", "HEAD") else "OTHER"
        self.ctx.metrics.request(self.route, method, self.get_status(),
                                 time.perf_counter() - self.started)


class StaticHandler(PageHeaders, tornado.web.StaticFileHandler):
    """/static/PATH from the package's static folder: immutable when asked with ?v=HASH, else revalidated."""

    def initialize(self, context: Any, route: str) -> None:  # type: ignore[override]
        self.initialize_page(context, route)
        super().initialize(path=str(STATIC_DIR))

    def set_default_headers(self) -> None:
        self.set_page_headers()

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        return IMMUTABLE_SECONDS if self.get_query_argument("v", None) else 0

    def set_extra_headers(self, path: str) -> None:
        if self.get_query_argument("v", None):
            self.set_header("Cache-Control", f"public, max-age={IMMUTABLE_SECONDS}, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")  # use it, but ask (ETag) whether it changed


def static_url(path: str) -> str:
    """`/static/PATH?v=HASH` for a file of the package's static folder."""
    settings = {"static_path": str(STATIC_DIR), "static_url_prefix": STATIC_PREFIX}
    return StaticHandler.make_static_url(settings, path)


_ASSET = re.compile(r'(?P<attr>src|href)="/static/(?P<path>[^"?#]+)"')


def render_index() -> bytes:
    """index.html with every /static/ reference versioned by content hash, so browsers may cache them."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    text = _ASSET.sub(lambda m: f'{m["attr"]}="{static_url(m["path"])}"', text)
    return text.encode("utf-8")


class PageHandler(PageHeaders):
    """GET /: the page. Always revalidated (it names the versioned files), open without a key."""

    _index: bytes | None = None

    def initialize(self, context: Any, route: str) -> None:  # type: ignore[override]
        self.initialize_page(context, route)

    def set_default_headers(self) -> None:
        self.set_page_headers()

    def get(self) -> None:
        if PageHandler._index is None:
            PageHandler._index = render_index()
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(PageHandler._index)


def is_page_route(handler: type[tornado.web.RequestHandler]) -> bool:
    """Page routes serve files for people, not JSON: they are left out of the OpenAPI document."""
    return issubclass(handler, PageHeaders)
