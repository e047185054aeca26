"""Flight SQL's static data: the result schemas FlightSql.proto defines, SqlInfo, XDBC types, type names.

Every dataset is a TABLE in DuckDB's own catalog and schema names for its in-memory database, so that
catalog.schema.table names from GetTables also work in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa

from flight_server import flightsql_pb2 as pb
from flight_server.flightsql.handles import HANDLE_IDLE_S

CATALOG = "memory"
DB_SCHEMA = "main"
TABLE_TYPE = "TABLE"

# --- the result schemas the protocol defines (FlightSql.proto), nullability included -------------------------

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8(), nullable=False),
])
TABLES_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8()),
    pa.field("table_name", pa.utf8(), nullable=False),
    pa.field("table_type", pa.utf8(), nullable=False),
])
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])
SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.utf8(), nullable=False),
    pa.field("bool_value", pa.bool_(), nullable=False),
    pa.field("bigint_value", pa.int64(), nullable=False),
    pa.field("int32_bitmask", pa.int32(), nullable=False),
    pa.field("string_list", pa.list_(pa.utf8()), nullable=False),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False),
])
SQL_INFO_SCHEMA = pa.schema([
    pa.field("info_name", pa.uint32(), nullable=False),
    pa.field("value", SQL_INFO_VALUE, nullable=False),
])
XDBC_TYPE_INFO_SCHEMA = pa.schema([
    pa.field("type_name", pa.utf8(), nullable=False),
    pa.field("data_type", pa.int32(), nullable=False),
    pa.field("column_size", pa.int32()),
    pa.field("literal_prefix", pa.utf8()),
    pa.field("literal_suffix", pa.utf8()),
    pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), nullable=False))),
    pa.field("nullable", pa.int32(), nullable=False),
    pa.field("case_sensitive", pa.bool_(), nullable=False),
    pa.field("searchable", pa.int32(), nullable=False),
    pa.field("unsigned_attribute", pa.bool_()),
    pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
    pa.field("auto_increment", pa.bool_()),
    pa.field("local_type_name", pa.utf8()),
    pa.field("minimum_scale", pa.int32()),
    pa.field("maximum_scale", pa.int32()),
    pa.field("sql_data_type", pa.int32(), nullable=False),
    pa.field("datetime_subcode", pa.int32()),
    pa.field("num_prec_radix", pa.int32()),
    pa.field("interval_precision", pa.int32()),
])


# --- column types: DuckDB's names and their Arrow types --------------------------------------------

# DuckDB's names of the types a parameter or column commonly has, and their Arrow types.
_SIMPLE_TYPES = {
    "BOOLEAN": pa.bool_(), "TINYINT": pa.int8(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(),
    "BIGINT": pa.int64(), "UTINYINT": pa.uint8(), "USMALLINT": pa.uint16(), "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(), "FLOAT": pa.float32(), "DOUBLE": pa.float64(), "VARCHAR": pa.utf8(),
    "BLOB": pa.binary(), "DATE": pa.date32(), "TIME": pa.time64("us"), "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP_S": pa.timestamp("s"), "TIMESTAMP_MS": pa.timestamp("ms"), "TIMESTAMP_NS": pa.timestamp("ns"),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"), "INTERVAL": pa.month_day_nano_interval(),
}
_SQL_NAMES = {t: name for name, t in _SIMPLE_TYPES.items()}


def sql_type_name(arrow_type: pa.DataType) -> str:
    """The DuckDB name of a column's type, for clients that show it (ARROW:FLIGHT:SQL:TYPE_NAME)."""
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
        return "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "VARCHAR"
    return _SQL_NAMES.get(arrow_type, str(arrow_type).upper())


def arrow_type(sql_type: str) -> pa.DataType:
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", sql_type)
    if decimal:
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    return _SIMPLE_TYPES.get(sql_type, pa.null())


# --- SqlInfo ------------------------------------------------------------------------------------------------

def _server_version() -> str:
    try:
        return metadata.version("flightcast")
    except metadata.PackageNotFoundError:
        return "unknown"


