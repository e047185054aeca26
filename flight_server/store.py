"""DatasetStore: the sole owner of stored data, a DuckDB database behind the Flight service.

Layout: the main DuckDB database is in memory and holds `read` datasets, reloaded from their files at
every start. `read_write` datasets live in `store.duckdb` in the data dir, attached as `store`; a view
in main gives each its plain name, so client SQL sees every dataset by name. After start-up, external
access is switched off and the configuration locked, so client SQL cannot reach the host.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from spicepod import DatasetSpec, InvalidInput, LimitExceeded, Limits, NotFound, SpicepodError, quote_ident

log = logging.getLogger("flightcast.store")

STORE_FILE = "store.duckdb"
STREAM_BATCH_ROWS = 1 << 20  # rows per Arrow batch when streaming query results

# Statement types a client query may have; DESCRIBE, SHOW, SUMMARIZE and VALUES parse as SELECT.
READ_STATEMENTS = {duckdb.StatementType.SELECT}

# Called as listener(dataset, version, last_timestamp) after each commit; last_timestamp is ISO 8601 UTC.
CommitListener = Callable[[str, int, "str | None"], None]


@dataclass
class DatasetState:
    """What the store knows of one dataset, kept current on every commit."""

    spec: DatasetSpec
    table: str  # the qualified table holding the rows
    schema: pa.Schema | None  # None for a `from: flight` dataset before its first DoPut
    rows: int = 0
    first_ts: object = None  # datetime or None
    last_ts: object = None
    version: int = 1
    # Held while a `from: flight` dataset's table is created by its first DoPut; appends to an existing
    # table do not take it (DuckDB appends in separate transactions do not conflict).
    create_lock: threading.Lock = field(default_factory=threading.Lock)
    stats_lock: threading.Lock = field(default_factory=threading.Lock)  # rows, time range, version

    def info(self) -> dict:
        return {
            "name": self.spec.name,
            "from": self.spec.source,
            "mode": self.spec.mode,
            "time_column": self.spec.time_column,
            "rows": self.rows,
            "columns": [] if self.schema is None else [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "first_timestamp": _iso(self.first_ts),
            "last_timestamp": _iso(self.last_ts),
            "version": self.version,
        }


def _iso(ts: object) -> str | None:
    if ts is None:
        return None
    return ts.isoformat(timespec="microseconds").replace(".000000", "") + "Z"  # type: ignore[attr-defined]


def _time_expression(spec: DatasetSpec, column: str) -> str:
    """SQL turning the source's time column into a UTC TIMESTAMP, per `time_format`."""
    col = quote_ident(column)
    return {
        "timestamp": f"CAST({col} AS TIMESTAMP)",
        "timestamptz": f"timezone('UTC', CAST({col} AS TIMESTAMPTZ))",
        "ISO8601": f"timezone('UTC', CAST(CAST({col} AS VARCHAR) AS TIMESTAMPTZ))",
        "unix_seconds": f"make_timestamp(CAST(round(CAST({col} AS DOUBLE) * 1000000) AS BIGINT))",
        "unix_millis": f"make_timestamp(CAST(round(CAST({col} AS DOUBLE) * 1000) AS BIGINT))",
    }[spec.time_format]


def _source_relation(spec: DatasetSpec) -> str:
    path = str(spec.path).replace("'", "''")
    if spec.format == "csv":
        # The time column is read as text so that the declared time_format decides, not CSV sniffing.
        types = "" if spec.time_format.startswith("unix") else f", types={{'{spec.time_column}': 'VARCHAR'}}"
        return f"read_csv('{path}', header=true{types})"
    if spec.format == "parquet":
        return f"read_parquet('{path}')"
    return "arrow_source"  # registered from pyarrow: DuckDB has no built-in Arrow IPC file reader


