"""API-key authentication on Flight and HTTP (SPEC section 6)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import bearer_options, do_put, read_all, write_csv_text, write_spicepod

KEY = "fc-test-key-7c1e9b2a4d5f"
WRONG = "fc-wrong-key-0a9b8c7d6e"
ENV_KEY = "fc-env-key-3e4f5a6b7c"
UNAUTH = flight.FlightUnauthenticatedError

POD = """\
version: v1
kind: Spicepod
name: auth
datasets:
  - from: file:data/metrics.csv
    name: metrics
  - from: file:data/rw.csv
    name: rw
    mode: read_write
"""
CSV = "ts,value\n2024-01-01 00:00:00,1.0\n2024-01-02 00:00:00,2.0\n"


def make_pod(folder, text: str = POD):
    write_csv_text(folder / "data" / "metrics.csv", CSV)
    write_csv_text(folder / "data" / "rw.csv", CSV)
    return write_spicepod(folder, text)


@pytest.fixture(scope="module")
def runtime(module_inprocess_factory):
    """The runtime in this process: checking keys needs no process of its own (its log does, below)."""
    pod = make_pod(module_inprocess_factory.new_dir())
    return module_inprocess_factory(spicepod=pod, api_key=KEY)


@pytest.fixture(scope="module")
def client(runtime) -> flight.FlightClient:
    return runtime.flight_client()


OK = bearer_options(KEY)


def rw_count(client) -> int:
    return read_all(client, "SELECT count(*) AS n FROM rw", OK).column("n")[0].as_py()


def new_rows(client) -> pa.Table:
    schema = client.get_schema(flight.FlightDescriptor.for_path("rw"), OK).schema
    return pa.table({"ts": pa.array([datetime(2030, 1, 1)], schema.field("ts").type),
                     "value": pa.array([9.0], schema.field("value").type)}, schema=schema)


FLIGHT_CALLS = {
    "list_flights": lambda c, o: list(c.list_flights(options=o)),
    "get_flight_info": lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_path("metrics"), o),
    "get_schema": lambda c, o: c.get_schema(flight.FlightDescriptor.for_path("metrics"), o),
    "do_get": lambda c, o: read_all(c, "SELECT * FROM metrics", o),
    "list_actions": lambda c, o: list(c.list_actions(options=o)),
}


def assert_no_secret(message: str) -> None:
    assert KEY not in message and WRONG not in message, message


# --- Flight ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", list(FLIGHT_CALLS))
def test_flight_without_key_unauthenticated(client, call: str) -> None:
    # pyarrow 26's client turns an UNAUTHENTICATED answer to GetSchema into a plain OSError whose
    # message ends in "Detail: Unauthenticated" (a bare pyarrow server with an auth middleware does the
    # same); every other call raises FlightUnauthenticatedError.
    expected = (UNAUTH, OSError) if call == "get_schema" else UNAUTH
    with pytest.raises(expected) as info:
        FLIGHT_CALLS[call](client, flight.FlightCallOptions(timeout=30))
    assert "Unauthenticated" in str(info.value)
    assert_no_secret(str(info.value))


def test_flight_do_put_without_key_unauthenticated_and_nothing_written(client) -> None:
    rows = new_rows(client)
    before = rw_count(client)
    with pytest.raises(UNAUTH):
        do_put(client, "rw", rows, flight.FlightCallOptions(timeout=30))
    assert rw_count(client) == before


@pytest.mark.parametrize("header", [
    f"Bearer {WRONG}", f"Bearer {KEY[:-1]}", f"Bearer {KEY}x", f"Bearer {KEY.upper()}", "Bearer ",
    KEY, f"Token {KEY}", f"Basic {KEY}",
], ids=["wrong", "prefix", "longer", "upper", "empty", "no_scheme", "other_scheme", "basic_raw"])
@pytest.mark.parametrize("call", ["list_flights", "do_get"])
def test_flight_wrong_authorization_refused(client, header: str, call: str) -> None:
    options = flight.FlightCallOptions(headers=[(b"authorization", header.encode())], timeout=30)
    with pytest.raises(UNAUTH) as info:
        FLIGHT_CALLS[call](client, options)
    assert_no_secret(str(info.value))


def test_flight_wrong_bearer_do_put_refused(client) -> None:
    rows = new_rows(client)
    before = rw_count(client)
    with pytest.raises(UNAUTH):
        do_put(client, "rw", rows, bearer_options(WRONG))
    assert rw_count(client) == before


@pytest.mark.parametrize("call", list(FLIGHT_CALLS))
def test_flight_bearer_header_accepted(client, call: str) -> None:
    FLIGHT_CALLS[call](client, OK)


def test_flight_bearer_data_and_do_put(runtime, client) -> None:
    table = read_all(client, "SELECT * FROM metrics ORDER BY ts", OK)
    assert table.column("value").to_pylist() == [1.0, 2.0]
    before = rw_count(client)
    assert do_put(client, "rw", new_rows(client), OK) == {"dataset": "rw", "rows": 1}
    assert rw_count(client) == before + 1


def test_flight_client_with_bearer_middleware(runtime) -> None:
    client = runtime.flight_client(api_key=KEY)
    assert read_all(client, "SELECT count(*) AS n FROM metrics").column("n")[0].as_py() == 2


@pytest.mark.parametrize("username", ["any", "someone-else", ""])
def test_flight_basic_auth_handshake(runtime, username: str) -> None:
    client = runtime.flight_client()
    header = client.authenticate_basic_token(username, KEY)
    assert isinstance(header, tuple) and len(header) == 2
    assert header[0].lower() == b"authorization"
    options = flight.FlightCallOptions(headers=[header], timeout=30)
    assert read_all(client, "SELECT count(*) AS n FROM metrics", options).column("n")[0].as_py() == 2
    assert {i.descriptor.path[0] for i in client.list_flights(options=options)} == {b"metrics", b"rw"}


def test_flight_basic_auth_handshake_wrong_password(runtime) -> None:
    client = runtime.flight_client()
    with pytest.raises(UNAUTH) as info:
        client.authenticate_basic_token("any", WRONG)
    assert_no_secret(str(info.value))


# --- HTTP -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/models", "/v1/datasets", "/v1/does-not-exist"])
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": WRONG}, {"X-API-Key": ""}, {"X-API-Key": KEY + "x"},
                                     {"Authorization": f"Bearer {KEY}"}],
                         ids=["none", "wrong", "empty", "longer", "bearer_instead"])
def test_http_v1_without_right_key_401(runtime, path: str, headers: dict) -> None:
    response = runtime.get(path, headers=headers, auth=False)
    assert response.status == 401, (response.status, response.body)
    body = response.json()
    assert isinstance(body.get("status"), str) and body["status"]
    assert isinstance(body.get("error_message"), str) and body["error_message"]
    assert_no_secret(response.text)


@pytest.mark.parametrize(("path", "status"), [("/v1/ready", 200), ("/v1/datasets", 200)])
def test_http_v1_with_key(runtime, path: str, status: int) -> None:
    response = runtime.get(path, headers={"X-API-Key": KEY}, auth=False)
    assert response.status == status, (response.status, response.body)


def test_http_datasets_with_key(runtime) -> None:
    names = sorted(d["name"] for d in runtime.get_json("/v1/datasets", headers={"X-API-Key": KEY}))
    assert names == ["metrics", "rw"]


@pytest.mark.parametrize(("path", "text"), [("/health", "ok"), ("/v1/ready", "ready")])
def test_http_probes_open(runtime, path: str, text: str) -> None:
    response = runtime.get(path, auth=False)
    assert (response.status, response.text) == (200, text)


# --- the key never appears in the log ---------------------------------------------------------------------

def test_keys_never_logged(runtime_factory) -> None:
    # a runtime subprocess: everything the process writes (every logger, stdout and stderr) is read
    runtime = runtime_factory(spicepod=make_pod(runtime_factory.new_dir()), api_key=KEY)
    client = runtime.flight_client()
    # make sure failed attempts with both keys happened before reading the log
    with pytest.raises(UNAUTH):
        list(client.list_flights(options=bearer_options(WRONG)))
    with pytest.raises(UNAUTH):
        client.authenticate_basic_token("user", WRONG)
    assert runtime.get("/v1/datasets", headers={"X-API-Key": WRONG}, auth=False).status == 401
    read_all(client, "SELECT 1 AS x", OK)
    runtime.get("/v1/datasets")
    log = runtime.log_text() + runtime.stdout_text()
    assert "listening" in log
    assert KEY not in log
    assert WRONG not in log


# --- the key from the spicepod's environment ---------------------------------------------------------------

def test_key_from_spicepod_env(runtime_factory) -> None:
    text = POD.replace("name: auth\n", "name: auth_env\nruntime:\n  auth:\n    api_key: ${env:FC_TEST_AUTH_KEY}\n")
    pod = make_pod(runtime_factory.new_dir(), text)
    rt = runtime_factory(spicepod=pod, env={"FC_TEST_AUTH_KEY": ENV_KEY}, ready=False)
    assert rt.get("/v1/datasets", auth=False).status == 401
    assert rt.get("/health", auth=False).status == 200
    rt.api_key = ENV_KEY  # the helpers send it from now on
    rt.wait_ready()
    client = rt.flight_client()
    with pytest.raises(UNAUTH):
        list(client.list_flights(options=flight.FlightCallOptions(timeout=30)))
    assert len(list(client.list_flights(options=bearer_options(ENV_KEY)))) == 2
    header = client.authenticate_basic_token("any", ENV_KEY)
    assert read_all(client, "SELECT count(*) AS n FROM rw", flight.FlightCallOptions(headers=[header])
                    ).column("n")[0].as_py() == 2
    assert ENV_KEY not in rt.log_text() + rt.stdout_text()


def test_cli_key_overrides_spicepod_key(runtime_factory) -> None:
    text = POD.replace("name: auth\n", "name: auth_both\nruntime:\n  auth:\n    api_key: spicepod-key-1234\n")
    pod = make_pod(runtime_factory.new_dir(), text)
    rt = runtime_factory(spicepod=pod, api_key=KEY)
    assert rt.get("/v1/datasets", headers={"X-API-Key": KEY}, auth=False).status == 200
    assert rt.get("/v1/datasets", headers={"X-API-Key": "spicepod-key-1234"}, auth=False).status == 401
    client = rt.flight_client()
    with pytest.raises(UNAUTH):
        list(client.list_flights(options=bearer_options("spicepod-key-1234")))
    assert len(list(client.list_flights(options=bearer_options(KEY)))) == 2
