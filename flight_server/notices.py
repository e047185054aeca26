"""Commit notices for other processes: serve nodes subscribe over a Flight DoExchange and acknowledge
each notice; a DoPut returns only after every subscriber acknowledged its commit (or was dropped for
not answering within ACK_TIMEOUT_S), so no serve node answers from older data after a DoPut returned.

Protocol (DoExchange, descriptor command `flightcast.notices`): the client sends metadata `subscribe`;
the server sends one metadata message per commit, the JSON `{"dataset", "version", "last_timestamp",
"series"}` (series: a list of ids, or null for all), followed, when the commit was small, by a newline and
its rows as an Arrow IPC stream (what a serve node updates its windows from without a read); or the JSON
`{"serving": {"model", "run", "spec_hash", "seq"}}` for a serving choice (flight_server/serving.py). The
client answers each with metadata `ack`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading

import pyarrow as pa
import pyarrow.flight as flight

from spicepod.constants import NOTICES_COMMAND

log = logging.getLogger("flightcast.notices")

COMMAND = NOTICES_COMMAND  # the DoExchange command the Flight service routes here

ACK_TIMEOUT_S = 2.0
IDLE_CHECK_S = 0.5  # how often an idle subscription looks whether its call was cancelled


class _Subscriber:
    def __init__(self, peer: str):
        self.peer = peer
        self.outbox: queue.Queue[tuple[bytes, threading.Event] | None] = queue.Queue()
        self.alive = True


class NoticeHub:
    """Fans commit notices out to subscribed serve nodes and waits for their acknowledgements."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._lock = threading.Lock()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(
        self, dataset: str, version: int, last_timestamp: str | None, series: frozenset[str] | None,
        rows: pa.Table | None = None,
    ) -> None:
        """A store commit listener: deliver to every subscriber, each acknowledged or dropped."""
        self.announce({"dataset": dataset, "version": version, "last_timestamp": last_timestamp,
                       "series": sorted(series) if series is not None else None}, rows)

    def announce(self, notice: dict, rows: pa.Table | None = None) -> None:
        """Deliver one JSON notice (a commit with its rows, or a serving choice `{"serving": {...}}`) to every
        subscriber, each acknowledged or dropped."""
        with self._lock:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        message = json.dumps(notice).encode()
        if rows is not None:
            message += b"\n" + ipc_bytes(rows)
        waits = []
        for subscriber in subscribers:
            done = threading.Event()
            subscriber.outbox.put((message, done))
            waits.append((subscriber, done))
        for subscriber, done in waits:
            if not done.wait(ACK_TIMEOUT_S) and subscriber.alive:
                log.warning("serve node %s did not acknowledge a notice in %.0f s; dropping its subscription",
                            subscriber.peer, ACK_TIMEOUT_S)
                self._drop(subscriber)

    def close(self) -> None:
        """End every subscription (at shutdown: a subscription is a call that never ends by itself)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            self._drop(subscriber)

    def _drop(self, subscriber: _Subscriber) -> None:
        subscriber.alive = False
        with self._lock:
            self._subscribers.discard(subscriber)
        subscriber.outbox.put(None)

    def serve(self, context: flight.ServerCallContext, reader: flight.MetadataRecordBatchReader,
              writer: flight.MetadataRecordBatchWriter) -> None:
        """The DoExchange of one subscriber, until it goes away or is dropped."""
        first = reader.read_chunk()
        if first.app_metadata is None or first.app_metadata.to_pybytes() != b"subscribe":
            raise pa.ArrowInvalid("a notice subscription starts with the metadata message 'subscribe'")
        subscriber = _Subscriber(context.peer())
        with self._lock:
            self._subscribers.add(subscriber)
        log.info("serve node %s subscribed to commit notices", subscriber.peer)
        writer.write_metadata(pa.py_buffer(b"subscribed"))
        try:
            while subscriber.alive and not context.is_cancelled():
                try:
                    item = subscriber.outbox.get(timeout=IDLE_CHECK_S)
                except queue.Empty:
                    continue
                if item is None:
                    return
                message, done = item
                writer.write_metadata(pa.py_buffer(message))
                answer = reader.read_chunk()
                if answer.app_metadata is None or answer.app_metadata.to_pybytes() != b"ack":
                    return
                done.set()
        except (OSError, StopIteration, pa.ArrowException):
            pass  # the serve node went away
        finally:
            if subscriber.alive:
                self._drop(subscriber)
            log.info("serve node %s unsubscribed", subscriber.peer)


def ipc_bytes(rows: pa.Table) -> bytes:
    """The rows as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes()
