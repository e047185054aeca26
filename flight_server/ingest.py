"""DoPut streams on their way into a table: schema checks, per-batch checks, the rows a commit notice carries,
and the one DoPut of plain Flight and Flight SQL ingest (`receive`); the write paths are in `writes`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from flight_server.sources import MAX_SERIES_ID_BYTES
from spicepod import DatasetSpec, InvalidInput, LimitExceeded, Limits

if TYPE_CHECKING:  # receive() calls the store, which checks streams with this module
    from flight_server.store import DatasetStore

log = logging.getLogger("flightcast.flight")

US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
FIRST_US = int(np.datetime64("0001-01-01T00:00:00", "us").astype(np.int64))
LAST_US = int(np.datetime64("9999-12-31T23:59:59.999999", "us").astype(np.int64))
MAX_NOTICE_SERIES = 10_000  # a commit touching more series is announced as touching all (None)
NOTICE_ROWS = 1_000  # a commit of at most this many rows carries them in its notice (serve nodes need no read)
# The same for a dataset of many series: a new period of each of as many series as a notice names, so that
# all-series windows move on without a read.
PANEL_NOTICE_ROWS = MAX_NOTICE_SERIES


def is_lossless(incoming: pa.DataType, stored: pa.DataType) -> bool:
    """Whether a DoPut column of type `incoming` may be stored in a column of type `stored`."""
    if incoming.equals(stored):
        return True
    if pa.types.is_timestamp(stored) and pa.types.is_timestamp(incoming):
        if (incoming.unit, stored.unit) == ("ns", "us"):
            return True  # each batch is checked to hold whole microseconds (IncomingStream)
        order = {"s": 0, "ms": 1, "us": 2, "ns": 3}
        return order[incoming.unit] <= order[stored.unit]
    if pa.types.is_integer(stored) and pa.types.is_integer(incoming):
        if pa.types.is_signed_integer(stored):
            limit = stored.bit_width if pa.types.is_signed_integer(incoming) else stored.bit_width - 1
            return incoming.bit_width <= limit
        return pa.types.is_unsigned_integer(incoming) and incoming.bit_width <= stored.bit_width
    if pa.types.is_floating(stored):
        mantissa = {16: 11, 32: 24, 64: 53}[stored.bit_width]
        if pa.types.is_floating(incoming):
            return incoming.bit_width <= stored.bit_width
        if pa.types.is_integer(incoming):
            # int64 into float64 too: it is what pandas hands people, and values are measurements
            return incoming.bit_width < mantissa or (stored.bit_width == 64 and incoming == pa.int64())
        return False
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(t(stored) for t in text):
        return any(t(incoming) for t in text)
    return False


def is_series_id_type(kind: pa.DataType) -> bool:
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    return text or pa.types.is_integer(kind)


def check_put_schema(name: str, spec: DatasetSpec, stored: pa.Schema | None, schema: pa.Schema) -> None:
    """Refuse a DoPut whose columns do not match the dataset's (`stored`; None before its first DoPut)."""
    if spec.mode != "read_write":
        raise InvalidInput(f"dataset '{name}' is read-only (mode: read); declare mode: read_write to DoPut")
    names = schema.names
    if len(set(names)) != len(names):
        raise InvalidInput(f"DoPut to '{name}': duplicate column names in {names}")
    if stored is None:
        if spec.time_column not in names:
            raise InvalidInput(f"DoPut to '{name}': missing time column '{spec.time_column}'")
        if not pa.types.is_timestamp(schema.field(spec.time_column).type):
            raise InvalidInput(
                f"DoPut to '{name}': column '{spec.time_column}' must be a timestamp, "
                f"got {schema.field(spec.time_column).type}"
            )
        if spec.series_column is not None:
            if spec.series_column not in names:
                raise InvalidInput(f"DoPut to '{name}': missing series column '{spec.series_column}'")
            kind = schema.field(spec.series_column).type
            if not is_series_id_type(kind):
                raise InvalidInput(
                    f"DoPut to '{name}': series column '{spec.series_column}' must be text or an integer, got {kind}"
                )
        return
    for f in schema:
        if stored.get_field_index(f.name) < 0:
            raise InvalidInput(
                f"DoPut to '{name}': unknown column '{f.name}'; expected columns {', '.join(stored.names)}"
            )
        kind = stored.field(f.name).type
        if not is_lossless(f.type, kind):
            raise InvalidInput(f"DoPut to '{name}': column '{f.name}' has type {f.type}, expected {kind}")
    missing = [n for n in stored.names if n not in names]
    if missing:
        raise InvalidInput(f"DoPut to '{name}': missing column '{missing[0]}'")


