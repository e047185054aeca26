"""What drivers are worth: forecast accuracy with and without them, against the peers a user would pick, on
two real series with drivers (data/covariates/), their intervals' coverage, and what they cost.

(a) Rolling origins at the end of each series, a horizon apart (4 on Chicago; 8 on the monthly series,
    whose 12 points an origin are few), each model trained on the points before its origin with the
    drivers' actual values after it (a forecast with perfect future drivers). MASE (mean over origins)
    of flightcast with drivers (`method: auto`, the product default, and `lightgbm`), flightcast without
    them, mlforecast LightGBM and statsforecast AutoARIMA with the same drivers (`X_df`, set up as a user
    would: lags, date features, a holiday flag), and seasonal naive.
    - Chicago 'L' ridership, daily, h=14: weather and five teams' home games (flags), day of week, month,
      day of year, US holidays. The latest TRAIN_DAYS days before each origin are trained on (AutoARIMA,
      with a dozen regressors, on the latest year: two minutes a fit on three years).
    - UK drivers killed, monthly, h=12: distance driven, petrol price, the seat-belt law (a flag), month.
(b) Coverage of flightcast's 80% and 95% intervals with drivers over every held-out point.
(c) Cost, in this process: training with drivers against without; a LightGBM forecast with drivers
    against one without, and an explained forecast (explain_windows) against a plain one.

Run: .venv/bin/python -m bench.bench_drivers      (BENCH_TINY=1: one origin, short histories, no peers)
"""

from __future__ import annotations

import csv
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from bench.common import DATA, header, median, ms, ratio_line, seasonal_naive, size, table, time_calls, use_peers
from pipelines.drivers import Covariate, Drivers, DriverValues, FutureDrivers, HolidayCalendar
from pipelines.frequency import Frequency
from pipelines.intervals import interval_bounds
from pipelines.metrics import mase
from pipelines.series import SeriesSet
from pipelines.training import train_model

LEVELS = (80.0, 95.0)
TRAIN_DAYS = size(3 * 365, 150)  # Chicago: the latest three years before an origin (the whole 15 are slow)
PARAMS = size({}, {"num_boost_round": 20})
TIMING_RUNS = size(30, 3)
BACKTEST_WINDOWS = size(3, 1)  # tiny: one origin (the fits of arimax take most of the run)


@dataclass
class DataSet:
    """One series with its drivers, as read from data/covariates/, and how the models take them."""

    name: str
    freq: str
    horizon: int
    lookback: int
    # recursive: direct scored worse with drivers (Chicago 0.497 against 0.427, at ten times the training
    # time; the monthly series 0.889 against 0.867, lightgbm alone)
    strategy: str
    covariates: list[str]
    categorical: set[str]
    calendar: list[str]
    holidays: tuple[str, str | None] | None
    times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="datetime64[us]"))
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    drivers: dict[str, np.ndarray] = field(default_factory=dict)
    origins: int = 4
    train: int | None = None  # periods before an origin trained on (None: all)
    arima_train: int | None = None  # AutoARIMA's share of them: with a dozen regressors it is slow on long ones
    # Peers' settings, as a user of each library would choose them.
    lags: list[int] = field(default_factory=list)
    date_features: list[str] = field(default_factory=list)

    @property
    def frequency(self) -> Frequency:
        return Frequency.parse(self.freq)

    def holiday_flags(self, times: np.ndarray) -> np.ndarray:
        """1 on a public holiday (what a peer's user adds as a column; flightcast derives its own)."""
        if self.holidays is None:
            return np.zeros(times.size)
        count, _ = HolidayCalendar(*self.holidays).features(times, times + np.timedelta64(1, "D"))
        return (count > 0).astype(np.float64)


def read(path_name: str, time_column: str, target: str, dataset: DataSet) -> DataSet:
    with (DATA / "covariates" / path_name).open(newline="") as f:
        rows = list(csv.DictReader(f))
    stamps = [r[time_column] if len(r[time_column]) > 7 else r[time_column] + "-01" for r in rows]
    dataset.times = np.array(stamps, dtype="datetime64[D]").astype("datetime64[us]")
    dataset.values = np.array([float(r[target]) for r in rows])
    dataset.drivers = {c: np.array([float(r[c]) for r in rows]) for c in dataset.covariates}
    return dataset


