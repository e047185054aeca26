"""Forecasting pipelines end to end: a real runtime trains LightGBM on real data and serves forecasts."""

from __future__ import annotations

import hashlib
import textwrap
import time
from datetime import datetime, timedelta

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from conftest import DATA, copy_data, do_put, write_csv_text

from harness.flight import flight_server
from pipelines.flight_client import FlightDataClient
from pipelines.forecasts import History, SeriesEntry
from pipelines.metrics import mase
from pipelines.service import PredictionService
from spicepod import load_spicepod

WEEKLY_SHAPE = [0.0, 1.0, 4.0, 9.0, 3.0, 7.0, 2.0]
WEEKLY_DAYS = 7 * 30 + 3  # not a whole number of weeks: a window of the oldest rows would be out of phase
# Params of models whose tests do not depend on the method or the model's size (windows, restarts, retries):
# LightGBM alone, few rounds.
QUICK = "method: lightgbm, lightgbm: {num_boost_round: 20}"


def weekly_csv(path, days: int = WEEKLY_DAYS):
    start = datetime(2024, 1, 1)
    lines = ["ts,value"] + [
        f"{(start + timedelta(days=i)).date()},{10 + 5 * WEEKLY_SHAPE[i % 7]}" for i in range(days)
    ]
    return write_csv_text(path, "\n".join(lines) + "\n")


def pod(datasets: str, models: str) -> str:
    return textwrap.dedent(
        """\
        version: v1
        kind: Spicepod
        name: pipelines
        datasets:
        {datasets}
        models:
        {models}
        """
    ).format(datasets=textwrap.indent(textwrap.dedent(datasets), "  "), models=textwrap.indent(
        textwrap.dedent(models), "  "))


@pytest.fixture(scope="module")
def served(module_inprocess_factory):
    """One runtime (in this process: no test here needs a process of its own) with models covering the
    strategies, horizons and failure modes."""
    folder = module_inprocess_factory.new_dir()
    weekly_csv(folder / "weekly.csv")
    copy_data("austres.csv", folder)
    copy_data("us_realgdp.csv", folder)
    write_csv_text(folder / "gappy.csv", "ts,value\n" + "".join(
        f"2024-01-{d:02d},{d}\n" for d in [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]))
    write_csv_text(folder / "holes.csv", "ts,value\n" + "".join(
        f"2024-01-{d:02d},{'' if d == 6 else d}\n" for d in range(1, 21)))
    write_csv_text(folder / "short.csv", "ts,value\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n")
    text = pod(
        """\
        - {from: file:weekly.csv, name: weekly}
        - {from: file:austres.csv, name: austres}
        - {from: file:us_realgdp.csv, name: gdp, mode: read_write}
        - {from: file:gappy.csv, name: gappy}
        - {from: file:holes.csv, name: holes}
        - {from: file:short.csv, name: short}
        """,
        """\
        - {from: lightgbm, name: weekly_rec, datasets: [weekly], params: {lookback: 14, horizon: 7}}
        - {from: lightgbm, name: weekly_dir, datasets: [weekly],
           params: {lookback: 14, horizon: 7, strategy: direct, lightgbm: {num_boost_round: 150}}}
        - {from: lightgbm, name: austres_m, datasets: [austres], params: {lookback: 16, horizon: 8}}
        - {from: lightgbm, name: gdp_m, datasets: [gdp], params: {lookback: 16, horizon: 8}}
        - {from: lightgbm, name: gappy_m, datasets: [gappy], params: {lookback: 3, horizon: 2, fill: none}}
        - {from: lightgbm, name: holes_m, datasets: [holes], params: {lookback: 3, horizon: 2, fill: none}}
        - {from: lightgbm, name: gappy_lin, datasets: [gappy], params: {lookback: 3, horizon: 2}}
        - {from: lightgbm, name: holes_prev, datasets: [holes], params: {lookback: 3, horizon: 2, fill: previous}}
        - {from: lightgbm, name: short_m, datasets: [short], params: {lookback: 3, horizon: 2, method: lightgbm}}
        """,
    )
    (folder / "spicepod.yaml").write_text(text)
    return module_inprocess_factory(spicepod=folder / "spicepod.yaml", timeout=90)


