"""Loading a dataset's source file into a table: time formats, column checks, one row per key.

Every problem is a start-up error (SpicepodError) naming the dataset and what is wrong in words a
user can act on: the missing column and the columns the file has, the row whose time does not parse
and the pattern expected, a null or over-long series id. DuckDB's own wording is kept only as a
last resort.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from spicepod import DatasetSpec, SpicepodError, quote_ident, quote_literal
from spicepod.checks import TIME_FORMATS
from spicepod.constants import MAX_SERIES_ID_BYTES

_ROW = "__flightcast_row"  # the source row number (1-based), while a file is loaded
# What each named time_format reads, for the message about a value it cannot read.
_EXPECTED = {
    "timestamp": "a date or date-time like 2024-01-31 or 2024-01-31 12:00:00",
    "timestamptz": "a date-time with a UTC offset like 2024-01-31 12:00:00+01:00",
    "ISO8601": "ISO 8601 text like 2024-01-31T12:00:00Z",
    "unix_seconds": "a number of seconds since 1970-01-01 within the range of a timestamp",
    "unix_millis": "a number of milliseconds since 1970-01-01 within the range of a timestamp",
}
_OPTIONS = f"{', '.join(TIME_FORMATS)}, or a strptime pattern like '%d/%m/%Y %H:%M'"


def time_expression(spec: DatasetSpec, column: str) -> str:
    """SQL turning the source's time column into a UTC TIMESTAMP, per `time_format`."""
    col = quote_ident(column)
    if spec.time_format not in TIME_FORMATS:  # a strptime pattern; unparsable values are found first
        return f"strptime(CAST({col} AS VARCHAR), {quote_literal(spec.time_format)})"
    return {
        "timestamp": f"CAST({col} AS TIMESTAMP)",
        "timestamptz": f"timezone('UTC', CAST({col} AS TIMESTAMPTZ))",
        "ISO8601": f"timezone('UTC', CAST(CAST({col} AS VARCHAR) AS TIMESTAMPTZ))",
        "unix_seconds": f"make_timestamp(CAST(round(CAST({col} AS DOUBLE) * 1000000) AS BIGINT))",
        "unix_millis": f"make_timestamp(CAST(round(CAST({col} AS DOUBLE) * 1000) AS BIGINT))",
    }[spec.time_format]


def _relation(spec: DatasetSpec, time_as_text: bool) -> str:
    path = quote_literal(str(spec.path))
    if spec.format == "csv":
        # The time column is read as text so that the declared time_format decides, not CSV sniffing.
        types = f", types={{{quote_literal(spec.time_column)}: 'VARCHAR'}}" if time_as_text else ""
        return f"read_csv({path}, header=true{types})"
    if spec.format == "parquet":
        return f"read_parquet({path})"
    return "arrow_source"  # registered from pyarrow: DuckDB has no built-in Arrow IPC file reader


def read_arrow_file(spec: DatasetSpec) -> pa.Table:
    import pyarrow.feather as feather

    try:
        return feather.read_table(str(spec.path))
    except (OSError, pa.ArrowInvalid):
        with pa.OSFile(str(spec.path)) as source:
            return pa.ipc.open_stream(source).read_all()


def load_source(cur: duckdb.DuckDBPyConnection, spec: DatasetSpec, table: str) -> None:
    """Create `table` from the dataset's file: times as UTC timestamps, sorted, one row per key (replace)."""
    try:
        if spec.format == "arrow":
            cur.register("arrow_source", read_arrow_file(spec))
        columns = dict(cur.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                                   f"{_relation(spec, False)})").fetchall())
        for role, column in (("time", spec.time_column), ("series", spec.series_column)):
            if column is not None and column not in columns:
                raise SpicepodError(
                    f"dataset '{spec.name}': {role} column '{column}' not found in {spec.path} "
                    f"(columns: {', '.join(columns)})"
                )
        numbered = _numbered(spec, time_as_text=not spec.time_format.startswith("unix"))
        if spec.time_format not in TIME_FORMATS:
            _check_pattern(cur, spec, numbered)
        if spec.series_column is not None:
            _check_series_ids(cur, spec, numbered, columns[spec.series_column])
        ts = quote_ident(spec.time_column)
        replaced = [f"{time_expression(spec, spec.time_column)} AS {ts}"]
        for name, kind in columns.items():  # integer value columns are read as float64
            if name not in spec.key_columns and _is_integer(kind):
                replaced.append(f"CAST({quote_ident(name)} AS DOUBLE) AS {quote_ident(name)}")
        select = f"SELECT * REPLACE ({', '.join(replaced)}) FROM ({numbered})"
        cur.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE ({_ROW}) FROM ({select}) ORDER BY {ts}")
        if spec.on_duplicate == "replace" and _has_duplicate_keys(cur, spec, table):
            # The last occurrence in the file wins: the table is built again, keeping it.
            keys = ", ".join(quote_ident(k) for k in spec.key_columns)
            cur.execute(
                f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE ({_ROW}) FROM ({select}) "
                f"QUALIFY {ts} IS NULL OR row_number() OVER (PARTITION BY {keys} ORDER BY {_ROW} DESC) = 1 "
                f"ORDER BY {ts}"
            )
    except duckdb.Error as exc:
        _raise_bad_time(cur, spec)
        # DuckDB's first paragraph says what is wrong; the rest quotes our SQL, which means nothing to a user.
        problem = str(exc).split("\n\n")[0]
        raise SpicepodError(f"dataset '{spec.name}': cannot load {spec.path}: {problem}") from None


