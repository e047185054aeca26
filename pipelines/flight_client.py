"""FlightDataClient: how the pipelines (and the HTTP layer through them) reach data: as a Flight client."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from spicepod import FlightcastError, Unavailable, error_from_flight
from spicepod.timestamps import iso_utc


class FlightDataClient:
    """A thread-safe Flight client with the runtime's credentials and typed errors."""

    def __init__(self, location: str, api_key: str | None = None):
        self.location = location
        self.api_key = api_key  # for processes that open their own client to the same node (Dask workers)
        headers = [(b"authorization", f"Bearer {api_key}".encode())] if api_key else []
        self._options = flight.FlightCallOptions(headers=headers)
        self.call_options = self._options
        self._local = threading.local()

    def _client(self) -> flight.FlightClient:
        # One connection per thread: gRPC channels are thread-safe, but separate ones avoid contention.
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = flight.FlightClient(self.location)
        return client

    def _call(self, fn: Callable[[flight.FlightClient], Any]) -> Any:
        """fn(client); once more on a new connection when the node was unavailable (a restarted data node:
        the old channel may sit in gRPC's reconnect backoff). Calls here only read, so a retry is safe."""
        with typed_errors():
            try:
                return fn(self._client())
            except flight.FlightUnavailableError as exc:
                if type(error_from_flight(exc, _message(exc))) is not Unavailable:
                    raise  # the node answered: what it serves is not ready yet
                self._local.client = None
                return fn(self._client())

    def reader(self, sql: str) -> flight.FlightStreamReader:
        """Stream the result of a read-only SQL query (or a bare dataset name)."""
        return self._call(lambda client: client.do_get(flight.Ticket(sql.encode("utf-8")), self._options))

    def query(self, sql: str) -> pa.Table:
        """Run a read-only SQL query and collect its result."""
        reader = self.reader(sql)
        with typed_errors():
            return reader.read_all()

    def action(self, name: str, body: bytes = b"") -> Any:
        """Run a Flight action whose single result is JSON."""
        results = self._call(lambda client: list(client.do_action(flight.Action(name, body), self._options)))
        return json.loads(results[0].body.to_pybytes())

    def datasets(self) -> list[dict]:
        return self.action("list_datasets")

    def dataset_info(self, name: str) -> dict:
        return self.action("dataset_info", name.encode("utf-8"))

    def series_census(self, name: str, before: np.datetime64) -> tuple[int, list[str | None]]:
        """How many series a panel dataset has, and those whose newest row is older than `before` (sorted)."""
        body = json.dumps({"dataset": name, "before": iso_utc(before)}).encode("utf-8")
        answer = self.action("series_census", body)
        return int(answer["series"]), answer["ended"]


@contextmanager
def typed_errors() -> Iterator[None]:
    """Flight errors as the error vocabulary, by the one table of spicepod.errors (FLIGHT_ERRORS)."""
    try:
        yield
    except (pa.ArrowException, flight.FlightError) as exc:
        error = error_from_flight(exc, _message(exc))
        if type(error) is Unavailable:
            error.message = f"the data node (Flight server) is unavailable: {error.message}"
        elif type(error) is FlightcastError:
            error.message = f"flight server: {error.message}"
        raise error from None


def _message(exc: Exception) -> str:
    """The server's message without the gRPC and Python detail pyarrow appends to it."""
    text = str(exc)
    for marker in (". Detail: Python exception", ". gRPC client debug context", ". Detail:"):
        text = text.split(marker, 1)[0]
    if text.startswith("'") and text.endswith("'"):
        text = text[1:-1]  # KeyError messages arrive quoted
    return text
