"""Panels end to end: one global model over many series, per-series forecasts, bulk forecasts, intervals,
live accuracy and retraining, through a real runtime."""

from __future__ import annotations

import io
import textwrap
import time
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from conftest import do_put, write_table

START = datetime(2024, 1, 1)
DAYS = 120
WEEK = np.array([0.0, 0.2, 0.1, -0.1, 0.3, 1.0, 0.8])
# Each series its own level and scale, over five orders of magnitude: a global model must still
# forecast each on its own scale.
LEVELS = {"store_a": (10.0, 1.0), "store_b": (1000.0, 50.0), "store_c": (1e5, 8000.0), "store_d": (50.0, 5.0),
          "store_e": (3.0, 0.5)}
LOOKBACK, HORIZON = 14, 7


def panel_table(levels: dict, days: int = DAYS, id_type: pa.DataType | None = None) -> pa.Table:
    id_type = id_type or pa.string()
    rng = np.random.default_rng(7)
    ids, ts, values = [], [], []
    for sid, (level, scale) in levels.items():
        noise = rng.normal(0.0, 0.05, days)
        ids += [sid] * days
        ts += [START + timedelta(days=d) for d in range(days)]
        values += list(level + scale * (WEEK[np.arange(days) % 7] + noise))
    return pa.table({"store": pa.array(ids, id_type), "ts": pa.array(ts, pa.timestamp("us")),
                     "value": pa.array(values, pa.float64())})


def pod(folder) -> str:
    tiny = panel_table({"tiny": (5.0, 1.0)}, days=10)
    write_table(folder / "panel.parquet", pa.concat_tables([panel_table(LEVELS), tiny]))
    write_table(folder / "ints.parquet", panel_table({1: (10.0, 1.0), 2: (500.0, 20.0), 3: (7.0, 1.0)},
                                                     id_type=pa.int64()))
    single = panel_table({"x": (100.0, 10.0)}).drop_columns(["store"])
    write_table(folder / "single.parquet", single)
    return textwrap.dedent(f"""\
        version: v1
        kind: Spicepod
        name: panels
        datasets:
          - {{from: file:{folder / 'panel.parquet'}, name: sales, series_column: store, mode: read_write}}
          - {{from: file:{folder / 'ints.parquet'}, name: ints, series_column: store}}
          - {{from: file:{folder / 'single.parquet'}, name: single, mode: read_write}}
        models:
          - {{from: lightgbm, name: panel_m, datasets: [sales], params: {{lookback: {LOOKBACK}, horizon: {HORIZON}}}}}
          # int_m is there for its integer series ids, not its methods: LightGBM alone
          - {{from: lightgbm, name: int_m, datasets: [ints], params: {{lookback: {LOOKBACK}, horizon: {HORIZON},
              method: lightgbm}}}}
          - {{from: lightgbm, name: single_m, datasets: [single], params: {{lookback: {LOOKBACK}, horizon: 3,
              retrain: {{after_rows: 5, promote: always}}}}}}
        """)


@pytest.fixture(scope="module")
def rt(module_inprocess_factory):
    """The runtime in this process: no test here needs a process of its own (the restart is a new runtime on
    the same store)."""
    folder = module_inprocess_factory.new_dir()
    (folder / "spicepod.yaml").write_text(pod(folder))
    return module_inprocess_factory(spicepod=folder / "spicepod.yaml", timeout=120)


def predict(rt, query: str):
    response = rt.get(f"/v1/models/{query}")
    return response.status, response.json()


def models(rt) -> dict[str, dict]:
    return {m["name"]: m for m in rt.get_json("/v1/models")}


def test_each_series_is_forecast_on_its_own_level_and_scale(rt):
    for sid, (level, scale) in LEVELS.items():
        status, body = predict(rt, f"panel_m/predict?series={sid}")
        assert status == 200, body
        assert body["series"] == sid and body["horizon"] == HORIZON
        assert body["timestamps"][0] == (START + timedelta(days=DAYS)).strftime("%Y-%m-%dT00:00:00Z")
        # Days DAYS.. continue the weekly shape: within a fifth of the scale of the expected value.
        expected = level + scale * WEEK[np.arange(DAYS, DAYS + HORIZON) % 7]
        assert np.max(np.abs(np.array(body["prediction"]) - expected)) < 0.2 * scale, (sid, body["prediction"])


