"""FlightSql: the Flight SQL side of FlightService, each RPC dispatched through the command table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2
from google.protobuf.message import Message

from flight_server.flightsql.commands import ACTION_TABLE, COMMANDS, Command
from flight_server.flightsql.handles import PreparedStatements
from flight_server.flightsql.messages import action_body, decode, message_name, unimplemented
from flight_server.flightsql.queries import SqlQueries
from flight_server.store import DatasetStore
from spicepod import InvalidInput


class FlightSql:
    """Takes what a Flight RPC got, already unwrapped from its Any, and answers it from the store."""

    def __init__(self, store: DatasetStore, statements: PreparedStatements | None = None):
        self.store = store
        self.statements = statements or PreparedStatements()
        self.queries = SqlQueries(store)

    def flight_info(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor,
                    message: any_pb2.Any) -> flight.FlightInfo:
        schema, ticket = self._plan(message)
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def schema(self, context: flight.ServerCallContext, message: any_pb2.Any) -> pa.Schema:
        return self._plan(message)[0]

    def _plan(self, message: any_pb2.Any) -> tuple[pa.Schema, bytes]:
        command, decoded = self._command(message)
        if command.plan is None:
            if command.put is not None:
                raise InvalidInput(f"Flight SQL {command.name} is sent by DoPut, not GetFlightInfo")
            raise unimplemented(f"GetFlightInfo of {command.name}")
        return command.plan(self, decoded)

    def do_get(self, context: flight.ServerCallContext, message: any_pb2.Any) -> flight.FlightDataStream:
        command, decoded = self._command(message)
        if command.stream is None:
            hint = " (DoGet the ticket its GetFlightInfo returns)" if command.plan is not None else ""
            raise unimplemented(f"DoGet of {command.name}{hint}")
        return flight.RecordBatchStream(command.stream(self, decoded))

    def do_put(self, context: flight.ServerCallContext, message: any_pb2.Any,
               reader: flight.MetadataRecordBatchReader, writer: flight.FlightMetadataWriter) -> None:
        command, decoded = self._command(message)
        if command.put is None:
            raise unimplemented(f"DoPut of {command.name}")
        writer.write(pa.py_buffer(command.put(self, context, decoded, reader)))

    def do_action(self, context: flight.ServerCallContext, action_type: str, body: bytes) -> list[bytes]:
        action = ACTION_TABLE.get(action_type)
        if action is None:
            raise unimplemented(f"action {action_type}")
        return action.run(self, context, action_body(body, action.request))

    def _command(self, message: any_pb2.Any) -> tuple[Command, Message]:
        name = message_name(message)
        command = COMMANDS.get(name)
        if command is None:
            raise unimplemented(name)
        return command, decode(message, command.message)
