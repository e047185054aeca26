"""The Flight SQL command table: every command flightcast serves, registered once with what each RPC does.

A command is named by its message (the type URL of the Any it comes in). `plan` answers GetFlightInfo
and GetSchema with the result schema and the ticket that fetches it, `stream` answers DoGet of that
ticket, `put` answers DoPut with the command in the descriptor and returns the metadata written back.
Actions have a table of their own. A message in neither table is UNIMPLEMENTED, named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import Message

from flight_server import flightsql_pb2 as pb
from flight_server.flightsql import catalog
from flight_server.flightsql.handles import HANDLE_IDLE_S, MAX_HANDLES_PER_PEER
from flight_server.flightsql.messages import optional, pack, refuse_transaction
from flight_server.flightsql.protocol import (
    CATALOG,
    CATALOGS_SCHEMA,
    DB_SCHEMA,
    DB_SCHEMAS_SCHEMA,
    SQL_INFO_SCHEMA,
    TABLE_TYPES_SCHEMA,
    XDBC_TYPE_INFO_SCHEMA,
    sql_info_table,
    xdbc_type_info_table,
)
from flight_server.flightsql.queries import MAX_BATCH_ROWS, batch_rows
from flight_server.ingest import incoming_batches, receive
from spicepod import InvalidInput

if TYPE_CHECKING:  # the service dispatches through these tables and hands itself to each handler
    from flight_server.flightsql.service import FlightSql

Context = flight.ServerCallContext
Reader = flight.MetadataRecordBatchReader
Plan = Callable[["FlightSql", Any], tuple[pa.Schema, bytes]]
Stream = Callable[["FlightSql", Any], "pa.RecordBatchReader | pa.Table"]
Put = Callable[["FlightSql", Context, Any, Reader], bytes]


@dataclass(frozen=True)
class Command:
    """One protocol message and what each RPC does with it; an RPC left None refuses it, named."""

    message: type[Message]
    plan: Plan | None = None  # GetFlightInfo, GetSchema: (result schema, ticket)
    stream: Stream | None = None  # DoGet of the ticket
    put: Put | None = None  # DoPut: the metadata written back

    @property
    def name(self) -> str:
        return self.message.DESCRIPTOR.name


def fixed(schema: pa.Schema) -> Plan:
    """The plan of a command whose result schema never changes: its ticket is the command itself."""
    return lambda server, command: (schema, pack(command))


# --- queries ----------------------------------------------------------------------------------------------

def plan_statement(server: FlightSql, command: pb.CommandStatementQuery) -> tuple[pa.Schema, bytes]:
    refuse_transaction(command)
    schema = server.store.query_schema(command.query)
    # The ticket carries the SQL and the batch size its schema calls for.
    ticket = pb.TicketStatementQuery(statement_handle=f"{batch_rows(schema)}\n{command.query}".encode())
    return schema, pack(ticket)


def stream_statement(server: FlightSql, ticket: pb.TicketStatementQuery) -> pa.RecordBatchReader:
    try:
        rows, _, sql = ticket.statement_handle.decode("utf-8").partition("\n")
        rows = min(max(int(rows), 1), MAX_BATCH_ROWS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("malformed Flight SQL TicketStatementQuery") from None
    return server.queries.run(sql, rows)


def plan_prepared(server: FlightSql, command: pb.CommandPreparedStatementQuery) -> tuple[pa.Schema, bytes]:
    return server.statements.get(command.prepared_statement_handle).dataset_schema, pack(command)


def stream_prepared(server: FlightSql, command: pb.CommandPreparedStatementQuery) -> pa.RecordBatchReader:
    return server.queries.execute(server.statements.get(command.prepared_statement_handle))


def bind_parameters(server: FlightSql, context: Context, command: pb.CommandPreparedStatementQuery,
                    reader: Reader) -> bytes:
    server.queries.bind(server.statements.get(command.prepared_statement_handle), incoming_batches(reader))
    result = pb.DoPutPreparedStatementResult(prepared_statement_handle=command.prepared_statement_handle)
    return result.SerializeToString()


# --- writes -----------------------------------------------------------------------------------------------

def refuse_update(server: FlightSql, context: Context, command: Message, reader: Reader) -> bytes:
    # Refused before the stream is read: an ad-hoc update carries no data to read.
    raise InvalidInput(f"Flight SQL {type(command).__name__} refused: flightcast SQL is read-only "
                       "(append rows with DoPut or CommandStatementIngest)")


def ingest(server: FlightSql, context: Context, command: pb.CommandStatementIngest, reader: Reader) -> bytes:
    """adbc_ingest(mode="append") into a read_write dataset: the same DoPut as plain Flight's."""
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
    refuse_transaction(command)
    for key, expected in (("catalog", CATALOG), ("schema", DB_SCHEMA)):
        given = optional(command, key)
        if given not in (None, "", expected):
            raise InvalidInput(f"ingest refused: unknown {key} '{given}' (datasets are in {CATALOG}.{DB_SCHEMA})")
    rows = receive(server.store, command.table, context, reader, protocol="Flight SQL ingest")
    return pb.DoPutUpdateResult(record_count=rows).SerializeToString()


