"""Limits and the sealed SQL surface: over HTTP too, query time and memory, input sizes, names are not SQL."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import copy_data, do_put, read_all, refused_statements, write_csv_text, write_spicepod

OPTS = flight.FlightCallOptions(timeout=30)
SLOW_SQL = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b"


def limits_pod(folder: Path) -> str:
    copy_data("austres.csv", folder / "data")
    write_csv_text(folder / "data" / "rw_guard.csv", "ts,value\n2024-01-01,1.5\n2024-01-02,2.5\n2024-01-03,3.5\n")
    write_csv_text(folder / "data" / "metrics.csv", "ts,value\n2024-01-01,1\n")
    return """\
version: v1
kind: Spicepod
name: limits
runtime:
  limits:
    query_timeout_seconds: 1
    memory_limit: 200MB
    max_request_bytes: 4096
    max_horizon: 50
    max_put_rows: 1000
    max_batch_rows: 400
datasets:
  - {from: file:data/austres.csv, name: austres}
  - {from: file:data/rw_guard.csv, name: rw_guard, mode: read_write}
  - {from: file:data/metrics.csv, name: metrics}
models:
  - {from: lightgbm, name: aus, datasets: [austres], params: {lookback: 8, horizon: 4, method: lightgbm}}
"""


@pytest.fixture(scope="module")
def runtime(module_inprocess_factory):
    """The runtime in this process: limits are the store's and the servers', not the process's."""
    folder = module_inprocess_factory.new_dir()
    return module_inprocess_factory(spicepod=write_spicepod(folder, limits_pod(folder)))


@pytest.fixture(scope="module")
def client(runtime):
    return runtime.flight_client()


def guard_rows(client) -> list:
    return read_all(client, "SELECT * FROM rw_guard ORDER BY ts", OPTS).to_pylist()


def assert_serving(runtime, client) -> None:
    assert runtime.get("/health").text == "ok"
    assert read_all(client, "SELECT count(*) AS n FROM austres", OPTS).to_pydict() == {"n": [89]}


# --- the sealed SQL surface over HTTP ------------------------------------------------------------------------

REFUSED_IDS = [s[0] for s in refused_statements(Path("/d"), Path("/o"))]


@pytest.mark.parametrize("statement_id", REFUSED_IDS)
def test_http_sql_refuses_what_flight_refuses(runtime, client, tmp_path: Path, statement_id: str) -> None:
    before = guard_rows(client)
    data = runtime.spicepod.parent / "data"
    sql, must_not_exist = next((s, p) for i, s, p in refused_statements(data, tmp_path) if i == statement_id)
    response = runtime.post("/v1/sql", sql)
    assert response.status == 400, response.body
    body = response.json()
    assert body["status"] == "BadRequest" and body["error_message"].strip()
    assert "Traceback" not in response.text
    if must_not_exist is not None:
        assert not must_not_exist.exists()
    assert guard_rows(client) == before


def test_http_sql_still_reads(runtime) -> None:
    response = runtime.post("/v1/sql", "SELECT count(*) AS n, max(value) AS top FROM rw_guard")
    assert response.status == 200
    assert response.json() == [{"n": 3, "top": 3.5}]


# --- query limits --------------------------------------------------------------------------------------------

def test_a_query_past_the_time_limit_is_stopped_with_a_clear_error(runtime, client) -> None:
    with pytest.raises(pa.ArrowInvalid) as info:
        read_all(client, SLOW_SQL, OPTS)
    assert "longer than 1 s" in str(info.value) and "query_timeout_seconds" in str(info.value)
    response = runtime.post("/v1/sql", SLOW_SQL)
    assert response.status == 400
    assert "longer than 1 s" in response.json()["error_message"]
    assert_serving(runtime, client)


def test_a_query_past_the_memory_limit_fails_alone(runtime, client) -> None:
    with pytest.raises(pa.ArrowInvalid) as info:
        read_all(client, "SELECT list(i) AS l FROM range(100000000) t(i)", OPTS)
    assert "memory" in str(info.value).lower()
    assert_serving(runtime, client)


def test_the_limits_cannot_be_lifted_by_sql(runtime, client) -> None:
    for sql in ("SET memory_limit = '100GB'", "SELECT set_config('memory_limit', '100GB')",
                "RESET memory_limit"):
        with pytest.raises(pa.ArrowInvalid):
            read_all(client, sql, OPTS)
    setting = read_all(client, "SELECT current_setting('memory_limit') AS m", OPTS).to_pydict()["m"][0]
    assert setting.replace(" ", "").upper() in {"190.7MIB", "200.0MB", "200MB", "190MIB", "190.7MB"}, setting


# --- input sizes ---------------------------------------------------------------------------------------------

def rows(n: int, start: datetime) -> pa.Table:
    return pa.table({
        "ts": pa.array([start + timedelta(days=i) for i in range(n)], pa.timestamp("us")),
        "value": pa.array([float(i) for i in range(n)]),
    })


def test_a_doput_batch_over_the_row_limit_is_refused_and_nothing_written(client) -> None:
    before = guard_rows(client)
    with pytest.raises(pa.ArrowInvalid, match=r"batch of 401 rows is over the limit of 400"):
        do_put(client, "rw_guard", rows(401, datetime(2030, 1, 1)), OPTS)
    assert guard_rows(client) == before


def test_a_doput_stream_over_the_row_limit_is_refused_and_nothing_written(client) -> None:
    before = guard_rows(client)
    table = rows(1200, datetime(2030, 1, 1))
    with pytest.raises(pa.ArrowInvalid, match=r"more than 1000 rows in one stream"):
        do_put(client, "rw_guard", table.to_batches(max_chunksize=300), OPTS)
    assert guard_rows(client) == before


