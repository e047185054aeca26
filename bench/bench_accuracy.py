"""Forecast accuracy on the sample series: flightcast against seasonal naive and naive on held-out points.

Run: .venv/bin/python -m bench.bench_accuracy
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from pipelines.forecasting import mase, smape, train_model

from bench.common import header as print_header
from bench.common import ratio_line, size
from pipelines.frequency import Frequency, infer_frequency

DATA = Path(__file__).resolve().parent.parent / "data"
# LightGBM's own defaults, or a few trees when tiny (BENCH_TINY=1): the same code path in a second.
PARAMS: dict = size({}, {"num_boost_round": 5})
FORECAST_RUNS = size(200, 5)
# Held-out steps per frequency unit (the usual M-competition horizons).
HORIZON = {"mo": 12, "q": 8, "y": 6}
# Lookback in seasons; yearly series have no season, so a fixed window.
# Chosen with `backtest` below over several origins inside each training part, not on the held-out points.
LOOKBACK = {"mo": 36, "q": 16, "y": 12}


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps as datetime64[us], values as float64) of a ts,value CSV."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ts = np.array([r["ts"] for r in rows], dtype="datetime64[us]")
    values = np.array([float(r["value"]) for r in rows], dtype=np.float64)
    return ts, values


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last season (the last value when season is 1)."""
    last = history[-season:]
    return np.resize(last, horizon) if season > 1 else np.full(horizon, history[-1])


def evaluate(
    ts: np.ndarray,
    values: np.ndarray,
    freq: Frequency,
    horizon: int,
    lookback: int,
    strategy: str = "recursive",
    params: dict | None = None,
) -> dict[str, tuple[float, float]]:
    """MASE and sMAPE of flightcast, seasonal naive and naive on the last `horizon` points."""
    history, actual = values[:-horizon], values[-horizon:]
    model = train_model(
        history, ts[:-horizon], freq=freq, lookback=lookback, horizon=horizon, strategy=strategy,
        lightgbm_params=params or {}, dataset="bench",
    )
    season = freq.season
    forecasts = {
        "flightcast": model.forecast(history[-lookback:], ts[-horizon - 1], horizon),
        "seasonal_naive": seasonal_naive(history, horizon, season),
        "naive": seasonal_naive(history, horizon, 1),
    }
    return {name: (mase(actual, f, history, season), smape(actual, f)) for name, f in forecasts.items()}


def backtest(
    ts: np.ndarray, values: np.ndarray, freq: Frequency, horizon: int, lookback: int, origins: int = 4,
    strategy: str = "recursive", params: dict | None = None,
) -> tuple[float, float]:
    """Mean flightcast MASE and seasonal-naive MASE over `origins` forecast origins, each `horizon` apart,
    all inside `values` (pass the training part only)."""
    ours, base = [], []
    for k in range(origins, 0, -1):
        end = values.size - (k - 1) * horizon
        if end - horizon < lookback + 2 * horizon:
            continue
        scores = evaluate(ts[:end], values[:end], freq, horizon, lookback, strategy, params)
        ours.append(scores["flightcast"][0])
        base.append(scores["seasonal_naive"][0])
    return float(np.mean(ours)), float(np.mean(base))


def main() -> None:
    print_header("bench.bench_accuracy", "forecast accuracy against seasonal naive and naive")
    names = ("flightcast", "seasonal_naive", "naive")
    rows = []
    for path in sorted(DATA.glob("*.csv")):
        ts, values = read_series(path)
        freq = infer_frequency(ts, path.stem)
        scores = evaluate(ts, values, freq, HORIZON[freq.unit], LOOKBACK[freq.unit], params=PARAMS)
        rows.append((path.stem, str(freq), scores))
    header = f"{'series':<18} {'freq':>4} " + " ".join(f"{n + ' MASE':>20} {n + ' sMAPE':>21}" for n in names)
    print(header)
    for name, freq, scores in rows:
        cells = " ".join(f"{scores[n][0]:>20.3f} {scores[n][1]:>21.2f}" for n in names)
        print(f"{name:<18} {freq:>4} {cells}")
    means = {n: (np.mean([s[n][0] for *_, s in rows]), np.mean([s[n][1] for *_, s in rows])) for n in names}
    print(f"{'mean':<18} {'':>4} " + " ".join(f"{means[n][0]:>20.3f} {means[n][1]:>21.2f}" for n in names))
    wins = sum(s["flightcast"][0] < s["seasonal_naive"][0] for *_, s in rows)
    print(f"flightcast beats seasonal naive (MASE) on {wins} of {len(rows)} series")
    ratio = means["flightcast"][0] / means["seasonal_naive"][0]
    ratio_line("mean MASE flightcast / seasonal naive (held-out points)", ratio, "< 1x", ratio < 1)

    ts, values = read_series(DATA / "sunspots_monthly.csv")
    keep = size(values.size, 400)
    ts, values = ts[-keep:], values[-keep:]
    freq = infer_frequency(ts, "sunspots_monthly")
    for strategy in ("recursive", "direct"):
        start = time.perf_counter()
        model = train_model(
            values, ts, freq=freq, lookback=LOOKBACK["mo"], horizon=HORIZON["mo"], strategy=strategy,
            lightgbm_params=PARAMS, dataset="sunspots_monthly",
        )
        elapsed = time.perf_counter() - start
        # train_model fits twice (held-out scoring, then all points).
        print(f"sunspots_monthly {strategy}: train_model {elapsed:.2f} s ({len(model.boosters)} booster(s), "
              f"{values.size} rows, two fits)")
        window = values[-model.lookback:]
        model.forecast(window, ts[-1], 12)
        runs = FORECAST_RUNS
        start = time.perf_counter()
        for _ in range(runs):
            model.forecast(window, ts[-1], 12)
        per_forecast_ms = 1000 * (time.perf_counter() - start) / runs
        print(f"sunspots_monthly {strategy}: forecast of 12 steps {per_forecast_ms:.3f} ms")


if __name__ == "__main__":
    main()
