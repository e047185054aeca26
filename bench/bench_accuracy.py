"""Forecast accuracy on the sample series: flightcast against seasonal naive and naive on held-out points.

Each series' last H points are held out (H: 12 monthly, 8 quarterly, 6 yearly). The lookback of each
frequency is chosen among candidates by the rolling backtest on the training parts only (the mean over the
series of that frequency of model.metrics['mase']); the held-out points are never used to choose.

Run: .venv/bin/python -m bench.bench_accuracy      (BENCH_TINY=1: two short series, few trees)
"""

from __future__ import annotations

import math
import time

import numpy as np

from bench.common import HORIZON, TINY, header, ratio_line, read_series, sample_paths, seasonal_naive
from pipelines.frequency import infer_frequency
from pipelines.metrics import mase, smape
from pipelines.series import SeriesSet
from pipelines.training import train_model

# Lookback candidates per frequency unit (yearly series have no season, so fixed windows).
LOOKBACKS = {"mo": (24, 36), "q": (8, 12, 16), "y": (6, 12)}
STRATEGY = "recursive"
BACKTEST_WINDOWS = 3
LIGHTGBM: dict = {}  # the runtime's defaults
# The figures of the previous forecasting core on this protocol (single held-out block, fixed lookbacks).
PREVIOUS = {"flightcast": 1.183, "seasonal_naive": 1.481}

TINY_SERIES = ("nile", "woolyrnq")
TINY_LOOKBACKS = {"mo": (24,), "q": (8,), "y": (6,)}
TINY_LIGHTGBM = {"num_boost_round": 20}

NAMES = ("flightcast", "seasonal_naive", "naive")


def forecast_holdout(model, ts: np.ndarray, history: np.ndarray, horizon: int) -> np.ndarray:
    """The model's forecast of the `horizon` points after `history` (the training part)."""
    window = history[-model.window_length:][None, :]
    predicted, _ = model.forecast_windows(window, ts[-horizon - 1:-horizon], horizon, [None])
    return predicted[0]


def fit_samples(tiny: bool) -> tuple[dict, dict, dict]:
    """Every lookback candidate trained on every sample series' training part, and the lookback chosen per
    frequency by the mean backtest MASE: (series -> (ts, values, freq, horizon), series -> lookback ->
    (model, seconds), unit -> lookback). Prints the choice."""
    lookbacks = TINY_LOOKBACKS if tiny else LOOKBACKS
    params = TINY_LIGHTGBM if tiny else LIGHTGBM
    paths = [p for p in sample_paths() if not tiny or p.stem in TINY_SERIES]

    # Train every candidate on every training part; keep the backtest MASE (training part only).
    trained: dict[str, dict[int, tuple[object, float]]] = {}
    info = {}
    for path in paths:
        ts, values = read_series(path)
        freq = infer_frequency(ts, path.stem)
        horizon = HORIZON[freq.unit]
        info[path.stem] = (ts, values, freq, horizon)
        trained[path.stem] = {}
        for lookback in lookbacks[freq.unit]:
            start = time.perf_counter()
            model = train_model(
                SeriesSet.single(ts[:-horizon], values[:-horizon]), freq=freq, lookback=lookback, horizon=horizon,
                strategy=STRATEGY, backtest_windows=BACKTEST_WINDOWS, lightgbm_params=dict(params),
                dataset=path.stem,
            )
            trained[path.stem][lookback] = (model, time.perf_counter() - start)

    print(f"lookback per frequency, chosen by the mean backtest MASE ({BACKTEST_WINDOWS} rolling origins inside "
          "each training part; held-out points unused):")
    chosen = {}
    for unit in sorted({info[s][2].unit for s in info}):
        members = [s for s in info if info[s][2].unit == unit]
        scores = {lb: float(np.nanmean([trained[s][lb][0].metrics["mase"] for s in members]))
                  for lb in lookbacks[unit]}
        chosen[unit] = min(scores, key=lambda lb: math.inf if math.isnan(scores[lb]) else scores[lb])
        cells = ", ".join(f"lookback {lb}: {m:.3f}" for lb, m in scores.items())
        print(f"  {unit:>2} ({', '.join(members)}): {cells} -> {chosen[unit]}")
    return info, trained, chosen


def main() -> None:
    tiny = TINY
    header("bench.bench_accuracy", "forecast accuracy against seasonal naive and naive (held-out last H points)")
    info, trained, chosen = fit_samples(tiny)
    rows = []
    for stem, (ts, values, freq, horizon) in info.items():
        lookback = chosen[freq.unit]
        model, seconds = trained[stem][lookback]
        history, actual = values[:-horizon], values[-horizon:]
        forecasts = {
            "flightcast": forecast_holdout(model, ts, history, horizon),
            "seasonal_naive": seasonal_naive(history, horizon, freq.season),
            "naive": seasonal_naive(history, horizon, 1),
        }
        scores = {n: (mase(actual, f, history, freq.season), smape(actual, f)) for n, f in forecasts.items()}
        rows.append((stem, str(freq), lookback, model.metrics["mase"], seconds, scores))

    print()
    print(f"{'series':<18} {'freq':>4} {'lookback':>8} {'backtest':>9} {'train s':>8} "
          + " ".join(f"{n + ' MASE':>20} {n + ' sMAPE':>21}" for n in NAMES))
    for stem, freq, lookback, bt, seconds, scores in rows:
        cells = " ".join(f"{scores[n][0]:>20.3f} {scores[n][1]:>21.2f}" for n in NAMES)
        print(f"{stem:<18} {freq:>4} {lookback:>8} {bt:>9.3f} {seconds:>8.2f} {cells}")
    means = {n: (float(np.mean([s[n][0] for *_, s in rows])), float(np.mean([s[n][1] for *_, s in rows])))
             for n in NAMES}
    mean_seconds = float(np.mean([r[4] for r in rows]))
    print(f"{'mean':<18} {'':>4} {'':>8} {'':>9} {mean_seconds:>8.2f} "
          + " ".join(f"{means[n][0]:>20.3f} {means[n][1]:>21.2f}" for n in NAMES))
    wins = sum(s["flightcast"][0] < s["seasonal_naive"][0] for *_, s in rows)
    print(f"flightcast beats seasonal naive (MASE) on {wins} of {len(rows)} series")
    print(f"previous forecasting core, same protocol: mean MASE {PREVIOUS['flightcast']:.3f} "
          f"(seasonal naive {PREVIOUS['seasonal_naive']:.3f})")
    ours, naive = means["flightcast"][0], means["seasonal_naive"][0]
    ratio_line("mean MASE flightcast / seasonal naive", ours / naive, "< 1", None)
    if not tiny:
        ratio_line("mean MASE flightcast / previous core (1.183)", ours / PREVIOUS["flightcast"],
                   "<= 0.85 (15% below)", None)
    print("train s: train_model on the training part (3 rolling backtest fits + calibration + the final fit)")

    # Forecast latency of the chosen model on the longest series (in-process, numpy loop).
    stem = max(info, key=lambda s: info[s][1].size)
    ts, values, freq, horizon = info[stem]
    model = trained[stem][chosen[freq.unit]][0]
    window, last = values[-model.window_length:][None, :], ts[-1:]
    model.forecast_windows(window, last, horizon, [None])
    runs = 20 if tiny else 200
    start = time.perf_counter()
    for _ in range(runs):
        model.forecast_windows(window, last, horizon, [None])
    print(f"{stem} {STRATEGY}: forecast of {horizon} steps {1000 * (time.perf_counter() - start) / runs:.3f} ms "
          "(in-process forecast_windows, one window)", flush=True)


if __name__ == "__main__":
    main()
