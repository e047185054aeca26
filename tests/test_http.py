"""The HTTP API of a real runtime on free ports: contract, errors, auth, SQL, metrics, concurrency.

The runtimes run in the test process (harness.InProcessRuntime: the same composition root as
`flightcast run`); signals, crashes and the CLI are tested through subprocesses elsewhere.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import (
    HttpResponse,
    Runtime,
    RuntimeFactory,
    copy_data,
    do_put,
    http_request,
    parse_instant,
    write_spicepod,
)
from prometheus_client.parser import text_string_to_metric_families

from http_api.app import ROUTES
from http_api.base import route_template
from http_api.openapi import build_openapi
from http_api.predict import FORECASTS_PER_HOP

pytestmark = pytest.mark.slow

MAX_HORIZON = 50
MAX_REQUEST_BYTES = 65536

SPICEPOD = f"""
version: v1
kind: Spicepod
name: http-tests
runtime:
  limits:
    max_horizon: {MAX_HORIZON}
    max_request_bytes: {MAX_REQUEST_BYTES}
datasets:
  - from: file:austres.csv
    name: austres
  - from: file:woolyrnq.csv
    name: wool
  - from: file:nile.csv
    name: nile
  - from: file:us_realgdp.csv
    name: gdp
    mode: read_write
  - from: file:sunspots_monthly.csv
    name: sunspots
models:
  - from: lightgbm:1.0
    name: austres_m
    datasets: [austres]
    params: {{lookback: 8, horizon: 4, lightgbm: {{num_boost_round: 30}}}}
  - from: lightgbm
    name: wool_m
    datasets: [wool]
    params: {{lookback: 8, horizon: 4, lightgbm: {{num_boost_round: 30}}}}
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {{lookback: 8, horizon: 3, lightgbm: {{num_boost_round: 30}}}}
  - from: lightgbm
    name: retrain_m
    datasets: [nile]
    params: {{lookback: 6, horizon: 2, lightgbm: {{num_boost_round: 20}}}}
  - from: lightgbm
    name: gdp_m
    datasets: [gdp]
    params: {{lookback: 8, horizon: 4, lightgbm: {{num_boost_round: 30}}}}
  # Seconds of training (2.8 s alone): test_requests_answer_while_a_training_runs answers requests meanwhile.
  - from: lightgbm
    name: sun_big
    datasets: [sunspots]
    params: {{lookback: 36, horizon: 6, backtest_windows: 1, lightgbm: {{num_boost_round: 250, num_leaves: 63}}}}
