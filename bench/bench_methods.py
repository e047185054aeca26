"""Forecast quality of the method portfolio (`method: auto`) against LightGBM alone and the peers a user
would pick instead, on held-out real data; its interval coverage; its training time.

(a) Every shared single series (data/*.csv and data/dev/*.csv): the last H points held out (H: 12
    monthly, 8 quarterly, 6 yearly, 13 weekly, 14 daily), settings fixed per frequency (no tuning on
    the held-out points). MASE of auto, lightgbm, seasonal naive and statsforecast AutoETS (on the whole
    training part, the library's defaults).
(b) The tourism panel (427 quarterly series, last 8 held out, as the competition did): auto, lightgbm,
    AutoETS, and the competition's best published MASE (1.43).
(c) Coverage of auto's 80% and 95% intervals on the held-out points of (a) and (b).
(d) Training time on a panel of 1,000+ series (tourism three times, each copy scaled differently): auto
    against lightgbm and against AutoETS over every series, in the same run.

Run: .venv/bin/python -m bench.bench_methods      (BENCH_TINY=1: two short series, 4 tourism series)
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from bench.common import DATA, PANEL, header, ratio_line, read_panel, read_series, seasonal_naive, size, table
from pipelines.frequency import infer_frequency
from pipelines.intervals import interval_bounds
from pipelines.metrics import mase
from pipelines.series import SeriesSet
from pipelines.training import train_model

HOLDOUT = {"mo": 12, "q": 8, "y": 6, "w": 13, "d": 14}
LOOKBACK = {"mo": 24, "q": 12, "y": 6, "w": 52, "d": 28}
TOURISM_BEST = 1.43  # the 2010 tourism competition's best published quarterly MASE
LEVELS = (80.0, 95.0)
TINY_SERIES = ("woolyrnq", "nile")
TINY_PANEL = 4  # tourism series under BENCH_TINY=1


def auto_ets(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """statsforecast's AutoETS with its defaults (seasons over 24 steps are beyond it: then non-seasonal)."""
    from statsforecast.models import AutoETS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoETS(season_length=season if season <= 24 else 1).forecast(y=history, h=horizon)["mean"]


def forecast(model, history: np.ndarray, last: np.datetime64, horizon: int, sid=None):
    """The model's forecast after `history` and its 80%/95% bounds (left-padded when history is short)."""
    length = model.window_length
    window = np.full(length, np.nan)
    tail = history[-length:]
    window[length - tail.size:] = tail
    predicted, spread = model.forecast_windows(window[None, :], np.array([last]), horizon, [sid])
    bounds = interval_bounds(predicted, spread, model.calibration, LEVELS)
    if hasattr(model, "bounded"):
        bounds = {lv: (model.bounded(lo), model.bounded(hi)) for lv, (lo, hi) in bounds.items()}
    return predicted[0], {lv: (lo[0], hi[0]) for lv, (lo, hi) in bounds.items()}


class Coverage:
    def __init__(self):
        self.inside = {lv: 0 for lv in LEVELS}
        self.points = 0

    def add(self, actual: np.ndarray, bounds: dict) -> None:
        self.points += actual.size
        for lv, (lo, hi) in bounds.items():
            self.inside[lv] += int(np.sum((actual >= lo) & (actual <= hi)))

    def share(self, level: float) -> float:
        return 100.0 * self.inside[level] / max(self.points, 1)


def single_series(coverage: Coverage) -> tuple[float, float, float, float, int]:
    paths = [p for p in sorted(DATA.glob("*.csv")) + sorted((DATA / "dev").glob("*.csv")) if p != PANEL]
    paths = size(paths, [p for p in paths if p.stem in TINY_SERIES])
    rows, scores = [], {"auto": [], "lightgbm": [], "seasonal naive": [], "AutoETS": []}
    for path in paths:
        ts, values = read_series(path)
        freq = infer_frequency(ts, path.stem)
        horizon, lookback = HOLDOUT[freq.unit], LOOKBACK[freq.unit]
        history, actual, last = values[:-horizon], values[-horizon:], ts[-horizon - 1]
        cells = {}
        for method in ("auto", "lightgbm"):
            model = train_model(SeriesSet.single(ts[:-horizon], history), method=method, bounds="auto", freq=freq,
                                lookback=lookback, horizon=horizon, dataset=path.stem,
                                lightgbm_params=size({}, {"num_boost_round": 30}))
            predicted, bounds = forecast(model, history, last, horizon)
            cells[method] = mase(actual, predicted, history, freq.season)
            if method == "auto":
                coverage.add(actual, bounds)
                chosen = model.methods_of([None], history[-model.window_length:][None, :])[0]
        cells["seasonal naive"] = mase(actual, seasonal_naive(history, horizon, freq.season), history, freq.season)
        cells["AutoETS"] = mase(actual, auto_ets(history, horizon, freq.season), history, freq.season)
        for name, value in cells.items():
            scores[name].append(value)
        rows.append((path.stem, str(freq), chosen, *(cells[n] for n in scores)))
    means = {n: float(np.mean(v)) for n, v in scores.items()}
    rows.append(("mean", "", "", *(means[n] for n in scores)))
    table(["series", "freq", "auto serves", *(f"{n} MASE" for n in scores)], rows)
    wins = sum(a < s for a, s in zip(scores["auto"], scores["seasonal naive"], strict=True))
    ties = sum(a == s for a, s in zip(scores["auto"], scores["seasonal naive"], strict=True))
    print(f"auto beats seasonal naive on {wins} of {len(paths)} series ({ties} tied); "
          f"lightgbm alone on {sum(a < s for a, s in zip(scores['lightgbm'], scores['seasonal naive'], strict=True))}")
    return means["auto"], means["lightgbm"], means["seasonal naive"], means["AutoETS"], len(paths)