def datasets() -> list[DataSet]:
    games = ["Bulls_Home", "Bears_Home", "Blackhawks_Home", "WhiteSox_Home", "Cubs_Home"]
    chicago = read("chicago_ridership.csv", "date", "ridership", DataSet(
        "chicago", "1d", 14, 28, "recursive",
        ["temp_min", "temp", "temp_max", "percip", "weather_rain", "weather_snow", *games], set(games),
        ["day_of_week", "month", "day_of_year"], ("US", None), train=TRAIN_DAYS, arima_train=365,
        lags=[1, 2, 7, 14, 21, 28], date_features=["dayofweek", "month", "dayofyear"]))
    seatbelts = read("seatbelts.csv", "month", "DriversKilled", DataSet(
        "seatbelts", "1mo", 12, 24, "recursive", ["kms", "PetrolPrice", "law"], {"law"}, ["month"], None, origins=8,
        train=size(None, 84),  # tiny: the latest seven years (the fits of arimax take most of the run)
        lags=[1, 2, 3, 12], date_features=["month"]))
    return [chicago, seatbelts]


# ------------------------------------------------------------------------------------------ one origin


@dataclass
class Origin:
    """A forecast origin of a data set: the history before it and the horizon's actual values after it."""

    data: DataSet
    cut: int

    @property
    def start(self) -> int:
        return 0 if self.data.train is None else max(0, self.cut - self.data.train)

    @property
    def history(self) -> np.ndarray:
        return self.data.values[self.start:self.cut]

    @property
    def actual(self) -> np.ndarray:
        return self.data.values[self.cut:self.cut + self.data.horizon]

    def raw(self, name: str, stop: int) -> np.ndarray:
        values = self.data.drivers[name][self.start:stop]
        return values.astype(object) if name in self.data.categorical else values

    def series(self, with_drivers: bool) -> SeriesSet:
        """The training series; its covariates run on through the horizon (the future rows)."""
        d = self.data
        values = None
        if with_drivers:
            values = DriverValues({c: [self.raw(c, self.cut + d.horizon)] for c in d.covariates}, {})
        return SeriesSet([None], [d.times[self.start:self.cut]], [self.history], values)

    def declared(self) -> Drivers:
        d = self.data
        return Drivers([Covariate(c, c in d.categorical) for c in d.covariates], [], d.calendar,
                       HolidayCalendar(*d.holidays) if d.holidays else None)

    def future(self, length: int = 0) -> FutureDrivers:
        """The covariates of the forecast periods, and the numeric ones over the `length` periods before them
        (what the runtime's grid read gives a forecast)."""
        d = self.data
        history = {}
        for c in d.covariates:
            if c in d.categorical or not length:
                continue
            row = np.full(length, np.nan)
            seen = np.asarray(d.drivers[c][max(0, self.cut - length):self.cut], dtype=np.float64)
            row[length - seen.size:] = seen
            history[c] = row[None, :]
        return FutureDrivers({c: self.raw(c, self.cut + d.horizon)[None, self.cut - self.start:] for c in d.covariates},
                             {}, {}, history)

    def train(self, method: str, with_drivers: bool, params: dict | None = None):
        d = self.data
        return train_model(self.series(with_drivers), method=method, freq=d.frequency, lookback=d.lookback,
                           horizon=d.horizon, strategy=d.strategy, backtest_windows=BACKTEST_WINDOWS, dataset=d.name,
                           drivers=self.declared() if with_drivers else None,
                           lightgbm_params=params if params is not None else PARAMS)

    def inputs(self, model, with_drivers: bool) -> tuple:
        """The forecast_windows arguments of `model` at this origin (a window left-padded when history is short)."""
        length = model.window_length
        window = np.full(length, np.nan)
        tail = self.history[-length:]
        window[length - tail.size:] = tail
        last = self.data.times[self.cut - 1:self.cut]
        return window[None, :], last, self.data.horizon, [None], self.future(length) if with_drivers else None

    def score(self, forecast: np.ndarray) -> float:
        return mase(self.actual, forecast, self.history, self.data.frequency.season)


def origins(data: DataSet) -> list[Origin]:
    count = size(data.origins, 1)
    return [Origin(data, data.values.size - j * data.horizon) for j in range(count, 0, -1)]


# ------------------------------------------------------------------------------------------ peers