"""
FILES = ["austres.csv", "woolyrnq.csv", "nile.csv", "us_realgdp.csv", "sunspots_monthly.csv"]
QUICK_MODELS = ["austres_m", "wool_m", "nile_m"]

SUCCESS_KEYS = {"status", "model_name", "model_version", "lookback", "prediction", "duration_ms", "horizon",
                "timestamps", "method"}  # method: what the series is forecast by (SPEC 14)
MODEL_KEYS = {"name", "from", "datasets", "model_version", "status", "lookback", "horizon", "frequency",
              "trained_at", "training_rows", "metrics", "health"}
DATASET_KEYS = {"name", "from", "mode", "time_column", "series_column", "on_duplicate", "rows", "columns",
                "first_timestamp", "last_timestamp"}


def start(factory: RuntimeFactory, text: str, files: list[str], **kwargs: Any) -> Runtime:
    folder = factory.new_dir()
    for name in files:
        copy_data(name, folder)
    return factory(spicepod=write_spicepod(folder, text), **kwargs)


@pytest.fixture(scope="module")
def rt(module_inprocess_factory: RuntimeFactory) -> Runtime:
    return start(module_inprocess_factory, SPICEPOD, FILES)


# --- body checks ----------------------------------------------------------------------------------------

def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_success(body: dict, model: str, horizon: int) -> None:
    assert set(body) == SUCCESS_KEYS, body
    assert body["status"] == "Success"
    assert body["model_name"] == model
    assert isinstance(body["model_version"], str) and body["model_version"]
    assert isinstance(body["lookback"], int)
    assert body["horizon"] == horizon
    assert len(body["prediction"]) == horizon and all(is_number(v) for v in body["prediction"])
    assert len(body["timestamps"]) == horizon
    stamps = [parse_instant(t) for t in body["timestamps"]]
    assert all(t.endswith("Z") for t in body["timestamps"]) and stamps == sorted(stamps)
    assert is_number(body["duration_ms"]) and body["duration_ms"] >= 0


def check_error(response: HttpResponse, code: int, status: str) -> dict:
    assert response.status == code, (response.status, response.body[:500])
    assert response.content_type.startswith("application/json"), response.content_type
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body["error_message"], str) and body["error_message"]
    assert is_number(body["duration_ms"])
    assert "prediction" not in body
    return body


def check_predict_error(response: HttpResponse, code: int, status: str, model: str, lookback: int | None) -> dict:
    body = check_error(response, code, status)
    assert body["model_name"] == model
    if lookback is None:
        assert "lookback" not in body
    else:
        assert body["lookback"] == lookback
    return body


def check_model_entry(entry: dict) -> None:
    assert MODEL_KEYS <= set(entry), entry
    assert entry["status"] in ("ready", "training", "failed")
    assert isinstance(entry["datasets"], list) and all(isinstance(d, str) for d in entry["datasets"])
    assert isinstance(entry["lookback"], int) and isinstance(entry["horizon"], int)
    assert set(entry["metrics"]) == {"mase", "smape", "backtest_windows"}
    live_keys = {"mase", "smape", "coverage_80", "points", "drift"}
    assert entry["live_metrics"] is None or set(entry["live_metrics"]) == live_keys
    assert entry["health"] in ("ok", "drifting")
    if entry["status"] == "ready":
        assert isinstance(entry["model_version"], str)
        assert isinstance(entry["training_rows"], int) and isinstance(entry["frequency"], str)
        datetime.fromisoformat(entry["trained_at"].replace("Z", "+00:00"))
        assert all(v is None or is_number(v) for v in entry["metrics"].values())


def check_dataset_entry(entry: dict) -> None:
    assert set(entry) == DATASET_KEYS, entry
    assert entry["mode"] in ("read", "read_write") and isinstance(entry["rows"], int)
    assert all(set(c) == {"name", "type"} for c in entry["columns"])
    assert parse_instant(entry["first_timestamp"]) <= parse_instant(entry["last_timestamp"])


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- the contract over every route ----------------------------------------------------------------------

def contract_cases() -> list[tuple[str, str, Any, dict, int, Callable[[HttpResponse], None]]]:
    """(method, path, body, headers, status, check) for a success and an error of every route."""

    def text(expected: str) -> Callable[[HttpResponse], None]:
        def check(r: HttpResponse) -> None:
            assert r.content_type.startswith("text/plain") and r.text == expected

        return check

    def json_check(fn: Callable[[Any], None]) -> Callable[[HttpResponse], None]:
        def check(r: HttpResponse) -> None:
            assert r.content_type.startswith("application/json")
            fn(r.json())

        return check

    def models(body: Any) -> None:
        assert [m["name"] for m in body] == ["austres_m", "wool_m", "nile_m", "retrain_m", "gdp_m", "sun_big"]
        for entry in body:
            check_model_entry(entry)

    def datasets(body: Any) -> None:
        assert [d["name"] for d in body] == ["austres", "wool", "nile", "gdp", "sunspots"]
        for entry in body:
            check_dataset_entry(entry)

    def batch(body: Any) -> None:
        assert set(body) == {"duration_ms", "predictions"} and is_number(body["duration_ms"])
        check_success(body["predictions"][0], "wool_m", 4)

    def metrics(r: HttpResponse) -> None:
        assert r.content_type.startswith("text/plain")
        assert "flightcast_http_requests_total" in r.text

    def openapi(body: Any) -> None:
        assert body == build_openapi(api_key=False)

    def sql(body: Any) -> None:
        assert body == [{"n": 89}]

    def series(body: Any) -> None:
        assert [(e["series"], e["rows"], e["status"]) for e in body] == [(None, 119, "ready")]

    def versions(body: Any) -> None:
        assert [(v["version"], v["run"], v["serving"], v["candidate"], v["servable"]) for v in body] == [
            ("1", 1, True, False, True)]

    def history(body: Any) -> None:
        assert body["series"] is None and len(body["values"]) == 2
        assert body["timestamps"] == ["1994-04-01T00:00:00Z", "1994-07-01T00:00:00Z"]

    def forecasts(body: Any) -> None:
        assert [row["ts"] for row in body] == ["1994-10-01T00:00:00Z", "1995-01-01T00:00:00Z",
                                               "1995-04-01T00:00:00Z", "1995-07-01T00:00:00Z"]
        assert all(row["series"] is None and is_number(row["value"]) for row in body)

    def no_anomalies(body: Any) -> None:
        assert body == []

    def page(r: HttpResponse) -> None:
        assert r.content_type.startswith("text/html") and "<title>" in r.text
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]

    def error(code: int, status: str) -> Callable[[HttpResponse], None]:
        return lambda r: check_error(r, code, status)

    return [
        ("GET", "/health", None, {}, 200, text("ok")),
        ("POST", "/health", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/metrics", None, {}, 200, metrics),
        ("POST", "/metrics", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/openapi.json", None, {}, 200, json_check(openapi)),
        ("POST", "/v1/openapi.json", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/ready", None, {}, 200, text("ready")),
        ("POST", "/v1/ready", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/datasets", None, {}, 200, json_check(datasets)),
        ("POST", "/v1/datasets", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/models", None, {}, 200, json_check(models)),
        ("DELETE", "/v1/models", None, {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/models/wool_m/predict", None, {}, 200, json_check(lambda b: check_success(b, "wool_m", 4))),
        ("GET", "/v1/models/nope/predict", None, {}, 400, error(400, "BadRequest")),
        ("POST", "/v1/models/nope/train", b"", {}, 404, error(404, "NotFound")),
        ("GET", "/v1/models/wool_m/train", None, {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/v1/models/wool_m/versions", None, {}, 200, json_check(versions)),
        ("GET", "/v1/models/nope/versions", None, {}, 404, error(404, "NotFound")),
        ("POST", "/v1/models/wool_m/rollback", b"", {}, 400, error(400, "BadRequest")),  # no earlier version
        ("POST", "/v1/models/wool_m/rollback?version=9", b"", {}, 404, error(404, "NotFound")),
        ("GET", "/v1/models/wool_m/series", None, {}, 200, json_check(series)),
        ("GET", "/v1/models/nope/series", None, {}, 404, error(404, "NotFound")),
        ("GET", "/v1/models/wool_m/history?limit=2", None, {}, 200, json_check(history)),
        ("GET", "/v1/models/wool_m/history?limit=0", None, {}, 400, error(400, "BadRequest")),
        ("GET", "/v1/models/wool_m/forecasts", None, {}, 200, json_check(forecasts)),
        ("GET", "/v1/models/wool_m/forecasts?level=100", None, {}, 400, error(400, "BadRequest")),
        ("GET", "/v1/models/wool_m/anomalies", None, {}, 200, json_check(no_anomalies)),
        ("GET", "/v1/models/wool_m/anomalies?since=now", None, {}, 400, error(400, "BadRequest")),
        ("POST", "/v1/predict", {"predictions": [{"model_name": "wool_m"}]}, {}, 200, json_check(batch)),
        ("POST", "/v1/predict", b"{", {}, 400, error(400, "BadRequest")),
        ("POST", "/v1/sql", b"SELECT count(*) AS n FROM austres", {}, 200, json_check(sql)),
        ("POST", "/v1/sql", b"SELECT * FROM no_such_table", {}, 400, error(400, "BadRequest")),
        ("GET", "/", None, {}, 200, page),
        ("POST", "/", b"", {}, 405, error(405, "MethodNotAllowed")),
        ("GET", "/static/style.css", None, {}, 200, lambda r: r.content_type.startswith("text/css")),
        ("GET", "/static/no_such_file.js", None, {}, 404, error(404, "NotFound")),
        ("GET", "/static/%2e%2e/page.py", None, {}, 404, error(404, "NotFound")),  # nothing outside static/
        ("GET", "/no/such/path", None, {}, 404, error(404, "NotFound")),
        ("GET", "/v1/no_such_route", None, {}, 404, error(404, "NotFound")),
    ]


def _template_of(path: str) -> str | None:
    for pattern, handler in ROUTES:
        if re.fullmatch(pattern, path.split("?")[0]):
            return route_template(pattern, handler)
    return None


def test_contract_covers_every_route() -> None:
    covered = {_template_of(path) for _, path, *_ in contract_cases()}
    assert {route_template(p, h) for p, h in ROUTES} <= covered
    # the train route's success is checked in test_train_bumps_the_version (it takes a training run)


def test_contract_over_every_route(rt: Runtime) -> None:
    for method, path, body, headers, status, check in contract_cases():
        response = http_request(rt.http_url + path, method, body, headers)
        assert response.status == status, (method, path, response.status, response.body[:300])
        assert b"Traceback" not in response.body
        check(response)


# --- GET predict ------------------------------------------------------------------------------------------

def test_predict_success_body(rt: Runtime) -> None:
    body = rt.get_json("/v1/models/austres_m/predict")
    check_success(body, "austres_m", 4)
    assert body["model_version"] == "1.0" and body["lookback"] == 8
    # austres ends 1993-04-01 (quarterly): the forecast starts one quarter later
    assert body["timestamps"] == ["1993-07-01T00:00:00Z", "1993-10-01T00:00:00Z",
                                  "1994-01-01T00:00:00Z", "1994-04-01T00:00:00Z"]
    longer = rt.get_json("/v1/models/austres_m/predict?horizon=6")
    check_success(longer, "austres_m", 6)
    assert longer["prediction"][:4] == pytest.approx(body["prediction"])  # recursive: same first steps


def test_predict_unknown_model(rt: Runtime) -> None:
    body = check_predict_error(rt.get("/v1/models/nope/predict"), 400, "BadRequest", "nope", None)
    assert body["error_message"] == "model 'nope' not found"
    assert set(body) == {"status", "error_message", "model_name", "duration_ms"}


@pytest.mark.parametrize("horizon", ["0", "-1", "x", "1.5", "", "%FF", str(MAX_HORIZON + 1)])
def test_predict_bad_horizon(rt: Runtime, horizon: str) -> None:
    body = check_predict_error(rt.get(f"/v1/models/wool_m/predict?horizon={horizon}"), 400, "BadRequest",
                               "wool_m", 8)
    assert "horizon" in body["error_message"]


def test_predict_horizon_at_the_limit(rt: Runtime) -> None:
    check_success(rt.get_json(f"/v1/models/wool_m/predict?horizon={MAX_HORIZON}"), "wool_m", MAX_HORIZON)


# --- POST /v1/predict -------------------------------------------------------------------------------------

def test_batch_per_item_status_in_request_order(rt: Runtime) -> None:
    items = [{"model_name": "wool_m"}, {"model_name": "nope"}, {"model_name": "austres_m", "horizon": 2},
             {"model_name": "austres_m", "horizon": 0}, {"model_name": "nile_m", "horizon": "3"}]
    response = rt.post("/v1/predict", {"predictions": items})
    assert response.status == 200
    body = response.json()
    assert set(body) == {"duration_ms", "predictions"}
    results = body["predictions"]
    assert [r["model_name"] for r in results] == ["wool_m", "nope", "austres_m", "austres_m", "nile_m"]
    assert [r["status"] for r in results] == ["Success", "BadRequest", "Success", "BadRequest", "BadRequest"]
    check_success(results[0], "wool_m", 4)
    check_success(results[2], "austres_m", 2)
    assert results[1]["error_message"] == "model 'nope' not found" and "lookback" not in results[1]
    assert results[3]["lookback"] == 8 and "horizon" in results[3]["error_message"]
    assert all("prediction" not in r for r in results if r["status"] != "Success")
    single = rt.get_json("/v1/models/austres_m/predict?horizon=2")
    assert results[2]["prediction"] == single["prediction"]


@pytest.mark.parametrize("body", [
    b"not json", b"", b"\xff\xfe", b"[]", b"null", b'"predictions"', b'{"nope": 1}', b'{"predictions": "wool_m"}',
    b'{"predictions": {"model_name": "wool_m"}}', b'{"predictions": [{"horizon": 3}]}',
    b'{"predictions": [{"model_name": 5}]}', b'{"predictions": [{"model_name": null}]}',
    b'{"predictions": ["wool_m"]}', b'{"predictions": [{"model_name": "wool_m"}, {}]}',
], ids=lambda b: b.decode("latin-1")[:30] or "empty")
def test_batch_malformed_body(rt: Runtime, body: bytes) -> None:
    response = rt.post("/v1/predict", body, headers={"Content-Type": "application/json"})
    result = check_error(response, 400, "BadRequest")
    assert set(result) == {"status", "error_message", "duration_ms"}


def test_body_over_the_limit_gets_json_413(rt: Runtime) -> None:
    # Headers only: the server answers from the Content-Length, before reading the body.
    conn = http.client.HTTPConnection("127.0.0.1", rt.http_port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
        conn.endheaders()
        response = conn.getresponse()
        result = HttpResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()
    body = check_error(result, 413, "PayloadTooLarge")
    assert str(MAX_REQUEST_BYTES) in body["error_message"]
    assert rt.get("/health").status == 200


# --- models and training ----------------------------------------------------------------------------------

def test_models_listing_fields(rt: Runtime) -> None:
    entries = {m["name"]: m for m in rt.get_json("/v1/models")}
    austres = entries["austres_m"]
    check_model_entry(austres)
    assert austres["from"] == "lightgbm:1.0" and austres["model_version"] == "1.0"
    assert austres["datasets"] == ["austres"] and austres["status"] == "ready"
    assert (austres["lookback"], austres["horizon"], austres["frequency"]) == (8, 4, "1q")
    assert austres["training_rows"] == 89 and is_number(austres["metrics"]["mase"])
    assert entries["nile_m"]["frequency"] == "1y" and entries["nile_m"]["model_version"] == "1"
    assert "error_message" not in austres


def test_train_bumps_the_version(rt: Runtime) -> None:
    before = {m["name"]: m for m in rt.get_json("/v1/models")}["retrain_m"]
    assert before["model_version"] == "1"
    response = rt.post("/v1/models/retrain_m/train")
    assert response.status == 200, response.body
    entry = response.json()
    check_model_entry(entry)
    assert entry["name"] == "retrain_m" and entry["model_version"] == "2" and entry["status"] == "ready"
    assert rt.get_json("/v1/models/retrain_m/predict")["model_version"] == "2"
    body = check_error(rt.post("/v1/models/nope/train"), 404, "NotFound")
    assert body["error_message"] == "model 'nope' not found"


# --- SQL ------------------------------------------------------------------------------------------------

SQL = b"SELECT ts, value FROM austres ORDER BY ts LIMIT 2"


def test_sql_json(rt: Runtime) -> None:
    response = rt.post("/v1/sql", SQL)
    assert response.status == 200 and response.content_type.startswith("application/json")
    assert response.json() == [{"ts": "1971-04-01T00:00:00Z", "value": 13067.3},
                               {"ts": "1971-07-01T00:00:00Z", "value": 13130.5}]


def test_sql_csv(rt: Runtime) -> None:
    response = rt.post("/v1/sql", SQL, headers={"Accept": "text/csv"})
    assert response.status == 200 and response.content_type.startswith("text/csv")
    assert response.text == "ts,value\n1971-04-01T00:00:00Z,13067.3\n1971-07-01T00:00:00Z,13130.5\n"


def test_sql_arrow_ipc(rt: Runtime) -> None:
    response = rt.post("/v1/sql", SQL, headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert response.status == 200 and response.content_type == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.body).read_all()
    expected = pa.table({
        "ts": pa.array([datetime(1971, 4, 1), datetime(1971, 7, 1)], pa.timestamp("us", tz="UTC")),
        "value": pa.array([13067.3, 13130.5], pa.float64()),
    })
    assert table.equals(expected)


@pytest.mark.parametrize("statement", [
    "DELETE FROM austres", "DROP TABLE austres", "INSERT INTO gdp VALUES (TIMESTAMP '2020-01-01', 1.0)",
    "CREATE TABLE t AS SELECT 1", "UPDATE austres SET value = 0",
])
def test_sql_write_statement_refused(rt: Runtime, statement: str) -> None:
    check_error(rt.post("/v1/sql", statement), 400, "BadRequest")
    assert rt.post("/v1/sql", "SELECT count(*) AS n FROM austres").json() == [{"n": 89}]


@pytest.mark.parametrize("body", [b"", b"   ", b"\xff", b"SELEC 1"])
def test_sql_bad_body(rt: Runtime, body: bytes) -> None:
    check_error(rt.post("/v1/sql", body), 400, "BadRequest")


# --- 404, 405, metrics ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("DELETE", "/v1/models"), ("GET", "/v1/predict"), ("POST", "/health"), ("GET", "/v1/sql"),
    ("PUT", "/v1/models/wool_m/predict"), ("GET", "/v1/models/wool_m/train"),
])
def test_wrong_method_is_405(rt: Runtime, method: str, path: str) -> None:
    response = http_request(rt.http_url + path, method, b"" if method != "GET" else None)
    check_error(response, 405, "MethodNotAllowed")
    assert response.headers.get("Allow")


def test_metrics(rt: Runtime) -> None:
    rt.get("/v1/models/nile_m/predict")
    rt.get("/v1/models/not_a_model_xyz/predict")
    response = rt.get("/metrics")
    assert response.status == 200 and response.content_type.startswith("text/plain")
    samples = metric_samples(response.text)
    route = "/v1/models/{name}/predict"
    assert metric(samples, "flightcast_http_requests_total", route=route, method="GET", code="200") >= 1
    assert metric(samples, "flightcast_http_requests_total", route=route, method="GET", code="400") >= 1
    assert metric(samples, "flightcast_http_request_duration_seconds_count", route=route, method="GET",
                  code="200") >= 1
    assert metric(samples, "flightcast_predictions_total", model="nile_m", status="Success") >= 1
    assert metric(samples, "flightcast_predictions_total", model="(unknown)", status="BadRequest") >= 1
    assert "not_a_model_xyz" not in response.text  # client-chosen names never become labels
    assert metric(samples, "flightcast_dataset_rows", dataset="austres") == 89
    for family in ("flightcast_training_runs", "flightcast_training_duration_seconds",
                   "flightcast_rows_ingested", "flightcast_prediction_duration_seconds"):
        assert f"# HELP {family}" in response.text


# --- DoPut then predict -----------------------------------------------------------------------------------

def test_doput_moves_the_forecast(rt: Runtime) -> None:
    before = rt.get_json("/v1/models/gdp_m/predict")
    assert before["timestamps"][0] == "2009-10-01T00:00:00Z"  # us_realgdp ends 2009-07-01
    rows = pa.table({"ts": pa.array([datetime(2009, 10, 1), datetime(2010, 1, 1)], pa.timestamp("us")),
                     "value": pa.array([13100.0, 13150.0], pa.float64())})
    assert do_put(rt.flight_client(), "gdp", rows) == {"dataset": "gdp", "rows": 2}
    after = rt.get_json("/v1/models/gdp_m/predict")
    check_success(after, "gdp_m", 4)
    assert after["timestamps"][0] == "2010-04-01T00:00:00Z"
    samples = metric_samples(rt.get("/metrics").text)
    assert metric(samples, "flightcast_rows_ingested_total", dataset="gdp") == 2
    assert metric(samples, "flightcast_dataset_rows", dataset="gdp") == 205


def test_a_batch_after_doput_answers_each_item_as_its_get(rt: Runtime) -> None:
    """A batch of forecasts the new data made stale, a cached one and a refused one: each answered, in
    request order, as its own GET answers it."""
    rt.get_json("/v1/models/wool_m/predict?level=80")  # cached from here on
    following = rt.get_json("/v1/models/gdp_m/predict")["timestamps"][:2]
    rows = pa.table({"ts": pa.array([parse_instant(following[0]).replace(tzinfo=None)], pa.timestamp("us")),
                     "value": pa.array([13200.0], pa.float64())})
    assert do_put(rt.flight_client(), "gdp", rows) == {"dataset": "gdp", "rows": 1}
    items = [{"model_name": "gdp_m"}, {"model_name": "wool_m", "level": [80]}, {"model_name": "gdp_m", "horizon": 0},
             {"model_name": "gdp_m", "horizon": 2, "level": [80, 95]}]
    response = rt.post("/v1/predict", {"predictions": items})
    assert response.status == 200
    results = response.json()["predictions"]
    assert [r["status"] for r in results] == ["Success", "Success", "BadRequest", "Success"]
    assert results[0]["timestamps"][0] == following[1]  # after the row just put
    assert results[2]["error_message"] == f"horizon must be an integer from 1 to {MAX_HORIZON}, got 0"
    gets = ["/v1/models/gdp_m/predict", "/v1/models/wool_m/predict?level=80", None,
            "/v1/models/gdp_m/predict?horizon=2&level=80&level=95"]
    for path, result in zip(gets, results, strict=True):
        if path is not None:
            single = rt.get_json(path)
            assert {k: v for k, v in result.items() if k != "duration_ms"} == \
                {k: v for k, v in single.items() if k != "duration_ms"}


@pytest.mark.parametrize("explain", [True, False])
def test_a_batch_of_more_forecasts_than_one_worker_takes_answers_each_as_its_get(rt: Runtime, explain: bool) -> None:
    """More uncached forecasts than one worker computes in turn: they are shared among workers started
    together (or, from windows at hand, made on the IOLoop until the batch's budget for them is spent, the rest
    in workers), and each item is still answered as its own GET answers it, in request order."""
    names = ["wool_m", "nope", "austres_m", "nile_m"]
    # Horizons no other test here asks for, so none is cached. Explained, none is made on the IOLoop from a
    # window at hand: every item goes to a worker ("nope" fails there).
    items = [{"model_name": name, "horizon": horizon, "explain": explain} for horizon in (7, 8, 9) for name in names]
    assert len(items) > FORECASTS_PER_HOP
    response = rt.post("/v1/predict", {"predictions": items})
    assert response.status == 200
    results = response.json()["predictions"]
    assert [(r["model_name"], r["status"]) for r in results] == \
        [(item["model_name"], "BadRequest" if item["model_name"] == "nope" else "Success") for item in items]
    for item, result in zip(items, results, strict=True):
        if item["model_name"] != "nope":
            single = rt.get_json(f"/v1/models/{item['model_name']}/predict?horizon={item['horizon']}"
                                 f"&explain={str(explain).lower()}")
            assert ("contributions" in single) is explain
            assert {k: v for k, v in result.items() if k != "duration_ms"} == \
                {k: v for k, v in single.items() if k != "duration_ms"}


# --- concurrency ------------------------------------------------------------------------------------------

def _training_started(rt: Runtime, model: str, count: int) -> bool:
    return rt.log_text().count(f"model {model}: training on") >= count


def test_requests_answer_while_a_training_runs(rt: Runtime) -> None:
    names = QUICK_MODELS * 2
    singles = {name: rt.get_json(f"/v1/models/{name}/predict")["prediction"] for name in QUICK_MODELS}
    with ThreadPoolExecutor(max_workers=12) as pool:
        training = pool.submit(rt.post, "/v1/models/sun_big/train", None, None, True, 110)
        deadline = time.monotonic() + 60
        while not _training_started(rt, "sun_big", 2):
            assert not training.done(), training.result().body
            assert time.monotonic() < deadline, "the training never started"
            time.sleep(0.01)
        health = rt.get("/health")
        assert health.status == 200 and health.text == "ok"
        assert not training.done(), "/health waited for the training"
        predict = rt.get("/v1/models/wool_m/predict")
        assert predict.status == 200
        assert not training.done(), "GET predict waited for the training"

        others = [pool.submit(rt.get, f"/v1/models/{n}/predict?horizon=2") for n in QUICK_MODELS * 3]
        others.append(pool.submit(rt.get, "/v1/datasets"))
        batch = pool.submit(rt.post, "/v1/predict", {"predictions": [{"model_name": n} for n in names]})
        response = batch.result()
        assert not training.done(), "the batch waited for the training"
        assert response.status == 200
        results = response.json()["predictions"]
        assert [r["model_name"] for r in results] == names
        for result in results:
            assert result["status"] == "Success"
            assert result["prediction"] == singles[result["model_name"]]
        assert all(f.result().status == 200 for f in others)

        trained = training.result()
    assert trained.status == 200, trained.body
    assert trained.json()["model_version"] == "2"


# --- runtimes of their own: auth, InternalError ----------------------------------------------------------

SMALL = """
version: v1
kind: Spicepod
name: small
datasets:
  - from: file:nile.csv
    name: nile
  - from: file:austres.csv
    name: austres
