"""`flight_server`: flightcast's Flight data plane (a DatasetStore and its FlightService) in this process.

Like pyarrow's own Flight tests, the server is a context manager on a free port that always shuts down:

    with flight_server(folder, spicepod_text) as served:
        served.client.do_get(...)

No HTTP, no pipelines, no new interpreter: it serves in milliseconds. For data-plane behaviour that needs
no process of its own; crashes, kill -9, signals and the CLI keep a subprocess (harness.RuntimeProcess).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.flight as flight

from harness.client import HeaderMiddlewareFactory, write_spicepod


@dataclass
class ServedFlight:
    """A running in-process Flight server, its store, one client, and every commit notice it published."""

    spicepod: Path
    store: object  # flight_server.DatasetStore (not imported at module level: the product loads on use)
    server: flight.FlightServerBase
    client: flight.FlightClient
    notices: list[tuple]  # (dataset, version, last_timestamp, series) per commit, in commit order
    api_key: str | None = None
    _clients: list[flight.FlightClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def location(self) -> str:
        return f"grpc://127.0.0.1:{self.server.port}"

    @property
    def flight_location(self) -> str:
        """The same as `location`, under the name runtimes use."""
        return self.location

    def flight_client(self, api_key: str | None = None) -> flight.FlightClient:
        """Another client, closed with the server; with `api_key` every call carries `authorization: Bearer KEY`."""
        middleware = [HeaderMiddlewareFactory({"authorization": f"Bearer {api_key}"})] if api_key else None
        client = flight.FlightClient(self.location, middleware=middleware)
        self._clients.append(client)
        return client


@contextmanager
def flight_server(folder: Path, spicepod_text: str | None = None, *, limits: object | None = None,
                  data_dir: Path | None = None, api_key: str | None = None) -> Iterator[ServedFlight]:
    """Open the spicepod's datasets (`file:` paths relative to `folder`) and serve them on a free port.

    The spicepod is `spicepod_text`, written into `folder`, or else `folder/spicepod.yaml` as it is. `limits`
    (spicepod.Limits) replaces the spicepod's; with `api_key` the server requires it, as the runtime does.
    """
    from flight_server import DatasetStore, FlightService
    from spicepod import load_spicepod

    folder = Path(folder)
    path = folder / "spicepod.yaml" if spicepod_text is None else write_spicepod(folder, spicepod_text)
    pod = load_spicepod(path)
    with ExitStack() as stack:
        store = DatasetStore(pod.datasets, data_dir or folder / "store", limits or pod.runtime.limits)
        store.open()
        stack.callback(store.close)
        notices: list[tuple] = []
        store.subscribe(lambda *notice: notices.append(notice[:4]))  # the rows apart
        server = FlightService(store, "grpc://127.0.0.1:0", api_key)
        stack.callback(server.shutdown)
        # Notice subscriptions never end by themselves; the runtime ends them before shutting down too.
        stack.callback(server.notices.close)
        client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
        stack.callback(client.close)
        served = ServedFlight(path, store, server, client, notices, api_key)
        stack.callback(lambda: [c.close() for c in served._clients])
        yield served
