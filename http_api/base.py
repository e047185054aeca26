"""BaseHandler owns JSON bodies, the error envelope, X-API-Key auth, body limits, timing and metrics."""

from __future__ import annotations

import functools
import hmac
import inspect
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import pyarrow as pa
import tornado
import tornado.httputil
import tornado.web

from http_api.formats import TABLE_ENCODINGS, negotiate
from spicepod import FlightcastError, InvalidInput, LimitExceeded, Unauthenticated

log = logging.getLogger("flightcast.http")

# The one table of the HTTP statuses the API answers errors with, and the `status` of their JSON envelope.
HTTP_STATUS_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    500: "InternalError",
    501: "NotImplemented",
    503: "Unavailable",
}

# Paths that answer without the API key: probes of load balancers and orchestrators.
OPEN_PATHS = frozenset({"/health", "/v1/ready"})

# How often a query parameter may be given.
ONE = "one"
MANY = "many"

UNMATCHED_ROUTE = "(unmatched)"

# json.dumps(..., default=str) as one encoder: dumps would build a new encoder for every body.
encode_json = json.JSONEncoder(default=str).encode


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


def status_name(status: int) -> str:
    """The envelope's `status` for an HTTP status (one the table lacks: BadRequest or InternalError)."""
    return HTTP_STATUS_NAMES.get(status) or ("InternalError" if status >= 500 else "BadRequest")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON error envelope: `status` (named by HTTP_STATUS_NAMES) and `error_message`."""
    return {"status": status_name(status), "error_message": message}


def write_error_json(
    handler: tornado.web.RequestHandler, status: int, body: dict[str, Any], duration_ms: float,
    headers: Mapping[str, str] | None = None,
) -> None:
    """The one writer of an error response, for every route: the envelope with `duration_ms`, as JSON."""
    handler.clear()  # drops what the route had set, then sets the handler's default headers again
    for name, value in (headers or {}).items():
        handler.set_header(name, value)
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json; charset=UTF-8")
    handler.finish(encode_json({**body, "duration_ms": duration_ms}))


def http_date() -> str:
    """Now as an HTTP Date header; formatted once a second, as email.utils formats it slowly."""
    return _http_date(int(time.time()))


@functools.lru_cache(maxsize=1)
def _http_date(second: int) -> str:
    return tornado.httputil.format_timestamp(second)


def not_allowed_message(request: Any, allowed: list[str]) -> str:
    message = f"method {request.method} is not allowed on {request.path}"
    return f"{message}; allowed: {', '.join(allowed)}" if allowed else message


class BodyTooLarge(LimitExceeded):
    """The request body is over runtime.limits.max_request_bytes."""

    http_status = 413


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Every route derives from this; route handlers parse, call the service and write.

    Bodies are streamed so that auth and the size limit are checked from the headers, before a byte
    of the body is read: a too-large body gets a JSON 413 instead of a dropped connection. (A request
    without a body, or with a small one, is not streamed: see app.Application; its body is the request's.)
    """

    # The query parameters this route takes: name -> ONE (at most once) or MANY (repeatable). Any other
    # parameter, or a ONE given twice, is a 400 that names it, checked before the route runs.
    query_params: ClassVar[Mapping[str, str]] = {}

    def initialize(self, context: Any, route: str = UNMATCHED_ROUTE) -> None:
        self.ctx = context
        self.route = route
        self.started = time.perf_counter()
        self._chunks: list[bytes] = []
        self._body: bytes | None = None

    def clear(self) -> None:
        # Tornado's clear() (tornado 6.6), but with the Date header of http_date(): formatting the date anew
        # took a few microseconds of every response.
        self._headers = tornado.httputil.HTTPHeaders({
            "Server": f"TornadoServer/{tornado.version}",
            "Content-Type": "text/html; charset=UTF-8",
            "Date": http_date(),
        })
        self.set_default_headers()
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = tornado.httputil.responses[200]

    def requires_key(self) -> bool:
        path = self.request.path
        return path not in OPEN_PATHS and (path.startswith("/v1/") or path in ("/v1", "/metrics"))

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
        self.check_query()

    def check_query(self) -> None:
        """Refuse unknown query parameters and single-valued ones given twice, naming them."""
        arguments = self.request.query_arguments
        if not arguments:
            return
        method = self.request.method.lower() if self.request.method else ""
        if getattr(type(self), method, None) is getattr(tornado.web.RequestHandler, method, None):
            return  # not a method of this route: the 405 says more than a parameter check would
        for name, values in arguments.items():
            kind = self.query_params.get(name)
            if kind is None:
                takes = (f"expected one of {', '.join(sorted(self.query_params))}" if self.query_params
                         else f"{self.route} takes none")
                raise InvalidInput(f"unknown query parameter {_shown(name)}; {takes}")
            if kind == ONE and len(values) > 1:
                raise InvalidInput(f"query parameter {_shown(name)} given {len(values)} times; it takes one value")

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self._chunks) if self._chunks else self.request.body
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
        self.write_json_bytes(encode_json(payload).encode(), status)

    def write_json_bytes(self, body: bytes, status: int = 200) -> None:
        """A body already encoded as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(body)

    def table_media(self) -> str:
        """The table format the request's `Accept` prefers; 406 (before any work) when it accepts none."""
        accept = self.request.headers.get("Accept")
        media = negotiate(accept, list(TABLE_ENCODINGS))
        if media is None:
            raise tornado.web.HTTPError(
                406, f"cannot answer Accept: {accept[:200]}; this route serves {', '.join(TABLE_ENCODINGS)}")
        return media

    async def write_table(self, table: pa.Table, media: str) -> None:
        """The table encoded as `media` (from table_media), off the IOLoop; returns once the body is handed to
        the socket (a bulk caller's foreground work lasts until then: see ForecastsHandler)."""
        content_type, encode = TABLE_ENCODINGS[media]
        self.set_header("Content-Type", content_type)
        await self.finish(await self.ctx.run(encode, table))

    def write_text(self, text: str, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text)

    def error_response(self, exc: BaseException | None, status_code: int) -> tuple[int, dict[str, Any]]:
        """The status and envelope for what ended the request (the predict routes re-map them)."""
        status, message = status_code, self._reason
        if exc is not None:
            status, message = error_status(exc)
        if status == 405:
            message = not_allowed_message(self.request, implemented_methods(type(self)))
        return status, error_body(status, message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, body = self.error_response(exc, status_code)
        allowed = implemented_methods(type(self)) if status == 405 else []
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        write_error_json(self, status, body, self.elapsed_ms(), headers)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not is_internal(value):
            return  # expected errors are answered, not logged with a traceback
        log.error("%s %s failed", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def on_finish(self) -> None:
        method = self.request.method if self.request.method in self.SUPPORTED_METHODS else "OTHER"
        self.ctx.metrics.request(self.route, method, self.get_status(), time.perf_counter() - self.started)


def _shown(name: str) -> str:
    """A client's parameter name for a message: tornado reads names as Latin-1; shown as UTF-8, bounded."""
    text = name.encode("latin-1", "replace").decode("utf-8", "replace")
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message of an exception: its own (the error vocabulary, tornado's), else 500."""
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code, exc.log_message or exc.reason or status_name(exc.status_code)
    if isinstance(exc, FlightcastError):
        return exc.http_status, exc.message
    return 500, internal_message(exc)


def is_internal(exc: BaseException) -> bool:
    """A failure of the server (HTTP 5xx) rather than of the request; anything unexpected is one."""
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code >= 500
    return not isinstance(exc, FlightcastError) or exc.internal


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

