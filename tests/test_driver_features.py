"""The driver columns of the feature transform, value by value: calendar fields, holidays, categories, and
the same columns whether a row is built for training or for a forecast."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.drivers import Covariate, Drivers, DriverValues, FutureDrivers, HolidayCalendar, calendar_field
from pipelines.frequency import Frequency
from spicepod import InvalidInput

DAILY = Frequency.parse("1d")


def stamps(*texts: str) -> np.ndarray:
    return np.array(texts, dtype="datetime64[us]")


@pytest.mark.parametrize(("name", "expected"), [
    ("minute", [0, 45, 30]),
    ("hour", [0, 13, 23]),
    ("day_of_week", [3, 3, 6]),  # Thursday, Thursday, Sunday (Monday is 0)
    ("day_of_month", [1, 31, 3]),
    ("day_of_year", [1, 366, 3]),
    ("week_of_year", [1, 53, 53]),  # ISO: 2015-01-01 is in week 1; 2021-01-03 is in 2020's week 53
    ("month", [1, 12, 1]),
    ("quarter", [1, 4, 1]),
])
def test_calendar_fields(name, expected):
    ts = stamps("2015-01-01T00:00", "2020-12-31T13:45", "2021-01-03T23:30")
    assert calendar_field(name, ts).tolist() == expected


def test_holidays_count_the_period_and_measure_the_distance_to_the_nearest():
    us = HolidayCalendar("US")
    starts = stamps("2015-07-04", "2015-07-02", "2015-07-06", "2015-06-01", "2015-12-20")
    count, distance = us.features(starts, np.asarray(DAILY.add(starts, 1)))
    assert count.tolist() == [1, 0, 0, 0, 0]
    # Independence Day is 2015-07-04 (observed on Friday the 3rd: the package lists both); Memorial Day
    # 2015-05-25; Christmas 2015-12-25.
    assert distance.tolist() == [0, 1, -2, -7, 5]
    month = stamps("2015-07-01")
    count, _ = us.features(month, np.asarray(Frequency.parse("1mo").add(month, 1)))
    assert count.tolist() == [2]  # a monthly period holds both July holidays


def test_an_unknown_country_or_subdivision_is_refused():
    with pytest.raises(InvalidInput, match="holidays: unknown country 'XX'"):
        HolidayCalendar("XX")
    with pytest.raises(InvalidInput, match="holidays: unknown subdivision 'ZZ' of country 'AU'"):
        HolidayCalendar("AU", "ZZ")


def test_categories_learnt_at_training_and_an_unseen_one_is_missing():
    drivers = Drivers([Covariate("kind", categorical=True)], static=["region"])
    drivers.learn(DriverValues({"kind": [np.array(["b", "a", None], dtype=object)]}, {"region": ["north"]}))
    assert drivers.categories == {"kind": ["a", "b"], "region": ["north"]}
    codes = drivers.encode("kind", np.array(["a", "b", "c", None], dtype=object))
    assert codes[:2].tolist() == [0.0, 1.0] and np.isnan(codes[2:]).all()
    # 1, 1.0 and "1" are one category, whichever way it arrived
    flags = Drivers([Covariate("flag", categorical=True)])
    flags.learn(DriverValues({"flag": [np.array([1, 0, 1.0], dtype=object)]}, {}))
    assert flags.encode("flag", np.array(["1", 0.0, True], dtype=object)).tolist()[:2] == [1.0, 0.0]


def test_remembered_codes_are_the_codes_of_each_value_however_often_and_in_whatever_type_it_comes():
    from decimal import Decimal

    flags = Drivers([Covariate("flag", categorical=True)])
    flags.learn(DriverValues({"flag": [np.array([1, 0, 1.5, True, "x", Decimal("2.50")], dtype=object)]}, {}))
    assert flags.categories["flag"] == ["0", "1", "1.5", "2.50", "true", "x"]
    raw = np.array([[1, True, 1.0, "1", None, float("nan")],
                    [Decimal("2.5"), Decimal("2.50"), 1.5, 0, "x", "y"]], dtype=object)
    expected = [[1.0, 4.0, 1.0, 1.0, np.nan, np.nan],
                [np.nan, 3.0, 2.0, 0.0, 5.0, np.nan]]  # Decimal("2.5") == Decimal("2.50"), not one category
    for _ in range(3):  # the first call works each code out, later ones find it remembered
        np.testing.assert_array_equal(flags.encode("flag", raw), expected)
    np.testing.assert_array_equal(flags.encode("flag", raw[::-1, ::-1]), np.array(expected)[::-1, ::-1])
    unhashable = np.empty(3, dtype=object)
    unhashable[:] = [["x"], "x", True]
    np.testing.assert_array_equal(flags.encode("flag", unhashable), [np.nan, 5.0, 4.0])
    # Learning again forgets what was remembered
    flags.learn(DriverValues({"flag": [np.array(["0"], dtype=object)]}, {}))
    assert flags.encode("flag", np.array([True, "x"], dtype=object)).tolist() == [4.0, 5.0]
    flags.learn(DriverValues({"flag": [np.array(["a"], dtype=object)]}, {}))
    assert flags.encode("flag", np.array([True, "a"], dtype=object)).tolist() == [5.0, 4.0]  # "a" sorts before "true"


def test_training_rows_and_forecast_rows_have_the_same_driver_columns():
    drivers = Drivers([Covariate("temp"), Covariate("promo", True), Covariate("visitors", known="past")],
                      calendar=["day_of_week"], holidays=HolidayCalendar("US"))
    times = np.asarray(DAILY.add(np.datetime64("2015-06-25", "us"), np.arange(20)))
    temp = np.linspace(10, 29, 20)
    promo = np.array([i % 3 == 0 for i in range(20)], dtype=object).astype(int).astype(object)
    visitors = np.arange(20, dtype=np.float64) * 10
    values = DriverValues({"temp": [temp], "promo": [promo], "visitors": [visitors]}, {})
    drivers.learn(values)
    encoded, attributes = drivers.encode_series(values, 0)
    targets = np.array([12, 13, 14])  # step 3 after a window ending at index 11... for a direct model
    training = drivers.series_block(times, encoded, attributes, targets, step=3, freq=DAILY)
    # The same rows as forecasts: windows ending at indices 9, 10, 11, each predicting its third step.
    ends = targets - 3
    inputs = FutureDrivers(
        {"temp": np.stack([temp[e + 1:e + 4] for e in ends]), "promo": np.stack([promo[e + 1:e + 4] for e in ends])},
        {"visitors": visitors[ends]}, {})
    forecast = drivers.forecast_steps(inputs, times[ends], 3, DAILY)[:, 2]
    np.testing.assert_array_equal(training, forecast)
    assert drivers.names() == ["temp", "promo", "visitors_latest", "calendar_day_of_week", "holiday_count",
                               "holiday_distance"]
    # 2015-07-07 (index 12) is a Tuesday, three days after Independence Day; visitors as of the window's end
    assert training[0].tolist() == [temp[12], 1.0, visitors[9], 1.0, 0.0, -3.0]


def test_arimax_competes_with_numeric_covariates_known_ahead_and_serves_with_them():
    """arimax (AutoARIMA with the covariates as regressors) is a candidate of a portfolio with numeric
    covariates known ahead; a series it serves is forecast from the window's covariates and the future ones."""
    import csv
    from pathlib import Path

    from pipelines.methods import arimax_forecast, history_length
    from pipelines.series import SeriesSet
    from pipelines.training import train_model

    path = Path(__file__).resolve().parent.parent / "data" / "covariates" / "seatbelts.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))[:180]
    times = np.array([r["month"] + "-01" for r in rows], dtype="datetime64[us]")
    killed = np.array([float(r["DriversKilled"]) for r in rows])
    kms = np.array([float(r["kms"]) for r in rows])
    petrol = np.array([float(r["PetrolPrice"]) for r in rows])
    cut, h = 168, 12
    series = SeriesSet([None], [times[:cut]], [killed[:cut]], DriverValues({"kms": [kms], "petrol": [petrol]}, {}))
    monthly = Frequency.parse("1mo")
    model = train_model(series, method="auto", bounds="none", freq=monthly, lookback=12, horizon=h,
                        backtest_windows=1, lightgbm_params={"num_boost_round": 20}, dataset="seatbelts",
                        drivers=Drivers([Covariate("kms"), Covariate("petrol")]))
    assert model.metrics["methods"]["arimax"]["mase"] > 0
    assert model.regressors == ["kms", "petrol"]
    model.plans = {None: ("arimax",)}  # served by arimax alone, whatever the backtest chose
    length = model.window_length
    keep = history_length(12)
    x = np.column_stack([kms, petrol])
    inputs = FutureDrivers({"kms": kms[None, cut:cut + h], "petrol": petrol[None, cut:cut + h]}, {}, {},
                           {"kms": kms[None, cut - length:cut], "petrol": petrol[None, cut - length:cut]})
    predicted, _ = model.forecast_windows(killed[None, cut - length:cut], times[cut - 1:cut], h, [None], inputs)
    expected = arimax_forecast(killed[cut - keep:cut], x[cut - keep:cut], x[cut:cut + h], 12)
    np.testing.assert_allclose(predicted[0], expected, rtol=1e-9)
    # Without the covariates' history it cannot fit: the series gets its fallback (seasonal naive) forecast.
    bare, _ = model.forecast_windows(killed[None, cut - length:cut], times[cut - 1:cut], h, [None],
                                     FutureDrivers(inputs.future, {}, {}))
    np.testing.assert_array_equal(bare[0], killed[cut - 12:cut])
