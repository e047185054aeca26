"""The method portfolio (in process, on real series): per-series choice never worse than seasonal naive on
the backtest, short series forecast by local methods, bounds, intervals of what is served, persistence."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.flight import flight_server
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from pipelines.grid import GridQuery
from pipelines.grid_setup import phase_origin, raw_timestamps
from pipelines.methods import METHODS, local_forecast, seasonal_naive, uses_library
from pipelines.portfolio import PortfolioModel, bounds_for, load_model
from pipelines.selection import BATCH_METHODS
from pipelines.series import SeriesSet
from pipelines.training import train_model
from spicepod import LOCAL_METHODS
from spicepod import METHODS as SPICEPOD_METHODS
from spicepod.errors import InvalidInput

DATA = Path(__file__).resolve().parent.parent / "data"
FAST = {"num_boost_round": 40}
QUARTERLY = Frequency.parse("1q")


def read_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    with (DATA / f"{name}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([r["ts"] for r in rows], dtype="datetime64[us]"), np.array([float(r["value"]) for r in rows])


def tourism(count: int) -> SeriesSet:
    """The first `count` tourism series (Q1, Q10, ... by id)."""
    by_id: dict[str, list[tuple[str, float]]] = {}
    with (DATA / "tourism_quarterly.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            by_id.setdefault(row["series"], []).append((row["ts"], float(row["value"])))
    out = SeriesSet()
    for sid in sorted(by_id)[:count]:
        rows = by_id[sid]
        out.ids.append(sid)
        out.times.append(np.array([t for t, _ in rows], dtype="datetime64[us]"))
        out.values.append(np.array([v for _, v in rows]))
    return out


@pytest.fixture(scope="module")
def panel() -> SeriesSet:
    return tourism(24)


@pytest.fixture(scope="module")
def panel_model(panel: SeriesSet) -> PortfolioModel:
    return train_model(panel, method="auto", bounds="auto", freq=QUARTERLY, lookback=8, horizon=4,
                       lightgbm_params=FAST, dataset="tourism")


def test_every_local_method_the_spicepod_names_exists():
    assert tuple(METHODS) == LOCAL_METHODS


def test_only_the_portfolios_and_the_statistical_methods_fit_with_statsforecast():
    assert {m for m in SPICEPOD_METHODS if uses_library(m)} == {"auto", "ensemble", "ets", "theta", "mstl", "croston"}
    # What a runtime of LightGBM models leaves out of its fork server's preload must stay out of its fits.
    script = (
        "import sys, numpy as np\n"
        "from pipelines.backends import LocalBackend\nfrom pipelines.frequency import Frequency\n"
        "from pipelines.series import SeriesSet\nfrom pipelines.training import train_model\n"
        "t = np.datetime64('2020-01-01', 'us') + np.arange(120) * np.timedelta64(1, 'D').astype('m8[us]')\n"
        "series = SeriesSet(['a', 'b'], [t, t], [np.sin(np.arange(120.0)), np.cos(np.arange(120.0))])\n"
        "for method in ('lightgbm', 'naive', 'seasonal_naive'):\n"
        "    train_model(backend=LocalBackend(series), method=method, freq=Frequency('d'), lookback=14, horizon=7,\n"
        "                dataset='d', lightgbm_params={'num_boost_round': 5})\n"
        "print(sorted(m for m in sys.modules if m.startswith('statsforecast')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=DATA.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_each_series_served_never_backtests_worse_than_its_seasonal_naive(panel_model, panel):
    model = panel_model
    assert set(model.plans) == set(panel.ids)
    assert set(model.series_mase) == set(panel.ids)
    for sid, (served, simple) in model.series_mase.items():
        assert served <= simple + 1e-12, sid
    # The portfolio uses more than one method over these series, and reports each one's backtest.
    methods = model.metrics["methods"]
    assert sum(1 for m in methods.values() if m["series"]) >= 2
    assert methods["seasonal_naive"]["mase"] > 0
    assert model.metrics["mase"] == pytest.approx(np.mean([s for s, _ in model.series_mase.values()]))


def test_forecast_is_the_average_of_the_chosen_methods(panel_model, panel):
    model = panel_model
    for i, sid in enumerate(panel.ids[:6]):
        values = panel.values[i]
        window = values[-model.window_length:]
        predicted, spread = model.forecast_windows(window[None, :], panel.times[i][-1:], 4, [sid])
        plan = model.plan_of(sid)
        history = values[-len(window):]
        expected = []
        for method in plan:
            if method == "lightgbm":
                lgbm = model.lightgbm
                expected.append(lgbm.forecast_windows(values[-lgbm.window_length:][None, :], panel.times[i][-1:], 4,
                                                      [sid])[0][0])
            else:
                expected.append(local_forecast(method, history, 4, 4))
        np.testing.assert_allclose(predicted[0], np.maximum(np.mean(expected, axis=0), 0.0), rtol=1e-9)
        assert spread[0] > 0
        assert model.methods_of([sid])[0] == "+".join(plan)


def test_a_series_too_short_for_the_lightgbm_window_is_forecast_by_a_local_method(panel):
    short = SeriesSet(list(panel.ids[:8]) + ["tiny", "one"], list(panel.times[:8]) + [panel.times[0][:6],
                      panel.times[0][:1]], list(panel.values[:8]) + [panel.values[0][:6], panel.values[0][:1]])
    model = train_model(short, method="auto", freq=QUARTERLY, lookback=8, horizon=4, lightgbm_params=FAST,
                        dataset="tourism")
    assert "one" not in model.plans and "one" not in model.stats.ids  # one period: too short for anything
    assert "tiny" in model.plans
    window = np.full(model.window_length, np.nan)
    window[-6:] = panel.values[0][:6]
    predicted, spread = model.forecast_windows(window[None, :], panel.times[0][5:6], 4, ["tiny"])
    method = model.methods_of(["tiny"], window[None, :])[0]
    assert "lightgbm" not in method
    assert np.all(np.isfinite(predicted)) and np.isfinite(spread[0])
    if method == "seasonal_naive":
        np.testing.assert_allclose(predicted[0], seasonal_naive(panel.values[0][:6], 4, 4))


def test_intervals_are_calibrated_on_what_is_served(panel_model):
    model = panel_model
    assert model.calibration is not None and model.calibration.usable()
    assert model.calibration.steps == 4
    assert model.metrics["calibration_errors"] == model.calibration.count > 0


def test_saved_portfolio_forecasts_exactly_as_trained(panel_model, panel, tmp_path):
    model = panel_model
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, PortfolioModel)
    windows = np.stack([v[-model.window_length:] for v in panel.values])
    last = np.array([t[-1] for t in panel.times])
    a, sa = model.forecast_windows(windows, last, 4, panel.ids)
    b, sb = loaded.forecast_windows(windows, last, 4, panel.ids)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert loaded.plans == model.plans and loaded.default == model.default
    assert loaded.default[0] in BATCH_METHODS


def test_bounds_auto_keeps_forecasts_of_non_negative_data_non_negative():
    ts, values = read_series("pbs_scripts")
    model = train_model(SeriesSet.single(ts, values), method="auto", bounds="auto", freq=Frequency.parse("1mo"),
                        lookback=24, horizon=12, lightgbm_params=FAST, dataset="pbs")
    assert model.bounds == (0.0, None)
    predicted, _ = model.forecast_windows(values[-model.window_length:][None, :], ts[-1:], 12, [None])
    assert np.all(predicted >= 0)
    assert bounds_for("auto", -1.0) is None
    assert bounds_for("none", 0.0) is None
    assert bounds_for((None, 10.0), 0.0) == (None, 10.0)


def test_a_single_method_serves_every_series(panel):
    model = train_model(panel, method="theta", freq=QUARTERLY, lookback=8, horizon=4, dataset="tourism")
    assert model.lightgbm is None
    assert set(model.methods_of(panel.ids)) <= {"theta", "seasonal_naive", "naive"}
    assert model.metrics["methods"]["theta"]["series"] == len(panel)
    assert model.fits_when_forecasting  # theta is fit again on a series' new history: never on the IOLoop
    repeating = train_model(panel, method="seasonal_naive", freq=QUARTERLY, lookback=8, horizon=4, dataset="tourism")
    assert not repeating.fits_when_forecasting


def test_unknown_method_is_refused(panel):
    with pytest.raises(InvalidInput, match="unknown method 'prophet'"):
        train_model(panel, method="prophet", freq=QUARTERLY, lookback=8, horizon=4, dataset="tourism")


def test_local_method_that_cannot_fit_does_not_compete():
    flat = np.zeros(3)
    assert local_forecast("ets", flat, 4, 4) is None  # too short for a seasonal fit
    assert local_forecast("croston", np.array([0.0, 1, 0, 0, 2, 0, 0, 0, 1, 0]), 3, 1) is not None
    assert math.isclose(float(local_forecast("naive", np.array([1.0, 5.0]), 2, 1)[1]), 5.0)


# --- the grid: partial periods, week starts, observed periods (real store over in-process Flight) ---------


def _daily_store(tmp_path, first: str, days: int, skip: tuple[int, ...] = ()):
    start = np.datetime64(first, "D")
    lines = ["ts,value"] + [f"{start + np.timedelta64(i, 'D')},1.0" for i in range(days) if i not in skip]
    (tmp_path / "daily.csv").write_text("\n".join(lines) + "\n")
    text = ("version: v1\nkind: Spicepod\nname: t\ndatasets:\n  - {from: file:daily.csv, name: daily}\n")
    return flight_server(tmp_path, text)


def _grid(data, freq: str, aggregate: str, week_start: str | None = None) -> GridQuery:
    client = FlightDataClient(data.location)
    raw = raw_timestamps(client, "daily", "ts", None)
    frequency = Frequency.parse(freq)
    return GridQuery("daily", "ts", "value", None, frequency, phase_origin(raw, frequency, week_start),
                     aggregate, "linear"), client


def test_partial_weeks_at_either_end_are_dropped_and_weeks_start_on_mondays(tmp_path):
    # Thursday 2024-01-04 to Tuesday 2024-03-05: a 4-day first week and a 2-day last week.
    with _daily_store(tmp_path, "2024-01-04", 62) as data:
        grid, client = _grid(data, "1w", "sum")
        found = grid.history(client, 100)
        weeks = found.times[0]
        assert str(weeks[0]) == "2024-01-08T00:00:00.000000" and str(weeks[-1]) == "2024-02-26T00:00:00.000000"
        assert np.all((weeks - weeks[0]) % np.timedelta64(7, "D") == np.timedelta64(0, "D"))
        assert found.values[0].tolist() == [7.0] * weeks.size  # whole weeks only
        windows = grid.windows(client, 4, newest=np.datetime64("2024-03-05", "us"))
        assert windows.values.tolist() == [[7.0] * 4] and str(windows.last[0]).startswith("2024-02-26")


def test_week_start_moves_weekly_periods(tmp_path):
    with _daily_store(tmp_path, "2024-01-04", 62) as data:
        grid, client = _grid(data, "1w", "sum", week_start="sunday")
        found = grid.history(client, 100)
        assert str(found.times[0][0]) == "2024-01-07T00:00:00.000000"  # a Sunday
        assert found.values[0].tolist() == [7.0] * found.times[0].size


def test_observed_history_leaves_out_what_fill_made_up(tmp_path):
    with _daily_store(tmp_path, "2024-01-01", 20, skip=(10, 11)) as data:
        grid, client = _grid(data, "1d", "mean")
        filled = grid.history(client, 100)
        observed = grid.history(client, 100, observed=True)
        assert filled.times[0].size == 20 and observed.times[0].size == 18
        gap = {str(np.datetime64("2024-01-11", "us")), str(np.datetime64("2024-01-12", "us"))}
        assert gap <= {str(t) for t in filled.times[0]}
        assert not gap & {str(t) for t in observed.times[0]}


# --- served over HTTP (an in-process runtime on a real panel) ---------------------------------------------


SERVED_POD = """
version: v1
kind: Spicepod
name: portfolio
datasets:
  - {from: file:panel.csv, name: panel, series_column: series, mode: read_write}