I = pb.SqlInfo  # noqa: E741 - the enum's values read as I.Value(...)
# (info id, union member, value): union members as in SQL_INFO_VALUE, 0 string ... 5 map
SQL_INFO: dict[int, tuple[int, Any]] = {
    I.Value("FLIGHT_SQL_SERVER_NAME"): (0, "flightcast"),
    I.Value("FLIGHT_SQL_SERVER_VERSION"): (0, _server_version()),
    I.Value("FLIGHT_SQL_SERVER_ARROW_VERSION"): (0, pa.__version__),
    I.Value("FLIGHT_SQL_SERVER_READ_ONLY"): (1, True),  # SQL reads only; bulk ingestion appends (below)
    I.Value("FLIGHT_SQL_SERVER_SQL"): (1, True),
    I.Value("FLIGHT_SQL_SERVER_SUBSTRAIT"): (1, False),
    I.Value("FLIGHT_SQL_SERVER_TRANSACTION"): (3, pb.SqlSupportedTransaction.Value("SQL_SUPPORTED_TRANSACTION_NONE")),
    I.Value("FLIGHT_SQL_SERVER_CANCEL"): (1, False),
    I.Value("FLIGHT_SQL_SERVER_BULK_INGESTION"): (1, True),
    I.Value("FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED"): (1, False),
    I.Value("FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT"): (3, int(HANDLE_IDLE_S * 1000)),
    I.Value("FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT"): (3, 0),
    I.Value("SQL_DDL_CATALOG"): (1, False),
    I.Value("SQL_DDL_SCHEMA"): (1, False),
    I.Value("SQL_DDL_TABLE"): (1, False),
    I.Value("SQL_IDENTIFIER_CASE"): (
        3, pb.SqlSupportedCaseSensitivity.Value("SQL_CASE_SENSITIVITY_CASE_INSENSITIVE")),
    I.Value("SQL_IDENTIFIER_QUOTE_CHAR"): (0, '"'),
    I.Value("SQL_QUOTED_IDENTIFIER_CASE"): (
        3, pb.SqlSupportedCaseSensitivity.Value("SQL_CASE_SENSITIVITY_CASE_INSENSITIVE")),
    I.Value("SQL_ALL_TABLES_ARE_SELECTABLE"): (1, True),
    I.Value("SQL_NULL_ORDERING"): (3, pb.SqlNullOrdering.Value("SQL_NULLS_SORTED_AT_END")),
    I.Value("SQL_SEARCH_STRING_ESCAPE"): (0, "\\"),
    I.Value("SQL_SUPPORTS_COLUMN_ALIASING"): (1, True),
    I.Value("SQL_NULL_PLUS_NULL_IS_NULL"): (1, True),
    I.Value("SQL_SCHEMA_TERM"): (0, "schema"),
    I.Value("SQL_CATALOG_TERM"): (0, "catalog"),
    I.Value("SQL_CATALOG_AT_START"): (1, True),
    I.Value("SQL_SELECT_FOR_UPDATE_SUPPORTED"): (1, False),
    I.Value("SQL_STORED_PROCEDURES_SUPPORTED"): (1, False),
    I.Value("SQL_TRANSACTIONS_SUPPORTED"): (1, False),
    I.Value("SQL_BATCH_UPDATES_SUPPORTED"): (1, False),
    I.Value("SQL_SAVEPOINTS_SUPPORTED"): (1, False),
    I.Value("SQL_NAMED_PARAMETERS_SUPPORTED"): (1, True),
}


def sql_info_table(ids: Iterable[int]) -> pa.Table:
    """One row per known id asked for (all when none are), the value union built from its buffers."""
    wanted = list(ids) or sorted(SQL_INFO)
    rows = [(i, *SQL_INFO[i]) for i in wanted if i in SQL_INFO]
    members: list[list[Any]] = [[] for _ in SQL_INFO_VALUE]
    type_ids = np.empty(len(rows), np.int8)
    offsets = np.empty(len(rows), np.int32)
    for n, (_, member, value) in enumerate(rows):
        type_ids[n] = member
        offsets[n] = len(members[member])
        members[member].append(value)
    children = [pa.array(values, type=f.type) for f, values in zip(SQL_INFO_VALUE, members, strict=True)]
    value = pa.UnionArray.from_buffers(
        SQL_INFO_VALUE, len(rows), [None, pa.py_buffer(type_ids), pa.py_buffer(offsets)], children=children
    )
    names = pa.array([i for i, _, _ in rows], pa.uint32())
    return pa.Table.from_arrays([names, value], schema=SQL_INFO_SCHEMA)


