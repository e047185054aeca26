"""The Arrow Flight service: thin RPC methods that decode, call the DatasetStore and stream."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.flight as flight

from flight_server import flightsql, notices
from flight_server.auth import HandshakeAuthHandler, access_middleware
from flight_server.ingest import receive
from flight_server.notices import NoticeHub
from flight_server.serving import ServingChoices
from flight_server.store import DatasetStore
from spicepod import FlightcastError, InvalidInput, Unimplemented
from spicepod.constants import SERVING_ACTION, SERVINGS_ACTION
from spicepod.errors import flight_exception, flight_kind
from spicepod.timestamps import parse_iso

log = logging.getLogger("flightcast.flight")

F = TypeVar("F", bound=Callable[..., Any])

ACTIONS = {
    "list_datasets": "JSON list of every dataset: name, from, mode, time_column, series_column (null when "
    "none), on_duplicate, rows, columns, first_timestamp, last_timestamp, version (bumped by each committed DoPut).",
    "dataset_info": "Body: a dataset name. JSON of that one dataset, as in list_datasets.",
    "series_census": 'Body: JSON {"dataset", "before"} (a panel dataset, an ISO 8601 time). JSON {"series": how '
    'many series it has, "ended": the ids of those whose newest row is older than "before", sorted}.',
    SERVING_ACTION: 'Body: JSON {"model", "run", "spec_hash", "challenger"}. Records the version a model serves '
    "and announces it to every subscribed serve node before it returns (a rollback reaches every node).",
    SERVINGS_ACTION: "JSON of the serving choices recorded, by model.",
    **flightsql.ACTIONS,
}

# An RPC pyarrow has no Python hook for reaches middleware as method INVALID, and pyarrow would answer it with
# a bare "NYI". In pyarrow 26 that RPC is PollFlightInfo alone, which ADBC sends for incremental execution.
UNNAMED_METHOD_REFUSAL = (
    "PollFlightInfo (incremental execution, as ADBC's adbc.statement.exec.incremental option asks) is not "
    "implemented by flightcast: run the query without incremental execution"
)


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


class NamedRefusals(flight.ServerMiddlewareFactory):
    """Refuses the RPCs pyarrow would answer with a bare "NYI", naming what was asked."""

    def start_call(self, info: flight.CallInfo, headers: dict) -> None:
        if info.method == flight.FlightMethod.INVALID:
            raise pa.ArrowNotImplementedError(UNNAMED_METHOD_REFUSAL)


class FlightService(flight.FlightServerBase):
    """Datasets by descriptor path, SQL by descriptor command or ticket, DoPut into read_write datasets.

    Flight SQL requests (protobuf messages in commands, tickets and actions) go to flightsql.FlightSql.
    """

    def __init__(self, store: DatasetStore, location: str, api_key: str | None = None):
        super().__init__(location, auth_handler=HandshakeAuthHandler(),
                         middleware={"auth": access_middleware(api_key), "methods": NamedRefusals()})
        self.store = store
        self.sql = flightsql.FlightSql(store)
        self.notices = NoticeHub()
        store.subscribe(self.notices.publish)
        self.serving = ServingChoices(store.data_dir)

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
            if message := flightsql.unpack(descriptor.command):
                return self.sql.flight_info(context, descriptor, message)
            sql = _utf8(descriptor.command, "descriptor command")
            return self._info(descriptor, self.store.query_schema(sql), sql, -1)
        return self._dataset_info(_dataset_name(descriptor))

    @flight_errors
    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor):
        if descriptor.descriptor_type == flight.DescriptorType.CMD:
            if message := flightsql.unpack(descriptor.command):
                return flight.SchemaResult(self.sql.schema(context, message))
            return flight.SchemaResult(self.store.query_schema(_utf8(descriptor.command, "descriptor command")))
        return flight.SchemaResult(self.store.dataset_schema(_dataset_name(descriptor)))

    @flight_errors
    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        if message := flightsql.unpack(ticket.ticket):
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
        if message := flightsql.unpack(descriptor.command or b""):
            return self.sql.do_put(context, message, reader, writer)
        name = _dataset_name(descriptor)
        rows = receive(self.store, name, context, reader)
        writer.write(pa.py_buffer(json.dumps({"dataset": name, "rows": rows}).encode()))

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

    def _series_census(self, body: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(body)
            name, before = str(doc["dataset"]), parse_iso(str(doc["before"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInput('the body must be JSON {"dataset": NAME, "before": ISO 8601 time}') from None
        series, ended = self.store.series_census(name, before)
        return {"series": series, "ended": ended}

    @flight_errors
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type == "list_datasets":
            payload: Any = self.store.datasets()
        elif action.type == "dataset_info":
            payload = self.store.state(_utf8(body, "action body").strip()).info()
        elif action.type == "series_census":
            payload = self._series_census(body)
        elif action.type == SERVING_ACTION:
            payload = self.serving.record(body)
            self.notices.announce({"serving": payload})
        elif action.type == SERVINGS_ACTION:
            payload = self.serving.all()
        elif action.type in flightsql.ACTIONS or action.type in flightsql.OTHER_ACTIONS:
            return iter([flight.Result(r) for r in self.sql.do_action(context, action.type, body)])
        else:
            raise InvalidInput(f"unknown action '{action.type}'; ListActions lists {', '.join(ACTIONS)}")
        return iter([flight.Result(json.dumps(payload).encode())])
