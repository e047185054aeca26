"""The write paths of a DoPut, inside its transaction, and how that transaction runs and fails (a DuckDB error
the stream's own rows cause is the client's, any other the server's).

`keep` datasets append each batch as it arrives. `replace` datasets (one row per key) stage the whole
stream in a connection-local temp table first, so a slow client holds no lock, then merge it under the
dataset's write lock in one transaction: delete the stored rows whose keys the stream brings, insert
the stream's rows (the last occurrence of a key wins). Only stored rows timed between the stream's
first time and the newest stored time can share a key: a stream after the newest stored time (the
common append) deletes nothing; a re-sent run that covers every stored time of its range deletes that
range; anything else deletes by a hash semi-join on the keys, bounded to the range so zone maps skip
the rest of the table. Chosen by measurement on 10M rows against a DuckDB PRIMARY KEY with INSERT OR
REPLACE and against de-duplicating on read: see bench/bench_flight.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from flight_server.ingest import IncomingStream
from spicepod import DatasetSpec, FlightcastError, InvalidInput, quote_ident

STAGED = "flightcast_staged"  # a replace stream before its merge (temp, one per cursor)
RECEIVED = "flightcast_received"  # the stream's batches as DuckDB sees them
STAGE_IN_MEMORY_BYTES = 512 << 20  # a larger stream is staged in a temp table (spilled under the memory limit)


@contextmanager
def transaction(cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN; any exception rolls back (a commit inside ends it for good, and the rollback is a no-op)."""
    cur.begin()
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            cur.rollback()
        raise


# DuckDB errors a DoPut's own rows cause: a value that does not convert or fit, a broken constraint.
# Anything else while storing (an IO error, a full disk at commit, an internal error) is the server's.
CLIENT_DUCKDB_ERRORS: tuple[type[duckdb.Error], ...] = (duckdb.DataError, duckdb.IntegrityError)


def append_error(name: str, exc: duckdb.Error) -> FlightcastError:
    """A DuckDB error while storing a DoPut: the client's INVALID_ARGUMENT, or the server's internal error."""
    if isinstance(exc, CLIENT_DUCKDB_ERRORS):
        return InvalidInput(f"DoPut to '{name}': {exc}")
    return FlightcastError(f"DoPut to '{name}' failed on the server ({type(exc).__name__}); the server log says why")


@contextmanager
def client_errors(name: str) -> Iterator[None]:
    """DuckDB errors while storing a DoPut, as the client's or the server's (append_error)."""
    try:
        yield
    except duckdb.Error as exc:
        raise append_error(name, exc) from exc  # the DuckDB error stays in the server log's traceback


def append_batches(cur: duckdb.DuckDBPyConnection, table: str, stream: IncomingStream) -> int:
    """`keep`: one INSERT per batch as it arrives, in the caller's transaction. Returns the rows inserted."""
    insert = f"INSERT INTO {table} BY NAME SELECT * FROM incoming"
    for batch in stream.batches():
        cur.register("incoming", batch)
        cur.execute(insert)
    cur.unregister("incoming")
    return stream.rows


def stage(cur: duckdb.DuckDBPyConnection, stream: IncomingStream, schema: pa.Schema) -> None:
    """`replace`: receive the whole stream before the merge, as STAGED (times as naive UTC TIMESTAMP).

    The batches are held as they came (no copy) and merged by one INSERT, which beats a copy per batch;
    past STAGE_IN_MEMORY_BYTES they go into a temp table, which DuckDB spills to disk under its memory
    limit. A stream whose keys may repeat is put in a temp table too, whose rowid is the arrival order.
    Nothing of it is durable; it lives as long as the cursor.
    """
    ts = quote_ident(stream.spec.time_column)
    select = f"SELECT * REPLACE (CAST({ts} AS TIMESTAMP) AS {ts}) FROM {RECEIVED}"
    held: list[pa.RecordBatch] = []
    size = 0
    in_table = False
    for batch in stream.batches():
        if in_table:
            cur.register(RECEIVED, batch)
            cur.execute(f"INSERT INTO {STAGED} {select}")
            continue
        held.append(batch)
        size += batch.nbytes
        if size > STAGE_IN_MEMORY_BYTES:
            cur.register(RECEIVED, pa.Table.from_batches(held))
            cur.execute(f"CREATE OR REPLACE TEMP TABLE {STAGED} AS {select}")
            held, in_table = [], True
    if not in_table:
        cur.register(RECEIVED, pa.Table.from_batches(held) if held else schema.empty_table())
        kind = "VIEW" if stream.keys_unique else "TABLE"
        cur.execute(f"CREATE OR REPLACE TEMP {kind} {STAGED} AS {select}")