def _numbered(spec: DatasetSpec, time_as_text: bool) -> str:
    """The source's rows with their row number in the file (1-based, the header not counted)."""
    return f"SELECT *, row_number() OVER () AS {_ROW} FROM {_relation(spec, time_as_text)}"


def _raise_bad_time(cur: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> None:
    """After a failed load: name the first time value the dataset's time_format cannot read, if any.

    Looked for only after a failure, so that a good file is read once. The time column is read as text
    here, so that neither CSV type sniffing nor a column type the format cannot cast from fails first.
    """
    if spec.time_format not in TIME_FORMATS:
        return  # a strptime pattern: _check_pattern has looked already
    col = quote_ident(spec.time_column)
    try:
        bad = cur.execute(
            f"SELECT {_ROW}, {col} FROM (SELECT * REPLACE (CAST({col} AS VARCHAR) AS {col}) "
            f"FROM ({_numbered(spec, time_as_text=True)})) "
            f"WHERE {col} IS NOT NULL AND try({time_expression(spec, spec.time_column)}) IS NULL "
            f"ORDER BY {_ROW} LIMIT 1"
        ).fetchall()
    except duckdb.Error:
        return  # the failure was elsewhere: the caller reports it
    if bad:
        row, value = bad[0]
        raise SpicepodError(
            f"dataset '{spec.name}': row {row} of {spec.path}: time value {value!r} in column "
            f"'{spec.time_column}' is not {_EXPECTED[spec.time_format]} (time_format '{spec.time_format}'); "
            f"set time_format to how the file writes its times: {_OPTIONS}"
        )


def _is_integer(duckdb_type: str) -> bool:
    return duckdb_type.upper() in {
        "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
        "UHUGEINT",
    }


def _check_pattern(cur: duckdb.DuckDBPyConnection, spec: DatasetSpec, numbered: str) -> None:
    col = quote_ident(spec.time_column)
    bad = cur.execute(
        f"SELECT {_ROW}, CAST({col} AS VARCHAR) FROM ({numbered}) WHERE {col} IS NOT NULL "
        f"AND try_strptime(CAST({col} AS VARCHAR), {quote_literal(spec.time_format)}) IS NULL "
        f"ORDER BY {_ROW} LIMIT 1"
    ).fetchall()
    if bad:
        row, value = bad[0]
        raise SpicepodError(
            f"dataset '{spec.name}': row {row} of {spec.path}: time value {value!r} in column "
            f"'{spec.time_column}' does not match time_format '{spec.time_format}'"
        )


def _check_series_ids(cur: duckdb.DuckDBPyConnection, spec: DatasetSpec, numbered: str, kind: str) -> None:
    column = spec.series_column
    assert column is not None
    if not (_is_integer(kind) or kind.upper() == "VARCHAR"):
        raise SpicepodError(
            f"dataset '{spec.name}': series column '{column}' has type {kind}; a series id must be text or an integer"
        )
    col = quote_ident(column)
    bad = cur.execute(
        f"SELECT {_ROW}, {col} IS NULL FROM ({numbered}) WHERE {col} IS NULL "
        f"OR strlen(CAST({col} AS VARCHAR)) > {MAX_SERIES_ID_BYTES} ORDER BY {_ROW} LIMIT 1"
    ).fetchall()
    if bad:
        row, null = bad[0]
        what = "is null" if null else f"is longer than {MAX_SERIES_ID_BYTES} bytes"
        raise SpicepodError(f"dataset '{spec.name}': row {row} of {spec.path}: series id in column '{column}' {what}")


def _has_duplicate_keys(cur: duckdb.DuckDBPyConnection, spec: DatasetSpec, table: str) -> bool:
    keys = ", ".join(quote_ident(k) for k in spec.key_columns)
    timed = f"FILTER (WHERE {quote_ident(spec.time_column)} IS NOT NULL)"  # rows without a time are no key
    rows, distinct = cur.execute(
        f"SELECT count(*) {timed}, count(DISTINCT ({keys})) {timed} FROM {table}"
    ).fetchall()[0]
    return rows != distinct