def peer_frames(origin: Origin):
    """(training frame, future X_df) in the Nixtla layout, with the drivers and a holiday flag."""
    import pandas as pd

    d = origin.data
    stop = origin.cut + d.horizon
    times = d.times[origin.start:stop]
    frame = pd.DataFrame({"unique_id": "s", "ds": pd.to_datetime(times)})
    for c in d.covariates:
        frame[c] = d.drivers[c][origin.start:stop]
    if d.holidays is not None:
        frame["holiday"] = d.holiday_flags(times)
    past = origin.cut - origin.start
    train = frame.iloc[:past].copy()
    train.insert(2, "y", origin.history)
    return train, frame.iloc[past:].reset_index(drop=True)


def mlforecast_lightgbm(origin: Origin) -> np.ndarray:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean

    d = origin.data
    train, future = peer_frames(origin)
    model = MLForecast(
        models={"lgbm": lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15, verbosity=-1,
                                          random_state=0, n_jobs=1)},
        freq="D" if d.freq == "1d" else "MS", lags=d.lags,
        lag_transforms={1: [RollingMean(window_size=d.frequency.season)]}, date_features=d.date_features)
    model.fit(train, static_features=[])
    out = model.predict(d.horizon, X_df=future)
    return out["lgbm"].to_numpy(dtype=np.float64)


def auto_arima(origin: Origin) -> np.ndarray:
    from statsforecast.models import AutoARIMA

    train, future = peer_frames(origin)
    exog = [c for c in train.columns if c not in ("unique_id", "ds", "y")]
    x, x_future = train[exog].to_numpy(dtype=np.float64), future[exog].to_numpy(dtype=np.float64)
    y = origin.history
    if origin.data.arima_train is not None:
        y, x = y[-origin.data.arima_train:], x[-origin.data.arima_train:]
    keep = independent_columns(x)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        model = AutoARIMA(season_length=origin.data.frequency.season)
        out = model.forecast(y=y, h=origin.data.horizon, X=x[:, keep], X_future=x_future[:, keep])
    return np.asarray(out["mean"], dtype=np.float64)


