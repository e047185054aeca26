"""Prediction intervals: empirical coverage and scaled width of 80% and 95% intervals.

(a) The sample series (data/*.csv without the panel; last H points held out, H: 12 monthly, 8 quarterly,
    6 yearly) and (b) the tourism panel (last 8 quarters held out): flightcast's conformal intervals
    (interval_bounds over the model's backtest calibration) against statsforecast AutoETS intervals and
    mlforecast conformal intervals (PredictionIntervals(n_windows=3)), on the same held-out points.
    Coverage: the share of held-out values inside the interval. Scaled width: the interval width over the
    series' in-sample seasonal naive MAE, averaged over every held-out point.
(c) Training time of train_model (rolling backtests + calibration) per sample series, and on sunspots with
    lookback 48, horizon 12, recursive, against the previous single-holdout core's figure on this machine.

Run: .venv/bin/python -m bench.bench_intervals      (BENCH_TINY=1: tiny inputs, no peers)
"""

from __future__ import annotations

import time

import numpy as np

from bench.bench_accuracy import fit_samples, forecast_holdout
from bench.bench_panel import HOLDOUT, SEASON, choose_model, mlforecast_model
from bench.bench_panel import autoets as autoets_forecast
from bench.bench_panel import settings as panel_settings
from bench.common import (
    DATA,
    TINY,
    coverage,
    frame_to_matrix,
    header,
    latest_windows,
    long_frame,
    naive_scales,
    ratio_line,
    read_panel,
    read_series,
    scaled_width,
    split_panel,
    use_peers,
)
from pipelines.frequency import infer_frequency
from pipelines.intervals import interval_bounds
from pipelines.series import SeriesSet
from pipelines.training import train_model

LEVELS = (80, 95)
CONFORMAL_WINDOWS = 3
MLFORECAST_ROUNDS = 200
PANDAS_FREQ = {"mo": "MS", "q": "QS", "y": "YS"}
# The previous core (single held-out block): train_model on sunspots_monthly, lookback 48, horizon 12,
# recursive, measured on this machine.
PREVIOUS_SUNSPOTS_SECONDS = 3.0
SUNSPOTS = {"lookback": 48, "horizon": 12, "strategy": "recursive"}
COVERAGE_TOLERANCE = 5.0  # points of coverage around the nominal level (the goal on panels)


class Pooled:
    """Held-out actuals, bounds per level and scales of many series, pooled per method."""

    def __init__(self) -> None:
        self.actual: list[np.ndarray] = []
        self.bounds: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {lv: [] for lv in LEVELS}
        self.scales: list[np.ndarray] = []

    def add(self, actual: np.ndarray, bounds: dict, scales: np.ndarray) -> None:
        """actual (n, h); bounds {level: (lower (n, h), upper (n, h))}; scales (n,)."""
        self.actual.append(np.atleast_2d(actual))
        for lv in LEVELS:
            lower, upper = bounds[lv]
            self.bounds[lv].append((np.atleast_2d(lower), np.atleast_2d(upper)))
        self.scales.append(np.atleast_1d(scales))

    def figures(self) -> dict[int, tuple[float, float]]:
        """level -> (coverage %, mean scaled width), pooled over every held-out point."""
        out = {}
        for lv in LEVELS:
            cov, widths, points = [], [], []
            for actual, (lower, upper), scales in zip(self.actual, self.bounds[lv], self.scales, strict=True):
                cov.append(coverage(actual, lower, upper) * actual.size)
                widths.append(scaled_width(lower, upper, scales) * actual.size)
                points.append(actual.size)
            total = sum(points)
            out[lv] = (sum(cov) / total, sum(widths) / total)
        return out


def print_figures(title: str, methods: dict[str, Pooled], points: int) -> dict[str, dict[int, tuple[float, float]]]:
    figures = {name: pooled.figures() for name, pooled in methods.items()}
    print(f"\n  {title}: {points} held-out points")
    print(f"  {'method':<28} " + " ".join(f"{'cover ' + str(lv) + '%':>10} {'width ' + str(lv):>9}" for lv in LEVELS))
    for name, fig in figures.items():
        print(f"  {name:<28} " + " ".join(f"{fig[lv][0]:>10.1f} {fig[lv][1]:>9.2f}" for lv in LEVELS))
    return figures