def predict(runtime, name: str, query: str = ""):
    response = runtime.get(f"/v1/models/{name}/predict{query}")
    return response.status, response.json()


def models_by_name(runtime) -> dict[str, dict]:
    return {m["name"]: m for m in runtime.get_json("/v1/models")}


def test_forecast_continues_the_weekly_shape_from_the_newest_row(served):
    for name in ("weekly_rec", "weekly_dir"):
        status, body = predict(served, name)
        assert status == 200, body
        expected = [10 + 5 * WEEKLY_SHAPE[(WEEKLY_DAYS + k) % 7] for k in range(7)]
        assert body["timestamps"][0] == (datetime(2024, 1, 1) + timedelta(days=WEEKLY_DAYS)).strftime(
            "%Y-%m-%dT00:00:00Z")
        np.testing.assert_allclose(body["prediction"], expected, atol=2.0, err_msg=name)


def test_trending_series_are_followed_not_flattened(served):
    for name, dataset, file in (("austres_m", "austres", "austres.csv"), ("gdp_m", "gdp", "us_realgdp.csv")):
        status, body = predict(served, name)
        assert status == 200, body
        last = float(np.loadtxt(DATA / file, delimiter=",", skiprows=1, usecols=1)[-1])
        # A tree on raw levels stays at or below the last level; the trend keeps rising.
        assert body["prediction"][-1] > last * 1.005, (name, body["prediction"], last)
        if dataset == "gdp":
            continue  # its held-out quarters are the 2008-09 recession, which no trend model foresees
        # The held-out score beats seasonal naive on the same held-out points, scaled the same way.
        values = np.loadtxt(DATA / file, delimiter=",", skiprows=1, usecols=1)
        history, actual = values[:-8], values[-8:]
        naive = mase(actual, np.resize(history[-4:], 8), history, 4)
        entry = models_by_name(served)[name]
        assert entry["metrics"]["mase"] < naive, (entry, naive)


def test_models_listing_has_version_metrics_and_frequency(served):
    entry = models_by_name(served)["austres_m"]
    assert entry["status"] == "ready"
    assert entry["model_version"] == "1"
    assert entry["frequency"] == "1q"
    assert entry["training_rows"] == 89
    assert entry["lookback"] == 16 and entry["horizon"] == 8
    assert entry["trained_at"].endswith("Z")
    assert entry["series_count"] == 1 and entry["strategy"] == "recursive"
    assert set(entry["metrics"]) == {"mase", "smape", "backtest_windows"}
    assert entry["metrics"]["backtest_windows"] == 3
    assert 0 <= entry["metrics"]["smape"] <= 200
    # The earliest backtest model forecasts from 40 origins; step 8 of the last 7 has no actual yet.
    assert entry["intervals"]["calibration_errors"] == 40 - 7


def test_horizon_override_within_bounds(served):
    status, body = predict(served, "austres_m", "?horizon=3")
    assert status == 200
    assert body["horizon"] == 3 and len(body["prediction"]) == 3
    assert body["timestamps"] == ["1993-07-01T00:00:00Z", "1993-10-01T00:00:00Z", "1994-01-01T00:00:00Z"]
    status, longer = predict(served, "austres_m", "?horizon=20")
    assert status == 200 and len(longer["prediction"]) == 20
    assert longer["prediction"][:3] == body["prediction"]  # recursive: the first steps do not depend on h


def test_direct_model_refuses_a_horizon_beyond_its_training(served):
    status, body = predict(served, "weekly_dir", "?horizon=8")
    assert status == 400
    assert body["status"] == "BadRequest"
    assert "horizon" in body["error_message"] and "7" in body["error_message"]
    status, body = predict(served, "weekly_dir", "?horizon=0")
    assert status == 400 and "horizon" in body["error_message"]


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ("gappy_m", ["gappy", "no value for the period starting 2024-01-06T00:00:00Z", "params.fill"]),
        ("holes_m", ["holes", "no value for the period starting 2024-01-06T00:00:00Z"]),
        ("short_m", ["short", "3 periods", "lookback + horizon"]),
    ],
)
def test_training_failures_name_the_dataset_and_the_timestamps(served, model, fragments):
    entry = models_by_name(served)[model]
    assert entry["status"] == "failed"
    for fragment in fragments:
        assert fragment in entry["error_message"], entry["error_message"]
    status, body = predict(served, model)
    assert status == 400
    assert body["status"] == "BadRequest"
    assert body["model_name"] == model and body["lookback"] == 3
    assert "failed to train" in body["error_message"] and fragments[0] in body["error_message"]
    assert "prediction" not in body