def merge_staged(cur: duckdb.DuckDBPyConnection, table: str, stream: IncomingStream, stored_last: Any) -> int:
    """`replace`: the staged rows replace the stored rows of the same keys (in the caller's transaction).

    Returns the change in the table's row count (rows inserted minus rows replaced).
    """
    if not stream.rows:
        return 0
    spec = stream.spec
    keys = ", ".join(quote_ident(k) for k in spec.key_columns)
    deleted = 0
    if stored_last is not None and stream.first <= stored_last:  # else no stored row can share a key
        deleted = _delete_replaced(cur, table, spec, stream.first, min(stream.last, stored_last))
    latest = "" if stream.keys_unique else (
        f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY rowid DESC) = 1"  # the last occurrence wins
    )
    inserted = cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {STAGED}{latest}").fetchall()[0][0]
    return inserted - deleted


def _micros(table: pa.Table) -> np.ndarray:
    return table.column(0).cast(pa.int64()).to_numpy()


def _delete_replaced(cur: duckdb.DuckDBPyConnection, table: str, spec: DatasetSpec, lo: Any, hi: Any) -> int:
    """Delete the stored rows whose keys are staged; only rows timed lo..hi can be among them.

    The hash semi-join is what overwriting costs. A re-sent run of a single series (every stored time in
    lo..hi sent again, the usual correction) is found with two small reads and deleted by range instead.
    """
    ts = quote_ident(spec.time_column)
    bounds = f"{ts} BETWEEN ? AND ?"
    if spec.series_column is None:
        count = f"SELECT count(*) FROM {{}} WHERE {bounds}"
        stored_rows = cur.execute(count.format(table), [lo, hi]).fetchall()[0][0]
        if stored_rows == 0:
            return 0
        if stored_rows <= cur.execute(count.format(STAGED), [lo, hi]).fetchall()[0][0]:
            select = f"SELECT {ts} FROM {{}} WHERE {bounds}"
            stored = _micros(cur.sql(select.format(table), params=[lo, hi]).to_arrow_table())
            staged = np.sort(_micros(cur.sql(select.format(STAGED), params=[lo, hi]).to_arrow_table()))
            at = np.minimum(np.searchsorted(staged, stored), len(staged) - 1)
            if bool(np.all(staged[at] == stored)):  # every stored time in lo..hi is sent again
                return cur.execute(f"DELETE FROM {table} WHERE {bounds}", [lo, hi]).fetchall()[0][0]
        key, staged_keys = ts, ts
    else:
        staged_keys = ", ".join(quote_ident(k) for k in spec.key_columns)
        key = f"({staged_keys})"
    return cur.execute(
        f"DELETE FROM {table} WHERE {bounds} AND {key} IN (SELECT {staged_keys} FROM {STAGED} WHERE {bounds})",
        [lo, hi, lo, hi],
    ).fetchall()[0][0]


def refuse_if_abandoned(name: str, abandoned: Callable[[], bool]) -> None:
    if abandoned():
        raise InvalidInput(f"DoPut to '{name}': the client broke off the stream; nothing was written")


def create_from(cur: duckdb.DuckDBPyConnection, table: str, time_column: str, schema: pa.Schema) -> pa.Schema:
    """Create a `from: flight` dataset's table from its first DoPut's schema (in the caller's transaction)."""
    cur.register("incoming", schema.empty_table())
    ts = quote_ident(time_column)
    cur.execute(f"CREATE TABLE {table} AS SELECT * REPLACE (CAST({ts} AS TIMESTAMP) AS {ts}) FROM incoming")
    cur.unregister("incoming")
    return cur.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow_table().schema
