"""The catalog commands' rows: catalogs, schemas, tables (with their column metadata) and table types."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from flight_server import flightsql_pb2 as pb
from flight_server.flightsql.messages import optional
from flight_server.flightsql.protocol import (
    CATALOG,
    CATALOGS_SCHEMA,
    DB_SCHEMA,
    DB_SCHEMAS_SCHEMA,
    TABLE_TYPE,
    TABLE_TYPES_SCHEMA,
    TABLES_SCHEMA,
    TABLES_WITH_SCHEMA_SCHEMA,
    sql_type_name,
)
from flight_server.store import DatasetStore


def like(pattern: str) -> re.Pattern[str]:
    """A Flight SQL filter pattern (% any run of characters, _ any one character) as a regex.

    A backslash (SQL_SEARCH_STRING_ESCAPE, which JDBC clients put before a `_` in a name) makes the next
    character literal.
    """
    parts = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            parts.append(re.escape(next(chars, "\\")))
        else:
            parts.append("." if c == "_" else ".*" if c == "%" else re.escape(c))
    return re.compile("".join(parts), re.DOTALL)


def matches(value: str, pattern: str | None) -> bool:
    return pattern is None or like(pattern).fullmatch(value) is not None


def in_schema(command: pb.CommandGetDbSchemas | pb.CommandGetTables) -> bool:
    """Whether the command's catalog and schema filters let our one catalog and schema through."""
    catalog = optional(command, "catalog")
    return catalog in (None, CATALOG) and matches(DB_SCHEMA, optional(command, "db_schema_filter_pattern"))


def catalogs() -> pa.Table:
    return pa.table({"catalog_name": [CATALOG]}, schema=CATALOGS_SCHEMA)


def db_schemas(command: pb.CommandGetDbSchemas) -> pa.Table:
    rows = [(CATALOG, DB_SCHEMA)] if in_schema(command) else []
    return pa.table({"catalog_name": [r[0] for r in rows], "db_schema_name": [r[1] for r in rows]},
                    schema=DB_SCHEMAS_SCHEMA)


def table_types() -> pa.Table:
    return pa.table({"table_type": [TABLE_TYPE]}, schema=TABLE_TYPES_SCHEMA)


def tables_schema(command: pb.CommandGetTables) -> pa.Schema:
    return TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else TABLES_SCHEMA


def tables(store: DatasetStore, command: pb.CommandGetTables) -> pa.Table:
    """Every dataset the filters let through, by name; with its described schema if asked."""
    types = set(command.table_types)
    names: list[str] = []
    if in_schema(command) and (not types or TABLE_TYPE in types):
        pattern = optional(command, "table_name_filter_pattern")
        names = sorted(d["name"] for d in store.datasets() if matches(d["name"], pattern))
    columns: dict[str, list[Any]] = {
        "catalog_name": [CATALOG] * len(names), "db_schema_name": [DB_SCHEMA] * len(names),
        "table_name": names, "table_type": [TABLE_TYPE] * len(names),
    }
    if command.include_schema:
        columns["table_schema"] = [described(n, store.dataset_schema(n)).serialize().to_pybytes() for n in names]
    return pa.table(columns, schema=tables_schema(command))


def described(table: str, schema: pa.Schema) -> pa.Schema:
    """A dataset's schema with the column metadata Flight SQL defines (JDBC getColumns reads it)."""
    fields = []
    for f in schema:
        text = pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        fields.append(f.with_metadata({
            "ARROW:FLIGHT:SQL:CATALOG_NAME": CATALOG, "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": DB_SCHEMA,
            "ARROW:FLIGHT:SQL:TABLE_NAME": table, "ARROW:FLIGHT:SQL:TYPE_NAME": sql_type_name(f.type),
            "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": "0", "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE": "1" if text else "0",
            "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1", "ARROW:FLIGHT:SQL:IS_SEARCHABLE": "1",
        }))
    return pa.schema(fields, metadata=schema.metadata)