models:
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {lookback: 8, horizon: 3, lightgbm: {num_boost_round: 20}}
  - from: lightgbm
    name: austres_m
    datasets: [austres]
    params: {lookback: 8, horizon: 3, lightgbm: {num_boost_round: 20}}
"""
KEY = "s3cret-key-for-tests"


def test_auth_on_every_v1_route(inprocess_factory: RuntimeFactory) -> None:
    rt = start(inprocess_factory, SMALL, ["nile.csv", "austres.csv"], api_key=KEY)
    requests = [
        ("GET", "/metrics", None), ("GET", "/v1/openapi.json", None), ("GET", "/v1/datasets", None),
        ("GET", "/v1/models", None), ("GET", "/v1/models/nile_m/predict", None),
        ("POST", "/v1/models/nile_m/train", b""), ("POST", "/v1/predict", {"predictions": [{"model_name": "nile_m"}]}),
        ("POST", "/v1/sql", b"SELECT 1 AS x"), ("GET", "/v1/no_such_route", None),
        ("DELETE", "/v1/models", None), ("GET", "/v1/models/nile_m/series", None),
        ("GET", "/v1/models/nile_m/forecasts", None), ("GET", "/v1/models/nile_m/history", None),
        ("GET", "/v1/models/nile_m/anomalies", None),
        ("GET", "/v1/models/nile_m/versions", None),
        ("POST", "/v1/models/nile_m/rollback", b""),  # to version 1, after the training above
    ]
    templates = {_template_of(path) for _, path, _ in requests}
    assert {route_template(p, h) for p, h in ROUTES} - templates == {"/health", "/v1/ready", "/", "/static/{path}"}
    for method, path, body in requests:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"Authorization": f"Bearer {KEY}x"}):
            response = http_request(rt.http_url + path, method, body, headers)
            result = check_error(response, 401, "Unauthorized")
            assert KEY not in response.text, (method, path)
            assert set(result) == {"status", "error_message", "duration_ms"}
        response = http_request(rt.http_url + path, method, body, {"X-API-Key": KEY})
        expected = {"/v1/no_such_route": 404}.get(path, 405 if method == "DELETE" else 200)
        assert response.status == expected, (method, path, response.status, response.body[:300])
    assert rt.get("/health", auth=False).text == "ok"
    assert rt.get("/v1/ready", auth=False).text == "ready"  # probes need no key
    assert rt.get("/", auth=False).status == 200  # the page is open; it asks for the key itself
    assert rt.get("/static/app.js", auth=False).status == 200
    check_error(rt.get("/elsewhere", auth=False), 404, "NotFound")  # only /v1/* and /metrics need the key
    assert rt.get("/metrics", auth=False, headers={"Authorization": f"Bearer {KEY}"}).status == 200
    doc = rt.get_json("/v1/openapi.json")
    assert doc == build_openapi(api_key=True)
    assert "401" in doc["paths"]["/v1/models/{name}/predict"]["get"]["responses"]
    assert KEY not in rt.log_text()


def test_internal_error_from_a_corrupted_model_file(inprocess_factory: RuntimeFactory) -> None:
    rt = start(inprocess_factory, SMALL, ["nile.csv", "austres.csv"])
    check_success(rt.get_json("/v1/models/nile_m/predict"), "nile_m", 3)
    rt.stop()
    # Corrupt the stored version: it now claims one booster per step ('direct') but has a single one.
    model_json = Path(rt.data_dir) / "models" / "nile_m" / "runs" / "1" / "lightgbm" / "model.json"
    meta = json.loads(model_json.read_text())
    assert meta["strategy"] == "recursive" and meta["boosters"] == ["booster.txt"]
    meta["strategy"] = "direct"
    model_json.write_text(json.dumps(meta))

    rt = inprocess_factory(spicepod=rt.spicepod, data_dir=rt.data_dir)
    response = rt.get("/v1/models/nile_m/predict")
    body = check_predict_error(response, 500, "InternalError", "nile_m", 8)
    assert body["error_message"].startswith("internal error")
    assert set(body) == {"status", "error_message", "model_name", "lookback", "duration_ms"}
    log = rt.log_text()
    assert "Traceback" in log and "GET /v1/models/nile_m/predict failed" in log

    batch = rt.post("/v1/predict", {"predictions": [{"model_name": "nile_m"}, {"model_name": "austres_m"}]})
    assert batch.status == 200 and "Traceback" not in batch.text
    first, second = batch.json()["predictions"]
    assert first["status"] == "InternalError" and first["model_name"] == "nile_m" and "prediction" not in first
    check_success(second, "austres_m", 3)
    samples = metric_samples(rt.get("/metrics").text)
    assert metric(samples, "flightcast_predictions_total", model="nile_m", status="InternalError") == 2