def test_panel_listing_and_series(rt):
    entry = models(rt)["panel_m"]
    # Every series of two or more periods is served: the 10-day one by the methods that fit so short a series.
    assert entry["status"] == "ready" and entry["series_count"] == 6 and entry["frequency"] == "1d"
    assert entry["training_rows"] == 5 * DAYS + 10
    series = rt.get_json("/v1/models/panel_m/series")
    assert [s["series"] for s in series] == ["store_a", "store_b", "store_c", "store_d", "store_e", "tiny"]
    assert [s["status"] for s in series] == ["ready"] * 6
    assert series[0]["rows"] == DAYS and series[-1]["rows"] == 10
    assert series[0]["first_timestamp"] == "2024-01-01T00:00:00Z"


def test_series_search_and_limit(rt):
    def search(query: str) -> tuple[list, str]:
        response = rt.get(f"/v1/models/panel_m/series?{query}")
        assert response.status == 200, response.body[:300]
        return [s["series"] for s in response.json()], response.headers["X-Total-Count"]

    assert search("q=STORE_") == (["store_a", "store_b", "store_c", "store_d", "store_e"], "5")  # any case
    assert search("q=ore_c") == (["store_c"], "1")  # anywhere in the id
    assert search("q=store&limit=2") == (["store_a", "store_b"], "5")  # the first by id; the total before it
    assert search("limit=1") == (["store_a"], "6")
    assert search("q=nothing") == ([], "0")
    assert search("q=") == (["store_a", "store_b", "store_c", "store_d", "store_e", "tiny"], "6")
    assert rt.get("/v1/models/single_m/series?q=x").json() == []  # a single series has no id to match
    for bad in ("limit=0", "limit=-1", "limit=x", "limit=1&limit=2", "q=a&q=b"):
        response = rt.get(f"/v1/models/panel_m/series?{bad}")
        assert response.status == 400 and response.json()["status"] == "BadRequest", bad


def test_panel_errors(rt):
    status, body = predict(rt, "panel_m/predict")
    assert status == 400 and body["error_message"] == "model 'panel_m' has 6 series; pass series=ID"
    status, body = predict(rt, "panel_m/predict?series=nope")
    assert status == 400 and body["error_message"] == "series 'nope' not found in model 'panel_m'"
    status, body = predict(rt, "panel_m/predict?series=")
    assert status == 400 and "series" in body["error_message"]
    status, body = predict(rt, f"panel_m/predict?series={'x' * 257}")
    assert status == 400 and "256 bytes" in body["error_message"]
    status, body = predict(rt, "panel_m/predict?series=tiny")  # too short for LightGBM's 14 + a week
    assert status == 200 and "lightgbm" not in body["method"].split("+") and len(body["prediction"]) == HORIZON
    status, body = predict(rt, "single_m/predict?series=x")
    assert status == 400 and "single series" in body["error_message"]
    status, body = predict(rt, "panel_m/predict?series=store_a&series=store_b")
    assert status == 400 and "series" in body["error_message"]
    # Series ids are data: quotes and SQL in an id find nothing and break nothing.
    status, body = predict(rt, "panel_m/predict?series=a'%20OR%20'1'='1")
    assert status == 400 and "not found" in body["error_message"]


def test_integer_series_ids_are_strings_in_the_api(rt):
    assert [s["series"] for s in rt.get_json("/v1/models/int_m/series")] == ["1", "2", "3"]
    status, body = predict(rt, "int_m/predict?series=2")
    assert status == 200 and body["series"] == "2"
    assert abs(body["prediction"][0] - 500.0) < 40.0