def tourism(coverage: Coverage) -> tuple[float, float, float]:
    panel = read_panel(PANEL, limit=size(None, TINY_PANEL))
    horizon = 8
    train = SeriesSet(list(panel.ids), [t[:-horizon] for t in panel.times], [v[:-horizon] for v in panel.values])
    actual = [v[-horizon:] for v in panel.values]
    freq = infer_frequency(panel.times[0], "tourism")
    out = {}
    for method in ("auto", "lightgbm"):
        model = train_model(train, method=method, bounds="auto", freq=freq, lookback=12, horizon=horizon,
                            dataset="tourism", lightgbm_params=size({}, {"num_boost_round": 30}))
        scores = []
        for i, sid in enumerate(train.ids):
            predicted, bounds = forecast(model, train.values[i], train.times[i][-1], horizon, sid)
            scores.append(mase(actual[i], predicted, train.values[i], freq.season))
            if method == "auto":
                coverage.add(actual[i], bounds)
        out[method] = float(np.nanmean(scores))
    ets = [mase(actual[i], auto_ets(v, horizon, freq.season), v, freq.season) for i, v in enumerate(train.values)]
    out["AutoETS"] = float(np.nanmean(ets))
    table(["tourism (427 series, last 8 held out)", "MASE"],
          [(name, value) for name, value in out.items()] + [("competition's best published", TOURISM_BEST)])
    return out["auto"], out["lightgbm"], out["AutoETS"]


def training_time() -> tuple[float, float, float, int]:
    panel = read_panel(PANEL, limit=size(None, TINY_PANEL))
    copies = SeriesSet()
    for k, factor in enumerate((1.0, 1.7, 0.6)):
        for sid, times, values in zip(panel.ids, panel.times, panel.values, strict=True):
            copies.ids.append(f"{sid}_{k}")
            copies.times.append(times)
            copies.values.append(values * factor)
    freq = infer_frequency(panel.times[0], "tourism")
    seconds = {}
    for method in ("auto", "lightgbm"):
        started = time.perf_counter()
        train_model(copies, method=method, freq=freq, lookback=12, horizon=8, dataset="tourism3",
                    lightgbm_params=size({}, {"num_boost_round": 30}))
        seconds[method] = time.perf_counter() - started
    started = time.perf_counter()
    for values in copies.values:
        auto_ets(values, 8, freq.season)
    seconds["AutoETS"] = time.perf_counter() - started
    table([f"training on {len(copies)} series", "seconds"], list(seconds.items()))
    return seconds["auto"], seconds["lightgbm"], seconds["AutoETS"], len(copies)


def main() -> None:
    header("bench.bench_methods", "forecast quality of method: auto against lightgbm, seasonal naive and AutoETS")
    coverage_single, coverage_panel = Coverage(), Coverage()
    auto, lgbm, naive, ets, count = single_series(coverage_single)
    ratio_line(f"mean MASE auto / seasonal naive ({count} single series)", auto / naive, "< 1", auto < naive)
    ratio_line("mean MASE auto / AutoETS", auto / ets, "< 1", auto < ets)
    ratio_line("mean MASE auto / lightgbm alone", auto / lgbm, "< 1", auto < lgbm)
    t_auto, t_lgbm, t_ets = tourism(coverage_panel)
    ratio_line(f"tourism MASE auto / competition's best {TOURISM_BEST}", t_auto / TOURISM_BEST, "< 1",
               t_auto < TOURISM_BEST)
    ratio_line("tourism MASE auto / AutoETS", t_auto / t_ets, "< 1", t_auto < t_ets)
    ratio_line("tourism MASE auto / lightgbm alone", t_auto / t_lgbm, "< 1", t_auto < t_lgbm)
    for name, cov in (("single series", coverage_single), ("tourism", coverage_panel)):
        for level in LEVELS:
            share = cov.share(level)
            print(f"coverage {name} {level:.0f}%: {share:.1f}% of {cov.points} held-out points")
            ratio_line(f"coverage {name} {level:.0f}% / nominal", share / level, "within 3 points of nominal",
                       abs(share - level) <= 3)
    s_auto, s_lgbm, s_ets, count = training_time()
    ratio_line(f"training time auto / lightgbm ({count} series)", s_auto / s_lgbm, "info", None)
    ratio_line(f"training time auto / AutoETS over every series ({count} series)", s_auto / s_ets, "<= 0.5",
               s_auto <= 0.5 * s_ets)


if __name__ == "__main__":
    main()