@pytest.mark.parametrize(("model", "filled"), [("gappy_lin", 6.0), ("holes_prev", 5.0)])
def test_gaps_and_nulls_are_filled_on_the_grid(served, model, filled):
    entry = models_by_name(served)[model]
    assert entry["status"] == "ready" and entry["frequency"] == "1d", entry
    history = served.get_json(f"/v1/models/{model}/history?limit=100")
    assert history["timestamps"][:7] == [f"2024-01-{d:02d}T00:00:00Z" for d in range(1, 8)]
    assert history["values"][:7] == [1.0, 2.0, 3.0, 4.0, 5.0, filled, 7.0]
    status, body = predict(served, model)
    assert status == 200 and len(body["prediction"]) == 2


def test_a_doput_moves_the_next_forecast_past_the_new_rows(served):
    status, before = predict(served, "gdp_m")
    assert status == 200
    assert before["timestamps"][0] == "2009-10-01T00:00:00Z"
    new = pa.table({
        "ts": pa.array([datetime(2009, 10, 1), datetime(2010, 1, 1)], pa.timestamp("us")),
        "value": pa.array([14000.0, 14500.0]),
    })
    with served.flight_client() as client:
        assert do_put(client, "gdp", new) == {"dataset": "gdp", "rows": 2}
    status, after = predict(served, "gdp_m")
    assert status == 200
    assert after["timestamps"][0] == "2010-04-01T00:00:00Z"
    assert after["model_version"] == before["model_version"]
    # The new level (well above the old trend) is in the window: the forecast starts near it.
    assert after["prediction"][0] > 14000.0 > before["prediction"][0]


def test_a_gap_written_into_the_window_is_filled_or_named(inprocess_factory):
    folder = inprocess_factory.new_dir()
    copy_data("austres.csv", folder)
    runtime = inprocess_factory(pod(
        "- {from: file:austres.csv, name: aus, mode: read_write}\n",
        f"- {{from: lightgbm, name: aus_m, datasets: [aus], params: {{lookback: 8, horizon: 4, {QUICK}}}}}\n"
        f"- {{from: lightgbm, name: aus_strict, datasets: [aus], params: {{lookback: 8, horizon: 4, fill: none, "
        f"{QUICK}}}}}\n",
    ).replace("file:austres.csv", f"file:{folder / 'austres.csv'}"))
    skipped = pa.table({"ts": pa.array([datetime(1994, 1, 1)], pa.timestamp("us")), "value": [18000.0]})
    with runtime.flight_client() as client:
        do_put(client, "aus", skipped)  # 1993-07-01 and 1993-10-01 are missing
    status, body = predict(runtime, "aus_strict")
    assert status == 400
    assert "no value for the period starting 1993-07-01T00:00:00Z" in body["error_message"]
    status, body = predict(runtime, "aus_m")
    assert status == 200 and body["timestamps"][0] == "1994-04-01T00:00:00Z"
    history = runtime.get_json("/v1/models/aus_m/history?limit=4")
    last = 17661.5  # 1993-04-01, the last row of the file
    step = (18000.0 - last) / 3
    assert history["values"] == pytest.approx([last, last + step, last + 2 * step, 18000.0])


