"""Arrow Flight SQL on the Flight port: decode the protocol's commands and call the store plain Flight uses.

A Flight SQL request is a `google.protobuf.Any` holding one of the messages of Arrow's FlightSql.proto, in a
descriptor command, a ticket or an action body. `unpack` tells those apart from plain Flight's UTF-8 SQL;
`FlightSql` serves them. A protocol message is never handed to DuckDB as SQL text: only the SQL
string inside a statement is, through the store's read-only query path, with parameters bound as DuckDB
parameter values.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from flight_server import flightsql_pb2 as pb
from flight_server.ingest import incoming_batches, malformed_stream
from flight_server.store import DatasetStore
from spicepod import InvalidInput, LimitExceeded, Unimplemented

log = logging.getLogger("flightcast.flightsql")

TYPE_PREFIX = "type.googleapis.com/"
PACKAGE = "arrow.flight.protocol.sql."

# What clients see as the location of every dataset: DuckDB's own names for its in-memory database and
# schema, so that catalog.schema.table names from GetTables also work in SQL.
CATALOG = "memory"
DB_SCHEMA = "main"
TABLE_TYPE = "TABLE"

# Prepared statements: a client that never closes its handles cannot grow memory without bound.
MAX_HANDLES_PER_PEER = 64  # per connection: the least recently used handle goes first
MAX_HANDLES = 4096  # over all connections
HANDLE_IDLE_S = 600.0  # a handle unused this long is dropped
MAX_PARAMETER_SETS = 1024  # rows of one parameter batch (each is one execution of the statement)

# ADBC refuses messages over 16 MiB by default: result batches stay under that. Rows per batch come from the
# result's row width (batches of ~12 MiB; much smaller ones cost the Go driver up to a third of its
# throughput), and a batch still over MAX_BATCH_BYTES (long strings) is sliced.
MAX_BATCH_ROWS = 1 << 19
TARGET_BATCH_BYTES = 12 << 20
MAX_BATCH_BYTES = 14 << 20

ACTIONS = {
    "CreatePreparedStatement": "Flight SQL: prepare a read-only query (ActionCreatePreparedStatementRequest); "
    f"the handle is dropped after {HANDLE_IDLE_S:g} s unused, and a connection keeps at most "
    f"{MAX_HANDLES_PER_PEER} open.",
    "ClosePreparedStatement": "Flight SQL: close a prepared statement (ActionClosePreparedStatementRequest).",
}

# Flight SQL actions this server knows of and does not serve: UNIMPLEMENTED, named.
OTHER_ACTIONS = {
    "CreatePreparedSubstraitPlan", "BeginTransaction", "BeginSavepoint", "EndTransaction", "EndSavepoint",
    "CancelQuery", "CancelFlightInfo", "RenewFlightEndpoint", "CloseSession", "SetSessionOptions",
    "GetSessionOptions",
}

# --- the result schemas the protocol defines (FlightSql.proto), nullability included ---------------------

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


# --- decoding -------------------------------------------------------------------------------------------

def unpack(raw: bytes) -> any_pb2.Any | None:
    """The Flight SQL message in `raw`, or None when `raw` is not one (plain Flight's UTF-8 SQL or name)."""
    # A serialized Any starts with field 1 (type_url, length-delimited): tag byte 0x0A. SQL text that
    # happens to start with a newline parses as an Any too, but never with a type URL.
    if not raw.startswith(b"\n"):
        return None
    message = any_pb2.Any()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        return None
    if not message.type_url.startswith(TYPE_PREFIX) or len(message.type_url) <= len(TYPE_PREFIX):
        return None
    return message


def _name(message: any_pb2.Any) -> str:
    full = message.type_url[len(TYPE_PREFIX):]
    return full[len(PACKAGE):] if full.startswith(PACKAGE) else full


def _open(message: any_pb2.Any, cls: type[Message]) -> Any:
    out = cls()
    if not message.Unpack(out):
        raise InvalidInput(f"malformed Flight SQL message {_name(message)}")
    return out


def _pack(message: Message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def _action_body(raw: bytes, cls: type[Message]) -> Any:
    """An action body: the request wrapped in an Any, as the protocol says (a bare message is accepted too)."""
    wrapped = unpack(raw)
    out = cls()
    try:
        if wrapped is not None and _name(wrapped) == cls.DESCRIPTOR.name:
            wrapped.Unpack(out)
        else:
            out.ParseFromString(raw)
    except DecodeError:
        raise InvalidInput(f"malformed {cls.DESCRIPTOR.name}") from None
    return out


def _unimplemented(what: str) -> Unimplemented:
    return Unimplemented(f"Flight SQL {what} is not implemented by flightcast")


# --- prepared statements ---------------------------------------------------------------------------------

@dataclass
class PreparedStatement:
    sql: str
    peer: str
    parameter_names: list[str]
    parameter_schema: pa.Schema
    dataset_schema: pa.Schema
    parameters: list[list[Any]] = field(default_factory=list)  # bound parameter sets, one per execution
    bound_types: tuple[pa.DataType, ...] = ()  # the Arrow types of the values dataset_schema was found with
    used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class PreparedStatements:
    """Open prepared-statement handles: bounded per peer and in total, dropped after being idle."""

    def __init__(self, per_peer: int = MAX_HANDLES_PER_PEER, total: int = MAX_HANDLES,
                 idle_s: float = HANDLE_IDLE_S, clock=time.monotonic):
        self.per_peer = per_peer
        self.total = total
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._handles: OrderedDict[bytes, PreparedStatement] = OrderedDict()  # least recently used first
        self._by_peer: dict[str, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def count(self, peer: str) -> int:
        with self._lock:
            return len(self._by_peer.get(peer, ()))

    def add(self, statement: PreparedStatement) -> bytes:
        handle = secrets.token_bytes(16)
        with self._lock:
            now = self._clock()
            self._expire(now)
            statement.used = now
            mine = self._by_peer.get(statement.peer, {})
            while len(mine) >= self.per_peer:
                self._drop(next(iter(mine)), "the connection's oldest")
            while len(self._handles) >= self.total:
                self._drop(next(iter(self._handles)), "the server's oldest")
            self._handles[handle] = statement
            self._by_peer.setdefault(statement.peer, OrderedDict())[handle] = None
        return handle

    def get(self, handle: bytes) -> PreparedStatement:
        with self._lock:
            now = self._clock()
            self._expire(now)
            statement = self._handles.get(handle)
            if statement is None:
                raise InvalidInput(
                    "unknown prepared statement handle: it was closed, unused for more than "
                    f"{self.idle_s:g} s, or dropped because its connection opened more than {self.per_peer}"
                )
            statement.used = now
            self._handles.move_to_end(handle)
            self._by_peer[statement.peer].move_to_end(handle)
            return statement

    def close(self, handle: bytes) -> None:
        with self._lock:
            if handle in self._handles:
                self._drop(handle, None)

    def _expire(self, now: float) -> None:
        while self._handles:
            handle, oldest = next(iter(self._handles.items()))
            if now - oldest.used <= self.idle_s:
                return
            self._drop(handle, "idle")

    def _drop(self, handle: bytes, why: str | None) -> None:
        statement = self._handles.pop(handle)
        mine = self._by_peer[statement.peer]
        mine.pop(handle, None)
        if not mine:
            del self._by_peer[statement.peer]
        if why:
            log.info("flight sql: dropped a prepared statement handle of %s (%s)", statement.peer, why)


# --- parameterised queries --------------------------------------------------------------------------------

class ParameterisedQueries:
    """Read-only SQL with parameter values bound as DuckDB parameters (never spliced into the text).

    Queries go through DatasetStore.query/query_schema with their values; only parsing (parameter names
    and types) takes a cursor of its own.
    """

    def __init__(self, store: DatasetStore):
        self.store = store

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
                types[str(name)] = _arrow_type(str(sql_type))
        except Exception:  # types are a hint to clients; without them every parameter is null-typed
            pass
        finally:
            cursor.close()
        return pa.schema([pa.field(n, types.get(n, pa.null())) for n in names])

    def schema(self, sql: str, values: list[Any] | dict[str, Any]) -> pa.Schema:
        return self.store.query_schema(sql, params=values)

    def query(self, sql: str, values: list[Any] | dict[str, Any], batch_rows: int) -> pa.RecordBatchReader:
        return self.store.query(sql, batch_rows, params=values)


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


def _sql_type_name(arrow_type: pa.DataType) -> str:
    """The DuckDB name of a column's type, for clients that show it (ARROW:FLIGHT:SQL:TYPE_NAME)."""
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
        return "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "VARCHAR"
    return _SQL_NAMES.get(arrow_type, str(arrow_type).upper())


def _arrow_type(sql_type: str) -> pa.DataType:
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", sql_type)
    if decimal:
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    return _SIMPLE_TYPES.get(sql_type, pa.null())


def _batch_rows(schema: pa.Schema) -> int:
    """Rows per result batch so that a batch stays near TARGET_BATCH_BYTES."""
    width = 0.0
    for f in schema:
        try:
            width += f.type.bit_width / 8 + 0.125  # and its validity bit
        except ValueError:  # variable width: strings, binaries, nested
            width += 32
    return int(max(1024, min(MAX_BATCH_ROWS, TARGET_BATCH_BYTES // max(width, 1.0))))


def _statement_ticket(sql: str, rows: int) -> bytes:
    """The ticket of a CommandStatementQuery: the SQL and the batch size its schema calls for."""
    return _pack(pb.TicketStatementQuery(statement_handle=f"{rows}\n{sql}".encode()))


def _bounded(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """The same stream, with any batch over MAX_BATCH_BYTES sliced (long strings defeat the row estimate)."""

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


# --- catalog helpers ----------------------------------------------------------------------------------------

def _like(pattern: str) -> re.Pattern[str]:
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


def _matches(value: str, pattern: str | None) -> bool:
    return pattern is None or _like(pattern).fullmatch(value) is not None


def _optional(message: Message, name: str) -> str | None:
    return getattr(message, name) if message.HasField(name) else None


def _described(table: str, schema: pa.Schema) -> pa.Schema:
    """A dataset's schema with the column metadata Flight SQL defines (JDBC getColumns reads it)."""
    fields = []
    for f in schema:
        text = pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        fields.append(f.with_metadata({
            "ARROW:FLIGHT:SQL:CATALOG_NAME": CATALOG, "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": DB_SCHEMA,
            "ARROW:FLIGHT:SQL:TABLE_NAME": table, "ARROW:FLIGHT:SQL:TYPE_NAME": _sql_type_name(f.type),
            "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": "0", "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE": "1" if text else "0",
            "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1", "ARROW:FLIGHT:SQL:IS_SEARCHABLE": "1",
        }))
    return pa.schema(fields, metadata=schema.metadata)


def _stream(table: pa.Table) -> flight.RecordBatchStream:
    return flight.RecordBatchStream(table)


# --- the service ------------------------------------------------------------------------------------------

class FlightSql:
    """The Flight SQL side of FlightService: each method takes what the Flight RPC got, already unwrapped."""

    def __init__(self, store: DatasetStore, statements: PreparedStatements | None = None):
        self.store = store
        self.statements = statements or PreparedStatements()
        self.parameterised = ParameterisedQueries(store)

    # GetFlightInfo / GetSchema

    def flight_info(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    message: any_pb2.Any) -> flight.FlightInfo:
        schema, ticket = self._plan(message)
        endpoint = flight.FlightEndpoint(ticket, [])
        return flight.FlightInfo(schema, descriptor, [endpoint], -1, -1)

    def schema(self, context: flight.ServerCallContext, message: any_pb2.Any) -> pa.Schema:
        return self._plan(message)[0]

    def _plan(self, message: any_pb2.Any) -> tuple[pa.Schema, bytes]:
        """The result schema of a command, and the ticket that fetches its result."""
        name = _name(message)
        if name == "CommandStatementQuery":
            command = _open(message, pb.CommandStatementQuery)
            if command.HasField("transaction_id"):
                raise _unimplemented("transactions (transaction_id)")
            schema = self.store.query_schema(command.query)
            return schema, _statement_ticket(command.query, _batch_rows(schema))
        if name == "CommandPreparedStatementQuery":
            command = _open(message, pb.CommandPreparedStatementQuery)
            statement = self.statements.get(command.prepared_statement_handle)
            return statement.dataset_schema, _pack(command)
        fixed = {
            "CommandGetCatalogs": CATALOGS_SCHEMA, "CommandGetDbSchemas": DB_SCHEMAS_SCHEMA,
            "CommandGetTableTypes": TABLE_TYPES_SCHEMA, "CommandGetSqlInfo": SQL_INFO_SCHEMA,
            "CommandGetXdbcTypeInfo": XDBC_TYPE_INFO_SCHEMA,
        }
        if name in fixed:
            _open(message, getattr(pb, name))  # refuse a malformed one now, not at DoGet
            return fixed[name], message.SerializeToString()
        if name == "CommandGetTables":
            command = _open(message, pb.CommandGetTables)
            schema = TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else TABLES_SCHEMA
            return schema, message.SerializeToString()
        if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate", "CommandStatementIngest"):
            raise InvalidInput(f"Flight SQL {name} is sent by DoPut, not GetFlightInfo")
        raise _unimplemented(name)

    # DoGet

    def do_get(self, context: flight.ServerCallContext, message: any_pb2.Any) -> flight.FlightDataStream:
        name = _name(message)
        if name == "TicketStatementQuery":
            ticket = _open(message, pb.TicketStatementQuery)
            try:
                rows, _, sql = ticket.statement_handle.decode("utf-8").partition("\n")
                rows = min(max(int(rows), 1), MAX_BATCH_ROWS)
            except (UnicodeDecodeError, ValueError):
                raise InvalidInput("malformed Flight SQL TicketStatementQuery") from None
            return flight.RecordBatchStream(_bounded(self.store.query(sql, batch_rows=rows)))
        if name == "CommandPreparedStatementQuery":
            command = _open(message, pb.CommandPreparedStatementQuery)
            return flight.RecordBatchStream(self._execute(self.statements.get(command.prepared_statement_handle)))
        if name == "CommandGetCatalogs":
            return _stream(pa.table({"catalog_name": [CATALOG]}, schema=CATALOGS_SCHEMA))
        if name == "CommandGetDbSchemas":
            command = _open(message, pb.CommandGetDbSchemas)
            rows = [(CATALOG, DB_SCHEMA)] if self._in_catalog(command) and _matches(
                DB_SCHEMA, _optional(command, "db_schema_filter_pattern")) else []
            return _stream(pa.table({"catalog_name": [r[0] for r in rows], "db_schema_name": [r[1] for r in rows]},
                                    schema=DB_SCHEMAS_SCHEMA))
        if name == "CommandGetTables":
            return _stream(self._tables(_open(message, pb.CommandGetTables)))
        if name == "CommandGetTableTypes":
            return _stream(pa.table({"table_type": [TABLE_TYPE]}, schema=TABLE_TYPES_SCHEMA))
        if name == "CommandGetSqlInfo":
            return _stream(sql_info_table(_open(message, pb.CommandGetSqlInfo).info))
        if name == "CommandGetXdbcTypeInfo":
            command = _open(message, pb.CommandGetXdbcTypeInfo)
            return _stream(xdbc_type_info_table(command.data_type if command.HasField("data_type") else None))
        raise _unimplemented(name)

    def _in_catalog(self, command: Message) -> bool:
        catalog = _optional(command, "catalog")
        return catalog is None or catalog == CATALOG

    def _tables(self, command: pb.CommandGetTables) -> pa.Table:
        schema = TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else TABLES_SCHEMA
        types = set(command.table_types)
        names: list[str] = []
        if (self._in_catalog(command) and _matches(DB_SCHEMA, _optional(command, "db_schema_filter_pattern"))
                and (not types or TABLE_TYPE in types)):
            pattern = _optional(command, "table_name_filter_pattern")
            names = sorted(d["name"] for d in self.store.datasets() if _matches(d["name"], pattern))
        columns: dict[str, list[Any]] = {
            "catalog_name": [CATALOG] * len(names), "db_schema_name": [DB_SCHEMA] * len(names),
            "table_name": names, "table_type": [TABLE_TYPE] * len(names),
        }
        if command.include_schema:
            columns["table_schema"] = [_described(n, self.store.dataset_schema(n)).serialize().to_pybytes()
                                       for n in names]
        return pa.table(columns, schema=schema)

    # DoAction

    def do_action(self, context: flight.ServerCallContext, action_type: str, body: bytes) -> list[bytes]:
        if action_type == "CreatePreparedStatement":
            request = _action_body(body, pb.ActionCreatePreparedStatementRequest)
            if request.HasField("transaction_id"):
                raise _unimplemented("transactions (transaction_id)")
            statement = self._prepare(request.query, context.peer())
            handle = self.statements.add(statement)
            result = pb.ActionCreatePreparedStatementResult(
                prepared_statement_handle=handle,
                dataset_schema=statement.dataset_schema.serialize().to_pybytes(),
                parameter_schema=statement.parameter_schema.serialize().to_pybytes(),
                is_update=False,
            )
            return [_pack(result)]
        if action_type == "ClosePreparedStatement":
            request = _action_body(body, pb.ActionClosePreparedStatementRequest)
            self.statements.close(request.prepared_statement_handle)
            return []
        raise _unimplemented(f"action {action_type}")

    def _prepare(self, sql: str, peer: str) -> PreparedStatement:
        self.store.check_read_only(sql)
        names = self.parameterised.parameter_names(sql)
        if names:
            parameter_schema = self.parameterised.parameter_schema(sql, names)
            # Best guess before values are bound: every parameter NULL.
            dataset_schema = self.parameterised.schema(sql, _values(names, [None] * len(names)))
        else:
            parameter_schema = pa.schema([])
            dataset_schema = self.store.query_schema(sql)
        return PreparedStatement(sql, peer, names, parameter_schema, dataset_schema)

    def _execute(self, statement: PreparedStatement) -> pa.RecordBatchReader:
        with statement.lock:
            sets = list(statement.parameters)
            rows = _batch_rows(statement.dataset_schema)
        if not statement.parameter_names:
            return _bounded(self.store.query(statement.sql, batch_rows=rows))
        if not sets:
            raise InvalidInput(f"the prepared statement has {len(statement.parameter_names)} parameters and "
                               "no values were bound (DoPut CommandPreparedStatementQuery)")
        names = statement.parameter_names
        first = self.parameterised.query(statement.sql, _values(names, sets[0]), rows)
        if len(sets) == 1:
            return _bounded(first)

        def rest() -> Iterator[pa.RecordBatch]:
            for values in sets[1:]:
                reader = self.parameterised.query(statement.sql, _values(names, values), rows)
                if not reader.schema.equals(first.schema):
                    raise InvalidInput("the parameter sets give results of different schemas")
                yield from reader

        return _bounded(pa.RecordBatchReader.from_batches(first.schema, itertools.chain(first, rest())))

    # DoPut

    def do_put(self, context: flight.ServerCallContext, message: any_pb2.Any,
               reader: flight.MetadataRecordBatchReader, writer: flight.FlightMetadataWriter) -> None:
        name = _name(message)
        if name == "CommandStatementIngest":
            rows = self._ingest(context, _open(message, pb.CommandStatementIngest), reader)
            writer.write(pa.py_buffer(pb.DoPutUpdateResult(record_count=rows).SerializeToString()))
            return
        if name == "CommandPreparedStatementQuery":
            command = _open(message, pb.CommandPreparedStatementQuery)
            self._bind(self.statements.get(command.prepared_statement_handle), reader)
            result = pb.DoPutPreparedStatementResult(prepared_statement_handle=command.prepared_statement_handle)
            writer.write(pa.py_buffer(result.SerializeToString()))
            return
        if name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate"):
            # Refused before the stream is read: an ad-hoc update carries no data to read.
            raise InvalidInput(f"Flight SQL {name} refused: flightcast SQL is read-only "
                               "(append rows with DoPut or CommandStatementIngest)")
        raise _unimplemented(f"DoPut of {name}")

    def _bind(self, statement: PreparedStatement, reader: flight.MetadataRecordBatchReader) -> None:
        sets: list[list[Any]] = []
        types: tuple[pa.DataType, ...] = ()
        for batch in incoming_batches(reader):
            types = types or tuple(batch.schema.types)
            if batch.num_columns != len(statement.parameter_names):
                raise InvalidInput(f"the prepared statement has {len(statement.parameter_names)} parameters; "
                                   f"the bound batch has {batch.num_columns} columns")
            if len(sets) + batch.num_rows > MAX_PARAMETER_SETS:
                raise LimitExceeded(f"more than {MAX_PARAMETER_SETS} parameter sets bound to one statement")
            columns = [column.to_pylist() for column in batch.columns]
            sets.extend([list(row) for row in zip(*columns, strict=True)])
        schema = statement.dataset_schema
        if sets and types != statement.bound_types:  # the result's schema may depend on the values' types
            schema = self.parameterised.schema(statement.sql, _values(statement.parameter_names, sets[0]))
        with statement.lock:
            statement.parameters = sets
            statement.dataset_schema = schema
            statement.bound_types = types if sets else statement.bound_types

    def _ingest(self, context: flight.ServerCallContext, command: pb.CommandStatementIngest,
                reader: flight.MetadataRecordBatchReader) -> int:
        options = command.table_definition_options
        modes = pb.CommandStatementIngest.TableDefinitionOptions
        if (options.if_exists != modes.TABLE_EXISTS_OPTION_APPEND
                or options.if_not_exist != modes.TABLE_NOT_EXIST_OPTION_FAIL):
            raise InvalidInput(
                f"ingest into '{command.table}' refused: only appending to an existing dataset is supported "
                f"(adbc_ingest mode='append'), got if_exists={modes.TableExistsOption.Name(options.if_exists)}, "
                f"if_not_exist={modes.TableNotExistOption.Name(options.if_not_exist)}"
            )
        if command.temporary:
            raise InvalidInput(f"ingest into '{command.table}' refused: temporary tables are not supported")
        if command.HasField("transaction_id"):
            raise _unimplemented("transactions (transaction_id)")
        for key, expected in (("catalog", CATALOG), ("schema", DB_SCHEMA)):
            given = _optional(command, key)
            if given not in (None, "", expected):
                raise InvalidInput(f"ingest refused: unknown {key} '{given}' (datasets are in {CATALOG}.{DB_SCHEMA})")
        name = command.table
        with malformed_stream():
            schema = reader.schema
        self.store.check_put_schema(name, schema)  # refuse before reading a single batch
        rows = self.store.append(name, schema, incoming_batches(reader), abandoned=context.is_cancelled)
        log.info("dataset %s: Flight SQL ingest committed %d rows", name, rows)
        return rows


def _values(names: list[str], values: list[Any]) -> list[Any] | dict[str, Any]:
    """Values in the form DuckDB binds: a list for positional parameters, a dict for $names."""
    if all(n.isdigit() for n in names):
        return list(values)
    return dict(zip(names, values, strict=True))

