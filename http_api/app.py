"""The Tornado application: the route table and the context the handlers share."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web

from http_api import handlers
from http_api.base import NotFoundHandler
from http_api.metrics import Metrics
from pipelines.flight_client import FlightDataClient
from pipelines.service import PredictionService


class AppContext:
    """What every handler reaches: the services, the key, the thread pools, metrics."""

    def __init__(self, predictions: PredictionService, data: FlightDataClient, api_key: str | None):
        self.predictions = predictions
        self.data = data
        self.api_key = api_key
        self.metrics = Metrics()
        self.clock = time.perf_counter
        # LightGBM and Flight calls release the GIL; a few threads per core keep the IOLoop free.
        self._pools = {
            "default": ThreadPoolExecutor(max_workers=4 * (os.cpu_count() or 2), thread_name_prefix="http-work"),
            "training": ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-train"),
        }

    async def run(self, fn: Callable[..., Any], *args: Any, pool: str = "default") -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pools[pool], fn, *args)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    (r"/health", handlers.HealthHandler),
    (r"/v1/ready", handlers.ReadyHandler),
    (r"/v1/datasets", handlers.DatasetsHandler),
    (r"/v1/models", handlers.ModelsHandler),
    (r"/v1/models/([A-Za-z_][A-Za-z0-9_]*|[^/]+)/predict", handlers.PredictHandler),
    (r"/v1/models/([^/]+)/train", handlers.TrainHandler),
    (r"/v1/predict", handlers.BatchPredictHandler),
    (r"/v1/sql", handlers.SqlHandler),
]


def make_app(context: AppContext, max_body_bytes: int | None = None) -> tornado.web.Application:
    routes = [(pattern, handler, {"context": context}) for pattern, handler in ROUTES]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context},
        compress_response=False,
    )