def test_restart_loads_the_stored_version_and_new_data_retrains(inprocess_factory):
    """Each restart is a new runtime (in this process) on the same data dir."""
    folder = inprocess_factory.new_dir()
    copy_data("austres.csv", folder)
    text = pod(
        f"- {{from: file:{folder / 'austres.csv'}, name: aus, mode: read_write}}\n",
        # promote always: a version trained at start on changed data serves whatever its backtest says
        f"- {{from: lightgbm, name: aus_m, datasets: [aus], params: {{lookback: 8, horizon: 4, {QUICK}, "
        "retrain: {promote: always}}}\n",
    )
    first = inprocess_factory(text)
    _, before = predict(first, "aus_m")
    trained_at = models_by_name(first)["aus_m"]["trained_at"]
    first.stop()
    assert "aus_m: trained version 1" in first.log_text()

    second = inprocess_factory(spicepod=first.spicepod, data_dir=first.data_dir)
    assert "aus_m: loaded stored version 1" in second.log_text()
    assert "aus_m: trained" not in second.log_text()
    _, again = predict(second, "aus_m")
    assert again["prediction"] == before["prediction"]
    assert models_by_name(second)["aus_m"]["trained_at"] == trained_at
    more = pa.table({"ts": pa.array([datetime(1993, 7, 1)], pa.timestamp("us")), "value": [17700.0]})
    with second.flight_client() as client:
        do_put(client, "aus", more)
    second.stop()

    third = inprocess_factory(spicepod=first.spicepod, data_dir=first.data_dir)
    assert "aus_m: trained version 2" in third.log_text()
    assert models_by_name(third)["aus_m"]["model_version"] == "2"


def test_a_saved_lightgbm_file_model_serves_with_its_digest_as_version(inprocess_factory):
    folder = inprocess_factory.new_dir()
    copy_data("nile.csv", folder)
    values = np.loadtxt(folder / "nile.csv", delimiter=",", skiprows=1, usecols=1)
    lookback = 5
    x = np.lib.stride_tricks.sliding_window_view(values[:-1], lookback)
    y = values[lookback:]
    booster = lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5},
                        lgb.Dataset(x, y), num_boost_round=20)
    booster.save_model(str(folder / "nile.txt"))
    runtime = inprocess_factory(pod(
        f"- {{from: file:{folder / 'nile.csv'}, name: nile}}\n",
        f"- {{from: file:{folder / 'nile.txt'}, name: nile_f, datasets: [nile], "
        "params: {lookback: 5, horizon: 3}}\n",
    ))
    status, body = predict(runtime, "nile_f")
    assert status == 200, body
    digest = hashlib.sha256((folder / "nile.txt").read_bytes()).hexdigest()[:12]
    assert body["model_version"] == digest
    assert body["timestamps"] == ["1971-01-01T00:00:00Z", "1972-01-01T00:00:00Z", "1973-01-01T00:00:00Z"]
    window = list(values[-lookback:])
    expected = []
    for _ in range(3):
        expected.append(float(booster.predict(np.array([window[-lookback:]]), num_threads=1)[0]))
        window.append(expected[-1])
    assert body["prediction"] == pytest.approx(expected, rel=1e-9)


