"""Media types, `Accept` negotiation, and the encodings of a result table (JSON rows, CSV, Arrow IPC, Parquet)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from datetime import date, datetime
from datetime import time as dt_time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spicepod.timestamps import iso_utc

JSON = "application/json"
TEXT = "text/plain"
CSV = "text/csv"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
PARQUET_LEGACY = "application/x-parquet"  # the name many clients still send
PROMETHEUS = "text/plain; version=0.0.4"


# --- Accept ---------------------------------------------------------------------------------------------

def _ranges(accept: str) -> list[tuple[str, str, float, int]]:
    """(type, subtype, q, position) of each media range; malformed ranges and q values are left out."""
    out = []
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0 and math.isfinite(q):
            out.append((kind, sub, q, position))
    return out


def negotiate(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered media type an `Accept` header prefers, or None when it accepts none of them.

    Each offer takes the quality of the most specific range that matches it (RFC 9110 section 12.5.1);
    the best quality wins, then the more specific match, then the range written first, then the order of
    `offered`. No header (or an empty one) accepts the first offer.
    """
    if not accept or not accept.strip():
        return offered[0] if offered else None
    ranges = _ranges(accept)
    best: tuple[float, int, int, int] | None = None
    chosen = None
    for order, media in enumerate(offered):
        kind, _, sub = media.lower().partition("/")
        matches = [
            (specificity, q, position)
            for r_kind, r_sub, q, position in ranges
            for specificity in [2 if (r_kind, r_sub) == (kind, sub) else 1 if (r_kind, r_sub) == (kind, "*")
                                else 0 if (r_kind, r_sub) == ("*", "*") else -1]
            if specificity >= 0
        ]
        if not matches:
            continue
        specificity, q, position = max(matches, key=lambda m: (m[0], -m[2]))
        if q <= 0:
            continue
        rank = (q, specificity, -position, -order)
        if best is None or rank > best:
            best, chosen = rank, media
    return chosen


# --- values -----------------------------------------------------------------------------------------------

def jsonable(values: list[Any]) -> list[Any]:
    """Column values for JSON/CSV: timestamps as ISO 8601 UTC (naive ones are UTC), NaN/inf as null."""
    return [_jsonable(value) for value in values]


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool, type(None))):
        return value
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (date, dt_time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):  # nested values (lists, structs, maps) follow the same rules
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def _utc_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_utc_type(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_utc_type(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_utc_type(kind.value_type)), kind.list_size)
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_utc_type(field.type)) for field in kind])
    if pa.types.is_map(kind):
        return pa.map_(kind.key_field.with_type(_utc_type(kind.key_type)),
                       kind.item_field.with_type(_utc_type(kind.item_type)), kind.keys_sorted)
    return kind


def utc_timestamps(table: pa.Table) -> pa.Table:
    """Every timestamp, nested ones too, as `timestamp[us, tz=UTC]`: the instants JSON and CSV show with Z.

    Naive timestamps are UTC (as everywhere in flightcast); finer units are cut to microseconds, as in JSON.
    """
    schema = pa.schema([field.with_type(_utc_type(field.type)) for field in table.schema], table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema, safe=False)


# --- encodings of a table -----------------------------------------------------------------------------------

def json_rows(table: pa.Table) -> bytes:
    columns = [jsonable(c.to_pylist()) for c in table.columns]
    names = table.column_names
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return json.dumps(rows, default=str).encode()


def csv_text(table: pa.Table) -> bytes:
    out = io.StringIO()
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(table.column_names)
    columns = [[_csv_cell(v) for v in jsonable(c.to_pylist())] for c in table.columns]
    rows.writerows(zip(*columns, strict=True))
    return out.getvalue().encode()


def _csv_cell(value: Any) -> Any:
    """Nested values (lists, structs, maps) as JSON text in one cell."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def arrow_stream(table: pa.Table) -> bytes:
    table = utc_timestamps(table)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(utc_timestamps(table), sink)
    return sink.getvalue()


# What a table can be served as, the default first; the Content-Type sent with each.
TABLE_ENCODINGS: dict[str, tuple[str, Callable[[pa.Table], bytes]]] = {
    JSON: ("application/json; charset=UTF-8", json_rows),
    CSV: ("text/csv; charset=UTF-8", csv_text),
    ARROW_STREAM: (ARROW_STREAM, arrow_stream),
    PARQUET: (PARQUET, parquet),
    PARQUET_LEGACY: (PARQUET_LEGACY, parquet),
}
