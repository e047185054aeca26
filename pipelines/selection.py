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
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.features import level_stats, window_spread
from pipelines.intervals import Calibration
from pipelines.methods import ARIMAX, arimax_forecast, history_length, local_forecast
from pipelines.metrics import naive_scale, smape
from pipelines.series import SeriesSet

# Methods forecast in one vectorised batch for any number of series: what a series that was not
# backtested (a large panel's backtest samples its series) may be served by.
BATCH_METHODS = ("lightgbm", "seasonal_naive", "naive")
# A plan averages at most this many candidates.
MAX_COMBINED = 3
# Weight of a plan's mean score over all backtested series against a series' own score (3 origins):
# chosen on the tourism panel's held-out quarters (MASE with 1: 1.479, 3: 1.465, 10: 1.468, panel-wide: 1.468).
SHRINK = 3.0

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
            {m: np.concatenate([p.forecasts.get(m, np.full(p.actual.shape, np.nan)) for p in parts]) for m in methods},
        )


def history_digest(values: np.ndarray) -> str:
    """What a local forecast depends on: the exact values it was fit on."""
    return hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float64).tobytes(), digest_size=12).hexdigest()


def chunk_pairs(
    chunk: SeriesSet, origins: dict, methods: Sequence[str] | dict, horizon: int, season: int, lookback: int,
    quick: bool, regressors: Sequence[str] = (),
) -> PairTable:
    """The pair rows of this chunk's series: origins[id] is a list of (origin, scoring, with_local); local
    `methods` (or methods[id], per series) forecast where with_local is set (LightGBM's forecasts are
    joined in afterwards). `arimax` fits on the numeric covariates named in `regressors`, their actual
    values after each origin standing in for the future ones (as LightGBM's backtest has them)."""
    every = sorted({m for names in methods.values() for m in names}) if isinstance(methods, dict) else list(methods)
    keep = history_length(season)
    rows: list[tuple] = []
    for i, (sid, values) in enumerate(zip(chunk.ids, chunk.values, strict=True)):
        if sid not in origins:
            continue
        series_std = level_stats(values)[1]
        for origin, scoring, with_local in origins[sid]:
            history = values[max(0, origin - keep):origin]
            actual = np.full(horizon, np.nan)
            seen = values[origin:origin + horizon]
            actual[:seen.size] = seen
            spread = float(window_spread(values[max(0, origin - lookback):origin][None, :], np.array([series_std]))[0])
            names = (methods.get(sid, ()) if isinstance(methods, dict) else methods) if with_local else ()
            local = {name: arimax_at(chunk, i, regressors, max(0, origin - keep), origin, horizon, season)
                     if name == ARIMAX else local_forecast(name, history, horizon, season, quick) for name in names}
            rows.append((sid, origin, scoring, actual, spread, naive_scale(values[:origin], season), local))
    table = PairTable(
        [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=bool), np.array([r[3] for r in rows]).reshape(len(rows), horizon),
        np.array([r[4] for r in rows], dtype=np.float64), np.array([r[5] for r in rows], dtype=np.float64),
    )
    for name in every:
        out = np.full((len(rows), horizon), np.nan)
        for i, r in enumerate(rows):
            if r[6].get(name) is not None:
                out[i] = r[6][name]
        table.forecasts[name] = out
    return table


def arimax_at(
    chunk: SeriesSet, i: int, regressors: Sequence[str], start: int, origin: int, horizon: int, season: int,
) -> np.ndarray | None:
    """arimax's forecast of series i from `origin`, fit on values[start:origin] with its regressors."""
    covariates = chunk.drivers.covariates if chunk.drivers is not None else {}
    if not regressors or any(name not in covariates for name in regressors):
        return None
    columns = []
    for name in regressors:
        column = np.full(origin + horizon - start, np.nan)
        known = np.asarray(covariates[name][i][start:origin + horizon], dtype=np.float64)
        column[:known.size] = known
        columns.append(column)
    x = np.column_stack(columns)
    return arimax_forecast(chunk.values[i][start:origin], x[:origin - start], x[origin - start:], season)