class IncomingStream:
    """The batches of one DoPut, checked on the way in and summed up.

    Checks: limits, sub-microsecond and null times, null or over-long series ids. Sums: rows, time range,
    the series ids touched (None past MAX_NOTICE_SERIES), and whether the keys are known to be unique
    (every batch strictly increasing by (series, time) or (time, series), and continuing the previous).
    """

    def __init__(self, name: str, spec: DatasetSpec, limits: Limits, batches: Iterable[pa.RecordBatch]):
        self.name = name
        self.spec = spec
        self.limits = limits
        self.rows = 0
        self.first: Any = None
        self.last: Any = None
        self.series: set[str] | None = set() if spec.series_column else None
        self._orders = [spec.key_columns, spec.key_columns[::-1]] if spec.series_column else [spec.key_columns]
        self._last_keys: dict[tuple[str, ...], tuple] = {}
        self._batches = batches
        self._held: list[pa.RecordBatch] | None = []  # the batches while they are few enough for the notice
        self._notice_rows = NOTICE_ROWS if spec.series_column is None else PANEL_NOTICE_ROWS

    @property
    def keys_unique(self) -> bool:
        """True when no key can repeat inside this stream (False: maybe; then the merge de-duplicates)."""
        return bool(self._orders)

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            if batch.num_rows:
                self._check(batch)
                if self._held is not None:
                    self._held = self._held + [batch] if self.rows <= self._notice_rows else None
                yield batch

    def notice_rows(self) -> pa.Table | None:
        """The rows for the commit notice, times as naive microsecond timestamps (as stored): None when the
        stream was empty or large, or its times are not naive timestamps."""
        if not self._held:
            return None
        table = pa.Table.from_batches(self._held)
        index = table.schema.get_field_index(self.spec.time_column)
        times = table.schema.field(index).type
        if not pa.types.is_timestamp(times) or times.tz is not None:
            return None
        return table.set_column(index, self.spec.time_column, pc.cast(table.column(index), pa.timestamp("us")))

    def _check(self, batch: pa.RecordBatch) -> None:
        name, limits = self.name, self.limits
        if batch.num_rows > limits.max_batch_rows:
            raise LimitExceeded(
                f"DoPut to '{name}': a batch of {batch.num_rows} rows is over the limit of "
                f"{limits.max_batch_rows} (runtime.limits.max_batch_rows)"
            )
        self.rows += batch.num_rows
        if self.rows > limits.max_put_rows:
            raise LimitExceeded(
                f"DoPut to '{name}': more than {limits.max_put_rows} rows in one stream (runtime.limits.max_put_rows)"
            )
        for column_type, column in zip(batch.schema, batch.columns, strict=True):
            if pa.types.is_timestamp(column_type.type) and column_type.type.unit == "ns":
                nanos = pc.cast(column, pa.int64())
                if pc.any(pc.not_equal(pc.remainder(nanos, 1000), 0)).as_py():
                    raise InvalidInput(
                        f"DoPut to '{name}': column '{column_type.name}' has timestamps finer than a microsecond, "
                        "which the store cannot keep"
                    )
        time_column = self.spec.time_column
        times = batch.column(time_column)
        if times.null_count:
            raise InvalidInput(f"DoPut to '{name}': column '{time_column}' has null timestamps")
        if self.spec.series_column is not None:
            self._check_series(batch.column(self.spec.series_column))
        self._check_time_range(times)
        bounds = pc.min_max(times)
        lo, hi = naive_utc(bounds["min"].as_py()), naive_utc(bounds["max"].as_py())
        self.first = lo if self.first is None or lo < self.first else self.first
        self.last = hi if self.last is None or hi > self.last else self.last
        if self.spec.on_duplicate == "replace":
            self._orders = [order for order in self._orders if self._increasing(batch, order)]

    def _check_time_range(self, times: pa.Array) -> None:
        """Timestamps the store (and every client) can read back: years 1 to 9999."""
        if not pa.types.is_timestamp(times.type):
            return
        raw = pc.min_max(pc.cast(times, pa.int64()))
        per_us = US_PER_UNIT[times.type.unit]
        for value in (raw["min"].as_py(), raw["max"].as_py()):
            if value is not None and not FIRST_US <= value * per_us <= LAST_US:
                raise InvalidInput(
                    f"DoPut to '{self.name}': column '{self.spec.time_column}' has a timestamp outside the years 1 "
                    f"to 9999 ({value} {times.type.unit} since 1970); nothing was stored"
                )

    def _check_series(self, ids: pa.Array) -> None:
        column = self.spec.series_column
        if ids.null_count:
            raise InvalidInput(f"DoPut to '{self.name}': column '{column}' has null series ids; nothing was stored")
        if not pa.types.is_integer(ids.type):
            longest = pc.max(pc.binary_length(ids)).as_py() or 0
            if longest > MAX_SERIES_ID_BYTES:
                raise InvalidInput(
                    f"DoPut to '{self.name}': a series id in column '{column}' is {longest} bytes long, "
                    f"over the limit of {MAX_SERIES_ID_BYTES}; nothing was stored"
                )
        if self.series is not None:
            self.series.update(str(v) for v in pc.unique(ids).to_pylist())
            if len(self.series) > MAX_NOTICE_SERIES:
                self.series = None

    def _increasing(self, batch: pa.RecordBatch, order: tuple[str, ...]) -> bool:
        """Whether the batch's keys in `order` are strictly increasing, and above the previous batch's last."""
        columns = [batch.column(c) for c in order]
        first = tuple(c[0].as_py() for c in columns)
        previous = self._last_keys.get(order)
        self._last_keys[order] = tuple(c[-1].as_py() for c in columns)
        if previous is not None and not first > previous:
            return False
        if batch.num_rows < 2:
            return True
        later = [c.slice(1) for c in columns]
        earlier = [c.slice(0, len(c) - 1) for c in columns]
        ok = pc.greater(later[-1], earlier[-1])
        for a, b in zip(reversed(later[:-1]), reversed(earlier[:-1]), strict=True):  # lexicographic
            ok = pc.or_(pc.greater(a, b), pc.and_(pc.equal(a, b), ok))
        return bool(pc.all(ok).as_py())


