"""The error vocabulary over Flight and DuckDB: every class round-trips through a real in-process Flight
server (raising through flight_server.service.flight_errors) and the real client (FlightDataClient), and a
DuckDB failure while storing a DoPut is the client's only when the client's rows caused it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import duckdb
import pyarrow.flight as flight
import pytest

from flight_server.service import flight_errors
from flight_server.writes import append_error
from http_api.base import BodyTooLarge
from pipelines.flight_client import FlightDataClient
from spicepod import FlightcastError, InvalidInput, LimitExceeded, NotReady, Unavailable, errors
from spicepod.errors import FLIGHT_ERRORS, flight_kind

# Every class of the vocabulary, and the HTTP-only one, which travels as its parent (LimitExceeded).
VOCABULARY = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, FlightcastError)]
EVERY_CLASS = [*VOCABULARY, BodyTooLarge]


class RaisingServer(flight.FlightServerBase):
    """A Flight server whose action `raise` raises the error class named in its body, the way the
    service's methods raise: through flight_errors."""

    @flight_errors
    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[flight.Result]:
        name = action.body.to_pybytes().decode()
        if name == "KeyError":
            raise KeyError("a bug")
        raise next(cls for cls in EVERY_CLASS if cls.__name__ == name)(f"what went wrong with {name}")


@pytest.fixture(scope="module")
def server() -> Iterator[RaisingServer]:
    with RaisingServer("grpc://127.0.0.1:0") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RaisingServer) -> FlightDataClient:
    return FlightDataClient(f"grpc://127.0.0.1:{server.port}")


def raised(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_the_table_has_one_row_per_class_of_the_vocabulary() -> None:
    assert sorted(row.error.__name__ for row in FLIGHT_ERRORS) == sorted(cls.__name__ for cls in VOCABULARY)
    for code in {row.code for row in FLIGHT_ERRORS}:  # one plain class per gRPC status, the others tagged
        assert len([row for row in FLIGHT_ERRORS if row.code == code and not row.tagged]) == 1, code


@pytest.mark.parametrize("cls", EVERY_CLASS, ids=lambda cls: cls.__name__)
def test_every_class_comes_back_as_itself_with_its_message(client: FlightDataClient, cls: type) -> None:
    error = raised(lambda: client.action("raise", cls.__name__.encode()))
    expected = flight_kind(cls("x")).error  # itself, or for BodyTooLarge its parent in the table
    assert type(error) is expected
    message = f"what went wrong with {cls.__name__}"
    if expected is Unavailable:
        message = f"the data node (Flight server) is unavailable: {message}"
    elif expected is FlightcastError:
        message = f"flight server: {message}"
    assert error.message == message


@pytest.mark.parametrize("row", FLIGHT_ERRORS, ids=lambda row: row.error.__name__)
def test_other_clients_see_the_grpc_status_of_the_table(server: RaisingServer, row: errors.FlightKind) -> None:
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as plain:
        error = raised(lambda: list(plain.do_action(flight.Action("raise", row.error.__name__.encode()))))
    assert type(error) is row.exception
    text = str(error)
    tag = f"{row.error.__name__}: " if row.tagged else ""
    assert text.lstrip("'").startswith(f"{tag}what went wrong with {row.error.__name__}"), text


def test_not_ready_is_not_taken_for_an_unreachable_node(client: FlightDataClient) -> None:
    error = raised(lambda: client.action("raise", b"NotReady"))
    assert (type(error), error.message, error.http_status) == (NotReady, "what went wrong with NotReady", 400)


def test_an_unexpected_failure_is_internal_and_named_without_detail(client: FlightDataClient) -> None:
    error = raised(lambda: client.action("raise", b"KeyError"))
    assert type(error) is FlightcastError
    assert error.message == "flight server: internal error in do_action: KeyError"


def test_a_node_that_is_down_is_unavailable() -> None:
    with RaisingServer("grpc://127.0.0.1:0") as stopped:
        location = f"grpc://127.0.0.1:{stopped.port}"
    error = raised(lambda: FlightDataClient(location).datasets())
    assert type(error) is Unavailable
    assert error.message.startswith("the data node (Flight server) is unavailable: ")


# --- DuckDB errors while storing a DoPut ----------------------------------------------------------------


def duckdb_error(*statements: str, config: dict[str, str] | None = None) -> duckdb.Error:
    """The error DuckDB raises running the statements, in order, on a new in-memory database."""
    with duckdb.connect(config=config or {}) as db, pytest.raises(duckdb.Error) as info:
        for statement in statements:
            db.execute(statement).fetchall()
    return info.value


CLIENT_ERRORS = {
    "conversion": ("ConversionException", ["SELECT 'abc'::INTEGER"]),
    "out of range": ("OutOfRangeException", ["SELECT 2147483647::INTEGER + 1"]),
    "duplicate key": ("ConstraintException", ["CREATE TABLE t (k INTEGER PRIMARY KEY)",
                                              "INSERT INTO t VALUES (1), (1)"]),
    "null key": ("ConstraintException", ["CREATE TABLE t (k INTEGER NOT NULL)", "INSERT INTO t VALUES (NULL)"]),
}
SERVER_ERRORS = {
    "io": ("IOException", ["COPY (SELECT 1) TO '/nonexistent-dir/flightcast/x.csv'"], None),
    "attach": ("IOException", ["ATTACH '/nonexistent-dir/flightcast/store.duckdb' AS s"], None),
    "commit": ("TransactionException", ["COMMIT"], None),
    "memory": ("OutOfMemoryException", ["SELECT list(range(200000))"], {"memory_limit": "1MB", "threads": "1"}),
    "catalog": ("CatalogException", ["SELECT * FROM no_such_table"], None),
}


@pytest.mark.parametrize("case", CLIENT_ERRORS, ids=str)
def test_what_the_clients_rows_cause_is_invalid_argument(case: str) -> None:
    kind, statements = CLIENT_ERRORS[case]
    exc = duckdb_error(*statements)
    assert type(exc).__name__ == kind
    error = append_error("readings", exc)
    assert type(error) is InvalidInput
    assert error.message == f"DoPut to 'readings': {exc}"
    assert flight_kind(error).code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("case", SERVER_ERRORS, ids=str)
def test_what_fails_in_the_server_is_internal(case: str) -> None:
    kind, statements, config = SERVER_ERRORS[case]
    exc = duckdb_error(*statements, config=config)
    assert type(exc).__name__ == kind
    error = append_error("readings", exc)
    assert type(error) is FlightcastError
    assert error.message == f"DoPut to 'readings' failed on the server ({kind}); the server log says why"
    assert flight_kind(error).code == "INTERNAL"


def test_an_internal_duckdb_error_is_internal() -> None:
    # DuckDB raises InternalException only on its own bugs: there is no statement that raises it on purpose.
    error = append_error("readings", duckdb.InternalException("INTERNAL Error: an assertion failed"))
    assert (type(error), flight_kind(error).code) == (FlightcastError, "INTERNAL")


def test_limits_keep_their_class_over_flight(client: FlightDataClient) -> None:
    error = raised(lambda: client.action("raise", b"LimitExceeded"))
    assert type(error) is LimitExceeded and isinstance(error, InvalidInput)
