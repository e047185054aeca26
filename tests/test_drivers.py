"""Drivers end to end on real data: covariates known ahead (stored future rows or sent with a request),
categorical flags, calendar fields, holidays and static attributes; explanations; and every bad
declaration refused with a message naming it."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import do_put, wait_until, write_table

from pipelines.drivers import FutureDrivers
from pipelines.portfolio import load_model
from spicepod import SpicepodError, load_spicepod

DATA = Path(__file__).resolve().parent.parent / "data" / "covariates"
FUTURE_MONTHS = 12  # the last year of Seatbelts is stored as future rows: drivers known, deaths not yet


def seatbelts() -> dict[str, np.ndarray]:
    with (DATA / "seatbelts.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "ts": np.array([r["month"] + "-01" for r in rows], dtype="datetime64[us]"),
        "killed": np.array([float(r["DriversKilled"]) for r in rows]),
        "kms": np.array([float(r["kms"]) for r in rows]),
        "petrol": np.array([float(r["PetrolPrice"]) for r in rows]),
        "law": np.array([int(r["law"]) for r in rows]),
    }


def belts_table() -> pa.Table:
    data = seatbelts()
    killed = data["killed"].copy()
    killed[-FUTURE_MONTHS:] = np.nan
    return pa.table({
        "ts": pa.array(data["ts"], pa.timestamp("us")),
        "killed": pa.array(killed, pa.float64(), from_pandas=True),
        "kms": pa.array(data["kms"]), "petrol": pa.array(data["petrol"]), "law": pa.array(data["law"], pa.int64()),
    })


def ridership_panel() -> pa.Table:
    """The latest 400 days of Clark/Lake ridership as two series (the second a scaled copy), with weather and
    a static region."""
    with (DATA / "chicago_ridership.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[-400:]
    ts = np.array([r["date"] for r in rows], dtype="datetime64[us]")
    ride = np.array([float(r["ridership"]) for r in rows])
    temp = np.array([float(r["temp"]) for r in rows])
    return pa.table({
        "station": ["clark"] * len(rows) + ["other"] * len(rows),
        "region": ["loop"] * len(rows) + ["north"] * len(rows),
        "ts": pa.array(np.concatenate([ts, ts]), pa.timestamp("us")),
        "rides": np.concatenate([ride, ride * 0.5 + 2.0]),
        "temp": np.concatenate([temp, temp]),
    })


FAST = "lightgbm: {num_boost_round: 40}"


def pod(folder: Path) -> str:
    write_table(folder / "belts.parquet", belts_table())
    write_table(folder / "rides.parquet", ridership_panel())
    flips = ridership_panel().to_pydict()
    flips["region"][-1] = "south"  # one series' static attribute changes on its last day
    write_table(folder / "flips.parquet", pa.table(flips))
    return textwrap.dedent(f"""\
        version: v1
        kind: Spicepod
        name: drivers
        datasets:
          - {{from: file:{folder / 'belts.parquet'}, name: belts, mode: read_write}}
          - {{from: file:{folder / 'rides.parquet'}, name: rides, series_column: station}}
          - {{from: file:{folder / 'flips.parquet'}, name: flips, series_column: station}}
        models:
          - from: lightgbm
            name: belts_m
            datasets: [belts]
            params:
              value_column: killed
              lookback: 12
              horizon: 6
              method: lightgbm
              covariates: [kms, petrol, {{column: law, type: categorical}}]
              calendar: [month]
              {FAST}
          - from: lightgbm
            name: belts_auto
            datasets: [belts]
            params:
              value_column: killed
              lookback: 12
              horizon: 6
              covariates: [kms, {{column: petrol, known: past}}, {{column: law, type: categorical}}]
              backtest_windows: 1  # arimax's fit on 180 months is slow; one window is enough to score it
              {FAST}
          - from: lightgbm
            name: rides_m
            datasets: [rides]
            params:
              value_column: rides
              lookback: 14
              horizon: 7
              method: lightgbm
              strategy: direct
              covariates: [{{column: temp, known: past}}]
              static: [region]
              calendar: [day_of_week, day_of_year]
              holidays: {{country: US, subdivision: IL}}
              {FAST}
          - from: lightgbm
            name: flips_m
            datasets: [flips]
            params: {{value_column: rides, lookback: 14, horizon: 7, method: lightgbm, static: [region]}}
          - from: lightgbm
            name: belts_plain
            datasets: [belts]
            params: {{value_column: killed, lookback: 12, horizon: 6, method: lightgbm, {FAST}}}
          - from: lightgbm
            name: missing_m
            datasets: [belts]
            params: {{value_column: killed, lookback: 12, horizon: 6, method: lightgbm, covariates: [nope]}}
        """)


@pytest.fixture(scope="module")
def rt(module_inprocess_factory):
    folder = module_inprocess_factory.new_dir()
    (folder / "spicepod.yaml").write_text(pod(folder))
    runtime = module_inprocess_factory(spicepod=folder / "spicepod.yaml", timeout=180)
    wait_until(lambda: all(m["status"] in ("ready", "failed") for m in runtime.get_json("/v1/models")),
               "every model trained or failed", timeout=180)
    return runtime


def models(rt) -> dict[str, dict]:
    return {m["name"]: m for m in rt.get_json("/v1/models")}


def stored(rt, name: str):
    """The served version's model as stored in the data dir (what the runtime forecasts with)."""
    runs = sorted((rt.data_dir / "models" / name / "runs").iterdir(), key=lambda p: int(p.name))
    return load_model(runs[-1])


