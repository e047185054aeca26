"""Running client queries: the time limit (one watchdog thread for all queries) and the streaming reader.

A query past `limits.query_timeout_s` is interrupted (DuckDB has no statement timeout of its own);
time spent waiting for a slow client does not count. Error messages name datasets only: DuckDB's
catalog suggestions of its internal tables (`Did you mean "pg_enum"?`) never reach a client.
"""

from __future__ import annotations

import difflib
import math
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator

import duckdb
import pyarrow as pa

from spicepod import InvalidInput, LimitExceeded
from spicepod.errors import flight_exception

# DuckDB's hint after a catalog error, naming the closest entry of its whole catalog.
_SUGGESTION = re.compile(r'\s*Did you mean "[^"]*"\??', re.IGNORECASE)
_MISSING_TABLE = re.compile(r"Table with name (?P<name>\S+) does not exist", re.IGNORECASE)


def client_message(exc: BaseException, datasets: Iterable[str]) -> str:
    """DuckDB's message for a client, its catalog suggestion replaced by the closest dataset name, if any."""
    text = str(exc)
    if not _SUGGESTION.search(text):
        return text
    text = _SUGGESTION.sub("", text)
    missing = _MISSING_TABLE.search(text)
    if missing:
        close = difflib.get_close_matches(missing["name"].strip('"'), list(datasets), n=1)
        if close:
            head, sep, tail = text.partition("\n")
            text = f'{head}\nDid you mean "{close[0]}"?{sep}{tail}' if sep else f'{head}\nDid you mean "{close[0]}"?'
    return text


class Deadline:
    """One watched query: interrupted when it runs past its limit, and the error then says so."""

    def __init__(self, watchdog: QueryWatchdog, cursor: duckdb.DuckDBPyConnection, seconds: float):
        self.seconds = seconds
        self.due = time.monotonic() + seconds
        self.cursor = cursor
        self.fired = False
        self._watchdog = watchdog

    def cancel(self) -> None:
        self._watchdog.release(self)

    def pause(self) -> float:
        """Stop the clock (while the client, not the query, is slow); returns the time left."""
        left = self.due - time.monotonic()
        self.due = math.inf
        return left

    def resume(self, left: float) -> None:
        self.due = time.monotonic() + left

    def explain(self, exc: BaseException, datasets: Iterable[str] = ()) -> InvalidInput:
        if self.fired:
            return LimitExceeded(
                f"the query ran longer than {self.seconds:g} s (runtime.limits.query_timeout_seconds) "
                "and was stopped"
            )
        return InvalidInput(client_message(exc, datasets))


class QueryWatchdog:
    """One thread that interrupts queries past their deadline (a Timer per query costs a thread each)."""

    def __init__(self) -> None:
        self._watched: set[Deadline] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> Deadline:
        deadline = Deadline(self, cursor, seconds)
        with self._wake:
            self._watched.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
        return deadline

    def release(self, deadline: Deadline) -> None:
        with self._wake:
            self._watched.discard(deadline)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._watched if d.due <= now]:
                    deadline.fired = True
                    try:
                        deadline.cursor.interrupt()
                    except duckdb.Error:  # closed meanwhile: nothing left to stop
                        pass
                    self._watched.discard(deadline)
                # Deadlines are seconds long: checking a few times a second is precise enough, and a
                # new query never has to wake this thread.
                self._wake.wait(timeout=0.2)


class CursorReader:
    """Streams a query's batches and closes its DuckDB cursor when the stream ends, fails or is dropped.

    The first batches are read in the caller's thread (small results, window queries among them, need
    no thread); from the third on, a producer thread reads a few ahead, so DuckDB's scan overlaps
    sending the previous batch.
    """

    READ_AHEAD = 4
    INLINE_BATCHES = 2

    def __init__(self, source: pa.RecordBatchReader, cursor: duckdb.DuckDBPyConnection, deadline: Deadline):
        self._source = source
        self._cursor = cursor
        self._deadline = deadline
        # The producer's hand-over, made when it starts: a small result never needs them.
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._gave_up: threading.Event | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self._source.schema, self._batches())

    def _client_error(self, exc: BaseException) -> Exception:
        # A query that fails part-way (a bad cast in a later row group, the time limit) is the
        # client's error, sent as such after the batches already streamed; never a short result.
        return flight_exception(self._deadline.explain(exc))

    def _release(self) -> None:
        self._deadline.cancel()
        self._cursor.close()

    def _batches(self) -> Iterable[pa.RecordBatch]:
        batches = iter(self._source)
        producing = False
        try:
            for _ in range(self.INLINE_BATCHES):
                try:
                    batch = next(batches, _END)
                except (OSError, pa.ArrowException, duckdb.Error) as exc:
                    raise self._client_error(exc) from None
                if batch is _END:
                    return
                left = self._deadline.pause()  # the query waits while the client takes this batch
                yield batch
                self._deadline.resume(left)
            self._queue = queue.Queue(maxsize=self.READ_AHEAD)
            self._stop, self._gave_up = threading.Event(), threading.Event()
            threading.Thread(target=self._produce, args=(batches,), name="query-read-ahead", daemon=True).start()
            producing = True
            while True:
                try:
                    item = self._queue.get(timeout=0.25)
                except queue.Empty:
                    if self._gave_up.is_set():
                        raise pa.ArrowInvalid(
                            f"the stream was stopped: its reader took nothing for {self._deadline.seconds:g} s "
                            "(runtime.limits.query_timeout_seconds)"
                        ) from None
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if producing:
                self._stop.set()  # the client went away or the stream ended: the producer stops
            else:
                self._release()

    def _put(self, item: object) -> bool:
        """Hand an item to the consumer; False when it went away or stopped reading.

        Time spent waiting for a slow reader does not count against the query's time limit; a reader
        that takes nothing for as long as that limit is given up on, and its stream ends in an error.
        """
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            pass
        left = self._deadline.pause()
        try:
            waited = 0.0
            while not self._stop.is_set() and waited < self._deadline.seconds:
                try:
                    self._queue.put(item, timeout=0.25)
                    return True
                except queue.Full:
                    waited += 0.25
            self._gave_up.set()
            return False
        finally:
            self._deadline.resume(left)

    def _produce(self, batches: Iterator[pa.RecordBatch]) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(_END)
        except (OSError, pa.ArrowException, duckdb.Error) as exc:
            self._put(self._client_error(exc))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        finally:
            self._release()


_END = object()
