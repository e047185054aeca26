"""DatasetStore: the sole owner of stored data, a DuckDB database behind the Flight service.

Layout: the main DuckDB database is in memory and holds `read` datasets, reloaded from their files at
every start. `read_write` datasets live in `store.duckdb` in the data dir, attached as `store`; a view
in main gives each its plain name, so client SQL sees every dataset by name. After start-up, external
access is switched off and the configuration locked, so client SQL cannot reach the host.

Loading sources is in `sources`, DoPut streams in `ingest`, the write paths in `writes`, running client
queries in `queries`, each panel's series census in `census`, what is known of each dataset in `datasets`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, closing, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from duckdb import _seam  # the engine's entry below DuckDB's Python relation layer (duckdb is pinned)

from flight_server import writes
from flight_server.allocator import retain_freed_memory
from flight_server.census import SeriesCensus, read_newest
from flight_server.datasets import CommitListener, DatasetState
from flight_server.ingest import IncomingStream, check_put_schema
from flight_server.queries import CursorReader, QueryWatchdog, client_message
from flight_server.sources import load_source
from spicepod import DatasetSpec, InvalidInput, Limits, NotFound, SpicepodError, quote_ident
from spicepod.timestamps import iso_utc

__all__ = ["CommitListener", "DatasetState", "DatasetStore"]

Params = list[Any] | dict[str, Any] | None  # query parameter values: positional or by name

log = logging.getLogger("flightcast.store")

STORE_FILE = "store.duckdb"
SPILL_DIR = ".tmp"  # DuckDB's spill files (large staged DoPuts under the memory limit); cleared at open
# Rows per Arrow batch when streaming query results: two of DuckDB's row groups (122,880 rows each). DuckDB
# grows a batch's buffers by realloc from one vector (2,048 rows) up, so a bigger batch costs more copying,
# out of cache (1M-row batches cost a third more CPU); a smaller one costs a Flight message more, and a slow
# reader then sees gRPC's flow control hold the stream longer between batches (one row group's batches
# kept a reader of a batch every 0.25 s waiting a whole second, which the stall check gives up on).
ROW_GROUP_ROWS = 122_880
STREAM_BATCH_ROWS = 2 * ROW_GROUP_ROWS
# DuckDB's threads: half the cores. Each query also runs on the thread that asks for it (one per request), and
# the rest of the machine is for Flight, HTTP, forecasts and training fits. A second DuckDB thread on a 2-core
# machine cut a streamed result at every row group and handed it between threads: twice the CPU of a whole
# 10M-row export (measured), with heavy aggregations no faster; a many-core machine keeps parallel scans.
DUCKDB_THREADS = max(1, (os.cpu_count() or 2) // 2)

# Statement types a client query may have; DESCRIBE, SHOW, SUMMARIZE and VALUES parse as SELECT.
READ_STATEMENTS = {duckdb.StatementType.SELECT}

def _parsed(cur: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    try:
        return cur.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidInput(str(exc)) from None


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
        spill = self.data_dir / SPILL_DIR
        shutil.rmtree(spill, ignore_errors=True)  # what a crash left; only this process uses the data dir
        retain_freed_memory()  # each streamed batch reuses the pages of the one before
        db = duckdb.connect(":memory:", config={"memory_limit": self.limits.memory_limit, "threads": DUCKDB_THREADS})
        # GLOBAL: each cursor is a connection of its own, and would otherwise show TIMESTAMPTZ values in the
        # host's zone (`Etc/UTC` on many Linux machines, or a local zone), not as UTC
        db.execute("SET GLOBAL TimeZone = 'UTC'")
        db.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
        store_path = str(self.data_dir / STORE_FILE).replace("'", "''")
        db.execute(f"ATTACH '{store_path}' AS store")
        stored = {row[0] for row in db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store' AND schema_name = 'main'"
        ).fetchall()}
        self._db = db
        try:
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
                        if spec.series_column:
                            state.census = SeriesCensus(spec.series_column, spec.time_column, {})
                self._states[spec.name] = state
                log.info(
                    "dataset %s: %d rows (%s, %s) in %.1f ms",
                    spec.name, state.rows, spec.mode, spec.source, (time.perf_counter() - started) * 1000,
                )
            # From here on client SQL cannot touch the host, and cannot lift these settings again.
            db.execute("SET enable_external_access = false")
            db.execute("SET lock_configuration = true")
        except BaseException:
            db.close()  # a failed start-up leaves no database attached (the file stays free)
            self._db = None
            raise

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
        with closing(self._cursor()) as cur:
            load_source(cur, spec, table)

    def _expose(self, name: str, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """A view in the in-memory catalog gives a stored table its plain name."""
        ident = quote_ident(name)
        (cur or self._db).execute(f"CREATE OR REPLACE VIEW main.{ident} AS SELECT * FROM store.main.{ident}")

    def _track(self, spec: DatasetSpec, table: str) -> DatasetState:
        with closing(self._cursor()) as cur:
            schema = cur.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
            ts = quote_ident(spec.time_column)
            rows, first, last = cur.execute(f"SELECT count(*), min({ts}), max({ts}) FROM {table}").fetchone()
            if not pa.types.is_timestamp(schema.field(spec.time_column).type):
                raise SpicepodError(f"dataset '{spec.name}': time column '{spec.time_column}' is not a timestamp")
            census = None
            if spec.series_column:
                newest = read_newest(cur, table, spec.series_column, spec.time_column)
                census = SeriesCensus(spec.series_column, spec.time_column, newest)
        return DatasetState(spec, table, schema, rows=rows, first_ts=first, last_ts=last, census=census)

    def series_census(self, name: str, before: Any) -> tuple[int, list[str | None]]:
        """How many series a panel dataset has, and the ids of those whose newest row is older than `before`
        (sorted), from the census the store keeps (see census.py)."""
        state = self.state(name)
        if state.census is None:
            raise InvalidInput(f"dataset '{name}' has no series_column: it has no series to count")

        def read() -> dict:
            with closing(self._cursor()) as cur:
                return read_newest(cur, state.table, state.spec.series_column, state.spec.time_column)

        return state.census.count(before, read)

    # --- reading -----------------------------------------------------------------------------------

    def subscribe(self, listener: CommitListener) -> None:
        """Call `listener(dataset, version, last_timestamp, series, rows)` after each commit, before DoPut returns."""
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

    def statements(self, sql: str) -> list[duckdb.Statement]:
        """The SQL parsed into statements by DuckDB (nothing runs); a parse error is the client's."""
        cur = self._cursor()
        try:
            return _parsed(cur, sql)
        finally:
            cur.close()

    def check_read_only(self, sql: str, params: Params = None) -> None:
        """Refuse anything but exactly one read-only query (DuckDB decides what the statement is)."""
        cur = self._cursor()
        try:
            self._read_only(cur, sql, params)
        finally:
            cur.close()

    def _read_only(self, cur: duckdb.DuckDBPyConnection, sql: str, params: Params) -> _seam.Signature:
        """Parse and bind the query once, refusing all but one read-only query; what the binder says it returns.

        The parser gives the statement's kind; the binder tells a SELECT that writes all the same, through a
        data-modifying WITH (`WITH d AS (DELETE FROM ... RETURNING *) SELECT ...` parses as a SELECT).
        """
        statements = _parsed(cur, sql)
        if len(statements) != 1:
            raise InvalidInput(f"expected exactly one SQL statement, got {len(statements)}")
        kind = statements[0].type
        if kind not in READ_STATEMENTS:
            raise InvalidInput(f"only read-only queries are allowed; refused a {kind.name} statement")
        try:
            signature = _seam.bind(cur, statements[0], values=params)
        except duckdb.Error as exc:
            raise InvalidInput(client_message(exc, self._states)) from None
        if signature.writes:
            raise InvalidInput("only read-only queries are allowed; refused a SELECT that writes "
                               "(a WITH clause that inserts, updates or deletes, or a sequence's nextval)")
        return signature

    def query_schema(self, sql: str, params: Params = None) -> pa.Schema:
        """The schema of a read-only query's result, without running it (`params` bound as values)."""
        cur = self._cursor()
        try:
            signature = self._read_only(cur, sql, params)
            if not signature.deferred:  # a deferred statement's columns are known only once it has run
                with suppress(duckdb.Error):  # a type Arrow has none for (an unbound parameter's UNKNOWN)
                    return _seam.arrow_schema(cur, signature.names, signature.types)
            return cur.sql(sql, params=params).limit(0).to_arrow_table().schema
        except duckdb.Error as exc:
            raise InvalidInput(client_message(exc, self._states)) from None
        finally:
            cur.close()

    def query(self, sql: str, batch_rows: int = STREAM_BATCH_ROWS, params: Params = None) -> pa.RecordBatchReader:
        """Run a read-only query; batches stream as DuckDB produces them. `params` (positional or named
        values) are bound by DuckDB, never spliced into the text.

        The reader owns its cursor: it is closed when the reader is exhausted or dropped. A query still
        running after `limits.query_timeout_s` is interrupted (DuckDB has no statement timeout of its own).
        """
        cur = self._cursor()
        try:
            self._read_only(cur, sql, params)
        except BaseException:
            cur.close()
            raise
        deadline = self._watchdog.watch(cur, self.limits.query_timeout_s)
        try:
            # The engine's own entry, below DuckDB's Python relation layer: `cur.sql(...).to_arrow_reader()`
            # would parse and bind the text twice more in Python first, which a small query pays for in full.
            # The same stream of Arrow batches comes out.
            source = _seam.submit(cur, sql, params, "stream", batch_rows).arrow_reader()
        except duckdb.Error as exc:
            deadline.cancel()
            cur.close()
            raise deadline.explain(exc, self._states) from None
        return CursorReader(source, cur, deadline).reader()

    # --- writing -----------------------------------------------------------------------------------

    def check_put_schema(self, name: str, schema: pa.Schema) -> DatasetState:
        """Refuse a DoPut whose columns do not match the dataset's, before anything is written."""
        state = self.state(name)
        check_put_schema(name, state.spec, state.schema, schema)
        return state

    def append(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        abandoned: Callable[[], bool] = lambda: False,
    ) -> int:
        """Store a whole stream as one transaction; durable when this returns. Returns the rows received.

        `replace` datasets keep one row per key (the stream's rows replace stored rows of the same key, the
        last occurrence inside the stream wins); `keep` datasets store every row. `abandoned()` is asked
        once the batches end: a stream the client broke off ends like a finished one, and must be rolled
        back, not committed.
        """
        state = self.check_put_schema(name, schema)
        stream = IncomingStream(name, state.spec, self.limits, batches)
        replace = state.spec.on_duplicate == "replace"
        table_schema = None
        with ExitStack() as stack:
            stack.enter_context(writes.client_errors(name))
            cur = stack.enter_context(closing(self._cursor()))
            if replace:
                writes.stage(cur, stream, schema)  # no lock is held while the client sends
                writes.refuse_if_abandoned(name, abandoned)
                stack.enter_context(state.write_lock)
            creating = state.schema is None
            if creating:
                stack.enter_context(state.create_lock)
                creating = state.schema is None  # another first DoPut may have created it meanwhile
            stack.enter_context(writes.transaction(cur))
            self.check_put_schema(name, schema)  # against the table a concurrent first DoPut created
            if creating:
                table_schema = writes.create_from(cur, state.table, state.spec.time_column, schema)
            if replace:
                rows = stream.notice_rows()
                # Rows each after their series' newest stored row replace none: not searched for (a table scan)
                after_all = state.census is not None and state.census.all_after(rows)
                added = writes.merge_staged(cur, state.table, stream, None if after_all else state.last_ts)
            else:
                added = writes.append_batches(cur, state.table, stream)
                writes.refuse_if_abandoned(name, abandoned)
                rows = stream.notice_rows()
            cur.commit()
            # Committed: from here on nothing may turn the DoPut into an error, or the client would retry it.
            if creating:
                try:
                    self._expose(name, cur)  # the view lives in the in-memory catalog: its own transaction
                except duckdb.Error:
                    log.exception("dataset %s: creating its view failed", name)
                state.schema = table_schema
            with state.stats_lock:  # still under the write lock: the next merge sees these stats
                self._committed(state, added, stream)
                series = None if stream.series is None else frozenset(stream.series)
                notice = (name, state.version, iso_utc(state.last_ts), series, rows)
            if state.census is not None:  # its own lock: newest times only grow, in any order
                state.census.committed(rows, stream.rows)
        for listener in self._listeners:
            try:
                listener(*notice)
            except Exception:  # the rows are stored; a listener's failure is only logged
                log.exception("dataset %s: commit listener failed", name)
        return stream.rows

    @staticmethod
    def _committed(state: DatasetState, added: int, stream: IncomingStream) -> None:
        state.rows += added
        if stream.rows:
            lo, hi = stream.first, stream.last
            state.first_ts = lo if state.first_ts is None or lo < state.first_ts else state.first_ts
            state.last_ts = hi if state.last_ts is None or hi > state.last_ts else state.last_ts
        state.version += 1

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._db is None or self._closed.is_set():
            raise InvalidInput("the store is closed")
        return self._db.cursor()
