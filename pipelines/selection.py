"""Choosing each series' method: every candidate forecasts from the same backtest origins, each series is
served by its best candidate or a combination of its best ones, never by one that backtests worse than
its seasonal naive forecast, and the intervals are calibrated on the errors of what is served.

The backtest forecasts live in a `PairTable`: one row per (series, origin), with the actual values after
the origin, the spread of the window before it (what interval widths scale with), the MASE scale of the
history before it, and each candidate's forecast (NaN where it does not apply). Rows flagged `scoring` are
the rolling origins a choice is scored on (`backtest_windows` of them, `horizon` apart); the other rows
(every origin in between, for series with few calibration errors) only calibrate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.features import level_stats, window_spread
from pipelines.intervals import Calibration
from pipelines.methods import history_length, local_forecast
from pipelines.metrics import naive_scale, smape
from pipelines.series import SeriesSet

# Methods forecast in one vectorised batch for any number of series: what a series that was not
# backtested (a large panel's backtest samples its series) may be served by.
BATCH_METHODS = ("lightgbm", "seasonal_naive", "naive")
# How many of a series' best candidates a combination averages.
COMBINE = 2

Plan = tuple[str, ...]


@dataclass
class PairTable:
    ids: list = field(default_factory=list)
    origin: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    scoring: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    actual: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    spread: np.ndarray = field(default_factory=lambda: np.empty(0))
    scale: np.ndarray = field(default_factory=lambda: np.empty(0))
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[PairTable], methods: Sequence[str], horizon: int) -> PairTable:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(actual=np.empty((0, horizon)), forecasts={m: np.empty((0, horizon)) for m in methods})
        return cls(
            [sid for p in parts for sid in p.ids],
            np.concatenate([p.origin for p in parts]),
            np.concatenate([p.scoring for p in parts]),
            np.concatenate([p.actual for p in parts]),
            np.concatenate([p.spread for p in parts]),
            np.concatenate([p.scale for p in parts]),
            {m: np.concatenate([p.forecasts[m] for p in parts]) for m in methods},
        )


def history_digest(values: np.ndarray) -> str:
    """What a local forecast depends on: the exact values it was fit on."""
    return hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float64).tobytes(), digest_size=12).hexdigest()


def chunk_pairs(
    chunk: SeriesSet, origins: dict, methods: Sequence[str], horizon: int, season: int, lookback: int, quick: bool,
) -> PairTable:
    """The pair rows of this chunk's series: origins[id] is a list of (origin, scoring, with_local); local
    methods forecast where with_local is set (LightGBM's forecasts are joined in afterwards)."""
    keep = history_length(season)
    rows: list[tuple] = []
    for sid, values in zip(chunk.ids, chunk.values, strict=True):
        if sid not in origins:
            continue
        series_std = level_stats(values)[1]
        for origin, scoring, with_local in origins[sid]:
            history = values[max(0, origin - keep):origin]
            actual = np.full(horizon, np.nan)
            seen = values[origin:origin + horizon]
            actual[:seen.size] = seen
            spread = float(window_spread(values[max(0, origin - lookback):origin][None, :], np.array([series_std]))[0])
            local = {}
            for name in methods:
                if with_local:
                    local[name] = local_forecast(name, history, horizon, season, quick)
            rows.append((sid, origin, scoring, actual, spread, naive_scale(values[:origin], season), local))
    table = PairTable(
        [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=bool), np.array([r[3] for r in rows]).reshape(len(rows), horizon),
        np.array([r[4] for r in rows], dtype=np.float64), np.array([r[5] for r in rows], dtype=np.float64),
    )
    for name in methods:
        out = np.full((len(rows), horizon), np.nan)
        for i, r in enumerate(rows):
            if r[6].get(name) is not None:
                out[i] = r[6][name]
        table.forecasts[name] = out
    return table


def chunk_seeds(chunk: SeriesSet, plans: dict, horizon: int, season: int, quick: bool) -> dict:
    """The final forecasts of each series' local methods after its whole history, with the digest of the
    values they were fit on: a forecast of unchanged data is then not fit again."""
    keep = history_length(season)
    out = {}
    for sid, values in zip(chunk.ids, chunk.values, strict=True):
        members = [m for m in plans.get(sid, ()) if m not in BATCH_METHODS]
        if not members:
            continue
        history = values[-keep:]
        forecasts = {m: f for m in members if (f := local_forecast(m, history, horizon, season, quick)) is not None}
        out[sid] = (history_digest(history), forecasts)
    return out


def _scores(table: PairTable, rows: np.ndarray, forecast: np.ndarray) -> float:
    """Mean MASE of `forecast` over the pair rows `rows` (NaN when a row lacks it or has no scale)."""
    if not rows.size:
        return math.nan
    f = forecast[rows]
    a = table.actual[rows]
    if not np.isfinite(f[np.isfinite(a)]).all():
        return math.nan
    scale = table.scale[rows]
    if not np.all(scale > 0):
        return math.nan
    errors = np.nanmean(np.abs(a - f), axis=1) / scale
    return float(np.mean(errors))


@dataclass
class Choice:
    plans: dict  # series id -> plan (the names of the methods it is served by, averaged)
    default: Plan  # the plan of a series that was not backtested
    method_mase: dict  # candidate -> mean backtest MASE over the series it applies to
    served_mase: float
    served_smape: float
    calibration: Calibration
    series_scored: int
    # series id -> (backtest MASE of what it is served, of its seasonal naive forecast (naive without a season))
    series_mase: dict = field(default_factory=dict)


def plan_name(plan: Plan) -> str:
    return "+".join(plan)


def served_forecast(table: PairTable, plan: Plan, rows: np.ndarray | None = None) -> np.ndarray:
    """The average of the plan's forecasts at every row (or at `rows`)."""
    if rows is None:
        return np.mean([table.forecasts[m] for m in plan], axis=0)
    return np.mean([table.forecasts[m][rows] for m in plan], axis=0)


def choose(table: PairTable, candidates: Sequence[str], mode: str, horizon: int, season: int) -> Choice:
    """Each series' plan from its scoring rows (mode: `auto` chooses, `ensemble` always combines, a method
    name serves that method), then the calibration of what is served."""
    by_series: dict = {}
    for i, sid in enumerate(table.ids):
        by_series.setdefault(sid, []).append(i)
    simple = "seasonal_naive" if season > 1 else "naive"
    plans: dict = {}
    per_method: dict[str, list[float]] = {m: [] for m in candidates}
    served_scores, served_smapes = [], []
    series_mase = {}
    for sid, index in by_series.items():
        index = np.array(index)
        scoring = index[table.scoring[index]]
        scores = {m: _scores(table, scoring, table.forecasts[m]) for m in candidates}
        for m, s in scores.items():
            if math.isfinite(s):
                per_method[m].append(s)
        plan = _plan(scores, mode, table, scoring, simple)
        if plan is None:
            continue
        plans[sid] = plan
        score = _scores(table, scoring, served_forecast(table, plan))
        served_scores.append(score)
        series_mase[sid] = (score, scores.get(simple, math.nan))
        if scoring.size:
            f = served_forecast(table, plan, scoring)
            a = table.actual[scoring]
            ok = np.isfinite(a)
            served_smapes.append(smape(a[ok], f[ok]))
    method_mase = {m: (float(np.mean(v)) if v else None) for m, v in per_method.items()}
    default = _default_plan(method_mase, candidates, mode)
    return Choice(plans, default, method_mase, _mean(served_scores), _mean(served_smapes),
                  _calibrate(table, plans, horizon), len(plans), series_mase)


def _plan(scores: dict, mode: str, table: PairTable, rows: np.ndarray, simple: str) -> Plan | None:
    ranked = sorted((s, m) for m, s in scores.items() if math.isfinite(s))
    if not ranked:
        return None
    if mode not in ("auto", "ensemble"):
        return (mode,) if math.isfinite(scores.get(mode, math.nan)) else None
    best: Plan = (ranked[0][1],)
    plan = best
    if len(ranked) >= 2:
        combo = tuple(sorted(m for _, m in ranked[:COMBINE]))
        combo_score = _scores(table, rows, served_forecast(table, combo))
        if mode == "ensemble" or combo_score <= ranked[0][0]:
            plan = combo
    # Never worse than the simple answer on the backtest.
    floor = scores.get(simple, math.nan)
    if math.isfinite(floor) and _scores(table, rows, served_forecast(table, plan)) > floor:
        plan = (simple,)
    return plan


def _default_plan(method_mase: dict, candidates: Sequence[str], mode: str) -> Plan:
    if mode not in ("auto", "ensemble"):
        return (mode,)
    cheap = [(s, m) for m, s in method_mase.items() if m in BATCH_METHODS and s is not None]
    return (min(cheap)[1],) if cheap else ("seasonal_naive",)


def _calibrate(table: PairTable, plans: dict, horizon: int) -> Calibration:
    """Normalised absolute errors per step of the served forecast at every row where it is defined."""
    errors: list[list[np.ndarray]] = [[] for _ in range(horizon)]
    groups: dict = {}
    for i, sid in enumerate(table.ids):
        if sid in plans:
            groups.setdefault(plans[sid], []).append(i)
    for plan, index in groups.items():
        rows = np.array(index)
        f = served_forecast(table, plan, rows)
        normalised = np.abs(table.actual[rows] - f) / table.spread[rows, None]
        for k in range(horizon):
            column = normalised[:, k]
            errors[k].append(column[np.isfinite(column)])
    return Calibration.from_errors(errors)


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else math.nan