def test_a_flight_dataset_trains_after_its_first_rows_arrive(inprocess_factory):
    runtime = inprocess_factory(pod(
        "- {from: flight, name: live}\n",
        f"- {{from: lightgbm, name: live_m, datasets: [live], params: {{lookback: 4, horizon: 2, {QUICK}}}}}\n",
    ))
    entry = models_by_name(runtime)["live_m"]
    assert entry["status"] == "failed" and "no rows" in entry["error_message"]
    start = datetime(2024, 1, 1)
    rows = pa.table({
        "ts": pa.array([start + timedelta(hours=i) for i in range(48)], pa.timestamp("us")),
        "value": pa.array([float(i % 6) for i in range(48)]),
    })
    with runtime.flight_client() as client:
        do_put(client, "live", rows)
    # The failed model is retried by itself once its data changes; no POST /train needed.
    deadline = time.monotonic() + 60
    while models_by_name(runtime)["live_m"]["status"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = models_by_name(runtime)["live_m"]
    assert entry["status"] == "ready" and entry["frequency"] == "1h", entry
    assert "error_message" not in entry
    status, body = predict(runtime, "live_m")
    assert status == 200
    assert body["timestamps"] == ["2024-01-03T00:00:00Z", "2024-01-03T01:00:00Z"]


# --- the prediction service in this process, over an in-process Flight server ---------------------------


@pytest.fixture
def in_process_service(tmp_path):
    """A PredictionService with one trained weekly model, hearing the commit notices of its data."""
    weekly_csv(tmp_path / "weekly.csv")
    text = pod("- {from: file:weekly.csv, name: weekly, mode: read_write}",
               "- {from: lightgbm, name: weekly_rec, datasets: [weekly],\n"
               "   params: {lookback: 14, horizon: 7, lightgbm: {num_boost_round: 30}}}")
    with flight_server(tmp_path, text) as data:
        spicepod = load_spicepod(tmp_path / "spicepod.yaml")
        service = PredictionService(spicepod.models, {d.name: d for d in spicepod.datasets},
                                    FlightDataClient(data.location), tmp_path / "service")
        data.store.subscribe(service.on_data_changed)
        service.start()
        try:
            deadline = time.monotonic() + 60
            while not service.ready():
                assert time.monotonic() < deadline, [info.status for info in service.models()]
                time.sleep(0.02)
            assert service.models()[0].status == "ready", service.models()[0].error_message
            yield service, data
        finally:
            service.stop()


def test_a_notices_reset_forgets_forecasts_and_drops_those_computed_before_it(in_process_service):
    service, _ = in_process_service
    forecast = service.predict("weekly_rec")
    assert service.cached("weekly_rec") == forecast
    served = service.states["weekly_rec"].current
    key = service.cache.forecast_key(served, "weekly", None, 7)
    entry = service.cache.forecast(key)
    assert entry is not None
    service.cache.reset()  # the data node's notices came (back) up: versions are counted afresh
    assert service.cached("weekly_rec") is None
    service.cache.keep_forecast(key, entry)  # a request that began before the reset stores its forecast after it
    assert service.cache.forecast(key) is None
    assert service.predict("weekly_rec") == forecast  # asks the data version again, computes the same
    assert service.cached("weekly_rec") == forecast


def test_bulk_forecasts_follow_a_commit_and_a_reset(in_process_service):
    service, data = in_process_service
    single = service.predict("weekly_rec")
    bulk = service.forecasts("weekly_rec")
    assert (bulk.model_name, bulk.horizon, list(bulk.ids)) == ("weekly_rec", 7, [None])
    assert bulk.values[0].tolist() == single.values
    newest = np.datetime64("2024-01-01", "us") + np.timedelta64(WEEKLY_DAYS - 1, "D")
    assert bulk.timestamps[0, 0] == newest + np.timedelta64(1, "D")
    added = newest + np.timedelta64(1, "D")
    rows = pa.table({"ts": pa.array([added], pa.timestamp("us")), "value": [10 + 5 * WEEKLY_SHAPE[WEEKLY_DAYS % 7]]})
    do_put(data.client, "weekly", rows)
    after = service.forecasts("weekly_rec")
    assert after.timestamps[0, 0] == added + np.timedelta64(1, "D")
    assert after.values[0].tolist() == service.predict("weekly_rec").values
    service.cache.reset()
    again = service.forecasts("weekly_rec")
    assert again.values.tolist() == after.values.tolist() and again.timestamps.tolist() == after.timestamps.tolist()


def test_series_and_history_are_values(in_process_service):
    service, _ = in_process_service
    days = [np.datetime64("2024-01-01") + np.timedelta64(i, "D") for i in range(WEEKLY_DAYS - 3, WEEKLY_DAYS)]
    assert service.history("weekly_rec", limit=3) == History(
        None, [f"{d}T00:00:00Z" for d in days],
        [10 + 5 * WEEKLY_SHAPE[i % 7] for i in range(WEEKLY_DAYS - 3, WEEKLY_DAYS)])
    total, entries = service.series_matching("weekly_rec")
    assert (total, entries) == (1, [SeriesEntry(None, WEEKLY_DAYS, "2024-01-01T00:00:00Z",
                                                f"{days[-1]}T00:00:00Z", "ready")])
    info = service.train("weekly_rec")
    assert (info.name, info.status, info.lookback, info.horizon, info.frequency) == ("weekly_rec", "ready", 14, 7, "1d")


def test_driver_columns_of_a_forecast_are_those_of_each_step_built_alone():
    from pipelines.drivers import Covariate, Drivers, DriverValues, FutureDrivers, HolidayCalendar
    from pipelines.frequency import Frequency

    drivers = Drivers([Covariate("temp"), Covariate("game", categorical=True), Covariate("visitors", known="past")],
                      ["region"], ["day_of_week", "month"], HolidayCalendar("US"))
    drivers.learn(DriverValues({"game": [np.array([0, 1], dtype=object)]}, {"region": ["north", "south"]}))
    freq = Frequency.parse("1d")
    inputs = FutureDrivers(
        {"temp": np.array([[20.5, 21.0, 19.0], [5.0, 6.5, 7.0]]),
         "game": np.array([[0, 1, None], [1, 0, 0]], dtype=object)},
        {"visitors": np.array([120.0, 80.0])}, {"region": np.array(["south", "north"], dtype=object)})
    last = np.array(["2024-12-23", "2024-07-03"], dtype="datetime64[us]")

    steps = drivers.forecast_steps(inputs, last, 3, freq)
    built = [steps[:, step - 1] for step in (1, 2, 3)]

    # Step 2: Christmas (a Wednesday, a holiday) and 5 July (a Friday, the day after one); game codes 1, 0.
    assert built[1].tolist() == [[21.0, 1.0, 120.0, 1.0, 2.0, 12.0, 1.0, 0.0],
                                 [6.5, 0.0, 80.0, 0.0, 4.0, 7.0, 0.0, -1.0]]
    for step in (1, 2, 3):
        alone = FutureDrivers({k: v[:, step - 1:step] for k, v in inputs.future.items()}, inputs.past, inputs.static)
        shifted = np.asarray(freq.add(last, step - 1))
        np.testing.assert_array_equal(built[step - 1], drivers.forecast_steps(alone, shifted, 1, freq)[:, 0])
    # The same inputs after other windows: the columns follow the new timestamps.
    later = last + np.timedelta64(1, "D").astype("m8[us]")
    np.testing.assert_array_equal(drivers.forecast_steps(inputs, later, 1, freq)[:, 0, 3:], built[1][:, 3:])
    # Without future covariates (a calendar alone) every step of any horizon comes from its period alone.
    calendar = Drivers(calendar=["day_of_month"])
    assert calendar.forecast_steps(FutureDrivers(), last, 40, freq)[:, [1, 39], 0].tolist() == [[25.0, 1.0],
                                                                                               [5.0, 12.0]]


def test_live_accuracy_keeps_the_latest_forecast_of_each_target_and_the_newest_targets(tmp_path):
    from pipelines.live import LiveScorer

    day = np.timedelta64(1, "D").astype("m8[us]")
    start = np.datetime64("2024-01-01", "us")

    def targets(first: int, n: int, steps: int) -> np.ndarray:
        return np.tile(start + (first + np.arange(steps)) * day, (n, 1))

    live = LiveScorer(tmp_path, max_pending=10)
    live.record("m", ["a", "b"], targets(0, 2, 3), np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), None, None,
                np.array([1.0, 2.0]))
    # A later forecast of a's days 1 and 2 replaces the earlier one; b's days 0-2 and a's day 0 stay.
    live.record("m", ["a"], targets(1, 1, 3), np.array([[20.0, 30.0, 40.0]]), np.array([[19.0, 29.0, 39.0]]),
                np.array([[21.0, 31.0, 41.0]]), np.array([1.0]))
    us = (start + np.arange(4) * day).astype(np.int64).tolist()
    assert live.waiting("m") == {"a": us[0], "b": us[0]}
    assert live.score("m", "a", start + np.arange(4) * day, np.array([1.0, 21.0, 31.0, 40.0])) == 4
    metrics = live.metrics("m")
    assert (metrics["points"], metrics["mase"], metrics["coverage_80"]) == (4, 0.5, 1.0)  # |errors| 0, 1, 1, 0
    assert live.waiting("m") == {"b": us[0]}
    # More points than may wait: the newest targets of the batch are kept, the older ones dropped.
    live.record("m", ["c", "d", "e", "f"], targets(0, 4, 3), np.arange(12.0).reshape(4, 3), None, None, np.ones(4))
    assert live.waiting("m") == {"c": us[2], "d": us[0], "e": us[0], "f": us[0]}
    assert live.waiting("m", ["d", "b", "x", None]) == {"d": us[0]}  # only the named, of those still waiting
    live.flush()
    again = LiveScorer(tmp_path, max_pending=10)
    again.load(["m"])
    assert again.waiting("m") == live.waiting("m")
    assert again.score("m", "c", start + 2 * day + np.arange(1) * day, np.array([2.0])) == 1
    assert again.metrics("m")["points"] == 5


