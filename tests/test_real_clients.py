"""What a new user's real clients meet: ADBC's Flight SQL driver and pyarrow.flight against an in-process server.

Each test uses the client as its documentation shows, not raw protocol messages: a basic-auth handshake on a
runtime without a key, TIMESTAMPTZ results, incremental execution, and the README's DoPut pattern.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import write_csv_text

from harness.flight import ServedFlight, flight_server

OPTS = flight.FlightCallOptions(timeout=30)
UTC = pa.timestamp("us", tz="UTC")
POD = """\
version: v1
kind: Spicepod
name: real_clients
datasets:
  - {from: file:data/metrics.csv, name: metrics}
  - {from: file:data/gdp.csv, name: gdp, mode: read_write}
"""
CSV = "ts,value\n2024-01-01 00:00:00,1.5\n2024-01-01 01:00:00,2.5\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFlight]:
    """A runtime's Flight port without an API key."""
    folder = tmp_path_factory.mktemp("real_clients")
    write_csv_text(folder / "data" / "metrics.csv", CSV)
    write_csv_text(folder / "data" / "gdp.csv", CSV)
    with flight_server(folder, POD) as running:
        yield running


def adbc(server: ServedFlight, **db_kwargs: str) -> dbapi.Connection:
    return dbapi.connect(server.location, db_kwargs=db_kwargs or None, autocommit=True)


# --- a runtime without a key accepts any handshake -------------------------------------------------------

def test_pyarrow_basic_token_handshake_without_a_key(server: ServedFlight) -> None:
    client = flight.FlightClient(server.location)
    name, value = client.authenticate_basic_token("anyone", "anything", OPTS)
    assert name == b"authorization" and value.startswith(b"Bearer ") and len(value) > len(b"Bearer ")
    options = flight.FlightCallOptions(headers=[(name, value)], timeout=30)
    assert client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM metrics"), options).read_all().to_pydict() \
        == {"n": [2]}


@pytest.mark.parametrize("username", ["analyst", ""])
def test_adbc_username_password_without_a_key(server: ServedFlight, username: str) -> None:
    with adbc(server, username=username, password="not-a-key") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM metrics")
        assert cur.fetch_arrow_table().to_pydict() == {"n": [2]}


# --- TIMESTAMPTZ is spelled UTC everywhere ---------------------------------------------------------------------

TZ_SQL = "SELECT ts::TIMESTAMPTZ AS at, value FROM metrics ORDER BY ts"
TZ_VALUES = [datetime(2024, 1, 1, 0, tzinfo=timezone.utc), datetime(2024, 1, 1, 1, tzinfo=timezone.utc)]


def test_timestamptz_is_utc_through_adbc(server: ServedFlight) -> None:
    with adbc(server) as conn, conn.cursor() as cur:
        assert cur.adbc_execute_schema(TZ_SQL).field("at").type == UTC  # GetSchema of the statement
        cur.execute(TZ_SQL)  # GetFlightInfo, then DoGet of its ticket
        table = cur.fetch_arrow_table()
        # a prepared statement with a bound parameter
        cur.execute("SELECT ts::TIMESTAMPTZ AS at FROM metrics WHERE value > ? ORDER BY ts", (2.0,))
        bound = cur.fetch_arrow_table()
    assert table.schema.field("at").type == UTC
    assert table.column("at").to_pylist() == TZ_VALUES
    assert bound.schema.field("at").type == UTC and bound.column("at").to_pylist() == TZ_VALUES[1:]


def test_timestamptz_is_utc_through_plain_flight(server: ServedFlight) -> None:
    client = server.client
    descriptor = flight.FlightDescriptor.for_command(TZ_SQL)
    assert client.get_flight_info(descriptor, OPTS).schema.field("at").type == UTC
    assert client.get_schema(descriptor, OPTS).schema.field("at").type == UTC
    table = client.do_get(flight.Ticket(TZ_SQL.encode()), OPTS).read_all()
    assert table.schema.field("at").type == UTC
    assert table.column("at").to_pylist() == TZ_VALUES


# --- refusals name what was asked ------------------------------------------------------------------------------

def test_incremental_execution_refused_by_name(server: ServedFlight) -> None:
    with adbc(server) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
        cur.adbc_statement.set_sql_query("SELECT * FROM metrics")
        with pytest.raises(adbc_driver_manager.NotSupportedError) as refused:
            cur.adbc_statement.execute_partitions()
    message = str(refused.value)
    assert message.startswith("NOT_IMPLEMENTED: [FlightSQL] PollFlightInfo (incremental execution, as ADBC's "
                              "adbc.statement.exec.incremental option asks) is not implemented by flightcast: "
                              "run the query without incremental execution"), message
    with adbc(server) as conn, conn.cursor() as cur:  # the same query without the option
        cur.execute("SELECT * FROM metrics")
        assert cur.fetch_arrow_table().num_rows == 2


# --- the README's DoPut pattern shows the server's refusal -------------------------------------------------------

def readme_do_put(client: flight.FlightClient, dataset: str, rows: pa.Table) -> dict:
    """The DoPut snippet of the README, as written there."""
    writer, results = client.do_put(flight.FlightDescriptor.for_path(dataset), rows.schema)
    with writer:  # close() on leaving raises the server's refusal, if there was one
        writer.write_table(rows)
        writer.done_writing()
        answer = results.read()
    return json.loads(answer.to_pybytes())


def new_rows(value: pa.Array) -> pa.Table:
    return pa.table({"ts": pa.array([datetime(2024, 1, 2)], pa.timestamp("us")), "value": value})


def test_readme_do_put_pattern_appends(server: ServedFlight) -> None:
    assert readme_do_put(server.client, "gdp", new_rows(pa.array([3.5]))) == {"dataset": "gdp", "rows": 1}


@pytest.mark.parametrize(("dataset", "value", "message"), [
    ("metrics", pa.array([3.5]), "dataset 'metrics' is read-only (mode: read); declare mode: read_write to DoPut"),
    ("gdp", pa.array(["text"]), "DoPut to 'gdp': column 'value' has type string, expected double"),
])
def test_readme_do_put_pattern_raises_the_refusal(server: ServedFlight, dataset: str, value: pa.Array,
                                                  message: str) -> None:
    with pytest.raises(pa.ArrowInvalid) as refused:
        readme_do_put(server.client, dataset, new_rows(value))
    assert message in str(refused.value)
