"""Runtime: wires the store, the Flight server, the pipelines and the HTTP server from one spicepod.

`Runtime.running()` starts them in order, one small step each; every step that starts something pushes
the matching stop onto one AsyncExitStack, so on every way out (a signal, a start-up failure, an error)
each started thing is stopped exactly once, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator

import pyarrow as pa
import tornado.httpserver
import tornado.netutil

from flight_server import DatasetStore, FlightService
from flightcast.cli import SHUTDOWN_GRACE_S
from http_api.app import AppContext, make_app
from pipelines.flight_client import FlightDataClient
from pipelines.service import PredictionService
from spicepod import Spicepod
from spicepod.addresses import join_host_port, parse_host_port

log = logging.getLogger("flightcast")

# Requests share the GIL with training, DoPut and upkeep threads, and a thread that wants it waits up to this
# long for the holder to let go (Python's default is 5 ms). Measured: GET predict p99 while a 1,000-series
# panel trains went from 5.3x to 2.9x (warm) and 3.4x to 2.3x (cold) of the same with no training.
GIL_SWITCH_INTERVAL_S = 0.0005


class StartError(Exception):
    """The runtime cannot start (a port in use, say); the message says which and why."""


def _client_host(host: str) -> str:
    """Where this process reaches its own server: loopback when bound to every interface."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


ROLES = ("all", "data", "serve")


class Runtime:
    """One spicepod served: `run()` until SIGINT/SIGTERM, or `async with runtime.running():` to embed it.

    Roles: `all` (one process: store, Flight, pipelines, HTTP), `data` (the store and its Flight server
    alone), `serve` (pipelines and HTTP against the data node at `data_location`, whose commit notices
    they subscribe to).
    """

    def __init__(
        self, pod: Spicepod, grace_s: float = SHUTDOWN_GRACE_S, role: str = "all", data_location: str | None = None,
    ):
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if (role == "serve") != (data_location is not None):
            raise ValueError("a serve node needs the data node's location (--data grpc://HOST:PORT), and only it")
        self.pod = pod
        self.grace_s = grace_s
        self.role = role
        self.data_location = data_location
        self.http_port: int | None = None  # the bound ports, once running
        self.flight_port: int | None = None
        self._flight_open = False

    def run(self) -> int:
        # The process is ours alone (not when embedded by running()). What the imports made (modules, classes,
        # functions: some 150,000 objects) lives as long as the process: frozen, it is left out of the garbage
        # collector's full passes, which otherwise walk all of it (60 ms) in the middle of a request, after a
        # bulk forecast say.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        gc.collect()
        gc.freeze()
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a signal during start-up stops right after it
            loop.add_signal_handler(sig, stop.set)
        async with self.running():
            await stop.wait()
            log.info("shutting down")
        if not self._flight_open:
            log.info("stopped")
        return 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Everything started and answering inside; everything that was started is stopped on the way out."""
        pod = self.pod
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            if self.role == "serve":
                client = FlightDataClient(self.data_location, pod.runtime.api_key)
                store = None
            else:
                store = self._open_store(stack)
                client = self._start_flight(stack, store)
            if self.role != "data":
                context = self._start_pipelines(stack, store, client)
                self._start_http(stack, context)
            log.info(
                "spicepod %s (role %s): %d datasets, %d models, started in %.0f ms",
                pod.name, self.role, len(pod.datasets), len(pod.models), (time.perf_counter() - started) * 1000,
            )
            yield self

    # --- start steps, each pushing its stop -----------------------------------------------------------

    def _open_store(self, stack: contextlib.AsyncExitStack) -> DatasetStore:
        runtime = self.pod.runtime
        store = DatasetStore(self.pod.datasets, runtime.data_dir, runtime.limits)
        stack.callback(self._close_store, store)  # also when open() fails half-way: the file may be attached
        store.open()
        return store

    def _close_store(self, store: DatasetStore) -> None:
        if self._flight_open:
            # A Flight call that outlived the grace period may still use the store. Leaving it open is
            # what a crash would do, and that loses nothing: every acknowledged DoPut is in the
            # write-ahead log, and the open stream was never committed.
            return
        store.close()

    def _start_flight(self, stack: contextlib.AsyncExitStack, store: DatasetStore) -> FlightDataClient:
        runtime = self.pod.runtime
        host, port = parse_host_port(runtime.flight)
        try:
            server = FlightService(store, f"grpc://{join_host_port(host, port)}", runtime.api_key)
        except (OSError, pa.ArrowException) as exc:
            raise StartError(f"cannot serve Flight on {runtime.flight}: {exc}") from None
        self._flight_open = True
        stack.callback(self._stop_flight, server)
        # The server answers from here on. Its serve() only waits, and would install signal handlers
        # of its own over the runtime's, so it is not called.
        self.flight_port = server.port
        log.info("flight listening on grpc://%s", join_host_port(host, server.port))
        return FlightDataClient(f"grpc://{join_host_port(_client_host(host), server.port)}", runtime.api_key)

    def _stop_flight(self, server: FlightService) -> None:
        # Calls in flight finish (a DoPut commits or rolls back); a client that stalls mid-stream does
        # not hold the exit for longer than the grace period. Notice subscriptions never finish by
        # themselves: they are ended first.
        server.notices.close()
        closer = threading.Thread(target=server.shutdown, name="flight-shutdown", daemon=True)
        closer.start()
        closer.join(self.grace_s)
        if closer.is_alive():
            log.warning("flight calls still open after %g s; exiting without them", self.grace_s)
            return
        self._flight_open = False

    def _start_pipelines(
        self, stack: contextlib.AsyncExitStack, store: DatasetStore | None, client: FlightDataClient
    ) -> AppContext:
        pod, runtime = self.pod, self.pod.runtime
        predictions = PredictionService(
            pod.models,
            {d.name: d for d in pod.datasets},
            client,
            runtime.data_dir,
            max_horizon=runtime.limits.max_horizon,
            remote=store is None,
            training=runtime.training,
        )
        if store is not None:
            store.subscribe(predictions.on_data_changed)  # commit notices, in-process
        context = AppContext(predictions, client, runtime.api_key)
        stack.callback(context.close)
        predictions.on_training = context.metrics.training
        predictions.start()
        stack.callback(predictions.stop)
        return context

    def _start_http(self, stack: contextlib.AsyncExitStack, context: AppContext) -> None:
        runtime = self.pod.runtime
        host, port = parse_host_port(runtime.http)
        limit = runtime.limits.max_request_bytes
        server = tornado.httpserver.HTTPServer(make_app(context, limit), max_body_size=limit)
        try:
            sockets = tornado.netutil.bind_sockets(port, address=host)
        except OSError as exc:
            raise StartError(f"cannot serve HTTP on {runtime.http}: {exc.strerror or exc}") from None
        server.add_sockets(sockets)
        stack.push_async_callback(self._stop_http, server)
        self.http_port = sockets[0].getsockname()[1]
        log.info("http listening on %s", join_host_port(host, self.http_port))

    async def _stop_http(self, server: tornado.httpserver.HTTPServer) -> None:
        server.stop()  # no new connections
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=self.grace_s)
        except asyncio.TimeoutError:
            log.warning("http connections still open after %g s; closing anyway", self.grace_s)