def test_live_accuracy_drops_the_oldest_points_across_batches_and_says_which_series_still_wait(tmp_path):
    from pipelines.live import LiveScorer

    day = np.timedelta64(1, "D").astype("m8[us]")
    start = np.datetime64("2024-01-01", "us")
    us = (start + np.arange(6) * day).astype(np.int64).tolist()
    live = LiveScorer(tmp_path, max_pending=5)
    live.record("m", ["a", "b"], np.tile(start + np.arange(2) * day, (2, 1)), np.ones((2, 2)), None, None, np.ones(2))
    # Two more points than may wait: a's two (the oldest recorded) go, b's stay.
    live.record("m", ["c"], np.tile(start + np.arange(3, 6) * day, (1, 1)), np.ones((1, 3)), None, None, np.ones(1))
    assert live.waiting("m") == {"b": us[0], "c": us[3]}
    assert live.score("m", "a", start + np.arange(2) * day, np.array([1.0, 1.0])) == 0
    assert live.score("m", "b", start + np.arange(1) * day, np.array([1.0])) == 1
    assert live.waiting("m", ["a", "b", "c"]) == {"b": us[1], "c": us[3]}
    assert live.score("m", "b", start + np.arange(1, 2) * day, np.array([np.nan])) == 0  # gone, though not scored
    assert live.waiting("m") == {"c": us[3]}


