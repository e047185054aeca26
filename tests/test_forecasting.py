"""Frequencies, training, forecasting, persistence and metrics of the forecasting core (in process)."""

from __future__ import annotations

import csv
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from pipelines import row_order
from pipelines.backends import LocalBackend
from pipelines.features import FeatureLayout, undifferenced
from pipelines.forecaster import future_times
from pipelines.frequency import Frequency, infer_frequency
from pipelines.intervals import Calibration, interval_bounds
from pipelines.metrics import mase, smape
from pipelines.model import FileBoosterModel, TrainedModel
from pipelines.row_order import RowOrder
from pipelines.series import SeriesSet
from pipelines.single_row import SingleRowConfig, SingleRowPaths
from pipelines.training import chunk_rows, fit, series_stats, train_model, training_set
from spicepod.errors import InvalidInput

DATA = Path(__file__).resolve().parent.parent / "data"
FAST = {"num_boost_round": 60}


def read_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    with (DATA / f"{name}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return (
        np.array([r["ts"] for r in rows], dtype="datetime64[us]"),
        np.array([float(r["value"]) for r in rows], dtype=np.float64),
    )


def dates(*texts: str) -> np.ndarray:
    return np.array(texts, dtype="datetime64[us]")


def us(text: str) -> np.datetime64:
    return np.datetime64(text, "us")


def train(values: np.ndarray, ts: np.ndarray, **kwargs) -> TrainedModel:
    """A single-series model (a panel of one)."""
    return train_model(SeriesSet.single(ts, values), **kwargs)


def forecast(model, window: np.ndarray, last: np.datetime64, horizon: int) -> np.ndarray:
    predicted, _ = model.forecast_windows(np.asarray(window)[None, :], np.array([last]), horizon, [None])
    return predicted[0]


# ------------------------------------------------------------------------------------------ frequency


@pytest.mark.parametrize(
    ("text", "unit", "count", "canonical"),
    [
        ("15min", "min", 15, "15min"),
        ("1h", "h", 1, "1h"),
        ("h", "h", 1, "1h"),
        ("1d", "d", 1, "1d"),
        ("1w", "w", 1, "1w"),
        ("1mo", "mo", 1, "1mo"),
        ("1q", "q", 1, "1q"),
        ("1y", "y", 1, "1y"),
        ("30s", "s", 30, "30s"),
        ("mo", "mo", 1, "1mo"),
    ],
)
def test_parse(text: str, unit: str, count: int, canonical: str) -> None:
    freq = Frequency.parse(text)
    assert (freq.unit, freq.count, str(freq)) == (unit, count, canonical)
    assert Frequency.parse(str(freq)) == freq


def test_forecast_timestamps_are_made_once_per_period_and_cannot_be_changed() -> None:
    """Every model forecasting from one newest period gets the same timestamps, written once and shared
    read-only."""
    freq = Frequency.parse("1mo")
    last = us("2024-01-31")
    future, times = future_times(freq, last, 3)
    assert times == ("2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z")
    assert future.tolist() == [us("2024-02-29"), us("2024-03-31"), us("2024-04-30")]
    again, _ = future_times(freq, us("2024-01-31"), 3)
    assert again is future  # the next model's forecast from the same period
    with pytest.raises(ValueError, match="read-only"):
        future[0] = last
    assert future_times(freq, last, 2)[1] == times[:2]
    assert future_times(Frequency.parse("1d"), last, 1)[1] == ("2024-02-01T00:00:00Z",)