def test_bulk_forecasts_in_three_formats(rt):
    rows = rt.get_json("/v1/models/panel_m/forecasts?level=80&level=95")
    assert len(rows) == 6 * HORIZON
    assert set(rows[0]) == {"series", "ts", "value", "lower_80", "upper_80", "lower_95", "upper_95", "method"}
    assert [r["series"] for r in rows[::HORIZON]] == ["store_a", "store_b", "store_c", "store_d", "store_e", "tiny"]
    one = rt.get_json("/v1/models/panel_m/predict?series=store_c&level=80")
    bulk_c = [r for r in rows if r["series"] == "store_c"]
    assert [r["value"] for r in bulk_c] == pytest.approx(one["prediction"], rel=1e-12)
    assert [r["lower_80"] for r in bulk_c] == pytest.approx(one["intervals"]["80"]["lower"], rel=1e-12)

    response = rt.get("/v1/models/panel_m/forecasts?series=store_b&series=store_e&horizon=2",
                      headers={"Accept": "text/csv"})
    assert response.status == 200 and response.content_type.startswith("text/csv")
    lines = response.text.strip().split("\n")
    assert lines[0] == "series,ts,value,method" and len(lines) == 1 + 2 * 2
    assert [line.split(",")[0] for line in lines[1:]] == ["store_b", "store_b", "store_e", "store_e"]

    response = rt.get("/v1/models/panel_m/forecasts", headers={"Accept": "application/vnd.apache.arrow.stream"})
    table = pa.ipc.open_stream(io.BytesIO(response.body)).read_all()
    assert table.num_rows == 6 * HORIZON
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("value").type == pa.float64()

    status, body = predict(rt, "panel_m/forecasts?series=nope")
    assert status == 400 and body["error_message"] == "series 'nope' not found in model 'panel_m'"


def test_intervals_nest_around_the_prediction(rt):
    status, body = predict(rt, "panel_m/predict?series=store_b&level=95&level=80&level=97.5")
    assert status == 200
    assert list(body["intervals"]) == ["95", "80", "97.5"]
    prediction = np.array(body["prediction"])
    bounds = {k: (np.array(v["lower"]), np.array(v["upper"])) for k, v in body["intervals"].items()}
    for lower, upper in bounds.values():
        assert len(lower) == len(upper) == HORIZON
        assert np.all(lower <= prediction) and np.all(prediction <= upper)
    assert np.all(bounds["95"][0] <= bounds["80"][0]) and np.all(bounds["80"][1] <= bounds["95"][1])
    assert np.all(bounds["97.5"][0] <= bounds["95"][0]) and np.all(bounds["95"][1] <= bounds["97.5"][1])
    assert models(rt)["panel_m"]["intervals"]["calibration_errors"] > 0


@pytest.mark.parametrize("query", ["level=0", "level=100", "level=-5", "level=abc", "level=80&" * 6])
def test_bad_levels_are_400s_naming_level(rt, query):
    status, body = predict(rt, f"panel_m/predict?series=store_a&{query}")
    assert status == 400 and "level" in body["error_message"]


def test_post_mixes_panel_and_single_series_models(rt):
    items = [{"model_name": "panel_m", "series": "store_d", "level": [80]}, {"model_name": "single_m"},
             {"model_name": "panel_m"}, {"model_name": "panel_m", "series": "store_d", "level": [100]}]
    response = rt.post("/v1/predict", {"predictions": items})
    assert response.status == 200
    results = response.json()["predictions"]
    assert [r["status"] for r in results] == ["Success", "Success", "BadRequest", "BadRequest"]
    assert results[0]["series"] == "store_d" and "80" in results[0]["intervals"]
    assert "series" not in results[1]
    assert "pass series=ID" in results[2]["error_message"] and "level" in results[3]["error_message"]


