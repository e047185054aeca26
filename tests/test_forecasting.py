"""Frequencies, training, forecasting, persistence and metrics of pipelines.forecasting."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from pipelines.forecasting import FileBoosterModel, TrainedModel, mase, smape, train_model
from pipelines.frequency import Frequency, check_regular, infer_frequency
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
    check_regular(ts, freq, name)
    # Stepping the calendar from the first timestamp reproduces the whole column.
    assert np.array_equal(freq.future(freq.back(ts[0], 1), ts.size), ts)


def test_infer_fixed_and_month_end() -> None:
    hourly = np.arange(us("2024-03-30"), us("2024-04-02"), np.timedelta64(1, "h"))
    assert str(infer_frequency(hourly, "x")) == "1h"
    quarter_hours = np.arange(us("2024-03-30"), us("2024-03-31"), np.timedelta64(15, "m"))
    assert str(infer_frequency(quarter_hours, "x")) == "15min"
    weekly = np.arange(us("2024-01-01"), us("2024-06-01"), np.timedelta64(7, "D"))
    assert str(infer_frequency(weekly, "x")) == "1w"
    month_ends = dates("2023-11-30", "2023-12-31", "2024-01-31", "2024-02-29", "2024-03-31")
    assert str(infer_frequency(month_ends, "x")) == "1mo"
    check_regular(month_ends, Frequency.parse("1mo"), "x")
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
    assert month.back(us("2024-03-01"), 14) == us("2023-01-01")
    assert Frequency.parse("15min").back(us("2024-01-01"), 4) == us("2023-12-31T23:00")
    assert np.array_equal(
        Frequency.parse("1h").future(us("2024-01-01T23:00"), 2), dates("2024-01-02T00:00", "2024-01-02T01:00")
    )


def test_irregular_series_errors() -> None:
    freq = Frequency.parse("1mo")
    gap = dates("2001-01-01", "2001-02-01", "2001-03-01", "2001-05-01", "2001-06-01")
    assert infer_frequency(gap, "sun") == freq
    with pytest.raises(InvalidInput) as err:
        check_regular(gap, freq, "sun")
    assert str(err.value) == (
        "dataset 'sun': the series is irregular at 2001-03-01T00:00:00 -> 2001-05-01T00:00:00 "
        "(expected a step of 1mo)"
    )
    duplicate = dates("2001-01-01", "2001-01-02", "2001-01-02", "2001-01-03")
    with pytest.raises(InvalidInput) as err:
        check_regular(duplicate, Frequency.parse("1d"), "d")
    assert str(err.value) == (
        "dataset 'd': the series is irregular at 2001-01-02T00:00:00 -> 2001-01-02T00:00:00 "
        "(duplicate timestamp; expected a step of 1d)"
    )
    unsorted = dates("2001-01-01", "2001-01-03", "2001-01-02")
    with pytest.raises(InvalidInput, match=r"irregular at 2001-01-01T00:00:00 -> 2001-01-03T00:00:00"):
        check_regular(unsorted, Frequency.parse("1d"), "d")
    ts, values = read_series("woolyrnq")
    with pytest.raises(InvalidInput, match="dataset 'wool': the series is irregular at 1965-04-01T00:00:00"):
        train_model(np.delete(values, 2), np.delete(ts, 2), freq=Frequency.parse("1q"), lookback=8,
                    horizon=4, lightgbm_params=FAST, dataset="wool")


# ----------------------------------------------------------------------------------------- training


def test_missing_values_error() -> None:
    ts, values = read_series("austres")
    values = values.copy()
    values[[10, 40]] = np.nan
    with pytest.raises(InvalidInput) as err:
        train_model(values, ts, freq=Frequency.parse("1q"), lookback=8, horizon=4, lightgbm_params=FAST,
                    dataset="austres")
    assert str(err.value) == (
        "dataset 'austres': missing or non-finite values at 1973-10-01T00:00:00, 1981-04-01T00:00:00"
    )


def test_too_few_rows_error() -> None:
    ts, values = read_series("nile")
    with pytest.raises(InvalidInput) as err:
        train_model(values[:20], ts[:20], freq=Frequency.parse("1y"), lookback=16, horizon=6,
                    lightgbm_params=FAST, dataset="nile")
    assert str(err.value) == "dataset 'nile': 20 rows, fewer than lookback + horizon = 16 + 6 = 22"


def test_weekly_shape_continues_from_newest_row() -> None:
    # 30 weeks and 3 days: the newest row is not the end of a week, so the forecast must start mid-shape.
    shape = np.array([5.0, 5.5, 6.0, 5.5, 5.0, 12.0, 14.0])
    n = 7 * 30 + 3
    ts = np.arange(n) * np.timedelta64(1, "D") + us("2024-01-01")
    noise = np.random.default_rng(0).normal(0.0, 0.1, n)
    values = shape[np.arange(n) % 7] + noise
    model = train_model(values, ts, freq=Frequency.parse("1d"), lookback=14, horizon=7, lightgbm_params={},
                        dataset="weekly")
    forecast = model.forecast(values[-14:], ts[-1], 10)
    expected = shape[np.arange(n, n + 10) % 7]
    assert np.max(np.abs(forecast - expected)) < 0.3
    # Seasonal naive is near-perfect here (its errors are the noise, twice over), so MASE stays near 1.
    assert model.metrics["mase"] < 1.2


@pytest.mark.parametrize("name", ["austres", "us_realgdp"])
def test_trend_is_followed(name: str) -> None:
    ts, values = read_series(name)
    history, actual = values[:-8], values[-8:]
    model = train_model(history, ts[:-8], freq=Frequency.parse("1q"), lookback=16, horizon=8,
                        lightgbm_params={}, dataset=name)
    forecast = model.forecast(history[-16:], ts[-9], 8)
    # Not flat at the last level: the last forecast is at least half the recent trend above it.
    recent_step = (history[-1] - history[-17]) / 16
    assert forecast[-1] > history[-1] + 0.5 * 8 * recent_step
    assert np.all(np.diff(forecast) > 0)
    if name == "austres":
        assert mase(actual, forecast, history, 4) < 1.0
    else:
        # The last 8 quarters of us_realgdp are the 2008-09 recession, where any forecast that follows
        # the trend scores MASE > 1 (a drift of +20 a quarter already gives 1.09); check the claim at
        # the origin before it instead: the 8 quarters up to 2007 Q3.
        ts, values = ts[:-8], values[:-8]
        history, actual = values[:-8], values[-8:]
        model = train_model(history, ts[:-8], freq=Frequency.parse("1q"), lookback=16, horizon=8,
                            lightgbm_params={}, dataset=name)
        forecast = model.forecast(history[-16:], ts[-9], 8)
        assert forecast[-1] > history[-1] + 0.5 * 8 * recent_step
        seasonal_naive = np.resize(history[-4:], 8)
        assert mase(actual, forecast, history, 4) < mase(actual, seasonal_naive, history, 4)


def test_held_out_metrics_are_the_held_out_fit() -> None:
    ts, values = read_series("woolyrnq")
    freq = Frequency.parse("1q")
    model = train_model(values, ts, freq=freq, lookback=8, horizon=4, lightgbm_params=FAST, dataset="wool")
    held = train_model(values[:-4], ts[:-4], freq=freq, lookback=8, horizon=4, lightgbm_params=FAST,
                       dataset="wool")
    forecast = held.forecast(values[-12:-4], ts[-5], 4)
    assert model.metrics == {
        "mase": mase(values[-4:], forecast, values[:-4], 4),
        "smape": smape(values[-4:], forecast),
    }
    assert model.training_rows == values.size
    assert held.training_rows == values.size - 4
    assert 0 < model.metrics["smape"] < 200


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_strategies_return_horizon_values(strategy: str) -> None:
    ts, values = read_series("austres")
    model = train_model(values, ts, freq=Frequency.parse("1q"), lookback=8, horizon=4, strategy=strategy,
                        lightgbm_params=FAST, dataset="austres")
    assert len(model.boosters) == (1 if strategy == "recursive" else 4)
    for horizon in (1, 4):
        forecast = model.forecast(values[-8:], ts[-1], horizon)
        assert forecast.shape == (horizon,) and forecast.dtype == np.float64
        assert np.all(np.isfinite(forecast))
    # Shorter horizons are prefixes of longer ones.
    assert np.array_equal(model.forecast(values[-8:], ts[-1], 2), model.forecast(values[-8:], ts[-1], 4)[:2])
    if strategy == "recursive":
        assert model.forecast(values[-8:], ts[-1], 20).shape == (20,)
    else:
        with pytest.raises(InvalidInput, match="horizon 5 exceeds the maximum of 4"):
            model.forecast(values[-8:], ts[-1], 5)
    with pytest.raises(InvalidInput, match="the window must hold the latest 8 values, got 7"):
        model.forecast(values[-7:], ts[-1], 4)
    with pytest.raises(InvalidInput, match="horizon must be a positive integer"):
        model.forecast(values[-8:], ts[-1], 0)


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_save_load_identical(strategy: str, tmp_path: Path) -> None:
    ts, values = read_series("woolyrnq")
    model = train_model(values, ts, freq=Frequency.parse("1q"), lookback=12, horizon=4, strategy=strategy,
                        lightgbm_params=FAST, dataset="wool")
    model.save(tmp_path / "m")
    loaded = TrainedModel.load(tmp_path / "m")
    assert (loaded.lookback, loaded.horizon, loaded.strategy, str(loaded.freq)) == (12, 4, strategy, "1q")
    assert loaded.metrics == model.metrics and loaded.training_rows == model.training_rows
    for window, last in ((values[-12:], ts[-1]), (values[-20:-8], ts[-9])):
        assert np.array_equal(loaded.forecast(window, last, 4), model.forecast(window, last, 4))


def test_same_data_twice_gives_identical_forecast() -> None:
    ts, values = read_series("sunspots_monthly")
    ts, values = ts[-400:], values[-400:]
    kwargs = dict(freq=Frequency.parse("1mo"), lookback=24, horizon=12, lightgbm_params=FAST, dataset="sun")
    first = train_model(values, ts, **kwargs).forecast(values[-24:], ts[-1], 12)
    second = train_model(values.copy(), ts.copy(), **kwargs).forecast(values[-24:], ts[-1], 12)
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
    forecast = model.forecast(values[-lookback:], np.datetime64("1970-01-01", "us"), 3)
    window = list(values[-lookback:])
    for expected in forecast:
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


def test_a_series_on_the_30th_is_regular_in_every_window_and_continues_on_the_30th() -> None:
    freq = Frequency.parse("1mo")
    series = freq.add(np.datetime64("2021-01-30", "us"), np.arange(36), 30)
    assert [str(t)[:10] for t in series[:3]] == ["2021-01-30", "2021-02-28", "2021-03-30"]
    for start in range(30):  # windows that start on Feb 28, Apr 30, ... are regular too
        window = series[start:start + 6]
        check_regular(window, freq, "thirtieth")
    feb = int(np.flatnonzero(series == np.datetime64("2022-02-28", "us"))[0])
    window = series[feb - 5:feb + 1]  # ends on Feb 28
    future = freq.future(window[-1], 2, freq.anchor(window))
    assert [str(t)[:10] for t in future] == ["2022-03-30", "2022-04-30"]
    ends = freq.add(np.datetime64("2021-01-31", "us"), np.arange(6))
    assert freq.anchor(ends) is None
    assert str(freq.future(ends[-1], 1, freq.anchor(ends))[0])[:10] == "2021-07-31"