def test_forecast_starts_after_the_newest_value_and_uses_the_stored_future_rows(rt):
    body = rt.get_json("/v1/models/belts_m/predict")
    data = seatbelts()
    observed = len(data["ts"]) - FUTURE_MONTHS
    assert body["timestamps"][0] == "1984-01-01T00:00:00Z"
    assert len(body["prediction"]) == 6
    model = stored(rt, "belts_m")
    window = data["killed"][observed - 12:observed][None, :]
    future = {k: data[k][None, observed:observed + 6].astype(np.float64) for k in ("kms", "petrol")}
    future["law"] = data["law"][None, observed:observed + 6].astype(object)
    expected, _ = model.forecast_windows(window, data["ts"][observed - 1:observed], 6, [None],
                                         FutureDrivers(future, {}, {}))
    assert body["prediction"] == pytest.approx(expected[0].tolist(), rel=1e-9)


def test_one_window_with_drivers_forecasts_the_bits_it_has_in_a_batch(rt):
    """One window goes through LightGBM's single-row path and a batch through its batch predict, each with the
    driver columns of the whole horizon built at once: known-future covariates and a category (belts_m,
    recursive), and a known-past covariate, an attribute, calendar and holidays (rides_m, direct)."""
    data = seatbelts()
    observed = len(data["ts"]) - FUTURE_MONTHS
    ends = np.array([observed - 30, observed - 12, observed])
    future = {k: np.stack([data[k][e:e + 6] for e in ends]).astype(np.float64) for k in ("kms", "petrol")}
    future["law"] = np.stack([data["law"][e:e + 6] for e in ends]).astype(object)
    belts = stored(rt, "belts_m")
    cases = [(belts, np.stack([data["killed"][e - belts.window_length:e] for e in ends]), data["ts"][ends - 1],
              FutureDrivers(future, {}, {}), [None] * 3, 6)]
    panel = ridership_panel()
    rides, temp, ts = (panel.column(c).to_numpy() for c in ("rides", "temp", "ts"))
    ends = np.array([390, 400, 790, 800])  # two windows of each station: rows 0-399 are clark's, 400-799 other's
    model = stored(rt, "rides_m")
    region = np.array(["loop", "loop", "north", "north"], dtype=object)
    cases.append((model, np.stack([rides[e - model.window_length:e] for e in ends]), ts[ends - 1],
                  FutureDrivers({}, {"temp": temp[ends - 1]}, {"region": region}), ["clark", "clark", "other", "other"],
                  7))
    for model, windows, last, inputs, ids, horizon in cases:
        batch, _ = model.forecast_windows(windows, last, horizon, ids, inputs)
        assert np.isfinite(batch).all()
        for i in range(len(ids)):
            alone, _ = model.forecast_windows(windows[i:i + 1], last[i:i + 1], horizon, ids[i:i + 1],
                                              inputs.rows(np.array([i])))
            assert alone.tobytes() == batch[i:i + 1].tobytes(), (model.layout.drivers.names(), i)


def test_request_covariates_win_over_stored_rows(rt):
    data = seatbelts()
    observed = len(data["ts"]) - FUTURE_MONTHS
    stamps = [f"1984-{m:02d}-01T00:00:00Z" for m in range(1, 7)]
    # Far from the stored values: the lowest distance driven and the highest petrol price of the history.
    sent = {"timestamps": stamps, "kms": [float(data["kms"].min())] * 6, "petrol": [float(data["petrol"].max())] * 6,
            "law": [0] * 6}
    response = rt.post("/v1/predict", {"predictions": [{"model_name": "belts_m", "covariates": sent}]})
    assert response.status == 200, response.text
    [item] = response.json()["predictions"]
    model = stored(rt, "belts_m")
    future = {"kms": np.array([sent["kms"]]), "petrol": np.array([sent["petrol"]]),
              "law": np.array([[0] * 6], dtype=object)}
    expected, _ = model.forecast_windows(data["killed"][None, observed - 12:observed],
                                         data["ts"][observed - 1:observed], 6, [None], FutureDrivers(future, {}, {}))
    assert item["prediction"] == pytest.approx(expected[0].tolist(), rel=1e-9)
    plain = rt.get_json("/v1/models/belts_m/predict")
    assert item["prediction"] != pytest.approx(plain["prediction"])