def test_a_doput_to_one_series_moves_only_that_series(rt):
    before = {sid: rt.get_json(f"/v1/models/panel_m/predict?series={sid}")["prediction"] for sid in LEVELS}
    listed = rt.get_json("/v1/models/panel_m/series?q=store_a")[0]
    new = pa.table({"store": ["store_a"], "ts": pa.array([START + timedelta(days=DAYS)], pa.timestamp("us")),
                    "value": [40.0]})
    with rt.flight_client() as client:
        do_put(client, "sales", new)
    after = {sid: rt.get_json(f"/v1/models/panel_m/predict?series={sid}") for sid in LEVELS}
    assert after["store_a"]["timestamps"][0] == (START + timedelta(days=DAYS + 1)).strftime("%Y-%m-%dT00:00:00Z")
    assert after["store_a"]["prediction"] != before["store_a"]
    # the series search keeps its stats only while the data is unchanged
    relisted = rt.get_json("/v1/models/panel_m/series?q=store_a")[0]
    assert relisted["rows"] == listed["rows"] + 1 and relisted["last_timestamp"] > listed["last_timestamp"]
    for sid in LEVELS:
        if sid != "store_a":
            assert after[sid]["prediction"] == before[sid]
    bulk = rt.get_json("/v1/models/panel_m/forecasts?series=store_a&series=store_b")
    assert [r["value"] for r in bulk[:HORIZON]] == pytest.approx(after["store_a"]["prediction"], rel=1e-12)
    assert [r["value"] for r in bulk[HORIZON:]] == pytest.approx(before["store_b"], rel=1e-12)


def test_history_is_the_grid_the_model_sees(rt):
    body = rt.get_json("/v1/models/int_m/history?series=3&limit=3")
    assert body["series"] == "3" and len(body["values"]) == 3
    assert body["timestamps"][-1] == (START + timedelta(days=DAYS - 1)).strftime("%Y-%m-%dT00:00:00Z")
    status, body = predict(rt, "int_m/history?series=9")
    assert status == 400 and "not found" in body["error_message"]


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_live_accuracy_retraining_and_restart(rt, module_inprocess_factory):
    """Served forecasts are scored when their actuals arrive; N new rows retrain in the background."""
    served = rt.get_json("/v1/models/single_m/predict")
    version = models(rt)["single_m"]["model_version"]
    assert models(rt)["single_m"]["live_metrics"] is None
    stamps = [datetime.fromisoformat(t.replace("Z", "")) for t in served["timestamps"]]
    actual = [v + 1.0 for v in served["prediction"]]  # each off by exactly 1
    with rt.flight_client() as client:
        do_put(client, "single", pa.table({"ts": pa.array(stamps, pa.timestamp("us")), "value": actual}))
    # Once /metrics shows no new data awaiting upkeep, the new values are scored.
    wait_for(lambda: "\nflightcast_upkeep_backlog 0.0\n" in rt.get("/metrics").text)
    live = models(rt)["single_m"]["live_metrics"]
    assert live["points"] == 3
    assert live["smape"] == pytest.approx(np.mean([200 / (abs(a) + abs(p)) for a, p in
                                                   zip(actual, served["prediction"], strict=True)]))
    assert 0.0 <= live["coverage_80"] <= 1.0 and live["mase"] > 0
    metrics = rt.get("/metrics").text
    assert 'flightcast_live_points_total{model="single_m"} 3.0' in metrics

    # 3 rows are not 5: still the same version. Two more, and it retrains while still answering.
    more = [stamps[-1] + timedelta(days=i) for i in (1, 2)]
    with rt.flight_client() as client:
        do_put(client, "single", pa.table({"ts": pa.array(more, pa.timestamp("us")), "value": [100.0, 101.0]}))
    answers = []
    new_version = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        response = rt.get("/v1/models/single_m/predict")
        answers.append(response.status)
        assert response.json()["timestamps"][0] == (more[-1] + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
        current = models(rt)["single_m"]["model_version"]
        if current != version:
            new_version = current
            break
        time.sleep(0.05)
    assert new_version == str(int(version) + 1)
    assert set(answers) == {200}

    rt.stop()
    again = module_inprocess_factory(spicepod=rt.spicepod, data_dir=rt.data_dir, timeout=120)
    log = again.log_text()
    assert "int_m: loaded stored version 1" in log and "int_m: trained" not in log  # a global model, stored
    assert "panel_m: trained version 2" in log  # its data changed by the DoPut above
    assert models(again)["single_m"]["live_metrics"]["points"] == 3
