"""Read-only SQL for Flight SQL: statements, prepared statements and their parameter sets, result batches.

Every query goes through the store's read-only query path. Parameter values are bound by DuckDB as
values, never spliced into the SQL text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from flight_server.flightsql.handles import PreparedStatement
from flight_server.flightsql.protocol import arrow_type
from flight_server.store import ROW_GROUP_ROWS, DatasetStore
from spicepod import InvalidInput, LimitExceeded

MAX_PARAMETER_SETS = 1024  # rows of one parameter batch (each is one execution of the statement)

# ADBC refuses messages over 16 MiB by default: result batches stay under that. Rows per batch come from the
# result's row width (batches of ~12 MiB; much smaller ones cost the Go driver up to a third of its
# throughput), in whole DuckDB row groups, and a batch still over MAX_BATCH_BYTES (long strings) is sliced.
MAX_BATCH_ROWS = 4 * ROW_GROUP_ROWS
TARGET_BATCH_BYTES = 12 << 20
MAX_BATCH_BYTES = 14 << 20

Values = list[Any] | dict[str, Any]


def row_bytes(schema: pa.Schema) -> tuple[float, bool]:
    """Bytes per row (32 for each variable-width column, a guess), and whether every column is fixed-width."""
    width, fixed = 0.0, True
    for f in schema:
        try:
            width += f.type.bit_width / 8 + 0.125  # and its validity bit
        except ValueError:  # variable width: strings, binaries, nested
            width += 32
            fixed = False
    return width, fixed


def batch_rows(schema: pa.Schema) -> int:
    """Rows per result batch so that a batch stays near TARGET_BATCH_BYTES."""
    width, _ = row_bytes(schema)
    return int(max(1024, min(MAX_BATCH_ROWS, TARGET_BATCH_BYTES // max(width, 1.0))))


def bounded(reader: pa.RecordBatchReader, rows: int) -> pa.RecordBatchReader:
    """The same stream, with any batch over MAX_BATCH_BYTES sliced (long strings defeat the row estimate).

    A stream of fixed-width columns in batches of `rows` that cannot pass the bound is returned as it is: it
    then streams without another step through Python per batch.
    """
    width, fixed = row_bytes(reader.schema)
    if fixed and rows * width <= MAX_BATCH_BYTES:
        return reader

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            size = batch.nbytes
            if size <= MAX_BATCH_BYTES or batch.num_rows < 2:
                yield batch
                continue
            step = max(1, batch.num_rows * TARGET_BATCH_BYTES // size)
            for start in range(0, batch.num_rows, step):
                yield batch.slice(start, step)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def values(names: list[str], row: list[Any]) -> Values:
    """Values in the form DuckDB binds: a list for positional parameters, a dict for $names."""
    if all(n.isdigit() for n in names):
        return list(row)
    return dict(zip(names, row, strict=True))


class SqlQueries:
    """Runs statements and prepared statements on the store, in batches a Flight SQL client accepts."""

    def __init__(self, store: DatasetStore):
        self.store = store

    def run(self, sql: str, rows: int) -> pa.RecordBatchReader:
        rows = min(max(rows, 1), MAX_BATCH_ROWS)
        return bounded(self.store.query(sql, batch_rows=rows), rows)

    def prepare(self, sql: str, peer: str) -> PreparedStatement:
        self.store.check_read_only(sql)
        names = self.parameter_names(sql)
        if names:
            parameter_schema = self.parameter_schema(sql, names)
            # Best guess before values are bound: every parameter NULL.
            dataset_schema = self.store.query_schema(sql, params=values(names, [None] * len(names)))
        else:
            parameter_schema = pa.schema([])
            dataset_schema = self.store.query_schema(sql)
        return PreparedStatement(sql, peer, names, parameter_schema, dataset_schema)

    def execute(self, statement: PreparedStatement) -> pa.RecordBatchReader:
        """The statement's result: once, or once per bound parameter set, one stream after the other."""
        with statement.lock:
            sets = list(statement.parameters)
            rows = batch_rows(statement.dataset_schema)
        names = statement.parameter_names
        if not names:
            return self.run(statement.sql, rows)
        if not sets:
            raise InvalidInput(f"the prepared statement has {len(names)} parameters and "
                               "no values were bound (DoPut CommandPreparedStatementQuery)")
        first = self.store.query(statement.sql, rows, params=values(names, sets[0]))
        if len(sets) == 1:
            return bounded(first, rows)

        def rest() -> Iterator[pa.RecordBatch]:
            for row in sets[1:]:
                reader = self.store.query(statement.sql, rows, params=values(names, row))
                if not reader.schema.equals(first.schema):
                    raise InvalidInput("the parameter sets give results of different schemas")
                yield from reader

        return bounded(pa.RecordBatchReader.from_batches(first.schema, itertools.chain(first, rest())), rows)

    def bind(self, statement: PreparedStatement, batches: Iterable[pa.RecordBatch]) -> None:
        """Keep the rows of `batches` as the statement's parameter sets (one execution each)."""
        names = statement.parameter_names
        sets: list[list[Any]] = []
        types: tuple[pa.DataType, ...] = ()
        for batch in batches:
            types = types or tuple(batch.schema.types)
            if batch.num_columns != len(names):
                raise InvalidInput(f"the prepared statement has {len(names)} parameters; "
                                   f"the bound batch has {batch.num_columns} columns")
            if len(sets) + batch.num_rows > MAX_PARAMETER_SETS:
                raise LimitExceeded(f"more than {MAX_PARAMETER_SETS} parameter sets bound to one statement")
            columns = [column.to_pylist() for column in batch.columns]
            sets.extend([list(row) for row in zip(*columns, strict=True)])
        schema = statement.dataset_schema
        if sets and types != statement.bound_types:  # the result's schema may depend on the values' types
            schema = self.store.query_schema(statement.sql, params=values(names, sets[0]))
        with statement.lock:
            statement.parameters = sets
            statement.dataset_schema = schema
            statement.bound_types = types if sets else statement.bound_types

    def parameter_names(self, sql: str) -> list[str]:
        """The statement's parameters in binding order: `?`/`$1` positions, or `$name`s in order of use."""
        statements = self.store.statements(sql)
        names = set(statements[0].named_parameters) if len(statements) == 1 else set()
        if all(n.isdigit() for n in names):
            return sorted(names, key=int)
        positions = {n: m.start() for n in names if (m := re.search(r"\$" + re.escape(n) + r"\b", sql))}
        return sorted(names, key=lambda n: positions.get(n, 0))

    def parameter_schema(self, sql: str, names: list[str]) -> pa.Schema:
        """Each parameter's type as DuckDB infers it from where it is used; null when it cannot tell."""
        types: dict[str, pa.DataType] = {}
        cursor = self.store._cursor()
        try:
            from duckdb import _seam  # DuckDB's binder; the public API says nothing of parameter types

            for name, sql_type in _seam.bind(cursor, sql).parameters:
                types[str(name)] = arrow_type(str(sql_type))
        except Exception:  # types are a hint to clients; without them every parameter is null-typed
            pass
        finally:
            cursor.close()
        return pa.schema([pa.field(n, types.get(n, pa.null())) for n in names])