@pytest.mark.parametrize("text", ["", "0h", "1x", "mo1", "-1d", "1.5h", "m", "1 month"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid frequency"):
        Frequency.parse(text)


@pytest.mark.parametrize(
    ("text", "season"),
    [("1h", 24), ("1d", 7), ("1w", 52), ("1mo", 12), ("1q", 4), ("1y", 1), ("15min", 96), ("2h", 12),
     ("5h", 1), ("3mo", 4), ("2w", 26), ("1s", 1), ("1min", 1440)],
)
def test_season(text: str, season: int) -> None:
    assert Frequency.parse(text).season == season


@pytest.mark.parametrize(
    ("name", "expected"),
    [("austres", "1q"), ("nile", "1y"), ("pbs_scripts", "1mo"), ("sunspots_monthly", "1mo"),
     ("us_realgdp", "1q"), ("woolyrnq", "1q")],
)
def test_infer_sample_series(name: str, expected: str) -> None:
    ts, _ = read_series(name)
    freq = infer_frequency(ts, name)
    assert str(freq) == expected
    # Stepping the calendar from the first timestamp reproduces the whole column.
    assert np.array_equal(freq.future(freq.add(ts[0], -1), ts.size), ts)
    assert np.array_equal(freq.steps_between(ts[0], ts), np.arange(ts.size))


def test_infer_fixed_and_month_end() -> None:
    hourly = np.arange(us("2024-03-30"), us("2024-04-02"), np.timedelta64(1, "h"))
    assert str(infer_frequency(hourly, "x")) == "1h"
    quarter_hours = np.arange(us("2024-03-30"), us("2024-03-31"), np.timedelta64(15, "m"))
    assert str(infer_frequency(quarter_hours, "x")) == "15min"
    weekly = np.arange(us("2024-01-01"), us("2024-06-01"), np.timedelta64(7, "D"))
    assert str(infer_frequency(weekly, "x")) == "1w"
    month_ends = dates("2023-11-30", "2023-12-31", "2024-01-31", "2024-02-29", "2024-03-31")
    assert str(infer_frequency(month_ends, "x")) == "1mo"
    quarter_ends = dates("2023-03-31", "2023-06-30", "2023-09-30", "2023-12-31")
    assert str(infer_frequency(quarter_ends, "x")) == "1q"
    with pytest.raises(InvalidInput, match="dataset 'x': need at least 2 timestamps"):
        infer_frequency(dates("2024-01-01"), "x")


def test_future_follows_calendar() -> None:
    month = Frequency.parse("1mo")
    assert np.array_equal(
        month.future(us("2023-11-01"), 3), dates("2023-12-01", "2024-01-01", "2024-02-01")
    )
    assert np.array_equal(
        month.future(us("2024-01-31"), 4), dates("2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31")
    )
    assert month.add(us("2024-01-30T06:00"), 1) == us("2024-02-29T06:00")
    assert np.array_equal(
        Frequency.parse("1q").future(us("2023-10-01"), 3), dates("2024-01-01", "2024-04-01", "2024-07-01")
    )
    assert np.array_equal(
        Frequency.parse("1q").future(us("2023-12-31"), 2), dates("2024-03-31", "2024-06-30")
    )
    assert np.array_equal(
        Frequency.parse("1y").future(us("2024-02-29"), 2), dates("2025-02-28", "2026-02-28")
    )
    assert month.add(us("2024-03-01"), -14) == us("2023-01-01")
    assert Frequency.parse("15min").add(us("2024-01-01"), -4) == us("2023-12-31T23:00")
    assert np.array_equal(
        Frequency.parse("1h").future(us("2024-01-01T23:00"), 2), dates("2024-01-02T00:00", "2024-01-02T01:00")
    )


@pytest.mark.parametrize("text", ["1h", "15min", "2h", "1d", "1w", "2w", "1mo", "3mo", "1q", "1y", "30s", "1min"])
def test_future_positions_are_the_positions_of_the_future_periods(text: str) -> None:
    freq = Frequency.parse(text)
    rng = np.random.default_rng(7)
    # Grid periods off the epoch's step (an origin of 7 s), before and after 1970.
    last = us("1969-12-20") + rng.integers(0, 40 * 366, 50) * np.timedelta64(1, "D") + np.timedelta64(7, "s")
    last = np.asarray(freq.add(last, 0))
    got = freq.future_positions(last, 9)
    want = np.stack([freq.position(freq.future(t, 9)) for t in last])
    assert got.shape == (50, 9) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert (want > 0).any() or freq.season == 1


# ----------------------------------------------------------------------------------------- training


def test_missing_values_error() -> None:
    ts, values = read_series("austres")
    values = values.copy()
    values[[10, 40]] = np.nan
    with pytest.raises(InvalidInput) as err:
        train(values, ts, freq=Frequency.parse("1q"), lookback=8, horizon=4, lightgbm_params=FAST, dataset="austres")
    assert str(err.value) == (
        "dataset 'austres': missing or non-finite values at 1973-10-01T00:00:00Z, 1981-04-01T00:00:00Z"
    )


def test_too_few_rows_error() -> None:
    ts, values = read_series("nile")
    with pytest.raises(InvalidInput) as err:
        train(values[:20], ts[:20], freq=Frequency.parse("1y"), lookback=16, horizon=6, lightgbm_params=FAST,
              dataset="nile")
    assert str(err.value) == "dataset 'nile' has 20 periods, fewer than lookback + horizon = 16 + 6 = 22"


def test_more_backtest_windows_than_the_data_allows_is_an_error() -> None:
    ts, values = read_series("nile")
    with pytest.raises(InvalidInput) as err:
        train(values, ts, freq=Frequency.parse("1y"), lookback=16, horizon=6, backtest_windows=20,
              lightgbm_params=FAST, dataset="nile")
    assert str(err.value) == (
        "dataset 'nile' has 100 periods: backtest_windows=20 with lookback 16 and horizon 6 (recursive) needs at "
        "least 137; lower backtest_windows or lookback"
    )


def test_weekly_shape_continues_from_newest_row() -> None:
    # 30 weeks and 3 days: the newest row is not the end of a week, so the forecast must start mid-shape.
    shape = np.array([5.0, 5.5, 6.0, 5.5, 5.0, 12.0, 14.0])
    n = 7 * 30 + 3
    ts = np.arange(n) * np.timedelta64(1, "D") + us("2024-01-01")
    noise = np.random.default_rng(0).normal(0.0, 0.1, n)
    values = shape[np.arange(n) % 7] + noise
    model = train(values, ts, freq=Frequency.parse("1d"), lookback=14, horizon=7, lightgbm_params={}, dataset="w")
    predicted = forecast(model, values[-14:], ts[-1], 10)
    expected = shape[np.arange(n, n + 10) % 7]
    assert np.max(np.abs(predicted - expected)) < 0.3
    # Seasonal naive is near-perfect here (its errors are the noise, twice over), so MASE stays near 1.
    assert model.metrics["mase"] < 1.2


@pytest.mark.parametrize("name", ["austres", "us_realgdp"])
def test_trend_is_followed(name: str) -> None:
    ts, values = read_series(name)
    history, actual = values[:-8], values[-8:]
    model = train(history, ts[:-8], freq=Frequency.parse("1q"), lookback=16, horizon=8, lightgbm_params={},
                  dataset=name)
    predicted = forecast(model, history[-16:], ts[-9], 8)
    # Not flat at the last level: the last forecast is at least half the recent trend above it.
    recent_step = (history[-1] - history[-17]) / 16
    assert predicted[-1] > history[-1] + 0.5 * 8 * recent_step
    assert np.all(np.diff(predicted) > 0)
    if name == "austres":
        assert mase(actual, predicted, history, 4) < 1.0
    else:
        # The last 8 quarters of us_realgdp are the 2008-09 recession, where any forecast that follows
        # the trend scores MASE > 1; check the claim at the origin before it instead.
        ts, values = ts[:-8], values[:-8]
        history, actual = values[:-8], values[-8:]
        model = train(history, ts[:-8], freq=Frequency.parse("1q"), lookback=16, horizon=8, lightgbm_params={},
                      dataset=name)
        predicted = forecast(model, history[-16:], ts[-9], 8)
        assert predicted[-1] > history[-1] + 0.5 * 8 * recent_step
        seasonal_naive = np.resize(history[-4:], 8)
        assert mase(actual, predicted, history, 4) < mase(actual, seasonal_naive, history, 4)


def test_backtest_metrics_are_the_means_over_rolling_origins() -> None:
    ts, values = read_series("woolyrnq")
    freq, lookback, horizon = Frequency.parse("1q"), 8, 4
    model = train(values, ts, freq=freq, lookback=lookback, horizon=horizon, lightgbm_params=FAST, dataset="wool")
    n = values.size
    scores = []
    # Each origin's model is fit on the data before it; the earliest origin is moved back from n-12 to
    # n-40 so that calibration gets 40 origins.
    for origin, cut in ((n - 4, n - 4), (n - 8, n - 8), (n - 40, n - 40)):
        held = train(values[:cut], ts[:cut], freq=freq, lookback=lookback, horizon=horizon, lightgbm_params=FAST,
                     dataset="wool", backtest_windows=1)
        predicted = forecast(held, values[origin - lookback:origin], ts[origin - 1], horizon)
        actual = values[origin:origin + horizon]
        scores.append((mase(actual, predicted, values[:origin], 4), smape(actual, predicted)))
    assert model.metrics["mase"] == pytest.approx(np.mean([m for m, _ in scores]), rel=1e-12)
    assert model.metrics["smape"] == pytest.approx(np.mean([s for _, s in scores]), rel=1e-12)
    assert model.metrics["backtest_windows"] == 3 and model.metrics["backtest_series"] == 1
    # 40 origins, each scored on the steps whose actual exists: step k has 40 - (k - 1) errors.
    assert model.calibration.seen == [40, 39, 38, 37]
    assert model.metrics["calibration_errors"] == 37
    assert model.training_rows == n - lookback


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_strategies_return_horizon_values(strategy: str) -> None:
    ts, values = read_series("austres")
    model = train(values, ts, freq=Frequency.parse("1q"), lookback=8, horizon=4, strategy=strategy,
                  lightgbm_params=FAST, dataset="austres")
    assert len(model.boosters) == (1 if strategy == "recursive" else 4)
    for horizon in (1, 4):
        predicted = forecast(model, values[-8:], ts[-1], horizon)
        assert predicted.shape == (horizon,) and predicted.dtype == np.float64
        assert np.all(np.isfinite(predicted))
    # Shorter horizons are prefixes of longer ones.
    assert np.array_equal(forecast(model, values[-8:], ts[-1], 2), forecast(model, values[-8:], ts[-1], 4)[:2])
    assert model.max_horizon == (1000 if strategy == "recursive" else 4)


def test_auto_picks_the_strategy_with_the_lower_backtest_mase() -> None:
    ts, values = read_series("woolyrnq")
    model = train(values, ts, freq=Frequency.parse("1q"), lookback=8, horizon=4, strategy="auto",
                  lightgbm_params=FAST, dataset="wool")
    scores = model.metrics["strategy_mase"]
    assert set(scores) == {"recursive", "direct"}
    assert model.strategy == min(scores, key=scores.get)
    assert model.metrics["mase"] == scores[model.strategy]


def test_a_batch_of_windows_forecasts_each_like_one_at_a_time() -> None:
    ts, values = read_series("sunspots_monthly")
    model = train(values[-600:], ts[-600:], freq=Frequency.parse("1mo"), lookback=24, horizon=6,
                  lightgbm_params=FAST, dataset="sun")
    origins = [300, 450, 599]
    windows = np.stack([values[-600:][o - 24:o] for o in origins])
    last = np.array([ts[-600:][o - 1] for o in origins])
    batch, _ = model.forecast_windows(windows, last, 6, [None] * 3)
    for row, (window, stamp) in enumerate(zip(windows, last, strict=True)):
        assert np.array_equal(batch[row], forecast(model, window, stamp, 6))


def test_training_rows_are_the_rows_the_forecast_computes() -> None:
    """Parity: the features a forecast computes for a window are exactly that window's training row."""
    ts, values = read_series("woolyrnq")
    freq = Frequency.parse("1q")
    series = SeriesSet.single(ts, values)
    layout = FeatureLayout(12, freq.season)
    stats = series_stats(series, freq.season)
    x, y, _ = training_set(layout, series, stats, freq, 1, cap=10_000)
    assert x.shape == (values.size - 12, layout.width)
    for start in (0, 37, values.size - 13):
        window = values[start:start + 12]
        target = start + 12
        position = freq.position(freq.future(ts[target - 1], 1))
        row, base, sd = layout.rows(window[None, :], stats.mean[:1], stats.std[:1], position, 1)
        assert np.array_equal(row[0].astype(np.float32), x[start])
        assert np.float32((values[target] - base[0]) / sd[0]) == y[start]


def test_differenced_panel_forecasts_from_its_training_rows() -> None:
    """Parity with seasonal differencing on a panel: the row a forecast computes from a window of values is
    that window's training row (built from the changes), and the forecast is the booster's answer to that
    row mapped back to a value."""
    ts, values = read_series("woolyrnq")
    freq, lookback, lag = Frequency.parse("1q"), 12, 4
    panel = SeriesSet(["a", "b"], [ts, ts], [values, values * 2.0 + 100.0])
    cuts = {"a": values.size, "b": values.size}
    layout = FeatureLayout(lookback, freq.season)
    model = fit(LocalBackend(panel), cuts, layout, freq, 1, "direct", {"num_boost_round": 20}, lag=lag)
    assert model.differencing == lag and model.window_length == lookback + lag
    x, y, _ = chunk_rows(panel, cuts, layout, freq, 1, 10_000, lag)
    per_series = values.size - lag - lookback
    assert x.shape == (2 * per_series, layout.width)
    for i, sid in enumerate(panel.ids):
        series = panel.values[i]
        for start in (0, 41, per_series - 1):
            window = series[start:start + lookback + lag]  # what forecast_windows reads
            target = start + lookback + lag
            changes = window[lag:] - window[:-lag]
            mean, std = model.stats.lookup([sid], changes[None, :])
            position = freq.position(freq.future(ts[target - 1], 1))
            row, base, sd = layout.rows(changes[None, :], mean, std, position, 1)
            assert np.array_equal(row[0].astype(np.float32), x[i * per_series + start])
            assert np.float32((series[target] - series[target - lag] - base[0]) / sd[0]) == y[i * per_series + start]
            predicted, _ = model.forecast_windows(window[None, :], np.array([ts[target - 1]]), 1, [sid])
            expected = model.boosters[0].predict(row, num_threads=1) * sd + base + window[-lag]
            assert np.array_equal(predicted[0], expected)


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_save_load_identical(strategy: str, tmp_path: Path) -> None:
    ts, values = read_series("woolyrnq")
    model = train(values, ts, freq=Frequency.parse("1q"), lookback=12, horizon=4, strategy=strategy,
                  lightgbm_params=FAST, dataset="wool")
    model.save(tmp_path / "m")
    loaded = TrainedModel.load(tmp_path / "m")
    assert (loaded.lookback, loaded.horizon, loaded.strategy, str(loaded.freq)) == (12, 4, strategy, "1q")
    assert loaded.metrics == model.metrics and loaded.training_rows == model.training_rows
    assert loaded.calibration.seen == model.calibration.seen
    for a, b in zip(loaded.calibration.errors, model.calibration.errors, strict=True):
        assert np.array_equal(a, b.astype(np.float32))
    for window, last in ((values[-12:], ts[-1]), (values[-20:-8], ts[-9])):
        assert np.array_equal(forecast(loaded, window, last, 4), forecast(model, window, last, 4))


def test_same_data_twice_gives_identical_forecast() -> None:
    ts, values = read_series("sunspots_monthly")
    ts, values = ts[-400:], values[-400:]
    kwargs = dict(freq=Frequency.parse("1mo"), lookback=24, horizon=12, lightgbm_params=FAST, dataset="sun")
    first = forecast(train(values, ts, **kwargs), values[-24:], ts[-1], 12)
    second = forecast(train(values.copy(), ts.copy(), **kwargs), values[-24:], ts[-1], 12)
    assert np.array_equal(first, second)


def test_file_booster_model(tmp_path: Path) -> None:
    _, values = read_series("nile")
    lookback = 5
    lags = np.lib.stride_tricks.sliding_window_view(values, lookback)[:-1]
    params = {"objective": "regression", "num_leaves": 7, "min_data_in_leaf": 5, "verbosity": -1,
              "deterministic": True, "num_threads": 1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(lags, values[lookback:], params=params), num_boost_round=30)
    path = tmp_path / "user_model.txt"
    booster.save_model(str(path))

    model = FileBoosterModel.load(path, lookback)
    predicted = forecast(model, values[-lookback:], np.datetime64("1970-01-01", "us"), 3)
    window = list(values[-lookback:])
    for expected in predicted:
        step = booster.predict(np.array([window[-lookback:]]))[0]
        assert step == expected
        window.append(step)
    with pytest.raises(InvalidInput, match="takes 5 features, but lookback is 6"):
        FileBoosterModel.load(path, 6)
    with pytest.raises(InvalidInput, match="cannot load LightGBM model"):
        FileBoosterModel.load(tmp_path / "missing.txt", lookback)


# ------------------------------------------------------------------------------------------ metrics


def test_metric_helpers() -> None:
    history = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    # Seasonal naive MAE with season 2: mean(|4-1|, |7-2|, |11-4|) = 5.
    assert mase(np.array([12.0, 14.0]), np.array([10.0, 10.0]), history, 2) == pytest.approx(3.0 / 5.0)
    # Too short for season 12: falls back to season 1, MAE of the steps = 2.5.
    assert mase(np.array([12.0]), np.array([10.0]), history, 12) == pytest.approx(2.0 / 2.5)
    assert math.isnan(mase(np.array([1.0]), np.array([1.0]), np.ones(5), 1))
    assert smape(np.array([100.0, 0.0]), np.array([50.0, 0.0])) == pytest.approx(100.0 * (100.0 / 150.0) / 2)
    assert smape(np.array([1.0]), np.array([0.0])) == 200.0
    assert smape(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0.0


# ------------------------------------------------------------------------------------------ intervals


def test_conformal_intervals_cover_about_their_level_on_known_noise() -> None:
    """Gaussian noise around a weekly shape: about L% of later values fall in the L% interval."""
    rng = np.random.default_rng(11)
    n, train_part, lookback, horizon = 900, 600, 14, 7
    ts = np.arange(n) * np.timedelta64(1, "D") + us("2023-01-01")
    values = 100.0 + 10.0 * np.array([0, 2, 3, 1, -1, 5, 4])[np.arange(n) % 7] + rng.normal(0.0, 3.0, n)
    model = train(values[:train_part], ts[:train_part], freq=Frequency.parse("1d"), lookback=lookback,
                  horizon=horizon, lightgbm_params=FAST, dataset="noise")
    assert model.calibration.count >= 30
    origins = np.arange(train_part, n - horizon + 1)
    windows = np.stack([values[o - lookback:o] for o in origins])
    predicted, spread = model.forecast_windows(windows, ts[origins - 1], horizon, [None] * origins.size)
    actual = np.stack([values[o:o + horizon] for o in origins])
    bounds = interval_bounds(predicted, spread, model.calibration, [80.0, 95.0])
    coverage = {level: float(np.mean((lower <= actual) & (actual <= upper))) for level, (lower, upper)
                in bounds.items()}
    # A wide band around the nominal rate: ~40 calibration errors per step put the 80% quantile within
    # about +-15% of the true one; the benchmark reports the figures over many series.
    assert 0.66 <= coverage[80.0] <= 0.95, coverage
    assert 0.86 <= coverage[95.0] <= 1.0, coverage
    assert np.all(bounds[95.0][0] <= bounds[80.0][0]) and np.all(bounds[80.0][1] <= bounds[95.0][1])


def test_half_widths_follow_conformal_ranks() -> None:
    calibration = Calibration([np.arange(1.0, 20.0), np.arange(2.0, 21.0)])  # 19 errors per step
    # Level 80: the ceil(20 * 0.8) = 16th smallest error; level 95: the 19th (the largest).
    assert calibration.half_widths(80.0, 2).tolist() == [16.0, 17.0]
    assert calibration.half_widths(95.0, 2).tolist() == [19.0, 20.0]
    # Beyond the calibrated steps: the last width, widened by sqrt(step / steps); never narrower.
    widths = calibration.half_widths(80.0, 4)
    assert widths[2] == pytest.approx(17.0 * math.sqrt(3 / 2)) and widths[3] == pytest.approx(17.0 * math.sqrt(2))
    assert calibration.count == 19


def test_a_panel_differences_seasonal_series_unless_too_short_to_backtest_it() -> None:
    ts, values = read_series("woolyrnq")
    freq = Frequency.parse("1q")
    panel = SeriesSet(["a", "b"], [ts, ts], [values, values * 2.0])
    model = train_model(panel, freq=freq, lookback=8, horizon=4, lightgbm_params=FAST, dataset="wool")
    assert model.differencing == 4 and model.window_length == 12
    short = SeriesSet(["a", "b"], [ts[:25], ts[:25]], [values[:25], values[:25] * 2.0])
    model = train_model(short, freq=freq, lookback=8, horizon=4, lightgbm_params=FAST, dataset="wool")
    assert model.differencing == 0 and model.window_length == 8  # 25 - 3 x 4 < 8 + 4 + 4
    single = train_model(SeriesSet.single(ts, values), freq=freq, lookback=8, horizon=4, lightgbm_params=FAST,
                         dataset="wool")
    assert single.differencing == 0


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_one_window_forecasts_through_the_single_row_path_bit_for_bit(strategy: str, monkeypatch) -> None:
    """A single window is predicted row by row through LightGBM's single-row fast path: the same bits as
    Booster.predict (the fallback where LightGBM has no such path), and as the window forecast in a batch."""
    ts, values = read_series("sunspots_monthly")
    ts, values = ts[-400:], values[-400:]
    model = train(values, ts, freq=Frequency.parse("1mo"), lookback=24, horizon=6, strategy=strategy,
                  lightgbm_params=FAST, dataset="sun")
    assert model.layout.use_position and model.layout.use_season_lag
    origins = list(range(24, 400, 7))
    windows = np.stack([values[o - 24:o] for o in origins])
    last = ts[np.array(origins) - 1]
    batch, spreads = model.forecast_windows(windows, last, 6, [None] * len(origins))
    fast = np.stack([forecast(model, w, t, 6) for w, t in zip(windows, last, strict=True)])
    # Each window's spread (what its intervals are scaled by) is the batch's too.
    alone = [model.forecast_windows(w[None, :], t[None], 6, [None])[1] for w, t in zip(windows, last, strict=True)]
    assert np.concatenate(alone).tobytes() == spreads.tobytes() and spreads.shape == (len(origins),)
    assert all(isinstance(c, SingleRowConfig) for c in model._single_rows.get())
    with ThreadPoolExecutor(4) as pool:  # each forecast reads its own row: threads may share the booster
        together = np.stack(list(pool.map(lambda i: forecast(model, windows[i], last[i], 6), range(len(origins)))))
    assert together.tobytes() == fast.tobytes()
    # As where LightGBM has no single-row path: each step through Booster.predict.
    monkeypatch.setattr(SingleRowConfig, "made", classmethod(lambda cls, booster, width: None))
    model._single_rows = SingleRowPaths(model.boosters, model.layout.width)
    assert model._single_rows.get() == list(model.boosters)
    fallback = np.stack([forecast(model, w, t, 6) for w, t in zip(windows, last, strict=True)])
    assert fast.tobytes() == batch.tobytes() == fallback.tobytes()


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_a_batch_goes_through_lightgbm_sorted_by_its_key_features_with_the_same_bits(strategy: str,
                                                                                     monkeypatch) -> None:
    """A batch of ORDERED_ROWS rows or more is predicted in the order of its boosters' highest-gain features:
    every forecast the same bits as in the order the windows came, and as each window alone."""
    ts, values = read_series("sunspots_monthly")
    ts, values = ts[-600:], values[-600:]
    model = train(values, ts, freq=Frequency.parse("1mo"), lookback=24, horizon=6, strategy=strategy,
                  lightgbm_params=FAST, dataset="sun")
    origins = np.arange(24, 600)
    windows = np.stack([values[o - 24:o] for o in origins])
    last, ids = ts[origins - 1], [None] * origins.size
    orders: list[np.ndarray] = []
    rows = RowOrder.rows
    monkeypatch.setattr(RowOrder, "rows", lambda self, x: orders.append(rows(self, x)) or orders[-1])
    batch, _ = model.forecast_windows(windows, last, 6, ids)
    assert len(orders) == 6  # one LightGBM call a step
    for order in orders:  # a permutation of the rows, not the order they came in
        assert np.array_equal(np.sort(order), np.arange(origins.size))
        assert not np.array_equal(order, np.arange(origins.size))
    monkeypatch.setattr(row_order, "ORDERED_ROWS", origins.size + 1)
    as_they_came, _ = model.forecast_windows(windows, last, 6, ids)
    assert orders[-1] is None
    assert batch.tobytes() == as_they_came.tobytes()
    alone = np.stack([forecast(model, windows[i], last[i], 6) for i in range(0, origins.size, 50)])
    assert alone.tobytes() == batch[::50].tobytes()


def test_the_row_order_is_by_bucket_of_the_highest_gain_feature_then_by_the_second() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 5))
    params = {"objective": "regression", "verbosity": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, 10.0 * x[:, 2] + x[:, 4], params=params), num_boost_round=30)
    order = RowOrder(booster)
    assert order.features == (2, 4)
    rows = order.rows(x)
    bucket = np.searchsorted(np.sort(x[:, 2]), x[rows, 2]) * row_order.BUCKETS // len(x)
    assert np.array_equal(bucket, np.sort(bucket)) and set(bucket) == set(range(row_order.BUCKETS))
    for b in range(row_order.BUCKETS):  # inside a bucket: by the second feature
        second = x[rows[bucket == b], 4]
        assert np.array_equal(second, np.sort(second))
    assert np.array_equal(order.predict(booster, x, 1), booster.predict(x, num_threads=1))
    assert order.rows(x[:row_order.ORDERED_ROWS - 1]) is None  # too few to gain from the sort
    flat = lgb.train(params, lgb.Dataset(x, np.ones(len(x)), params=params), num_boost_round=3)
    assert RowOrder(flat).features == () and RowOrder(flat).rows(x) is None  # no splits: nothing to sort by


