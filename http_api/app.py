"""The Tornado application: the route table and the context the handlers share."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.httputil
import tornado.log
import tornado.web

from http_api import anomalies, handlers, page, predict
from http_api.base import UNMATCHED_ROUTE, NotFoundHandler, route_template
from http_api.metrics import Metrics
from http_api.openapi import build_openapi
from pipelines.flight_client import FlightDataClient
from pipelines.service import PredictionService

log = logging.getLogger("flightcast.http")

# A body up to this size (and the limit) is read with its headers, before its handler is made: see Application.
WHOLE_BODY_BYTES = 16 * 1024


class AppContext:
    """What every handler reaches: the services, the key, the thread pools, metrics."""

    def __init__(self, predictions: PredictionService, data: FlightDataClient, api_key: str | None):
        self.predictions = predictions
        self.data = data
        self.api_key = api_key
        self.max_body_bytes: int | None = None  # set by make_app
        self.metrics = Metrics()
        self.metrics.known_models(m.name for m in predictions.models())
        try:  # row counts now, so rows added before the first scrape count as ingested
            self.metrics.observe_datasets(data.datasets())
        except Exception as exc:  # metrics must never stop the runtime
            log.warning("metrics: could not list datasets at start: %s", exc)
        self.openapi = build_openapi(api_key=bool(api_key))
        self.clock = time.perf_counter
        self.forecast_json = predict.ForecastJson()
        # LightGBM and Flight calls release the GIL; a few threads per core keep the IOLoop free.
        self._pools = {
            "default": ThreadPoolExecutor(max_workers=4 * (os.cpu_count() or 2), thread_name_prefix="http-work"),
            "training": ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-train"),
        }

    def submit(self, fn: Callable[..., Any], *args: Any, pool: str = "default") -> asyncio.Future[Any]:
        """`fn(*args)` started in a worker of `pool` now; its future (awaited on the IOLoop) has the result."""
        return asyncio.get_running_loop().run_in_executor(self._pools[pool], fn, *args)

    async def run(self, fn: Callable[..., Any], *args: Any, pool: str = "default") -> Any:
        return await self.submit(fn, *args, pool=pool)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    (r"/health", handlers.HealthHandler),
    (r"/metrics", handlers.MetricsHandler),
    (r"/v1/openapi\.json", handlers.OpenApiHandler),
    (r"/v1/ready", handlers.ReadyHandler),
    (r"/v1/datasets", handlers.DatasetsHandler),
    (r"/v1/models", handlers.ModelsHandler),
    (r"/v1/models/([^/]+)/predict", predict.PredictHandler),
    (r"/v1/models/([^/]+)/train", handlers.TrainHandler),
    (r"/v1/models/([^/]+)/versions", handlers.VersionsHandler),
    (r"/v1/models/([^/]+)/rollback", handlers.RollbackHandler),
    (r"/v1/models/([^/]+)/series", predict.SeriesHandler),
    (r"/v1/models/([^/]+)/forecasts", predict.ForecastsHandler),
    (r"/v1/models/([^/]+)/history", predict.HistoryHandler),
    (r"/v1/models/([^/]+)/anomalies", anomalies.AnomaliesHandler),
    (r"/v1/predict", predict.BatchPredictHandler),
    (r"/v1/sql", handlers.SqlHandler),
    # the forecast page (SPEC 11): files for people, not JSON; page.is_page_route keeps them out of OpenAPI
    (r"/", page.PageHandler),
    (r"/static/(.+)", page.StaticHandler),
]


# Routes tried first: Tornado matches the patterns in order, and GET predict is most of the traffic. The
# patterns are disjoint (each anchored at both ends), so the order never changes which handler answers.
HOT_ROUTES = (predict.PredictHandler,)


class Application(tornado.web.Application):
    """Tornado's Application, except that a request without a body or with a small one is not streamed, and
    access lines that are not logged are not built.

    The handlers stream bodies (BaseHandler) so that auth and the size limit are checked before a byte is
    read. Streaming pauses the handler after `prepare` until the body is complete: two more turns of the
    IOLoop, each with its callbacks and futures. A request with neither Content-Length nor Transfer-Encoding
    has no body (RFC 9112 6.3), and one whose Content-Length is at most `whole_body_bytes` (WHOLE_BODY_BYTES,
    or the limit when lower) has a body that costs nothing to hold: both are read whole and their handler
    runs in one turn. A refused request of that size (no key) is refused after its few bytes are read; any
    larger body, or one in chunks, is still streamed.
    """

    def __init__(self, *args: Any, whole_body_bytes: int = WHOLE_BODY_BYTES, **settings: Any) -> None:
        super().__init__(*args, **settings)
        self.whole_body_bytes = whole_body_bytes

    def get_handler_delegate(
        self, request: tornado.httputil.HTTPServerRequest, target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None, path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> tornado.web._HandlerDelegate:
        delegate = super().get_handler_delegate(request, target_class, target_kwargs, path_args, path_kwargs)
        if delegate.stream_request_body and self._read_whole(request.headers):
            delegate.stream_request_body = False
            # A streaming handler awaits this future before its method runs; once the handler is made (after
            # the body is read), the body is complete.
            request._body_future = asyncio.get_running_loop().create_future()
            request._body_future.set_result(None)
        return delegate

    def _read_whole(self, headers: tornado.httputil.HTTPHeaders) -> bool:
        """Whether the request has no body, or a small one of a known length (anything else is streamed)."""
        if "Transfer-Encoding" in headers:
            return False
        length = headers.get("Content-Length")
        return length is None or (length.isdigit() and int(length) <= self.whole_body_bytes)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Tornado's access line, built only when its level is logged (`flightcast run` hides 2xx lines)."""
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        if tornado.log.access_log.isEnabledFor(level):
            super().log_request(handler)


def make_app(context: AppContext, max_body_bytes: int | None = None) -> tornado.web.Application:
    """The app; `max_body_bytes` (also the HTTPServer's max_body_size) gets a JSON 413 beyond it."""
    context.max_body_bytes = max_body_bytes
    ordered = sorted(ROUTES, key=lambda route: route[1] not in HOT_ROUTES)  # stable: the rest keep their order
    routes = [
        (pattern, handler, {"context": context, "route": route_template(pattern, handler)})
        for pattern, handler in ordered
    ]
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context, "route": UNMATCHED_ROUTE},
        compress_response=False,
        whole_body_bytes=min(WHOLE_BODY_BYTES, max_body_bytes or WHOLE_BODY_BYTES),
    )
