"""PortfolioModel: each series forecast by the method (or average of methods) its backtest chose.

It forecasts like a `TrainedModel` (`forecast_windows` over a batch of windows), so the prediction service
serves both alike. Windows are left-padded with NaN for series shorter than the window: a series too
short for the LightGBM window is forecast by the local methods that fit it. LightGBM rows go through the
booster(s) in one batch; local methods fit each series' recent history, except when it is exactly the
history a forecast was already made from (the final forecasts of training seed that memo).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.drivers import FutureDrivers
from pipelines.features import window_spread
from pipelines.frequency import Frequency
from pipelines.intervals import Calibration
from pipelines.methods import (
    ARIMAX,
    arimax_forecast,
    fallback_forecast,
    finite_tail,
    history_length,
    local_forecast,
    naive,
    seasonal_naive,
    uses_library,
)
from pipelines.model import (
    MAX_RECURSIVE_HORIZON,
    SeriesStats,
    TrainedModel,
    json_safe,
    load_series_arrays,
    save_series_arrays,
)
from pipelines.selection import Plan, history_digest, plan_name
from spicepod import InvalidInput

PORTFOLIO_FORMAT = 1
MIN_PERIODS = 2
MEMO_ENTRIES = 100_000  # remembered local forecasts (series x method x horizon)


class PortfolioModel:
    """The chosen plan of every series, the LightGBM model (when any plan uses it), value-level series
    statistics (for interval spreads and live scales), the served calibration and optional bounds."""

    def __init__(
        self, *, freq: Frequency, horizon: int, lookback: int, lightgbm: TrainedModel | None, plans: dict,
        default: Plan, stats: SeriesStats, calibration: Calibration | None, bounds: tuple | None,
        metrics: dict[str, Any] | None = None, seeds: dict | None = None, quick: bool = False,
        regressors: Sequence[str] = (),
    ):
        self.freq = freq
        self.horizon = horizon
        self._lookback = lookback
        self.lightgbm = lightgbm
        self.plans = plans
        self.default = default
        self.stats = stats
        self.calibration = calibration
        self.bounds = bounds
        self.quick = quick  # local methods fit their quick variants (as in the backtest)
        self.regressors = list(regressors)  # the numeric covariates known ahead that arimax fits on
        self.metrics = metrics or {}
        self.training_rows = lightgbm.training_rows if lightgbm is not None else 0
        self.strategy = lightgbm.strategy if lightgbm is not None else "recursive"
        self.max_horizon = lightgbm.max_horizon if lightgbm is not None else MAX_RECURSIVE_HORIZON
        # series id -> (backtest MASE of what it is served, of its seasonal naive): set by training, not stored
        self.series_mase: dict = {}
        # What a forecast reads: the LightGBM window, or the history local methods fit on if longer. Plans
        # never change once trained, so this is worked out once, not on every forecast.
        methods = {m for plan in (*plans.values(), default) for m in plan}
        # Whether a forecast may fit a method on the series' new history (arimax, or a statsforecast method: ets,
        # theta...: milliseconds to seconds), rather than only predict with LightGBM or repeat a (seasonal) naive
        # value. These are the methods `_local` and `_arimax` memoise.
        self.fits_when_forecasting = any(m == ARIMAX or uses_library(m) for m in methods)
        self._window_length = max(lightgbm.window_length if lightgbm is not None else lookback,
                                  history_length(freq.season) if methods - {"lightgbm"} else 0)
        self._memo: dict = {}
        self._memo_lock = threading.Lock()
        for sid, (digest, forecasts) in (seeds or {}).items():
            for method, values in forecasts.items():
                self._memo[(sid, method, values.size)] = (digest, np.asarray(values, dtype=np.float64))

    @property
    def lookback(self) -> int:
        return self._lookback

    @property
    def window_length(self) -> int:
        return self._window_length

    @property
    def min_periods(self) -> int:
        """Any series of two periods gets a forecast (from the methods that fit so short a history)."""
        return MIN_PERIODS

    def plan_of(self, sid: str | None) -> Plan:
        return self.plans.get(sid, self.default)

    def methods_of(self, ids: Sequence[str | None], windows: np.ndarray | None = None) -> list[str]:
        """The method name each series is served by (the names of a combination joined by '+')."""
        return [plan_name(plan) for plan in self._plans(ids, windows)]

    def _plans(self, ids: Sequence[str | None], windows: np.ndarray | None) -> list[Plan]:
        """Each window's plan, without LightGBM where the series is shorter than its window (then the fallback)."""
        if windows is None:
            return [self.plan_of(sid) for sid in ids]
        # Counted for every window at once: a panel has thousands.
        finite = np.isfinite(windows).sum(axis=1)
        length = self.lightgbm.window_length if self.lightgbm is not None else None
        plans = []
        for i, sid in enumerate(ids):
            plan = self.plan_of(sid)
            if "lightgbm" in plan and (length is None or finite[i] < length):
                plan = self._without_lightgbm(plan, windows[i])
            plans.append(plan)
        return plans

    def _without_lightgbm(self, plan: Plan, row: np.ndarray) -> Plan:
        rest = tuple(m for m in plan if m != "lightgbm")
        if rest:
            return rest
        return (fallback_forecast(finite_tail(row), 1, self.freq.season)[0],)

    def forecast_windows(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forecasts (n, horizon) after each window (n, window_length; NaN before a series starts) and each
        window's spread (n,); `drivers` are the LightGBM model's driver inputs (local methods take none)."""
        predicted, spread, _ = self._run(windows, last_times, horizon, ids, drivers, explain=False)
        return predicted, spread

    def explain_windows(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Forecasts, spreads and each input group's share of the forecasts: LightGBM's groups (its SHAP
        values) and, for a local method, the method itself, each weighted as the plan averages them; what
        the bounds cut off is the group `bounds`."""
        return self._run(windows, last_times, horizon, ids, drivers, explain=True)

    def _run(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None, explain: bool,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        windows = np.asarray(windows, dtype=np.float64)
        n = windows.shape[0]
        plans = self._plans(ids, windows)
        sizes = np.array([len(p) for p in plans], dtype=np.float64)
        weights = 1.0 / sizes
        total = np.zeros((n, horizon))
        parts: dict[str, np.ndarray] = {}

        def add(group: str, rows: np.ndarray | int, values: np.ndarray) -> None:
            if group not in parts:
                parts[group] = np.zeros((n, horizon))
            parts[group][rows] += values

        lgbm_rows = np.array([i for i, plan in enumerate(plans) if "lightgbm" in plan], dtype=np.int64)
        if lgbm_rows.size:
            length = self.lightgbm.window_length
            inputs = drivers.rows(lgbm_rows) if drivers is not None else None
            predicted, _, groups = self.lightgbm._run(
                windows[lgbm_rows, -length:], np.asarray(last_times)[lgbm_rows], horizon, [ids[i] for i in lgbm_rows],
                inputs, explain)
            total[lgbm_rows] += predicted
            for group, values in groups.items():
                add(group, lgbm_rows, values * weights[lgbm_rows, None])
        season, keep = self.freq.season, history_length(self.freq.season)
        for i, plan in enumerate(plans):
            local = [m for m in plan if m != "lightgbm"]
            if not local:
                continue
            history = finite_tail(windows[i])[-keep:]
            for method in local:
                if method == ARIMAX:
                    values = self._arimax(ids[i], history, drivers, i, horizon, season)
                else:
                    values = self._local(ids[i], method, history, horizon, season)
                total[i] += values
                if explain:
                    add(method, i, values * weights[i])
        averaged = total / sizes[:, None]
        predicted = self.bounded(averaged)
        if explain and self.bounds is not None and np.any(predicted != averaged):
            add("bounds", slice(None), predicted - averaged)
        return predicted, self._spreads(windows, ids), parts

    def _arimax(
        self, sid: str | None, history: np.ndarray, drivers: FutureDrivers | None, row: int, horizon: int, season: int,
    ) -> np.ndarray:
        """arimax's forecast of a window row, with its regressors over the history and the forecast periods
        (the fallback forecast where they are not all known)."""
        if drivers is None or any(n not in drivers.history or n not in drivers.future for n in self.regressors):
            return fallback_forecast(history, horizon, season)[1]
        x = np.column_stack([drivers.history[n][row][-history.size:] for n in self.regressors])
        x_future = np.column_stack([np.asarray(drivers.future[n][row, :horizon], dtype=np.float64)
                                    for n in self.regressors])
        if len(x_future) < horizon:  # fewer future values than steps: no regression forecast of them all
            return fallback_forecast(history, horizon, season)[1]
        fitted = np.concatenate([history, x.ravel(), x_future.ravel()])
        return self._memoised(sid, ARIMAX, fitted, history, horizon, season,
                              lambda: arimax_forecast(history, x, x_future, season))

    def _local(self, sid: str | None, method: str, history: np.ndarray, horizon: int, season: int) -> np.ndarray:
        if method == "seasonal_naive":
            return seasonal_naive(history, horizon, season)
        if method == "naive":
            return naive(history, horizon, season)
        return self._memoised(sid, method, history, history, horizon, season,
                              lambda: local_forecast(method, history, horizon, season, self.quick))

    def _memoised(
        self, sid: str | None, method: str, fitted: np.ndarray, history: np.ndarray, horizon: int, season: int,
        fit: Callable[[], np.ndarray | None],
    ) -> np.ndarray:
        """`method`'s forecast of a series, fit again only when what it fits on (`fitted`) changed; the fallback
        forecast of `history` where the method cannot fit."""
        digest = history_digest(fitted)
        key = (sid, method, horizon)
        kept = self._memo.get(key)
        if kept is not None and kept[0] == digest:
            return kept[1]
        out = fit()
        if out is None:
            out = fallback_forecast(history, horizon, season)[1]
        with self._memo_lock:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (digest, out)
        return out

    def _spreads(self, windows: np.ndarray, ids: Sequence[str | None]) -> np.ndarray:
        """The spread of each window's latest `lookback` values, as the calibration errors were scaled."""
        recent = windows[:, -self._lookback:]
        _, series_std = self.stats.lookup(ids, np.nan_to_num(recent))
        if np.isfinite(recent).all():
            return window_spread(recent, series_std)
        out = np.empty(len(ids))
        for i in range(len(ids)):
            tail = finite_tail(recent[i])
            out[i] = window_spread(tail[None, :], series_std[i:i + 1])[0] if tail.size else series_std[i]
        return out

    def bounded(self, values: np.ndarray) -> np.ndarray:
        if self.bounds is None:
            return values
        low, high = self.bounds
        return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)

    # --- persistence ------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.lightgbm is not None:
            self.lightgbm.save(directory / "lightgbm")
        save_series_arrays(directory, self.stats, self.calibration)
        plan_list = sorted({*self.plans.values(), self.default})
        index = {plan: i for i, plan in enumerate(plan_list)}
        ids = [sid for sid in self.plans]
        seeds = {k: v for k, v in self._memo.items() if k[2] == self.horizon}
        np.savez(
            directory / "plans.npz",
            ids=np.asarray(["" if s is None else s for s in ids], dtype=np.str_),
            plan=np.asarray([index[self.plans[s]] for s in ids], dtype=np.int64),
            seed_ids=np.asarray(["" if k[0] is None else k[0] for k in seeds], dtype=np.str_),
            seed_methods=np.asarray([k[1] for k in seeds], dtype=np.str_),
            seed_digests=np.asarray([v[0] for v in seeds.values()], dtype=np.str_),
            seed_values=np.asarray([v[1] for v in seeds.values()]).reshape(len(seeds), self.horizon),
        )
        meta = {
            "format": PORTFOLIO_FORMAT,
            "kind": "portfolio",
            "frequency": str(self.freq),
            "horizon": self.horizon,
            "lookback": self._lookback,
            "plans": [list(p) for p in plan_list],
            "default": index[self.default],
            "single": self.stats.ids == [None],
            "bounds": None if self.bounds is None else list(self.bounds),
            "quick": self.quick,
            "regressors": self.regressors,
            "metrics": json_safe(self.metrics),
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> PortfolioModel:
        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != PORTFOLIO_FORMAT:
            raise InvalidInput(f"{directory / 'model.json'}: unsupported portfolio format {meta.get('format')!r}")
        lightgbm = TrainedModel.load(directory / "lightgbm") if (directory / "lightgbm").is_dir() else None
        stats, calibration = load_series_arrays(directory)
        plan_list = [tuple(p) for p in meta["plans"]]
        single = bool(meta["single"])

        def sid_of(text: str) -> str | None:
            return None if single else str(text)

        with np.load(directory / "plans.npz", allow_pickle=False) as arrays:
            plans = {sid_of(s): plan_list[int(p)] for s, p in zip(arrays["ids"], arrays["plan"], strict=True)}
            seeds: dict = {}
            for sid, method, digest, values in zip(arrays["seed_ids"], arrays["seed_methods"], arrays["seed_digests"],
                                                   arrays["seed_values"], strict=True):
                seeds.setdefault(sid_of(sid), (str(digest), {}))[1][str(method)] = values
        bounds = tuple(meta["bounds"]) if meta["bounds"] is not None else None
        return cls(freq=Frequency.parse(meta["frequency"]), horizon=int(meta["horizon"]),
                   lookback=int(meta["lookback"]), lightgbm=lightgbm, plans=plans,
                   default=plan_list[int(meta["default"])], stats=stats, calibration=calibration, bounds=bounds,
                   metrics=meta["metrics"], seeds=seeds, quick=bool(meta["quick"]),
                   regressors=meta.get("regressors", []))


def load_model(directory: Path) -> TrainedModel | PortfolioModel:
    """A stored model of either kind, by its model.json."""
    try:
        kind = json.loads((Path(directory) / "model.json").read_text()).get("kind")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {Path(directory) / 'model.json'}: {exc}") from exc
    return PortfolioModel.load(directory) if kind == "portfolio" else TrainedModel.load(directory)


def bounds_for(setting: Any, minimum: float) -> tuple | None:
    """`bounds: auto` bounds non-negative data below by zero; `[low, high]` as given; `none` nothing."""
    if setting in (None, "none"):
        return None
    if setting == "auto":
        return (0.0, None) if math.isfinite(minimum) and minimum >= 0 else None
    low, high = setting
    return (low, high)