# --- the table ----------------------------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command(pb.CommandStatementQuery, plan=plan_statement),
    Command(pb.TicketStatementQuery, stream=stream_statement),  # the ticket plan_statement returns
    Command(pb.CommandPreparedStatementQuery, plan=plan_prepared, stream=stream_prepared, put=bind_parameters),
    Command(pb.CommandGetCatalogs, plan=fixed(CATALOGS_SCHEMA), stream=lambda server, _: catalog.catalogs()),
    Command(pb.CommandGetDbSchemas, plan=fixed(DB_SCHEMAS_SCHEMA),
            stream=lambda server, command: catalog.db_schemas(command)),
    Command(pb.CommandGetTables, plan=lambda server, command: (catalog.tables_schema(command), pack(command)),
            stream=lambda server, command: catalog.tables(server.store, command)),
    Command(pb.CommandGetTableTypes, plan=fixed(TABLE_TYPES_SCHEMA), stream=lambda server, _: catalog.table_types()),
    Command(pb.CommandGetSqlInfo, plan=fixed(SQL_INFO_SCHEMA),
            stream=lambda server, command: sql_info_table(command.info)),
    Command(pb.CommandGetXdbcTypeInfo, plan=fixed(XDBC_TYPE_INFO_SCHEMA),
            stream=lambda server, command: xdbc_type_info_table(
                command.data_type if command.HasField("data_type") else None)),
    Command(pb.CommandStatementIngest, put=ingest),
    Command(pb.CommandStatementUpdate, put=refuse_update),
    Command(pb.CommandPreparedStatementUpdate, put=refuse_update),
]}


# --- actions ----------------------------------------------------------------------------------------------------

def create_prepared(server: FlightSql, context: Context,
                    request: pb.ActionCreatePreparedStatementRequest) -> list[bytes]:
    refuse_transaction(request)
    statement = server.queries.prepare(request.query, context.peer())
    handle = server.statements.add(statement)
    return [pack(pb.ActionCreatePreparedStatementResult(
        prepared_statement_handle=handle,
        dataset_schema=statement.dataset_schema.serialize().to_pybytes(),
        parameter_schema=statement.parameter_schema.serialize().to_pybytes(),
        is_update=False,
    ))]


def close_prepared(server: FlightSql, context: Context,
                   request: pb.ActionClosePreparedStatementRequest) -> list[bytes]:
    server.statements.close(request.prepared_statement_handle)
    return []


@dataclass(frozen=True)
class Action:
    request: type[Message]
    run: Callable[[FlightSql, Context, Any], list[bytes]]
    description: str  # what ListActions says


ACTION_TABLE: dict[str, Action] = {
    "CreatePreparedStatement": Action(
        pb.ActionCreatePreparedStatementRequest, create_prepared,
        "Flight SQL: prepare a read-only query (ActionCreatePreparedStatementRequest); the handle is dropped "
        f"after {HANDLE_IDLE_S:g} s unused, and a connection keeps at most {MAX_HANDLES_PER_PEER} open."),
    "ClosePreparedStatement": Action(
        pb.ActionClosePreparedStatementRequest, close_prepared,
        "Flight SQL: close a prepared statement (ActionClosePreparedStatementRequest)."),
}
ACTIONS = {name: action.description for name, action in ACTION_TABLE.items()}

# Flight SQL actions this server knows of and does not serve: UNIMPLEMENTED, named.
OTHER_ACTIONS = {
    "CreatePreparedSubstraitPlan", "BeginTransaction", "BeginSavepoint", "EndTransaction", "EndSavepoint",
    "CancelQuery", "CancelFlightInfo", "RenewFlightEndpoint", "CloseSession", "SetSessionOptions",
    "GetSessionOptions",
}