@pytest.mark.parametrize(("lag", "horizon"), [(1, 5), (4, 3), (4, 4), (7, 14), (12, 30)])
def test_undifferencing_adds_each_change_to_the_value_a_season_before_as_a_loop_over_steps(lag, horizon) -> None:
    rng = np.random.default_rng(lag * 100 + horizon)
    season, changes = rng.normal(size=(3, lag)) * 1e3, rng.normal(size=(3, horizon)) * 10.0
    changes[0, horizon // 2] = np.nan  # a NaN change spoils that position's later seasons only
    expected = np.concatenate([season, np.empty_like(changes)], axis=1)
    for k in range(horizon):
        expected[:, lag + k] = changes[:, k] + expected[:, k]
    assert undifferenced(season, changes).tobytes() == expected.tobytes()


def test_a_booster_of_several_values_a_row_is_left_to_booster_predict() -> None:
    """The single-row path writes one value a row: a booster giving more (a multiclass model) never takes it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    params = {"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, rng.integers(0, 3, 300), params=params), num_boost_round=3)
    assert SingleRowConfig.made(booster, 4) is None
    assert isinstance(SingleRowConfig.made(lgb.train({**params, "objective": "regression", "num_class": 1},
                                                     lgb.Dataset(x, x[:, 0]), num_boost_round=3), 4),
                      SingleRowConfig)
