"""Training a portfolio: the global LightGBM model and the local methods backtested from the same rolling
origins, a plan chosen per series (pipelines/selection.py), intervals calibrated on what is served.

LightGBM's backtest (pipelines/training.py) already forecasts from every origin of its backtest series;
local methods forecast from the scoring origins (and, for models with few series, from every origin, so
their intervals get enough calibration errors). Series too short for the LightGBM window are backtested
by the local methods alone; a series too short to backtest is served by its seasonal naive forecast.
A large panel's backtest samples its series (as LightGBM's does); a series outside the sample is served
by the plan of vectorised methods that backtested best over the sample.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipelines.backends import SeriesBackend
from pipelines.drivers import Drivers
from pipelines.frequency import Frequency
from pipelines.methods import ARIMAX, ETS_MAX_SEASON
from pipelines.model import SeriesStats
from pipelines.portfolio import PortfolioModel, bounds_for
from pipelines.selection import PairTable, calibrate, choose, chunk_pairs, chunk_seeds
from pipelines.series import SeriesSet
from pipelines.training import (
    CALIBRATION_ERRORS,
    MAX_BACKTEST_SERIES,
    check_sizes,
    chunk_lengths,
    chunk_stats,
    lightgbm_plan,
    train_lightgbm,
)
from spicepod import LOCAL_METHODS, METHODS, InvalidInput

log = logging.getLogger("flightcast.training")

MIN_BACKTEST_HISTORY = 2  # values before an origin for a local method to forecast from it
QUICK_SERIES = 50  # models of more series than this fit the quick variants of local methods
ARIMAX_CALIBRATION_ORIGINS = 12  # origins beyond the scoring ones that calibrate a series arimax serves


def candidates_for(method: str, season: int, with_lightgbm: bool, with_regressors: bool = False) -> list[str]:
    """The candidates of `method`; `with_regressors` (numeric covariates known ahead, few series) adds arimax."""
    if method not in ("auto", "ensemble"):
        return [method]
    local = [m for m in LOCAL_METHODS
             if not (m == "seasonal_naive" and season <= 1) and not (m == "mstl" and season <= ETS_MAX_SEASON)]
    return (["lightgbm"] if with_lightgbm else []) + local + ([ARIMAX] if with_regressors else [])


def chunk_minimum(chunk: SeriesSet) -> float:
    values = [float(np.min(v)) for v in chunk.values if v.size]
    return min(values) if values else float("nan")


def train_portfolio(
    backend: SeriesBackend, *, method: str = "auto", bounds: Any = "auto", freq: Frequency, lookback: int,
    horizon: int, strategy: str = "recursive", backtest_windows: int = 3, lightgbm_params: dict[str, Any] | None = None,
    dataset: str, drivers: Drivers | None = None,
) -> PortfolioModel:
    check_sizes(lookback, horizon, backtest_windows)
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    lengths = dict(pair for part in backend.map(chunk_lengths, dataset) for pair in part)
    lengths = {sid: n for sid, n in lengths.items() if n >= 2}
    if not lengths:
        raise InvalidInput(f"dataset '{dataset}' has no series with two or more periods")
    season = freq.season
    lightgbm = backtest = None
    if method in ("auto", "ensemble"):
        _, eligible = lightgbm_plan(lengths, freq=freq, lookback=lookback, horizon=horizon,
                                    backtest_windows=backtest_windows)
        if any(n >= lookback + horizon + backtest_windows * horizon for n in eligible.values()):
            lightgbm, backtest = train_lightgbm(
                backend, freq=freq, lookback=lookback, horizon=horizon, strategy=strategy,
                backtest_windows=backtest_windows, lightgbm_params=lightgbm_params, dataset=dataset, lengths=lengths,
                drivers=drivers)
    # Numeric covariates known ahead make arimax a candidate, for models of few series (a fit per series and
    # forecast is too slow for thousands).
    regressors = [c.column for c in drivers.future if not c.categorical] if drivers else []
    candidates = candidates_for(method, season, lightgbm is not None, bool(regressors) and len(lengths) <= QUICK_SERIES)
    local = [m for m in candidates if m != "lightgbm"]
    extend = len(lengths) * backtest_windows * horizon < CALIBRATION_ERRORS
    origins, lgbm_rows = _origins(lengths, backtest, horizon, backtest_windows, extend)
    quick = len(lengths) > QUICK_SERIES
    # Every candidate from the scoring origins, for the choice...
    scoring = {sid: [row for row in rows if row[1]] for sid, rows in origins.items()}
    table = PairTable.concat(backend.map(chunk_pairs, scoring, local, horizon, season, lookback, quick, regressors),
                             local, horizon)
    table.forecasts["lightgbm"] = _join(table, lgbm_rows, horizon)
    choice = choose(table, candidates, method, horizon, season)
    if extend:
        # ...and, with few series, what each series is served from every origin, for its intervals.
        members = {sid: [m for m in plan if m != "lightgbm"] for sid, plan in choice.plans.items()}
        used = [m for m in local if any(m in names for names in members.values())]
        # arimax fits take about a second: a series it serves is calibrated from fewer origins.
        calibrating = {sid: _thinned(rows) if ARIMAX in members.get(sid, ()) else rows for sid, rows in origins.items()}
        every = PairTable.concat(backend.map(chunk_pairs, calibrating, members, horizon, season, lookback, quick,
                                             regressors),
                                 used, horizon)
        every.forecasts["lightgbm"] = _join(every, lgbm_rows, horizon)
        choice.calibration = calibrate(every, choice.plans, horizon)
    seeds: dict = {}
    for part in backend.map(chunk_seeds, choice.plans, horizon, season, quick):
        seeds.update(part)
    stats_parts = backend.map(chunk_stats, lengths, season, 0)
    stats = SeriesStats([sid for p in stats_parts for sid in p.ids], np.concatenate([p.mean for p in stats_parts]),
                        np.concatenate([p.std for p in stats_parts]), np.concatenate([p.scale for p in stats_parts]))
    minimum = min(backend.map(chunk_minimum))
    served = {}
    for sid in lengths:
        for m in choice.plans.get(sid, choice.default):
            served[m] = served.get(m, 0) + 1
    metrics: dict[str, Any] = {
        "mase": choice.served_mase,
        "smape": choice.served_smape,
        "backtest_windows": backtest_windows,
        "backtest_series": choice.series_scored,
        "calibration_errors": choice.calibration.count,
        "differencing": lightgbm.differencing if lightgbm is not None else 0,
        "methods": {m: {"mase": choice.method_mase.get(m), "series": served.get(m, 0)} for m in candidates},
    }
    if lightgbm is not None and "strategy_mase" in lightgbm.metrics:
        metrics["strategy_mase"] = lightgbm.metrics["strategy_mase"]
    log.info("%s: methods %s", dataset, {m: v for m, v in served.items()})
    model = PortfolioModel(
        freq=freq, horizon=horizon, lookback=lookback, lightgbm=lightgbm, plans=choice.plans, default=choice.default,
        stats=stats, calibration=choice.calibration, bounds=bounds_for(bounds, minimum), metrics=metrics, seeds=seeds,
        quick=quick, regressors=regressors if ARIMAX in candidates else ())
    model.series_mase = choice.series_mase
    return model


def _origins(lengths: dict, backtest: Any, horizon: int, windows: int, extend: bool) -> tuple[dict, dict]:
    """Each backtested series' (origin, scoring, with_local) rows, and LightGBM's forecast at each
    (series, origin) it made one."""
    lgbm_rows: dict = {}
    for ids, origin, predicted in (backtest.pairs if backtest is not None else []):
        for sid, o, row in zip(ids, origin.tolist(), predicted, strict=True):
            lgbm_rows[(sid, o)] = row
    by_series: dict = {}
    for sid, o in lgbm_rows:
        by_series.setdefault(sid, set()).add(o)
    sample = set(by_series)
    short = sorted((sid for sid in lengths if sid not in sample), key=lambda s: (s is not None, s))
    room = max(0, MAX_BACKTEST_SERIES - len(sample))
    if len(short) > room:
        picked = np.random.default_rng(1).choice(len(short), room, replace=False)
        short = [short[i] for i in sorted(picked)]
    origins: dict = {}
    for sid in [*sample, *short]:
        n = lengths[sid]
        scoring = {n - j * horizon for j in range(1, windows + 1) if n - j * horizon >= MIN_BACKTEST_HISTORY}
        if not scoring and n > MIN_BACKTEST_HISTORY:
            scoring = {max(MIN_BACKTEST_HISTORY, n - horizon)}
        extra = set(by_series.get(sid, ()))
        if extend and sid not in sample:
            extra |= set(range(max(MIN_BACKTEST_HISTORY, n - max(windows * horizon, 40)), n - 1))
        rows = sorted(scoring | extra)
        origins[sid] = [(o, o in scoring, o in scoring or extend) for o in rows]
    return origins, lgbm_rows


def _thinned(rows: list[tuple]) -> list[tuple]:
    """A series' origin rows with at most ARIMAX_CALIBRATION_ORIGINS of those that only calibrate, evenly spread."""
    extra = [row for row in rows if not row[1]]
    if len(extra) <= ARIMAX_CALIBRATION_ORIGINS:
        return rows
    picked = {extra[i] for i in np.linspace(0, len(extra) - 1, ARIMAX_CALIBRATION_ORIGINS).round().astype(int)}
    return [row for row in rows if row[1] or row in picked]


def _join(table: PairTable, lgbm_rows: dict, horizon: int) -> np.ndarray:
    out = np.full((len(table), horizon), np.nan)
    for i, (sid, o) in enumerate(zip(table.ids, table.origin.tolist(), strict=True)):
        row = lgbm_rows.get((sid, o))
        if row is not None:
            out[i] = row
    return out
