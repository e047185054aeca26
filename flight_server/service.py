"""The Arrow Flight service: thin RPC methods that decode, call the DatasetStore and stream."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight

from flight_server import flight_sql, notices
from flight_server.auth import ApiKey, ApiKeyMiddlewareFactory, HandshakeAuthHandler
from flight_server.ingest import incoming_batches, malformed_stream
from flight_server.notices import NoticeHub
from flight_server.store import DatasetStore
from spicepod import FlightcastError, InvalidInput, Unimplemented
from spicepod.errors import flight_exception, flight_kind

log = logging.getLogger("flightcast.flight")

F = TypeVar("F", bound=Callable[..., Any])

ACTIONS = {
    "list_datasets": "JSON list of every dataset: name, from, mode, time_column, series_column (null when "
    "none), on_duplicate, rows, columns, first_timestamp, last_timestamp, version (bumped by each committed DoPut).",
    "dataset_info": "Body: a dataset name. JSON of that one dataset, as in list_datasets.",
    **flight_sql.ACTIONS,
}


def flight_errors(method: F) -> F:
    """Raise typed errors as the Flight error of their class (spicepod.errors.FLIGHT_ERRORS); anything else
    is an internal error."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except flight.FlightError:
            raise
        except FlightcastError as exc:
            if flight_kind(exc).code == "INTERNAL":
                log.exception("flight %s failed", method.__name__)
            raise flight_exception(exc, _bounded(exc.message)) from None
        except Exception as exc:
            log.exception("flight %s failed", method.__name__)
            raise flight.FlightInternalError(f"internal error in {method.__name__}: {type(exc).__name__}") from None

    return wrapper  # type: ignore[return-value]


MAX_ERROR_CHARS = 1000  # gRPC refuses status metadata over 16 KiB; messages may quote a client's SQL


def _bounded(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    # Head and tail: DuckDB names the problem at the start and often says what it is at the end.
    head, tail = message[: MAX_ERROR_CHARS // 2], message[-MAX_ERROR_CHARS // 2 :]
    return f"{head} ... ({len(message) - MAX_ERROR_CHARS} characters left out) ... {tail}"


def _dataset_name(descriptor: flight.FlightDescriptor) -> str:
    if descriptor.descriptor_type != flight.DescriptorType.PATH:
        raise InvalidInput("expected a descriptor path [dataset name]")
    path = descriptor.path or []
    if len(path) != 1:
        raise InvalidInput(f"expected a descriptor path of one dataset name, got {len(path)} parts")
    return _utf8(path[0], "descriptor path")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not UTF-8") from None


class FlightService(flight.FlightServerBase):
    """Datasets by descriptor path, SQL by descriptor command or ticket, DoPut into read_write datasets.

    Flight SQL requests (protobuf messages in commands, tickets and actions) go to flight_sql.FlightSql.
    """

    def __init__(self, store: DatasetStore, location: str, api_key: str | None = None):
        options: dict[str, Any] = {}
        if api_key:
            options["auth_handler"] = HandshakeAuthHandler()
            options["middleware"] = {"auth": ApiKeyMiddlewareFactory(ApiKey(api_key))}
        super().__init__(location, **options)
        self.store = store
        self.sql = flight_sql.FlightSql(store)
        self.notices = NoticeHub()
        store.subscribe(self.notices.publish)

    def _info(self, descriptor: flight.FlightDescriptor, schema: pa.Schema, ticket: str, rows: int):
        endpoint = flight.FlightEndpoint(ticket.encode("utf-8"), [])
        return flight.FlightInfo(schema, descriptor, [endpoint], rows, -1)

    def _dataset_info(self, name: str) -> flight.FlightInfo:
        state = self.store.state(name)
        schema = self.store.dataset_schema(name)
        return self._info(flight.FlightDescriptor.for_path(name), schema, name, state.rows)

    @flight_errors
    def list_flights(self, context: flight.ServerCallContext, criteria: bytes) -> Iterator[flight.FlightInfo]:
        return iter([self._dataset_info(name) for name in self.store.names()])

    @flight_errors
    def get_flight_info(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor):
        if descriptor.descriptor_type == flight.DescriptorType.CMD:
            if message := flight_sql.unpack(descriptor.command):
                return self.sql.flight_info(context, descriptor, message)
            sql = _utf8(descriptor.command, "descriptor command")
            return self._info(descriptor, self.store.query_schema(sql), sql, -1)
        return self._dataset_info(_dataset_name(descriptor))

    @flight_errors
    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor):
        if descriptor.descriptor_type == flight.DescriptorType.CMD:
            if message := flight_sql.unpack(descriptor.command):
                return flight.SchemaResult(self.sql.schema(context, message))
            return flight.SchemaResult(self.store.query_schema(_utf8(descriptor.command, "descriptor command")))
        return flight.SchemaResult(self.store.dataset_schema(_dataset_name(descriptor)))

    @flight_errors
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        if message := flight_sql.unpack(ticket.ticket):
            return self.sql.do_get(context, message)
        return flight.RecordBatchStream(self.store.read(_utf8(ticket.ticket, "ticket")))

    @flight_errors
    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        if message := flight_sql.unpack(descriptor.command or b""):
            return self.sql.do_put(context, message, reader, writer)
        name = _dataset_name(descriptor)
        with malformed_stream():
            schema = reader.schema
        self.store.check_put_schema(name, schema)  # refuse before reading a single batch
        rows = self.store.append(name, schema, incoming_batches(reader), abandoned=context.is_cancelled)
        writer.write(pa.py_buffer(json.dumps({"dataset": name, "rows": rows}).encode()))
        log.info("dataset %s: DoPut committed %d rows", name, rows)

    @flight_errors
    def do_exchange(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.MetadataRecordBatchWriter,
    ) -> None:
        if descriptor.descriptor_type == flight.DescriptorType.CMD and descriptor.command == notices.COMMAND:
            return self.notices.serve(context, reader, writer)
        raise Unimplemented("DoExchange serves only the commit notice subscription (command flightcast.notices)")

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return list(ACTIONS.items())

    @flight_errors
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type == "list_datasets":
            payload: Any = self.store.datasets()
        elif action.type == "dataset_info":
            payload = self.store.state(_utf8(body, "action body").strip()).info()
        elif action.type in flight_sql.ACTIONS or action.type in flight_sql.OTHER_ACTIONS:
            return iter([flight.Result(r) for r in self.sql.do_action(context, action.type, body)])
        else:
            raise InvalidInput(f"unknown action '{action.type}'; ListActions lists {', '.join(ACTIONS)}")
        return iter([flight.Result(json.dumps(payload).encode())])