def test_a_missing_future_value_names_the_covariate_and_the_first_period(rt):
    response = rt.get("/v1/models/belts_m/predict?horizon=14")
    assert response.status == 400
    assert response.json()["error_message"] == (
        "covariate 'kms' has no value for 1985-01-01T00:00:00Z (and 1 more period); send them with DoPut or in "
        "the request")


def test_bad_request_covariates_are_refused(rt):
    def item(covariates):
        response = rt.post("/v1/predict", {"predictions": [{"model_name": "belts_m", "covariates": covariates}]})
        return response.json()["predictions"][0]

    assert "not a future covariate of model 'belts_m'" in item({"timestamps": ["1984-01-01"], "rain": [1]})[
        "error_message"]
    assert item({"timestamps": ["1984-01-01"], "kms": [1, 2]})["error_message"] == (
        "covariates.kms must be a list of 1 values, one per timestamp")
    assert item({"timestamps": ["soon"], "kms": [1]})["error_message"] == (
        "covariates.timestamps: 'soon' is not an ISO 8601 timestamp")
    assert item({"kms": [1]})["error_message"] == (
        "covariates.timestamps must be a non-empty list of ISO 8601 timestamps")


def test_explanations_sum_to_the_prediction_by_input_group(rt):
    body = rt.get_json("/v1/models/belts_m/predict?explain=true")
    plain = rt.get_json("/v1/models/belts_m/predict")
    assert body["prediction"] == pytest.approx(plain["prediction"], rel=1e-9)
    groups = body["contributions"]
    assert set(groups) == {"lags", "level", "season", "kms", "petrol", "law", "calendar"}
    total = np.sum([groups[g] for g in groups], axis=0)
    np.testing.assert_allclose(total, body["prediction"], rtol=1e-6)
    bad = rt.get("/v1/models/belts_m/predict?explain=maybe")
    assert bad.status == 400 and bad.json()["error_message"] == "explain must be true or false, got 'maybe'"


def test_a_portfolio_explains_with_its_methods_and_lightgbm_groups(rt):
    # Its numeric covariate known ahead (kms) makes arimax a candidate beside LightGBM and the local methods.
    assert models(rt)["belts_auto"]["methods"]["arimax"]["mase"] > 0
    body = rt.get_json("/v1/models/belts_auto/predict?explain=true")
    total = np.sum(list(body["contributions"].values()), axis=0)
    np.testing.assert_allclose(total, body["prediction"], rtol=1e-6)


def test_feature_importance_shares_sum_to_one(rt):
    entry = models(rt)["belts_m"]
    shares = entry["feature_importance"]
    assert set(shares) == {"lags", "level", "season", "kms", "petrol", "law", "calendar"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)


def test_future_rows_are_not_observations(rt):
    client = rt.flight_client()
    before = rt.get_json("/v1/models/belts_m/predict")
    more = pa.table({"ts": pa.array(np.array(["1985-01-01", "1985-02-01"], dtype="datetime64[us]")),
                     "killed": pa.array([None, None], pa.float64()), "kms": [20000.0, 20000.0],
                     "petrol": [0.1, 0.1], "law": pa.array([1, 1], pa.int64())})
    do_put(client, "belts", more)
    after = rt.get_json("/v1/models/belts_m/predict?horizon=14")
    assert after["timestamps"][0] == before["timestamps"][0] == "1984-01-01T00:00:00Z"
    assert after["timestamps"][-1] == "1985-02-01T00:00:00Z"


def test_a_model_without_drivers_on_the_same_data_also_starts_after_the_newest_value(rt):
    body = rt.get_json("/v1/models/belts_plain/predict")
    assert body["timestamps"][0] == "1984-01-01T00:00:00Z"
    assert "feature_importance" in models(rt)["belts_plain"]


