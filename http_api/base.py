"""BaseHandler owns JSON bodies, the error envelope, X-API-Key auth and timing."""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

import tornado.web

from spicepod import FlightcastError, InvalidInput, NotFound, NotReady, Unauthenticated

log = logging.getLogger("flightcast.http")

# HTTP status and envelope `status` per error kind, for routes other than predict.
STATUS = {
    InvalidInput.kind: (400, "BadRequest"),
    NotReady.kind: (400, "BadRequest"),
    NotFound.kind: (404, "NotFound"),
    Unauthenticated.kind: (401, "Unauthorized"),
}


class BaseHandler(tornado.web.RequestHandler):
    """Every route derives from this; route handlers parse, call the service and write."""

    open_paths = ("/health",)

    def initialize(self, context: Any) -> None:
        self.ctx = context

    def prepare(self) -> None:
        self.started = time.perf_counter()
        key = self.ctx.api_key
        if key and self.request.path not in self.open_paths:
            given = self.request.headers.get("X-API-Key", "")
            if not hmac.compare_digest(given.encode(), key.encode()):
                raise Unauthenticated("missing or invalid X-API-Key header")

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not JSON: {exc}") from None

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(payload))

    def write_text(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text)

    def error_envelope(self, exc: BaseException) -> tuple[int, dict[str, Any]]:
        """The status and body for an error; overridden by the predict routes."""
        if isinstance(exc, FlightcastError) and exc.kind in STATUS:
            status, name = STATUS[exc.kind]
            return status, {"status": name, "error_message": exc.message}
        return 500, {"status": "InternalError", "error_message": internal_message(exc)}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError):
            reason = exc.log_message or self._reason
            name = {404: "NotFound", 405: "MethodNotAllowed"}.get(status_code, "BadRequest")
            if status_code >= 500:
                name = "InternalError"
            body: dict[str, Any] = {"status": name, "error_message": reason}
        elif exc is not None:
            status_code, body = self.error_envelope(exc)
        else:
            body = {"status": "InternalError" if status_code >= 500 else "BadRequest", "error_message": self._reason}
        body.setdefault("duration_ms", self.elapsed_ms() if hasattr(self, "started") else 0.0)
        self.clear()
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (FlightcastError, tornado.web.HTTPError)) and not _is_internal(value):
            return  # expected errors are answered, not logged with a traceback
        log.error("%s %s failed", self.request.method, self.request.path, exc_info=(typ, value, tb))


def _is_internal(exc: BaseException) -> bool:
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code >= 500
    return isinstance(exc, FlightcastError) and exc.kind not in STATUS


def internal_message(exc: BaseException) -> str:
    """A short name for an unexpected failure; the traceback is in the log, never in the response."""
    if isinstance(exc, FlightcastError):
        return exc.message
    return f"internal error: {type(exc).__name__}"


class NotFoundHandler(BaseHandler):
    """Any other path: 404 with a JSON body."""

    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404, f"no route for {self.request.path}")