def test_a_stream_within_the_limits_lands(client) -> None:
    table = rows(600, datetime(2031, 1, 1))
    assert do_put(client, "rw_guard", table.to_batches(max_chunksize=300), OPTS) == {
        "dataset": "rw_guard", "rows": 600}
    assert read_all(client, "SELECT count(*) AS n FROM rw_guard WHERE ts >= '2031-01-01'", OPTS).to_pydict() == {
        "n": [600]}


def test_an_http_body_over_the_limit_is_refused(runtime) -> None:
    response = runtime.post("/v1/sql", "SELECT 1 AS x -- " + "x" * 5000)
    assert response.status == 413
    assert response.json()["status"] and response.json()["error_message"]


def test_a_horizon_over_the_limit_is_refused(runtime) -> None:
    response = runtime.get("/v1/models/aus/predict?horizon=51")
    assert response.status == 400
    assert "horizon must be an integer from 1 to 50" in response.json()["error_message"]
    assert runtime.get("/v1/models/aus/predict?horizon=50").status == 200


# --- names are not SQL ---------------------------------------------------------------------------------------

INJECTIONS = [
    "aus; DROP TABLE rw_guard",
    "rw_guard\"; DELETE FROM rw_guard; --",
    "x' OR '1'='1",
    "austres UNION SELECT * FROM rw_guard",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_injection_through_a_model_name_in_the_url(runtime, client, name: str) -> None:
    from urllib.parse import quote

    before = guard_rows(client)
    response = runtime.get(f"/v1/models/{quote(name, safe='')}/predict")
    assert response.status == 400
    assert response.json()["error_message"] == f"model '{name}' not found"
    batch = runtime.post("/v1/predict", {"predictions": [{"model_name": name}]})
    assert batch.json()["predictions"][0]["error_message"] == f"model '{name}' not found"
    assert runtime.post(f"/v1/models/{quote(name, safe='')}/train").status == 404
    assert guard_rows(client) == before


@pytest.mark.parametrize("name", INJECTIONS)
def test_injection_through_a_descriptor_path(client, name: str) -> None:
    before = guard_rows(client)
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(flight.FlightDescriptor.for_path(name), OPTS)
    with pytest.raises((pa.ArrowKeyError, pa.ArrowInvalid)):
        do_put(client, name, rows(1, datetime(2040, 1, 1)), OPTS)
    with pytest.raises(pa.ArrowKeyError):
        list(client.do_action(flight.Action("dataset_info", name.encode()), OPTS))
    assert guard_rows(client) == before


@pytest.mark.parametrize("horizon", ["1;DROP TABLE rw_guard", "1 OR 1=1", "1e3", "0x10"])
def test_injection_through_the_horizon(runtime, client, horizon: str) -> None:
    from urllib.parse import quote

    before = guard_rows(client)
    response = runtime.get(f"/v1/models/aus/predict?horizon={quote(horizon)}")
    assert response.status == 400 and "horizon" in response.json()["error_message"]
    assert guard_rows(client) == before


@pytest.mark.parametrize(("where", "fragment"), [
    ("dataset name", "    name: \"x; DROP TABLE y\"\n"),
    ("time column", "    time_column: \"ts\\\"; DROP\"\n"),
])
def test_injection_through_the_spicepod_is_refused_at_load(where: str, fragment: str) -> None:
    from spicepod import SpicepodError, parse_spicepod

    text = ("version: v1\nkind: Spicepod\nname: x\ndatasets:\n  - from: flight\n"
            + (fragment if where == "dataset name" else "    name: ok\n" + fragment))
    with pytest.raises(SpicepodError, match="must be an SQL identifier"):
        parse_spicepod(text, "spicepod.yaml", env={})


# --- slow and stalled clients --------------------------------------------------------------------------------

def test_a_slow_but_steady_reader_gets_the_whole_result(client) -> None:
    # Reading takes longer than the 1 s query limit in total; the query itself is quick.
    reader = client.do_get(flight.Ticket(b"SELECT i FROM range(20000000) t(i)"), OPTS)
    rows = 0
    for n, chunk in enumerate(reader):
        rows += chunk.data.num_rows
        if n < 8:
            time.sleep(0.25)
    assert rows == 20_000_000


def test_a_stalled_reader_is_never_left_hanging(runtime, client) -> None:
    reader = client.do_get(flight.Ticket(b"SELECT i FROM range(50000000) t(i)"), OPTS)
    rows = reader.read_chunk().data.num_rows
    time.sleep(3)  # takes nothing for longer than the 1 s limit
    # Depending on how much gRPC buffered, the server either gave up on the stalled stream (and says
    # so) or was still waiting on its first batches; either way the stream ends, within the call timeout.
    try:
        for chunk in reader:
            rows += chunk.data.num_rows
    except pa.ArrowInvalid as exc:
        assert "took nothing for 1 s" in str(exc)
    else:
        assert rows == 50_000_000
    assert_serving(runtime, client)


def test_a_stalled_doput_does_not_block_other_writers(client) -> None:
    before = guard_rows(client)
    table = rows(1, datetime(2050, 1, 1))
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("rw_guard"), table.schema, OPTS)
    try:
        # The first stream stays open and sends nothing; a second writer is not held up by it.
        other = rows(2, datetime(2051, 1, 1))
        assert do_put(client, "rw_guard", other, OPTS) == {"dataset": "rw_guard", "rows": 2}
        assert len(guard_rows(client)) == len(before) + 2
    finally:
        writer.write_table(table)
        writer.done_writing()
        writer.close()
    assert len(guard_rows(client)) == len(before) + 3
