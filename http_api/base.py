"""BaseHandler owns JSON bodies, the error envelope, X-API-Key auth, body limits, timing and metrics."""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import math
import time
from datetime import date, datetime, timezone
from datetime import time as dt_time
from typing import Any

import tornado.web

from spicepod import FlightcastError, InvalidInput, LimitExceeded, Unauthenticated

log = logging.getLogger("flightcast.http")

HTTP_ERROR_NAMES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}

UNMATCHED_ROUTE = "(unmatched)"


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    """The HTTP methods a handler class answers (those it overrides), upper case."""
    return [
        method for method in handler.SUPPORTED_METHODS
        if getattr(handler, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())
    ]


def route_template(pattern: str, handler: type[tornado.web.RequestHandler]) -> str:
    """`/v1/models/([^/]+)/predict` -> `/v1/models/{name}/predict`: groups named after the method's arguments."""
    methods = implemented_methods(handler)
    names = list(inspect.signature(getattr(handler, methods[0].lower())).parameters)[1:] if methods else []
    out, depth, group = [], 0, 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            if depth == 0:
                out.append(pattern[i + 1])
            i += 2
            continue
        if char == "(":
            if depth == 0:
                out.append("{" + (names[group] if group < len(names) else f"arg{group}") + "}")
                group += 1
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and char not in "^$":
            out.append(char)
        i += 1
    return "".join(out)


class BodyTooLarge(LimitExceeded):
    """The request body is over runtime.limits.max_request_bytes (HTTP 413)."""


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Every route derives from this; route handlers parse, call the service and write.

    Bodies are streamed so that auth and the size limit are checked from the headers, before a byte
    of the body is read: a too-large body gets a JSON 413 instead of a dropped connection.
    """

    open_paths = ("/health",)

    def initialize(self, context: Any, route: str = UNMATCHED_ROUTE) -> None:
        self.ctx = context
        self.route = route
        self.started = time.perf_counter()
        self._chunks: list[bytes] = []
        self._body: bytes | None = None

    def requires_key(self) -> bool:
        path = self.request.path
        return path not in self.open_paths and (path.startswith("/v1/") or path in ("/v1", "/metrics"))

    def given_key(self) -> str:
        return self.request.headers.get("X-API-Key", "")

    def prepare(self) -> None:
        key = self.ctx.api_key
        if key and self.requires_key():
            if not hmac.compare_digest(self.given_key().encode(), key.encode()):
                raise Unauthenticated("missing or invalid X-API-Key header")
        limit = self.ctx.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if limit and length and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"request body of {int(length)} bytes is larger than the limit of {limit} bytes")

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self._chunks)
            self._chunks.clear()
        return self._body

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def json_body(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"request body is not JSON: {exc}") from None
        except RecursionError:
            raise InvalidInput("request body is not JSON this service accepts: nested too deeply") from None

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(payload, default=str))

    def write_text(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text)

    def error_envelope(self, exc: BaseException) -> tuple[int, dict[str, Any]]:
        """The status and body for an error; overridden by the predict routes."""
        if isinstance(exc, BodyTooLarge):
            return 413, {"status": "PayloadTooLarge", "error_message": exc.message}
        if isinstance(exc, FlightcastError):  # the error vocabulary carries its own status (spicepod.errors)
            return exc.http_status, {"status": exc.status_name, "error_message": exc.message}
        return 500, {"status": "InternalError", "error_message": internal_message(exc)}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError):
            reason = exc.log_message or self._reason
            if status_code == 405:
                allowed = implemented_methods(type(self))
                reason = f"method {self.request.method} is not allowed on {self.request.path}"
                if allowed:
                    reason += f"; allowed: {', '.join(allowed)}"
                    self._allow = ", ".join(allowed)
            name = HTTP_ERROR_NAMES.get(status_code, "InternalError" if status_code >= 500 else "BadRequest")
            body: dict[str, Any] = {"status": name, "error_message": reason}
        elif exc is not None:
            status_code, body = self.error_envelope(exc)
        else:
            body = {"status": "InternalError" if status_code >= 500 else "BadRequest", "error_message": self._reason}
        body.setdefault("duration_ms", self.elapsed_ms())
        self.clear()
        if getattr(self, "_allow", None):
            self.set_header("Allow", self._allow)
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body, default=str))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (FlightcastError, tornado.web.HTTPError)) and not _is_internal(value):
            return  # expected errors are answered, not logged with a traceback
        log.error("%s %s failed", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def on_finish(self) -> None:
        method = self.request.method if self.request.method in self.SUPPORTED_METHODS else "OTHER"
        self.ctx.metrics.request(self.route, method, self.get_status(), time.perf_counter() - self.started)


def _is_internal(exc: BaseException) -> bool:
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code >= 500
    return isinstance(exc, FlightcastError) and exc.internal


def internal_message(exc: BaseException) -> str:
    """A short name for an unexpected failure; the traceback is in the log, never in the response."""
    if isinstance(exc, FlightcastError):
        return exc.message
    return f"internal error: {type(exc).__name__}"


def jsonable(values: list[Any]) -> list[Any]:
    """Column values for JSON/CSV: timestamps as ISO 8601 UTC (naive ones are UTC), NaN/inf as null."""
    return [_jsonable(value) for value in values]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool, type(None))):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, (date, dt_time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):  # nested values (lists, structs, maps) follow the same rules
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


class NotFoundHandler(BaseHandler):
    """Any other path: 404 with a JSON body."""

    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404, f"no route for {self.request.path}")