def independent_columns(x: np.ndarray) -> list[int]:
    """Columns of `x` that are not constant nor a combination of earlier ones: AutoARIMA refuses a rank
    deficient regressor matrix (a team without a home game in the training part, say), so a user drops them."""
    keep: list[int] = []
    for j in range(x.shape[1]):
        trial = np.column_stack([np.ones(x.shape[0]), x[:, keep + [j]]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            keep.append(j)
    return keep


# ------------------------------------------------------------------------------------------ the runs


COLUMNS = ("auto with drivers", "lightgbm with drivers", "auto without", "lightgbm without",
           "mlforecast LightGBM X_df", "AutoARIMA X_df", "seasonal naive")


@dataclass
class Result:
    scores: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    seconds: dict[str, float] = field(default_factory=dict)
    inside: dict[float, int] = field(default_factory=lambda: {lv: 0 for lv in LEVELS})
    points: int = 0
    models: dict = field(default_factory=dict)  # the last origin's flightcast models, for the cost figures

    def mean(self, column: str) -> float:
        values = self.scores[column]
        return float(np.mean(values)) if values else float("nan")


def run(data: DataSet, peers: bool) -> Result:
    result = Result()
    for origin in origins(data):
        for column, method, with_drivers in (("auto with drivers", "auto", True),
                                             ("lightgbm with drivers", "lightgbm", True),
                                             ("auto without", "auto", False), ("lightgbm without", "lightgbm", False)):
            started = time.perf_counter()
            model = origin.train(method, with_drivers)
            result.seconds[column] = result.seconds.get(column, 0.0) + time.perf_counter() - started
            predicted, spread = model.forecast_windows(*origin.inputs(model, with_drivers))
            result.scores[column].append(origin.score(predicted[0]))
            result.models[column] = (model, origin, with_drivers)
            if column == "auto with drivers":
                bounds = interval_bounds(predicted, spread, model.calibration, LEVELS)
                result.points += origin.actual.size
                for level, (low, high) in bounds.items():
                    low, high = model.bounded(low)[0], model.bounded(high)[0]
                    result.inside[level] += int(np.sum((origin.actual >= low) & (origin.actual <= high)))
        season = data.frequency.season
        result.scores["seasonal naive"].append(origin.score(seasonal_naive(origin.history, data.horizon, season)))
        if peers:
            result.scores["mlforecast LightGBM X_df"].append(origin.score(mlforecast_lightgbm(origin)))
            result.scores["AutoARIMA X_df"].append(origin.score(auto_arima(origin)))
    return result


def predict_costs(result: Result) -> tuple[float, float]:
    """Median seconds of the last origin's forecast with drivers over one without, and of an explained
    forecast over a plain one: the `lightgbm` models (`auto` may serve a local method, whose forecast of
    unchanged data is remembered, and would time that instead)."""
    model, origin, _ = result.models["lightgbm with drivers"]
    plain_model, plain_origin, _ = result.models["lightgbm without"]
    args, plain_args = origin.inputs(model, True), plain_origin.inputs(plain_model, False)
    with_drivers = median(time_calls(lambda: model.forecast_windows(*args), TIMING_RUNS))
    without = median(time_calls(lambda: plain_model.forecast_windows(*plain_args), TIMING_RUNS))
    explained = median(time_calls(lambda: model.explain_windows(*args), TIMING_RUNS))
    print(f"{origin.data.name}: one forecast of {origin.data.horizon} steps {ms(without):.2f} ms without drivers, "
          f"{ms(with_drivers):.2f} ms with, {ms(explained):.2f} ms explained")
    return with_drivers / without, explained / with_drivers


def main() -> None:
    header("bench.bench_drivers", "forecasts with drivers against without, and against the peers with drivers")
    peers = use_peers(("pandas", "mlforecast", "statsforecast"))
    results = {}
    for data in datasets():
        started = time.perf_counter()
        results[data.name] = run(data, peers)
        print(f"{data.name}: {len(origins(data))} origins, h={data.horizon}, {time.perf_counter() - started:.1f} s",
              flush=True)
    shown = [c for c in COLUMNS if peers or "X_df" not in c]
    table(["MASE (mean over origins)", *results], [(c, *(r.mean(c) for r in results.values())) for c in shown])
    for name, r in results.items():
        model, _, _ = r.models["lightgbm with drivers"]
        shares = sorted(model.feature_importance().items(), key=lambda kv: -kv[1])[:6]
        print(f"{name}: share of the gain of lightgbm with drivers (last origin): "
              + ", ".join(f"{group} {share:.2f}" for group, share in shares))
        served = r.models["auto with drivers"][0].methods_of([None], None)[0]
        print(f"{name}: auto with drivers serves {served} (last origin)")
    for name, r in results.items():
        auto, plain = r.mean("auto with drivers"), r.mean("auto without")
        ratio_line(f"{name}: MASE auto with drivers / without", auto / plain, "< 1", auto < plain)
        lgbm, lgbm_plain = r.mean("lightgbm with drivers"), r.mean("lightgbm without")
        ratio_line(f"{name}: MASE lightgbm with drivers / without", lgbm / lgbm_plain, "< 1", lgbm < lgbm_plain)
        if peers:
            for peer in ("mlforecast LightGBM X_df", "AutoARIMA X_df"):
                ratio_line(f"{name}: MASE auto with drivers / {peer}", auto / r.mean(peer), "< 1",
                           auto < r.mean(peer))
    for level in LEVELS:
        inside = sum(r.inside[level] for r in results.values())
        points = sum(r.points for r in results.values())
        share = 100.0 * inside / max(points, 1)
        per_set = ", ".join(f"{n} {100.0 * r.inside[level] / max(r.points, 1):.1f}%" for n, r in results.items())
        print(f"coverage {level:.0f}% with drivers: {share:.1f}% of {points} held-out points ({per_set})")
        ratio_line(f"coverage {level:.0f}% with drivers / nominal", share / level, "within 3 points of nominal",
                   abs(share - level) <= 3)
    for name, r in results.items():
        ratio_line(f"{name}: training time auto with drivers / without",
                   r.seconds["auto with drivers"] / r.seconds["auto without"], "<= 1.3",
                   r.seconds["auto with drivers"] <= 1.3 * r.seconds["auto without"])
        predict, explain = predict_costs(r)
        ratio_line(f"{name}: forecast time with drivers / without (in process)", predict, "<= 1.3", predict <= 1.3)
        ratio_line(f"{name}: explained forecast / plain (in process)", explain, "<= 1.5", explain <= 1.5)


if __name__ == "__main__":
    main()