def test_live_accuracy_pending_forecasts_follow_the_rules_over_many_random_batches(tmp_path):
    """Batches merged a few at a time (as reads between GETs merge them) against the rules kept point by point:
    a later forecast of a (series, period) replaces the earlier one, and the newest `max_pending` wait."""
    from pipelines.live import LiveScorer

    rng = np.random.default_rng(7)
    start = np.datetime64("2024-01-01", "us")
    day = np.timedelta64(1, "D").astype("m8[us]")
    for trial in range(40):
        limit = int(rng.integers(3, 30))
        live = LiveScorer(tmp_path / str(trial), max_pending=limit)
        reference: dict[tuple[str, int], float] = {}  # (series, target) -> prediction, oldest served first
        for _ in range(int(rng.integers(1, 12))):
            ids = [f"s{i}" for i in rng.choice(6, size=int(rng.integers(1, 4)), replace=False)]
            steps = int(rng.integers(1, 5))
            first = rng.integers(0, 8, size=len(ids))
            targets = start + (first[:, None] + np.arange(steps)[None, :]) * day
            predicted = rng.normal(size=(len(ids), steps)).round(3)
            live.record("m", ids, targets, predicted, None, None, np.ones(len(ids)))
            for sid, row_targets, row_values in zip(ids, targets, predicted, strict=True):
                for target, value in zip(row_targets.astype(np.int64).tolist(), row_values.tolist(), strict=True):
                    reference.pop((sid, target), None)
                    reference[(sid, target)] = value
                    while len(reference) > limit:
                        reference.pop(next(iter(reference)))
            if rng.random() < 0.4:  # merged now, with the batches recorded before
                oldest: dict[str, int] = {}
                for sid, target in reference:
                    oldest[sid] = min(target, oldest.get(sid, target))
                assert live.waiting("m") == oldest, trial
        ids = sorted({sid for sid, _ in reference})
        actual_days = start + np.arange(12) * day
        assert live.score_many("m", ids, [actual_days] * len(ids), [np.zeros(12)] * len(ids)) == len(reference)
        # Every actual is 0 and every scale 1: each scaled error is the prediction's size.
        assert live.metrics("m")["mase"] == pytest.approx(sum(abs(v) for v in reference.values()) / len(reference))
        assert live.waiting("m") == {}


