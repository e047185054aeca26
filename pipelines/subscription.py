"""A serve node's subscription to its data node's commit notices (see flight_server/notices.py).

While subscribed, the prediction service knows every commit before the DoPut that made it returns, and
answers cached forecasts without asking; while not (the data node is down or restarting), it asks the
data node for the data version on every prediction, and readiness says so. The subscription reconnects
by itself, and after reconnecting asks for every dataset's version, since notices may have been missed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import pyarrow as pa
import pyarrow.flight as flight

from spicepod.constants import NOTICES_COMMAND as COMMAND

log = logging.getLogger("flightcast.subscription")

RETRY_S = (0.2, 0.5, 1.0, 2.0)


class NoticeSubscription:
    def __init__(
        self, location: str, options: flight.FlightCallOptions,
        on_notice: Callable[[str, int, str | None, frozenset[str] | None, pa.Table | None], None],
        on_state: Callable[[bool], None],
        on_serving: Callable[[dict], None] | None = None,
    ):
        self.location = location
        self._options = options
        self._on_notice = on_notice
        self._on_state = on_state
        self._on_serving = on_serving
        self._stopping = threading.Event()
        self._client: flight.FlightClient | None = None
        self._reader: flight.FlightStreamReader | None = None
        self._thread = threading.Thread(target=self._run, name="notices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        # Closing the client does not end a read blocked on the notice stream; cancelling the call does.
        reader = self._reader
        if reader is not None:
            reader.cancel()
        client = self._client
        if client is not None:
            client.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._subscribe()
                attempt = 0
            except (OSError, pa.ArrowException, StopIteration, ValueError) as exc:
                if not self._stopping.is_set():
                    log.warning("commit notices from %s: %s; retrying", self.location, str(exc).split("\n")[0][:200])
            if not self._stopping.is_set():  # stopping on purpose is no lost subscription
                self._on_state(False)
            self._stopping.wait(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1

    def _subscribe(self) -> None:
        self._client = client = flight.FlightClient(self.location)
        try:
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(COMMAND), self._options)
            self._reader = reader
            writer.write_metadata(pa.py_buffer(b"subscribe"))
            first = reader.read_chunk()
            if first.app_metadata is None or first.app_metadata.to_pybytes() != b"subscribed":
                raise ValueError("the data node did not confirm the subscription")
            log.info("subscribed to commit notices of %s", self.location)
            self._on_state(True)
            while not self._stopping.is_set():
                chunk = reader.read_chunk()
                notice, rows = _notice(chunk.app_metadata.to_pybytes())
                if "serving" in notice:  # another serve node changed the version a model serves
                    self._serving(notice["serving"])
                    writer.write_metadata(pa.py_buffer(b"ack"))
                    continue
                series = notice["series"]
                self._on_notice(notice["dataset"], int(notice["version"]), notice["last_timestamp"],
                                frozenset(series) if series is not None else None, rows)
                writer.write_metadata(pa.py_buffer(b"ack"))
        finally:
            self._client = self._reader = None
            client.close()

    def _serving(self, choice: dict) -> None:
        if self._on_serving is None:
            return
        try:
            self._on_serving(choice)
        except Exception as exc:  # the notices must go on; the choice is read again on the next subscription
            log.warning("cannot serve the version another serve node chose (%s): %s: %s", choice,
                        type(exc).__name__, exc)


def _notice(message: bytes) -> tuple[dict, pa.Table | None]:
    """A notice's JSON and, after a newline, the rows of a small commit (an Arrow IPC stream)."""
    head, _, body = message.partition(b"\n")
    return json.loads(head), pa.ipc.open_stream(body).read_all() if body else None