# --- XDBC type info ------------------------------------------------------------------------------------------

X = pb.XdbcDataType
SUBCODE = pb.XdbcDatetimeSubcode
_BASIC = pb.Searchable.Value("SEARCHABLE_BASIC")


def _xdbc(name: str, data_type: str, size: int | None = None, prefix: str | None = None,
          suffix: str | None = None, params: list[str] | None = None, case: bool = False,
          searchable: int = _BASIC, unsigned: bool | None = None, fixed: bool = False,
          scale: tuple[int | None, int | None] = (None, None), subcode: str | None = None,
          radix: int | None = None) -> dict[str, Any]:
    """One row of CommandGetXdbcTypeInfo's result."""
    code = X.Value(data_type)
    return {
        "type_name": name, "data_type": code, "column_size": size, "literal_prefix": prefix,
        "literal_suffix": suffix, "create_params": params, "nullable": pb.Nullable.Value("NULLABILITY_NULLABLE"),
        "case_sensitive": case, "searchable": searchable, "unsigned_attribute": unsigned,
        "fixed_prec_scale": fixed, "auto_increment": False if unsigned is not None else None,
        "local_type_name": name, "minimum_scale": scale[0], "maximum_scale": scale[1],
        # datetime types report the generic DATETIME code here, their kind in datetime_subcode
        "sql_data_type": X.Value("XDBC_DATETIME") if subcode else code,
        "datetime_subcode": SUBCODE.Value(subcode) if subcode else None,
        "num_prec_radix": radix, "interval_precision": None,
    }


_XDBC_TYPES = [
    _xdbc("BOOLEAN", "XDBC_BIT", 1),
    _xdbc("TINYINT", "XDBC_TINYINT", 3, unsigned=False, scale=(0, 0), radix=10),
    _xdbc("SMALLINT", "XDBC_SMALLINT", 5, unsigned=False, scale=(0, 0), radix=10),
    _xdbc("INTEGER", "XDBC_INTEGER", 10, unsigned=False, scale=(0, 0), radix=10),
    _xdbc("BIGINT", "XDBC_BIGINT", 19, unsigned=False, scale=(0, 0), radix=10),
    _xdbc("FLOAT", "XDBC_FLOAT", 24, unsigned=False, radix=2),
    _xdbc("DOUBLE", "XDBC_DOUBLE", 53, unsigned=False, radix=2),
    _xdbc("DECIMAL", "XDBC_DECIMAL", 38, params=["precision", "scale"], unsigned=False, fixed=True,
          scale=(0, 38), radix=10),
    _xdbc("VARCHAR", "XDBC_VARCHAR", prefix="'", suffix="'", case=True,
          searchable=pb.Searchable.Value("SEARCHABLE_FULL")),
    _xdbc("BLOB", "XDBC_VARBINARY", prefix="'", suffix="'::BLOB"),
    _xdbc("DATE", "XDBC_DATE", 10, prefix="DATE '", suffix="'", subcode="XDBC_SUBCODE_DATE"),
    _xdbc("TIME", "XDBC_TIME", 15, prefix="TIME '", suffix="'", subcode="XDBC_SUBCODE_TIME"),
    _xdbc("TIMESTAMP", "XDBC_TIMESTAMP", 26, prefix="TIMESTAMP '", suffix="'", subcode="XDBC_SUBCODE_TIMESTAMP"),
    _xdbc("TIMESTAMP WITH TIME ZONE", "XDBC_TIMESTAMP", 32, prefix="TIMESTAMPTZ '", suffix="'",
          subcode="XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE"),
]


def xdbc_type_info_table(data_type: int | None) -> pa.Table:
    """The types a query result can have, ordered by data_type then type_name; one data_type if asked."""
    rows = sorted((t for t in _XDBC_TYPES if data_type is None or t["data_type"] == data_type),
                  key=lambda t: (t["data_type"], t["type_name"]))
    return pa.Table.from_pylist(rows, schema=XDBC_TYPE_INFO_SCHEMA)