def test_a_panel_with_static_attributes_calendar_and_holidays(rt):
    body = rt.get_json("/v1/models/rides_m/predict?series=clark&explain=true")
    assert len(body["prediction"]) == 7
    assert {"temp", "region", "calendar", "holidays"} <= set(body["contributions"])
    total = np.sum(list(body["contributions"].values()), axis=0)
    np.testing.assert_allclose(total, body["prediction"], rtol=1e-6)
    bulk = rt.get_json("/v1/models/rides_m/forecasts")
    assert {row["series"] for row in bulk} == {"clark", "other"}
    clark = [row["value"] for row in bulk if row["series"] == "clark"]
    assert clark == pytest.approx(body["prediction"], rel=1e-9)


def test_a_static_attribute_that_changes_within_a_series_fails_the_model_naming_it(rt):
    entry = models(rt)["flips_m"]
    assert entry["status"] == "failed"
    assert entry["error_message"] == (
        "dataset 'flips' series 'other': static column 'region' changes within the series ('north', 'south'); "
        "a static attribute has one value per series")


def test_a_covariate_the_dataset_lacks_fails_the_model_naming_it(rt):
    entry = models(rt)["missing_m"]
    assert entry["status"] == "failed"
    assert entry["error_message"].startswith("model 'missing_m': dataset 'belts' has no column 'nope' (columns: ")


def test_an_arriving_value_far_from_its_forecast_with_drivers_is_an_anomaly(rt):
    """Runs after the tests that read the stored future rows: it turns the first of them into an observation."""
    data = seatbelts()
    observed = len(data["ts"]) - FUTURE_MONTHS
    row = pa.table({"ts": pa.array(data["ts"][observed:observed + 1]), "killed": [5000.0],
                    "kms": [float(data["kms"][observed])], "petrol": [float(data["petrol"][observed])],
                    "law": pa.array([int(data["law"][observed])], pa.int64())})
    do_put(rt.flight_client(), "belts", row)
    found = wait_until(lambda: rt.get_json("/v1/models/belts_m/anomalies"), "an anomaly listed", timeout=10)
    [anomaly] = found
    assert anomaly["ts"] == "1984-01-01T00:00:00Z" and anomaly["value"] == 5000.0
    # The expected value is the one-step forecast from the data before it, with that period's drivers.
    model = stored(rt, "belts_m")
    inputs = FutureDrivers({k: data[k][None, observed:observed + 1].astype(np.float64) for k in ("kms", "petrol")}
                           | {"law": data["law"][None, observed:observed + 1].astype(object)}, {}, {})
    expected, _ = model.forecast_windows(data["killed"][None, observed - 12:observed],
                                         data["ts"][observed - 1:observed], 1, [None], inputs)
    assert anomaly["expected"] == pytest.approx(float(expected[0, 0]), rel=1e-9)
    assert rt.get_json("/v1/models/belts_m/predict")["timestamps"][0] == "1984-02-01T00:00:00Z"


BASE = """\
version: v1
kind: Spicepod
name: bad
datasets:
  - {{from: flight, name: d, mode: read_write, series_column: sid}}
models:
  - {{from: lightgbm, name: m, datasets: [d], params: {{value_column: v, {params}}}}}
"""


@pytest.mark.parametrize(("params", "message"), [
    ("covariates: [ts]", "column 'ts' is the time column, it cannot also be a driver"),
    ("covariates: [v]", "column 'v' is the value column, it cannot also be a driver"),
    ("static: [sid]", "column 'sid' is the series column, it cannot also be a driver"),
    ("covariates: [{column: t, type: text}]", "'covariates[0].type' must be one of numeric, categorical"),
    ("covariates: [{column: t, known: later}]", "'covariates[0].known' must be one of future, past"),
    ("covariates: [{column: t, lag: 2}]", "'covariates[0]' has unknown key 'lag'"),
    ("covariates: [t, t]", "'covariates' names column 't' twice"),
    ("calendar: [weekday]", "'calendar' has unknown calendar field 'weekday'"),
    ("holidays: {country: XX}", "'holidays.country': unknown country 'XX'"),
    ("holidays: {country: AU, subdivision: ZZ}", "'holidays.subdivision': country AU has no subdivision 'ZZ'"),
    ("static: [a], covariates: [a]", "column 'a' is both a covariate and static"),
])
def test_bad_driver_declarations_stop_start_up(tmp_path, params, message):
    path = tmp_path / "spicepod.yaml"
    path.write_text(BASE.format(params=params))
    with pytest.raises(SpicepodError) as caught:
        load_spicepod(path)
    assert message in str(caught.value)


def test_static_needs_a_panel(tmp_path):
    path = tmp_path / "spicepod.yaml"
    path.write_text(BASE.replace(", series_column: sid", "").format(params="static: [region]"))
    with pytest.raises(SpicepodError, match="'static' needs a panel: dataset 'd' has no series_column"):
        load_spicepod(path)