def compare(where: str, figures: dict, strict: bool, coverage_of: dict | None = None) -> None:
    """Coverage ratio lines (from `coverage_of` when given: every series) and width ratio lines against AutoETS
    (from `figures`: the points every method forecast)."""
    ours = figures["flightcast"]
    for lv in LEVELS:
        cov = (coverage_of or ours)[lv][0]
        ratio_line(f"{where}: flightcast {lv}% coverage / nominal ({cov:.1f}%)", cov / lv,
                   f"within {COVERAGE_TOLERANCE:.0f} points ({(lv - COVERAGE_TOLERANCE) / lv:.3f}-"
                   f"{min(100.0, lv + COVERAGE_TOLERANCE) / lv:.3f})",
                   abs(cov - lv) <= COVERAGE_TOLERANCE if strict else None)
        if "AutoETS" in figures:
            theirs = figures["AutoETS"][lv]
            both_cover = abs(ours[lv][0] - lv) <= COVERAGE_TOLERANCE and abs(theirs[0] - lv) <= COVERAGE_TOLERANCE
            ratio_line(f"{where}: {lv}% scaled width flightcast / AutoETS", ours[lv][1] / theirs[1],
                       "< 1 where both cover" + ("" if both_cover else " (they do not both cover here)"),
                       ours[lv][1] < theirs[1] if both_cover else None)


# ------------------------------------------------------------------------------------------ (a) samples


def samples(tiny: bool, have_peers: bool) -> dict:
    print("\n(a) sample series, last H points held out (lookback per frequency chosen by backtest):")
    info, trained, chosen = fit_samples(tiny)
    methods = {"flightcast": Pooled()}
    if have_peers:
        methods["AutoETS"] = Pooled()
        methods["mlforecast conformal"] = Pooled()
    points = 0
    for stem, (ts, values, freq, horizon) in info.items():
        model, _ = trained[stem][chosen[freq.unit]]
        history, actual = values[:-horizon], values[-horizon:]
        scale = naive_scales([history], freq.season)
        window = history[-model.window_length:][None, :]
        predicted, spread = model.forecast_windows(window, ts[-horizon - 1:-horizon], horizon, [None])
        assert np.allclose(predicted[0], forecast_holdout(model, ts, history, horizon))
        methods["flightcast"].add(actual, interval_bounds(predicted, spread, model.calibration, LEVELS), scale)
        points += horizon
        if have_peers:
            series = SeriesSet([stem], [ts[:-horizon]], [history])
            frame = long_frame(series)
            _, bounds = autoets_forecast(frame, [stem], horizon, LEVELS, season=freq.season,
                                         freq=PANDAS_FREQ[freq.unit])
            methods["AutoETS"].add(actual, bounds, scale)
            methods["mlforecast conformal"].add(
                actual, mlforecast_conformal(frame, [stem], horizon, model.lookback, PANDAS_FREQ[freq.unit]), scale)
    figures = print_figures("sample series, pooled", methods, points)
    print("  (few points per series: sample coverage is a rough figure; the panel's is the one to judge)")
    compare("samples", figures, strict=False)
    return trained


def mlforecast_conformal(frame, ids, horizon: int, lags: int, freq: str) -> dict:
    """mlforecast global LightGBM (differences + per-series scaling) with conformal intervals."""
    from mlforecast.utils import PredictionIntervals

    mlf = mlforecast_model(lags, True, MLFORECAST_ROUNDS, freq)
    mlf.fit(frame, prediction_intervals=PredictionIntervals(n_windows=CONFORMAL_WINDOWS, h=horizon))
    out = mlf.predict(horizon, level=list(LEVELS))
    return {lv: (frame_to_matrix(out, ids, f"lgb-lo-{lv}", horizon), frame_to_matrix(out, ids, f"lgb-hi-{lv}", horizon))
            for lv in LEVELS}


# ------------------------------------------------------------------------------------------ (b) panel