models:
  - {from: lightgbm, name: auto_m, datasets: [panel],
     params: {lookback: 8, horizon: 4, lightgbm: {num_boost_round: 30}}}
  - {from: lightgbm, name: lgbm_m, datasets: [panel],
     params: {lookback: 8, horizon: 4, method: lightgbm, lightgbm: {num_boost_round: 30}}}
"""


@pytest.fixture(scope="module")
def served_panel(module_inprocess_factory):
    folder = module_inprocess_factory.new_dir()
    panel = tourism(10)
    lines = ["series,ts,value"]
    for sid, times, values in zip(panel.ids, panel.times, panel.values, strict=True):
        lines += [f"{sid},{str(t)[:10]},{v}" for t, v in zip(times, values, strict=True)]
    lines += [f"short,{str(t)[:10]},{v}" for t, v in zip(panel.times[0][:5], panel.values[0][:5], strict=True)]
    lines += [f"single,{str(panel.times[0][0])[:10]},{panel.values[0][0]}"]
    (folder / "panel.csv").write_text("\n".join(lines) + "\n")
    (folder / "spicepod.yaml").write_text(SERVED_POD)
    return module_inprocess_factory(spicepod=folder / "spicepod.yaml")


def test_predict_names_each_series_method_and_models_list_the_methods(served_panel):
    models = {m["name"]: m for m in served_panel.get_json("/v1/models")}
    auto = models["auto_m"]
    assert auto["series_count"] == 11  # every series with two or more periods, the 5-period one included
    assert set(auto["methods"]) >= {"lightgbm", "seasonal_naive", "naive", "ets", "theta"}
    assert sum(m["series"] for m in auto["methods"].values()) >= 11
    assert "methods" not in models["lgbm_m"] and models["lgbm_m"]["series_count"] == 10
    body = served_panel.get_json("/v1/models/auto_m/predict?series=short&level=80&level=95")
    assert body["method"] and "lightgbm" not in body["method"].split("+")
    assert len(body["prediction"]) == 4 and all(v >= 0 for v in body["intervals"]["95"]["lower"])
    q1 = served_panel.get_json("/v1/models/auto_m/predict?series=Q1")
    post = served_panel.post("/v1/predict", {"predictions": [{"model_name": "auto_m", "series": "Q1"}]}).json()
    assert post["predictions"][0]["method"] == q1["method"]
    assert post["predictions"][0]["prediction"] == q1["prediction"]
    rows = served_panel.get_json("/v1/models/auto_m/forecasts?series=Q1&series=short")
    assert {r["series"]: r["method"] for r in rows} == {"Q1": q1["method"], "short": body["method"]}
    assert "method" not in served_panel.get_json("/v1/models/lgbm_m/predict?series=Q1")


def test_series_statuses_follow_what_the_portfolio_can_forecast(served_panel):
    entries = {e["series"]: e["status"] for e in served_panel.get_json("/v1/models/auto_m/series")}
    assert entries["short"] == "ready" and entries["single"] == "too_short"
    lgbm = {e["series"]: e["status"] for e in served_panel.get_json("/v1/models/lgbm_m/series")}
    assert lgbm["short"] == "too_short"
    response = served_panel.get("/v1/models/auto_m/predict?series=single")
    assert response.status == 400 and "not enough data" in response.json()["error_message"]