def naive_utc(ts: Any) -> Any:
    """Timestamps are stored as naive UTC; a tz-aware bound is converted likewise."""
    if isinstance(ts, datetime) and ts.tzinfo is not None:
        return ts.astimezone(timezone.utc).replace(tzinfo=None)
    return ts


@contextmanager
def malformed_stream() -> Iterator[None]:
    """A DoPut stream that cannot be read (bad IPC, a batch of another schema) is the client's error."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, flight.FlightError):
            raise
        raise InvalidInput(f"DoPut stream cannot be read: {exc}") from None


def incoming_batches(reader: flight.MetadataRecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The record batches of a DoPut stream as they arrive (metadata-only messages skipped)."""
    while True:
        with malformed_stream():
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                return
        if chunk.data is not None:
            yield chunk.data


def receive(store: DatasetStore, name: str, context: flight.ServerCallContext,
            reader: flight.MetadataRecordBatchReader, protocol: str = "DoPut") -> int:
    """The one DoPut, of plain Flight and Flight SQL ingest alike: returns the rows committed.

    The stream's columns are checked before a single batch is read; the rows are stored as one durable
    transaction, rolled back if the client breaks the stream off.
    """
    with malformed_stream():
        schema = reader.schema
    store.check_put_schema(name, schema)
    rows = store.append(name, schema, incoming_batches(reader), abandoned=context.is_cancelled)
    log.info("dataset %s: %s committed %d rows", name, protocol, rows)
    return rows