def is_lossless(incoming: pa.DataType, stored: pa.DataType) -> bool:
    """Whether a DoPut column of type `incoming` can be stored in a column of type `stored` exactly."""
    if incoming.equals(stored):
        return True
    if pa.types.is_timestamp(stored) and pa.types.is_timestamp(incoming):
        if (incoming.unit, stored.unit) == ("ns", "us"):
            return True  # each batch is checked to hold whole microseconds (_IncomingStream)
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
            return incoming.bit_width < mantissa
        return False
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(t(stored) for t in text):
        return any(t(incoming) for t in text)
    return False


class DatasetStore:
    """Tables, schema checks, transactional appends and read-only SQL over DuckDB."""

    def __init__(self, datasets: Iterable[DatasetSpec], data_dir: Path, limits: Limits | None = None):
        self.data_dir = Path(data_dir)
        self.limits = limits or Limits()
        self._specs = {d.name: d for d in datasets}
        self._states: dict[str, DatasetState] = {}
        self._listeners: list[CommitListener] = []
        self._db: duckdb.DuckDBPyConnection | None = None
        self._closed = threading.Event()
        self._watchdog = QueryWatchdog()

    # --- life cycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Load `read` datasets, attach the durable store, seed new read_write tables, then seal."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        db = duckdb.connect(":memory:", config={"memory_limit": self.limits.memory_limit})
        db.execute("SET TimeZone = 'UTC'")
        store_path = str(self.data_dir / STORE_FILE).replace("'", "''")
        db.execute(f"ATTACH '{store_path}' AS store")
        stored = {row[0] for row in db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' AND schema_name = 'main'"
        ).fetchall()}
        self._db = db
        for spec in self._specs.values():
            started = time.perf_counter()
            if spec.mode == "read":
                self._load(spec, f"main.{quote_ident(spec.name)}")
                state = self._track(spec, f"main.{quote_ident(spec.name)}")
            else:
                table = f"store.main.{quote_ident(spec.name)}"
                if spec.name not in stored and spec.kind == "file":
                    self._load(spec, table)
                    log.info("dataset %s: seeded the store from %s", spec.name, spec.source)
                if spec.name in stored or spec.kind == "file":
                    self._expose(spec.name)
                    state = self._track(spec, table)
                else:
                    state = DatasetState(spec, table, schema=None)
            self._states[spec.name] = state
            log.info(
                "dataset %s: %d rows (%s, %s) in %.1f ms",
                spec.name, state.rows, spec.mode, spec.source, (time.perf_counter() - started) * 1000,
            )
        # From here on client SQL cannot touch the host, and cannot lift these settings again.
        db.execute("SET enable_external_access = false")
        db.execute("SET lock_configuration = true")

    def close(self) -> None:
        """Checkpoint and close the database; later calls fail cleanly."""
        if self._db is None or self._closed.is_set():
            return
        self._closed.set()
        try:
            self._db.execute("CHECKPOINT store")
        except duckdb.Error as exc:  # the WAL still holds every commit; log and go on closing
            log.warning("checkpoint at close failed: %s", exc)
        self._db.close()

    def _load(self, spec: DatasetSpec, table: str) -> None:
        cur = self._cursor()
        relation = _source_relation(spec)
        try:
            if spec.format == "arrow":
                cur.register("arrow_source", _read_arrow_file(spec))
            columns = [row[0] for row in cur.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
            if spec.time_column not in columns:
                raise SpicepodError(
                    f"dataset '{spec.name}': time column '{spec.time_column}' not found in {spec.path} "
                    f"(columns: {', '.join(columns)})"
                )
            ts = quote_ident(spec.time_column)
            cur.execute(
                f"CREATE OR REPLACE TABLE {table} AS SELECT * REPLACE ({_time_expression(spec, spec.time_column)} "
                f"AS {ts}) FROM {relation} ORDER BY {ts}"
            )
        except duckdb.Error as exc:
            raise SpicepodError(f"dataset '{spec.name}': cannot load {spec.path}: {exc}") from None
        finally:
            cur.close()

    def _expose(self, name: str, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """A view in the in-memory catalog gives a stored table its plain name."""
        ident = quote_ident(name)
        (cur or self._db).execute(f"CREATE OR REPLACE VIEW main.{ident} AS SELECT * FROM store.main.{ident}")

    def _track(self, spec: DatasetSpec, table: str) -> DatasetState:
        cur = self._cursor()
        try:
            schema = cur.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
            ts = quote_ident(spec.time_column)
            rows, first, last = cur.execute(f"SELECT count(*), min({ts}), max({ts}) FROM {table}").fetchone()
        finally:
            cur.close()
        if not pa.types.is_timestamp(schema.field(spec.time_column).type):
            raise SpicepodError(f"dataset '{spec.name}': time column '{spec.time_column}' is not a timestamp")
        return DatasetState(spec, table, schema, rows=rows, first_ts=first, last_ts=last)

    # --- reading -----------------------------------------------------------------------------------

    def subscribe(self, listener: CommitListener) -> None:
        """Call `listener(dataset, version, last_timestamp)` after each committed append, before DoPut returns."""
        self._listeners.append(listener)

    def names(self) -> list[str]:
        return list(self._states)

    def state(self, name: str) -> DatasetState:
        try:
            return self._states[name]
        except KeyError:
            raise NotFound(f"dataset '{name}' not found") from None

    def datasets(self) -> list[dict]:
        return [state.info() for state in self._states.values()]

    def dataset_schema(self, name: str) -> pa.Schema:
        state = self.state(name)
        if state.schema is None:
            return pa.schema([])
        return state.schema

    def read(self, ticket: str) -> pa.RecordBatchReader:
        """A ticket is SQL, or the bare name of a dataset (read whole)."""
        text = ticket.strip()
        state = self._states.get(text)
        if state is None:
            return self.query(text)
        if state.schema is None:  # a `from: flight` dataset before its first DoPut: no columns, no rows
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        return self.query(f"SELECT * FROM {quote_ident(text)}")

    def check_read_only(self, sql: str) -> None:
        """Refuse anything but exactly one read-only query (DuckDB decides what the statement is)."""
        cur = self._cursor()
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidInput(str(exc)) from None
        finally:
            cur.close()
        if len(statements) != 1:
            raise InvalidInput(f"expected exactly one SQL statement, got {len(statements)}")
        kind = statements[0].type
        if kind not in READ_STATEMENTS:
            raise InvalidInput(f"only read-only queries are allowed; refused a {kind.name} statement")

    def query_schema(self, sql: str) -> pa.Schema:
        """The schema of a read-only query's result, without running it."""
        self.check_read_only(sql)
        cur = self._cursor()
        try:
            return cur.sql(sql).limit(0).to_arrow_table().schema
        except duckdb.Error as exc:
            raise InvalidInput(str(exc)) from None
        finally:
            cur.close()

    def query(self, sql: str, batch_rows: int = STREAM_BATCH_ROWS) -> pa.RecordBatchReader:
        """Run a read-only query; batches stream as DuckDB produces them.

        The reader owns its cursor: it is closed when the reader is exhausted or dropped. A query still
        running after `limits.query_timeout_s` is interrupted (DuckDB has no statement timeout of its own).
        """
        self.check_read_only(sql)
        cur = self._cursor()
        deadline = self._watchdog.watch(cur, self.limits.query_timeout_s)
        try:
            source = cur.sql(sql).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            deadline.cancel()
            cur.close()
            raise deadline.explain(exc) from None
        return _CursorReader(source, cur, deadline).reader()

    # --- writing -----------------------------------------------------------------------------------

    def check_put_schema(self, name: str, schema: pa.Schema) -> DatasetState:
        """Refuse a DoPut whose columns do not match the dataset's, before anything is written."""
        state = self.state(name)
        spec = state.spec
        if spec.mode != "read_write":
            raise InvalidInput(f"dataset '{name}' is read-only (mode: read); declare mode: read_write to DoPut")
        names = schema.names
        if len(set(names)) != len(names):
            raise InvalidInput(f"DoPut to '{name}': duplicate column names in {names}")
        if state.schema is None:
            if spec.time_column not in names:
                raise InvalidInput(f"DoPut to '{name}': missing time column '{spec.time_column}'")
            if not pa.types.is_timestamp(schema.field(spec.time_column).type):
                raise InvalidInput(
                    f"DoPut to '{name}': column '{spec.time_column}' must be a timestamp, "
                    f"got {schema.field(spec.time_column).type}"
                )
            return state
        expected = state.schema
        for f in schema:
            if expected.get_field_index(f.name) < 0:
                raise InvalidInput(
                    f"DoPut to '{name}': unknown column '{f.name}'; expected columns {', '.join(expected.names)}"
                )
            stored = expected.field(f.name).type
            if not is_lossless(f.type, stored):
                raise InvalidInput(f"DoPut to '{name}': column '{f.name}' has type {f.type}, expected {stored}")
        missing = [n for n in expected.names if n not in names]
        if missing:
            raise InvalidInput(f"DoPut to '{name}': missing column '{missing[0]}'")
        return state

    def append(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        abandoned: Callable[[], bool] = lambda: False,
    ) -> int:
        """Append a whole stream as one transaction; durable when this returns. Returns the row count.

        `abandoned()` is asked once the batches end: a stream the client broke off ends like a finished
        one, and must be rolled back, not committed.
        """
        state = self.state(name)
        creating = state.schema is None
        if creating:
            state.create_lock.acquire()
            creating = state.schema is None  # another first DoPut may have created it meanwhile
            if not creating:
                state.create_lock.release()
        cur = self._cursor()
        try:
            self.check_put_schema(name, schema)
            cur.begin()
            if creating:
                table_schema = self._create_from(cur, state, schema)
            stream = _IncomingStream(name, state.spec.time_column, self.limits, batches)
            # One INSERT per batch as it arrives, all in this one transaction.
            insert = f"INSERT INTO {state.table} BY NAME SELECT * FROM incoming"
            for batch in stream.batches():
                cur.register("incoming", batch)
                cur.execute(insert)
            if abandoned():
                raise InvalidInput(f"DoPut to '{name}': the client broke off the stream; nothing was written")
            cur.commit()
        except BaseException as exc:
            try:
                cur.rollback()
            except duckdb.Error:
                pass
            cur.close()
            if creating:
                state.create_lock.release()
            if isinstance(exc, duckdb.Error):
                raise InvalidInput(f"DoPut to '{name}': {exc}") from None
            raise
        # Committed: from here on nothing may turn the DoPut into an error, or the client would retry it.
        if creating:
            try:
                self._expose(name, cur)  # the view lives in the in-memory catalog: its own transaction
            except duckdb.Error:
                log.exception("dataset %s: creating its view failed", name)
            state.schema = table_schema
            state.create_lock.release()
        cur.close()
        with state.stats_lock:
            self._committed(state, stream.rows, stream.first, stream.last)
            notice = (name, state.version, _iso(state.last_ts))
        for listener in self._listeners:
            try:
                listener(*notice)
            except Exception:  # noqa: BLE001 - the rows are stored; a listener's failure is only logged
                log.exception("dataset %s: commit listener failed", name)
        return stream.rows

    def _create_from(self, cur: duckdb.DuckDBPyConnection, state: DatasetState, schema: pa.Schema) -> pa.Schema:
        """Create a `from: flight` dataset's table from its first DoPut's schema (same transaction)."""
        cur.register("incoming", schema.empty_table())
        ts = quote_ident(state.spec.time_column)
        cur.execute(
            f"CREATE TABLE {state.table} AS SELECT * REPLACE (CAST({ts} AS TIMESTAMP) AS {ts}) FROM incoming"
        )
        cur.unregister("incoming")
        return cur.sql(f"SELECT * FROM {state.table} LIMIT 0").to_arrow_table().schema

    def _committed(self, state: DatasetState, rows: int, lo: object, hi: object) -> None:
        if rows:
            state.rows += rows
            state.first_ts = lo if state.first_ts is None or lo < state.first_ts else state.first_ts
            state.last_ts = hi if state.last_ts is None or hi > state.last_ts else state.last_ts
        state.version += 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._db is None or self._closed.is_set():
            raise InvalidInput("the store is closed")
        return self._db.cursor()


class _IncomingStream:
    """The batches of one DoPut, checked on the way in (limits, null times) and summed up (rows, time range)."""

    def __init__(self, name: str, time_column: str, limits: Limits, batches: Iterable[pa.RecordBatch]):
        self.name = name
        self.time_column = time_column
        self.limits = limits
        self.rows = 0
        self.first: object = None
        self.last: object = None
        self._batches = batches

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            if batch.num_rows:
                self._check(batch)
                yield batch

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
        times = batch.column(self.time_column)
        if times.null_count:
            raise InvalidInput(f"DoPut to '{name}': column '{self.time_column}' has null timestamps")
        bounds = pc.min_max(times)
        lo, hi = _naive(bounds["min"].as_py()), _naive(bounds["max"].as_py())
        self.first = lo if self.first is None or lo < self.first else self.first
        self.last = hi if self.last is None or hi > self.last else self.last


def _naive(ts: object) -> object:
    """Timestamps are stored as naive UTC; a tz-aware bound is converted likewise."""
    if getattr(ts, "tzinfo", None) is not None:
        from datetime import timezone

        return ts.astimezone(timezone.utc).replace(tzinfo=None)  # type: ignore[attr-defined]
    return ts


def _read_arrow_file(spec: DatasetSpec) -> pa.Table:
    import pyarrow.feather as feather

    try:
        return feather.read_table(str(spec.path))
    except (OSError, pa.ArrowInvalid):
        with pa.OSFile(str(spec.path)) as source:
            return pa.ipc.open_stream(source).read_all()


class _Deadline:
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

    def explain(self, exc: BaseException) -> InvalidInput:
        if self.fired:
            return LimitExceeded(
                f"the query ran longer than {self.seconds:g} s (runtime.limits.query_timeout_seconds) "
                "and was stopped"
            )
        return InvalidInput(str(exc))


class QueryWatchdog:
    """One thread that interrupts queries past their deadline (a Timer per query costs a thread each)."""

    def __init__(self) -> None:
        self._watched: set[_Deadline] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> _Deadline:
        deadline = _Deadline(self, cursor, seconds)
        with self._wake:
            self._watched.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="query-watchdog", daemon=True)
                self._thread.start()
        return deadline

    def release(self, deadline: _Deadline) -> None:
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


class _CursorReader:
    """Streams a query's batches and closes its DuckDB cursor when the stream ends, fails or is dropped.

    The first batches are read in the caller's thread (small results, window queries among them, need
    no thread); from the third on, a producer thread reads a few ahead, so DuckDB's scan overlaps
    sending the previous batch.
    """

    READ_AHEAD = 4
    INLINE_BATCHES = 2

    def __init__(self, source: pa.RecordBatchReader, cursor: duckdb.DuckDBPyConnection, deadline: _Deadline):
        self._source = source
        self._cursor = cursor
        self._deadline = deadline
        self._queue: queue.Queue = queue.Queue(maxsize=self.READ_AHEAD)
        self._stop = threading.Event()
        self._gave_up = threading.Event()

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self._source.schema, self._batches())

    def _client_error(self, exc: BaseException) -> pa.ArrowInvalid:
        # A query that fails part-way (a bad cast in a later row group, the time limit) is the
        # client's error, sent as such after the batches already streamed; never a short result.
        return pa.ArrowInvalid(self._deadline.explain(exc).message)

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
            self._stop.set()  # the client went away or the stream ended: the producer stops
            if not producing:
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
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)
        finally:
            self._release()


_END = object()
