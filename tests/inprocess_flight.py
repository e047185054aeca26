"""The fast tier: a DatasetStore and its FlightService on port 0 inside the test process.

Like pyarrow's own Flight tests, the server is a context manager that always shuts down. For data-plane
behaviour that needs no subprocess (crash, durability and the CLI keep theirs, through conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.flight as flight
from conftest import write_spicepod

from flight_server import DatasetStore, FlightService
from spicepod import Limits, load_spicepod


@dataclass
class InProcessFlight:
    store: DatasetStore
    server: FlightService
    client: flight.FlightClient
    notices: list[tuple]  # every commit notice: (dataset, version, last_timestamp, series)

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.server.port}"


@contextmanager
def flight_store(folder: Path, spicepod_text: str, limits: Limits | None = None,
                 data_dir: Path | None = None) -> Iterator[InProcessFlight]:
    """Open the spicepod's datasets in `folder` (data files relative to it) and serve them on a free port."""
    pod = load_spicepod(write_spicepod(folder, spicepod_text))
    with ExitStack() as stack:
        store = DatasetStore(pod.datasets, data_dir or folder / "store", limits or pod.runtime.limits)
        store.open()
        stack.callback(store.close)
        notices: list[tuple] = []
        store.subscribe(lambda *notice: notices.append(notice))
        server = FlightService(store, "grpc://127.0.0.1:0")
        stack.callback(server.shutdown)
        client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
        stack.callback(client.close)
        yield InProcessFlight(store, server, client, notices)
