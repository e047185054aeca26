"""Runtime: wires the store, the Flight server, the pipelines and the HTTP server from one spicepod."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import pyarrow as pa
import tornado.httpserver
import tornado.netutil

from flight_server import DatasetStore, FlightService
from http_api.app import AppContext, make_app
from pipelines.flight_client import FlightDataClient
from pipelines.service import PredictionService
from spicepod import Spicepod

log = logging.getLogger("flightcast")

SHUTDOWN_GRACE_S = 10.0


class StartError(Exception):
    """The runtime cannot start (a port in use, say); the message says which and why."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_host(host: str) -> str:
    """Where this process reaches its own server: loopback when bound to every interface."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


class Runtime:
    def __init__(self, pod: Spicepod):
        self.pod = pod

    def run(self) -> int:
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        pod, runtime = self.pod, self.pod.runtime
        started = time.perf_counter()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a signal during start-up stops right after it
            loop.add_signal_handler(sig, stop.set)
        store = DatasetStore(pod.datasets, runtime.data_dir, runtime.limits)
        store.open()

        flight_host, flight_port = _split(runtime.flight)
        try:
            flight_server = FlightService(store, f"grpc://{_hostport(flight_host, flight_port)}", runtime.api_key)
        except (OSError, pa.ArrowException) as exc:
            store.close()
            raise StartError(f"cannot serve Flight on {runtime.flight}: {exc}") from None
        # The server answers from here on. Its serve() only waits, and would install signal handlers
        # of its own over the ones above, so it is not called.
        log.info("flight listening on grpc://%s", _hostport(flight_host, flight_server.port))

        client = FlightDataClient(
            f"grpc://{_hostport(_client_host(flight_host), flight_server.port)}", runtime.api_key
        )
        predictions = PredictionService(
            pod.models,
            {d.name: d for d in pod.datasets},
            client,
            runtime.data_dir,
            max_horizon=runtime.limits.max_horizon,
            training=runtime.training,
        )
        store.subscribe(predictions.on_data_changed)  # commit notices, in-process
        context = AppContext(predictions, client, runtime.api_key)
        predictions.on_training = context.metrics.training
        predictions.start()
        app = make_app(context, runtime.limits.max_request_bytes)
        http_host, http_port = _split(runtime.http)
        http_server = tornado.httpserver.HTTPServer(app, max_body_size=runtime.limits.max_request_bytes)
        try:
            sockets = tornado.netutil.bind_sockets(http_port, address=http_host)
        except OSError as exc:
            flight_server.shutdown()
            store.close()
            raise StartError(f"cannot serve HTTP on {runtime.http}: {exc.strerror or exc}") from None
        http_server.add_sockets(sockets)
        log.info("http listening on %s", _hostport(http_host, sockets[0].getsockname()[1]))
        log.info(
            "spicepod %s: %d datasets, %d models, started in %.0f ms",
            pod.name, len(pod.datasets), len(pod.models), (time.perf_counter() - started) * 1000,
        )

        await stop.wait()

        log.info("shutting down")
        http_server.stop()  # no new connections
        try:
            await asyncio.wait_for(http_server.close_all_connections(), timeout=SHUTDOWN_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("http connections still open after %.0f s; closing anyway", SHUTDOWN_GRACE_S)
        predictions.stop()
        context.close()
        # Calls in flight finish (a DoPut commits or rolls back); a client that stalls mid-stream does
        # not hold the exit for longer than the grace period.
        closer = threading.Thread(target=flight_server.shutdown, name="flight-shutdown", daemon=True)
        closer.start()
        closer.join(SHUTDOWN_GRACE_S)
        if closer.is_alive():
            # Exiting now is what a crash would do, and that loses nothing: every acknowledged DoPut is
            # in the write-ahead log, and the open stream was never committed.
            log.warning("flight calls still open after %.0f s; exiting without them", SHUTDOWN_GRACE_S)
            return 0
        store.close()
        log.info("stopped")
        return 0