def test_live_accuracy_scores_many_series_at_once_in_the_order_of_their_actuals(tmp_path):
    from pipelines.live import LiveScorer

    day = np.timedelta64(1, "D").astype("m8[us]")
    start = np.datetime64("2024-01-01", "us")
    days = start + np.arange(2) * day
    us = days.astype(np.int64).tolist()
    live = LiveScorer(tmp_path, max_pending=6)
    live.record("m", ["a", "b"], np.tile(days, (2, 1)), np.array([[1.0, 2.0], [3.0, 4.0]]), None, None,
                np.array([1.0, 2.0]))
    live.record("m", ["a"], days[None, 1:], np.array([[20.0]]), None, None, np.array([1.0]))  # replaces a's day 1
    live.record("m", ["c"], days[None, :], np.array([[5.0, 6.0]]), None, None, np.array([1.0]))
    # A seventh point: the oldest served (a's day 0) goes; a's day 1, served again since, stays.
    live.record("m", ["d"], days[None, :1], np.array([[7.0]]), None, None, np.array([1.0]))
    assert live.waiting("m") == {"a": us[1], "b": us[0], "c": us[0], "d": us[0]}
    scored = live.score_many("m", ["c", "x", "a", "b"], [days, days[:1], days, days],
                             [np.array([5.5, np.nan]), np.array([1.0]), np.array([0.0, 21.0]), np.array([3.0, 4.0])])
    # c's day 0 (error 0.5), a's day 1 (1, against the later forecast), b's days (0 and 0); c's day 1 has no
    # actual (dropped unscored), x was never served, a's day 0 was dropped.
    assert scored == 4
    assert live.metrics("m")["mase"] == pytest.approx(1.5 / 4)
    assert live.drift("m", 2, 1.0) == (0.0, 2)  # the latest errors are b's, the last actuals given
    assert live.drift("m", 3, 1.0) == (pytest.approx(1 / 3), 3)
    assert live.waiting("m") == {"d": us[0]}
    assert live.score_many("m", ["d"], [days[:0]], [np.zeros(0)]) == 0


def test_live_accuracy_keeps_pending_forecasts_as_columns_and_reads_the_older_rows(tmp_path):
    import json

    from pipelines.live import LiveScorer

    start = np.datetime64("2024-01-01", "us")
    day = np.timedelta64(1, "D").astype("m8[us]")
    live = LiveScorer(tmp_path)
    live.record("m", ["a", None], np.tile(start + np.arange(2) * day, (2, 1)), np.array([[1.0, 2.0], [3.0, 4.0]]),
                np.array([[0.5, 1.5], [2.5, 3.5]]), np.array([[1.5, np.nan], [3.5, 4.5]]), np.array([2.0, 1.0]))
    live.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pending.npz"]
    assert "pending" not in json.loads((tmp_path / "m.json").read_text())
    again = LiveScorer(tmp_path)
    again.load(["m"])
    us = (start + np.arange(2) * day).astype(np.int64).tolist()
    assert again.waiting("m") == {"a": us[0], None: us[0]}
    assert again.score("m", "a", start + np.arange(2) * day, np.array([1.0, 4.0])) == 2
    assert again.metrics("m")["coverage_80"] == 1.0  # the point without an upper bound (NaN) is not counted
    # A file of the first format holds its pending forecasts as rows of JSON.
    (tmp_path / "old.json").write_text(json.dumps({
        "format": 1, "abs_scaled": 0.0, "scaled_points": 0, "smape": 0.0, "covered": 0, "interval_points": 0,
        "points": 0, "recent": [], "pending": [["a", us[1], 7.0, None, None, 1.0]]}))
    assert again.score("old", "a", start + day + np.arange(1) * day, np.array([8.0])) == 1
    assert again.metrics("old")["mase"] == 1.0


def test_upkeep_waits_for_a_bulk_forecast_to_end():
    from pipelines.state import Foreground

    foreground = Foreground()
    assert foreground.wait_idle(0)
    with foreground.running(), foreground.running():
        assert not foreground.wait_idle(0.01)
    assert foreground.wait_idle(0)