def panel(tiny: bool, have_peers: bool) -> None:
    cfg = panel_settings(tiny)
    print("\n(b) tourism panel, last 8 quarters held out (one global model; setting chosen by backtest):")
    data = read_panel(limit=cfg["panel_series"])
    train, held = split_panel(data, HOLDOUT)
    actual = np.stack(held)
    scales = naive_scales(train.values, SEASON)
    model, _, lookback = choose_model(train, cfg)
    windows, last, ids = latest_windows(train, model.window_length)
    predicted, spread = model.forecast_windows(windows, last, HOLDOUT, ids)
    ours = interval_bounds(predicted, spread, model.calibration, LEVELS)
    print(f"  flightcast calibration: {model.calibration.count} errors per step at the least "
          f"(backtest over {model.metrics['backtest_series']} series)")
    every = {"flightcast": Pooled()}
    every["flightcast"].add(actual, ours, scales)
    everywhere = print_figures(f"tourism panel, all {len(train)} series, pooled", every, actual.size)["flightcast"]
    # mlforecast's conformal intervals need n_windows * h + 1 points in every series: compare on those.
    keep = np.flatnonzero(train.lengths() >= CONFORMAL_WINDOWS * HOLDOUT + 1)
    print(f"\n  the comparison below keeps the {keep.size} series with at least {CONFORMAL_WINDOWS * HOLDOUT + 1} "
          f"training points (mlforecast's conformal intervals need them); {len(train) - keep.size} left out")
    methods = {"flightcast": Pooled()}
    methods["flightcast"].add(actual[keep], {lv: (lo[keep], hi[keep]) for lv, (lo, hi) in ours.items()},
                              scales[keep])
    if have_peers:
        subset = train.subset(keep)
        frame = long_frame(subset)
        methods["AutoETS"] = Pooled()
        methods["AutoETS"].add(actual[keep], autoets_forecast(frame, subset.ids, HOLDOUT, LEVELS)[1], scales[keep])
        methods["mlforecast conformal"] = Pooled()
        methods["mlforecast conformal"].add(
            actual[keep], mlforecast_conformal(frame, subset.ids, HOLDOUT, 8, "QS"), scales[keep])
    figures = print_figures("tourism panel, same series for every method, pooled", methods, actual[keep].size)
    compare("tourism", figures, strict=not tiny, coverage_of=everywhere)


# ------------------------------------------------------------------------------------------ (c) training time


def training_time(tiny: bool, trained: dict) -> None:
    print("\n(c) training time of train_model (3 rolling backtest fits, calibration, final fit):")
    for stem, by_lookback in trained.items():
        cells = ", ".join(f"lookback {lb}: {seconds:.2f} s" for lb, (_, seconds) in by_lookback.items())
        print(f"  {stem:<18} {cells}")
    if tiny:
        return
    ts, values = read_series(DATA / "sunspots_monthly.csv")
    start = time.perf_counter()
    train_model(SeriesSet.single(ts, values), freq=infer_frequency(ts, "sunspots"), lookback=SUNSPOTS["lookback"],
                horizon=SUNSPOTS["horizon"], strategy=SUNSPOTS["strategy"], dataset="sunspots")
    seconds = time.perf_counter() - start
    print(f"  sunspots_monthly, all {values.size} points, lookback 48, horizon 12, recursive: {seconds:.2f} s "
          f"(previous single-holdout core: about {PREVIOUS_SUNSPOTS_SECONDS:.1f} s on this machine)")
    ratio_line("sunspots 48/12 recursive training time / previous core (3.0 s)", seconds / PREVIOUS_SUNSPOTS_SECONDS,
               "<= 2", seconds <= 2 * PREVIOUS_SUNSPOTS_SECONDS)


def main() -> None:
    tiny = TINY
    header("bench.bench_intervals", "coverage and width of 80%/95% intervals against AutoETS and mlforecast")
    have_peers = use_peers()
    if tiny:
        print("tiny mode: a few series, few trees")
    trained = samples(tiny, have_peers)
    panel(tiny, have_peers)
    training_time(tiny, trained)


if __name__ == "__main__":
    main()