def chunk_seeds(chunk: SeriesSet, plans: dict, horizon: int, season: int, quick: bool) -> dict:
    """The final forecasts of each series' local methods after its whole history, with the digest of the
    values they were fit on: a forecast of unchanged data is then not fit again."""
    keep = history_length(season)
    out = {}
    for sid, values in zip(chunk.ids, chunk.values, strict=True):
        members = [m for m in plans.get(sid, ()) if m not in BATCH_METHODS and m != ARIMAX]  # arimax: no future X
        if not members:
            continue
        history = values[-keep:]
        forecasts = {m: f for m in members if (f := local_forecast(m, history, horizon, season, quick)) is not None}
        out[sid] = (history_digest(history), forecasts)
    return out


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
    """Each series' plan from its scoring rows, then the calibration of what is served.

    A plan is a candidate or the average of two or three. `auto` serves each series the plan with the
    lowest backtest MASE among those no worse than its seasonal naive forecast there, where a series'
    score is shrunk towards the plan's mean over all series (SHRINK): three origins per series are a noisy
    judge, and the panel's mean steadies the choice (one series: its own score). `ensemble` chooses among
    combinations only; a method name serves that method wherever it applies.
    """
    simple = "seasonal_naive" if season > 1 else "naive"
    if mode in ("auto", "ensemble"):
        sizes = range(2 if mode == "ensemble" else 1, min(MAX_COMBINED, len(candidates)) + 1)
        plans_all: list[Plan] = [c for r in sizes for c in itertools.combinations(sorted(candidates), r)]
    else:
        plans_all = [(mode,)]
    ids = list(dict.fromkeys(table.ids))
    code = {sid: i for i, sid in enumerate(ids)}
    owner = np.array([code[sid] for sid in table.ids], dtype=np.int64)
    scores = np.column_stack([_series_scores(table, plan, owner, len(ids)) for plan in plans_all]) if ids else \
        np.empty((0, len(plans_all)))
    floor = (_series_scores(table, (simple,), owner, len(ids)) if simple in table.forecasts
             else np.full(len(ids), np.nan))
    panel = np.array([float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else np.nan
                      for col in scores.T])
    with np.errstate(all="ignore"):
        judged = (scores + SHRINK * panel[None, :]) / (1 + SHRINK)
    allowed = np.isfinite(scores) & ~(np.isfinite(floor)[:, None] & (scores > floor[:, None]))
    judged = np.where(allowed, judged, np.inf)
    plans: dict = {}
    series_mase: dict = {}
    for i, sid in enumerate(ids):
        j = int(np.argmin(judged[i])) if judged.shape[1] else 0
        if judged.shape[1] and np.isfinite(judged[i, j]):
            plan = plans_all[j]
            score = float(scores[i, j])
        elif math.isfinite(floor[i]):
            plan, score = (simple,), float(floor[i])
        else:
            continue
        plans[sid] = plan
        series_mase[sid] = (score, float(floor[i]))
    method_mase = {}
    for m in candidates:
        col = _series_scores(table, (m,), owner, len(ids))
        method_mase[m] = float(np.mean(col[np.isfinite(col)])) if np.isfinite(col).any() else None
    default = _default_plan(plans_all, panel, mode)
    smapes = [_smape_rows(table, plan, np.flatnonzero((owner == code[sid]) & table.scoring))
              for sid, plan in plans.items()]
    return Choice(plans, default, method_mase, _mean([v[0] for v in series_mase.values()]), _mean(smapes),
                  calibrate(table, plans, horizon), len(plans), series_mase)


def _series_scores(table: PairTable, plan: Plan, owner: np.ndarray, count: int) -> np.ndarray:
    """Each series' mean MASE of `plan` over its scoring rows; NaN where the plan lacks a forecast there."""
    forecast = served_forecast(table, plan)
    seen = np.isfinite(table.actual)
    with np.errstate(all="ignore"):
        gaps = np.any(~np.isfinite(forecast) & seen, axis=1) | ~(table.scale > 0) | ~seen.any(axis=1)
        errors = np.where(seen, np.abs(table.actual - forecast), 0.0)
        rows = errors.sum(axis=1) / seen.sum(axis=1) / table.scale
    rows = np.where(gaps, np.nan, rows)
    scoring = table.scoring
    total = np.bincount(owner[scoring], weights=np.nan_to_num(rows[scoring]), minlength=count)
    count_rows = np.bincount(owner[scoring], minlength=count)
    bad = np.bincount(owner[scoring], weights=np.isnan(rows[scoring]).astype(float), minlength=count)
    with np.errstate(all="ignore"):
        return np.where((count_rows > 0) & (bad == 0), total / count_rows, np.nan)


def _smape_rows(table: PairTable, plan: Plan, rows: np.ndarray) -> float:
    if not rows.size:
        return math.nan
    f, a = served_forecast(table, plan, rows), table.actual[rows]
    ok = np.isfinite(a) & np.isfinite(f)
    return smape(a[ok], f[ok]) if ok.any() else math.nan


def _default_plan(plans_all: list[Plan], panel: np.ndarray, mode: str) -> Plan:
    """What a series that was not backtested is served: the best plan over the panel that forecasts any
    number of series in one batch."""
    if mode not in ("auto", "ensemble"):
        return plans_all[0]
    cheap = [(panel[j], plan) for j, plan in enumerate(plans_all)
             if all(m in BATCH_METHODS for m in plan) and math.isfinite(panel[j])]
    return min(cheap)[1] if cheap else ("seasonal_naive",)


def calibrate(table: PairTable, plans: dict, horizon: int) -> Calibration:
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
