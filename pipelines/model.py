"""Trained models: LightGBM booster(s) over the shared feature transform, forecasting many windows at once.

A model is global: one set of boosters for all of its series (a single-series model is a panel of one).
It keeps each training series' level statistics and naive scale, and the calibration errors its
intervals come from. Forecasts are computed for a batch of windows, one LightGBM call per step (a single
window row by row through LightGBM's single-row path: pipelines/single_row.py).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.drivers import FutureDrivers
from pipelines.features import FeatureLayout, differenced, undifferenced, window_spread
from pipelines.frequency import Frequency
from pipelines.intervals import Calibration
from pipelines.row_order import RowOrder
from pipelines.single_row import SingleRowPaths
from spicepod import InvalidInput

if TYPE_CHECKING:
    import lightgbm as lgb

MODEL_FORMAT = 2
# A recursive forecast feeds on itself; beyond this many steps it is noise.
MAX_RECURSIVE_HORIZON = 1000
# Rows per LightGBM call below which one thread answers faster than a pool.
SINGLE_THREAD_ROWS = 2000


def predict_threads(rows: int) -> int:
    return 1 if rows < SINGLE_THREAD_ROWS else 0  # 0: LightGBM's default, every core


class SeriesStats:
    """Per-series level statistics (mean, spread) and MASE scale, looked up by series id."""

    def __init__(self, ids: Sequence[str | None], mean: np.ndarray, std: np.ndarray, scale: np.ndarray):
        self.ids = list(ids)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self._index = {sid: i for i, sid in enumerate(self.ids)}

    def lookup(self, ids: Sequence[str | None], windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level statistics for each window; a series unknown at training uses its window's own."""
        index = self._places(ids)
        known = index >= 0
        if known.all():
            return self.mean[index], self.std[index]
        mean = np.where(known, self.mean[np.maximum(index, 0)], windows.mean(axis=1))
        own = windows.std(axis=1)
        own = np.where(own > 0, own, np.maximum(np.abs(mean), 1.0))
        std = np.where(known, self.std[np.maximum(index, 0)], own)
        return mean, std

    def scales(self, ids: Sequence[str | None]) -> np.ndarray:
        """The MASE scale of each series (NaN for a series unknown at training)."""
        index = self._places(ids)
        known = index >= 0
        scales = np.full(len(ids), math.nan)
        scales[known] = self.scale[index[known]]
        return scales

    def _places(self, ids: Sequence[str | None]) -> np.ndarray:
        """Each series' place in these statistics, -1 for a series unknown at training."""
        return np.fromiter(map(self._index.get, ids, itertools.repeat(-1)), np.int64, len(ids))

    def to_arrays(self) -> dict[str, np.ndarray]:
        ids = ["" if sid is None else sid for sid in self.ids]
        return {"ids": np.asarray(ids, dtype=np.str_), "single": np.asarray([self.ids == [None]]),
                "mean": self.mean, "std": self.std, "scale": self.scale}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SeriesStats:
        ids: list[str | None] = [None] if bool(arrays["single"][0]) else [str(s) for s in arrays["ids"]]
        return cls(ids, arrays["mean"], arrays["std"], arrays["scale"])


class TrainedModel:
    """A model trained in product: booster(s) on normalised windows, series statistics, calibration."""

    def __init__(
        self,
        layout: FeatureLayout,
        freq: Frequency,
        horizon: int,
        strategy: str,
        boosters: list[lgb.Booster],
        stats: SeriesStats,
        *,
        calibration: Calibration | None = None,
        metrics: dict[str, Any] | None = None,
        training_rows: int = 0,
        differencing: int = 0,
    ):
        self.layout = layout
        # Seasonal differencing: the boosters model v[t] - v[t - differencing]; 0 models the values.
        self.differencing = differencing
        self.freq = freq
        self.horizon = horizon
        self.strategy = strategy
        self.boosters = boosters
        self.stats = stats
        self.calibration = calibration
        self.metrics = metrics or {}
        self.training_rows = training_rows
        self.max_horizon = MAX_RECURSIVE_HORIZON if strategy == "recursive" else horizon
        self._single_rows = SingleRowPaths(boosters, layout.width)
        self._orders = [RowOrder(booster) for booster in boosters]  # each booster's batch row order

    @property
    def lookback(self) -> int:
        return self.layout.lookback

    @property
    def window_length(self) -> int:
        """Values a forecast reads: the lookback, and one season more when differencing."""
        return self.layout.lookback + self.differencing

    @property
    def min_periods(self) -> int:
        """The fewest periods a series needs for a forecast: a whole window."""
        return self.window_length

    def forecast_windows(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forecasts (n, horizon) after each window (n, window_length), and each window's spread (n,).

        `last_times` (n,) is each window's newest timestamp; `ids` its series; `drivers` the driver inputs
        of a model that has drivers.
        """
        predicted, spread, _ = self._run(windows, last_times, horizon, ids, drivers, explain=False)
        return predicted, spread

    def explain_windows(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Forecasts and spreads as `forecast_windows`, and each input group's share of them (n, horizon) from
        LightGBM's SHAP values, in the forecast's units: per step the groups sum to the forecast."""
        return self._run(windows, last_times, horizon, ids, drivers, explain=True)

    def _run(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None, explain: bool,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        windows = np.asarray(windows, dtype=np.float64)
        lag = self.differencing
        if self.layout.drivers and drivers is None:
            raise InvalidInput("this model forecasts with drivers; their values are missing")
        if not lag:
            return self._forecast(windows, last_times, horizon, ids, drivers, explain)
        changes, spread, parts = self._forecast(differenced(windows, lag), last_times, horizon, ids,
                                                drivers, explain)
        values = undifferenced(windows[:, -lag:], changes)
        if explain:  # the value a season before belongs to the series' own past
            parts["lags"] = parts.get("lags", 0) + values[:, :horizon]
        return values[:, lag:], spread, parts

    def _forecast(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None, explain: bool,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        layout = self.layout
        lookback = layout.lookback
        n = windows.shape[0]
        series_mean, series_std = self.stats.lookup(ids, windows)
        last = np.asarray(last_times).astype("datetime64[us]")
        positions = self._positions(last, horizon)
        if n == 1 and not explain:
            values, spread = self._forecast_one(windows[0], last, horizon, series_mean[0], series_std[0],
                                                positions[0], drivers)
            return values, np.array([spread]), {}
        threads = predict_threads(n)
        spread = window_spread(windows, series_std)
        rows: list[tuple[int, Any, np.ndarray, np.ndarray, np.ndarray]] = []  # explain: (step, booster, x, mean, sd)

        blocks = layout.drivers.forecast_steps(drivers, last, horizon, self.freq) if layout.drivers else None

        def step_value(b: int, window: np.ndarray, k: int, step: int) -> np.ndarray:
            extra = blocks[:, k] if blocks is not None else None
            x, mu, sd = layout.rows(window, series_mean, series_std, positions[:, k], step, drivers=extra)
            booster = self.boosters[b]
            if explain:
                rows.append((k, booster, x, mu, sd))
            return self._orders[b].predict(booster, x, threads) * sd + mu

        if self.strategy == "direct":
            out = np.empty((n, horizon), dtype=np.float64)
            for k in range(horizon):
                out[:, k] = step_value(k, windows, k, k + 1)
        else:
            buffer = np.empty((n, lookback + horizon), dtype=np.float64)
            buffer[:, :lookback] = windows
            for k in range(horizon):
                buffer[:, lookback + k] = step_value(0, buffer[:, k:k + lookback], k, 1)
            out = buffer[:, lookback:]
        return out, spread, self._contributions(rows, n, horizon, threads) if explain else {}

    def _forecast_one(
        self, window: np.ndarray, last: np.ndarray, horizon: int, series_mean: float, series_std: float,
        positions: np.ndarray, drivers: FutureDrivers | None,
    ) -> tuple[np.ndarray, float]:
        """`_forecast`'s values (1, horizon) and spread for one window, bit for bit: the row of each step built in
        place and predicted through LightGBM's single-row path, where a batch's per-call costs would be most of
        the time. The spread is the first step's (its window is the one given), as window_spread gives it."""
        layout = self.layout
        lookback = layout.lookback
        recursive = self.strategy != "direct"
        # This thread's row, each step's features written into it, and a reader of it for each booster (a
        # recursive model's one booster reads every step).
        x, predict = self._single_rows.row_readers()
        values = np.empty(lookback + horizon, dtype=np.float64)
        values[:lookback] = window  # a recursive step's window ends with the steps before it
        blocks = layout.drivers.forecast_steps(drivers, last, horizon, self.freq)[0] if layout.drivers else None
        spread = math.nan
        for k in range(horizon):
            extra = blocks[k] if blocks is not None else None
            if recursive:
                mu, sd = layout.row_into(x, values[k:k + lookback], series_mean, series_std, positions[k], 1, extra)
                values[lookback + k] = predict[0]() * sd + mu
            else:
                mu, sd = layout.row_into(x, window, series_mean, series_std, positions[k], k + 1, extra)
                values[lookback + k] = predict[k]() * sd + mu
            if not k:
                spread = sd
        return values[None, lookback:], spread

    def _contributions(self, rows: list[tuple], n: int, horizon: int, threads: int) -> dict[str, np.ndarray]:
        """Each input group's share of every step, in the forecast's units, from LightGBM's SHAP values of the
        steps' feature rows: one call per booster (a recursive model's every step at once, as SHAP costs more
        per call than per row)."""
        groups = self.layout.groups()
        parts = {g: np.zeros((n, horizon)) for g in dict.fromkeys(groups)}
        by_booster: dict[int, list[tuple]] = {}
        for row in rows:
            by_booster.setdefault(id(row[1]), []).append(row)
        for items in by_booster.values():
            contrib = items[0][1].predict(np.vstack([x for _, _, x, _, _ in items]), num_threads=threads,
                                          pred_contrib=True)
            for j, (k, _, _, mu, sd) in enumerate(items):
                block = contrib[j * n:(j + 1) * n]
                for col, group in enumerate(groups):
                    parts[group][:, k] += block[:, col] * sd
                parts["level"][:, k] += block[:, -1] * sd + mu  # LightGBM's expected value, and the window mean
        return parts

    def feature_importance(self) -> dict[str, float]:
        """Each input group's share of the boosters' total gain."""
        groups = self.layout.groups()
        gain = np.zeros(len(groups))
        for booster in self.boosters:
            gain += booster.feature_importance(importance_type="gain")
        total = float(gain.sum())
        shares: dict[str, float] = {}
        for group, value in zip(groups, gain, strict=True):
            shares[group] = shares.get(group, 0.0) + (float(value) / total if total > 0 else 0.0)
        return shares

    def _positions(self, last: np.ndarray, horizon: int) -> np.ndarray:
        """The season position of each of the `horizon` periods after each window's newest, `last` (n,)."""
        if not self.layout.use_position:
            return np.zeros((last.size, horizon), dtype=np.int64)
        return self.freq.future_positions(last, horizon)

    # --- persistence ------------------------------------------------------------------------------

    def _booster_files(self) -> list[str]:
        if self.strategy == "recursive":
            return ["booster.txt"]
        return [f"booster_step{k:03d}.txt" for k in range(1, len(self.boosters) + 1)]

    def save(self, directory: Path) -> None:
        """Boosters as LightGBM text files, series statistics and calibration as .npz, the rest as JSON."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._booster_files()
        for booster, name in zip(self.boosters, files, strict=True):
            booster.save_model(str(directory / name))
        save_series_arrays(directory, self.stats, self.calibration)
        meta = {
            "format": MODEL_FORMAT,
            "horizon": self.horizon,
            "strategy": self.strategy,
            "frequency": str(self.freq),
            "features": self.layout.to_json(),
            "boosters": files,
            "metrics": json_safe(self.metrics),
            "training_rows": self.training_rows,
            "differencing": self.differencing,
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TrainedModel:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "model.json").read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read {directory / 'model.json'}: {exc}") from exc
        if meta.get("format") != MODEL_FORMAT:
            raise InvalidInput(f"{directory / 'model.json'}: unsupported model format {meta.get('format')!r}")
        layout = FeatureLayout.from_json(meta["features"])
        import lightgbm as lgb  # on first use: a runtime without models (a data node) never loads it

        boosters = [lgb.Booster(model_file=str(directory / name)) for name in meta["boosters"]]
        stats, calibration = load_series_arrays(directory)
        return cls(
            layout, Frequency.parse(meta["frequency"]), int(meta["horizon"]), meta["strategy"], boosters, stats,
            calibration=calibration, metrics=meta["metrics"], training_rows=int(meta["training_rows"]),
            differencing=int(meta.get("differencing", 0)),
        )


def save_series_arrays(directory: Path, stats: SeriesStats, calibration: Calibration | None) -> None:
    """A model's series statistics and calibration errors, as .npz files beside its model.json."""
    np.savez(directory / "series.npz", **stats.to_arrays())
    if calibration is not None:
        np.savez(directory / "calibration.npz", **calibration.to_arrays())


def load_series_arrays(directory: Path) -> tuple[SeriesStats, Calibration | None]:
    with np.load(directory / "series.npz", allow_pickle=False) as arrays:
        stats = SeriesStats.from_arrays(dict(arrays))
    if not (directory / "calibration.npz").is_file():
        return stats, None
    with np.load(directory / "calibration.npz", allow_pickle=False) as arrays:
        return stats, Calibration.from_arrays(dict(arrays))


def json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has none), through nested dicts."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value


class FileBoosterModel:
    """A user-saved LightGBM model that maps `lookback` raw lags (oldest first) to the next value."""

    strategy = "recursive"
    max_horizon = MAX_RECURSIVE_HORIZON
    calibration = None

    def __init__(self, booster: lgb.Booster, lookback: int):
        self.booster = booster
        self.lookback = lookback
        self.window_length = self.min_periods = lookback
        self._single_row = SingleRowPaths([booster], lookback)
        self._order = RowOrder(booster)

    @classmethod
    def load(cls, path: Path, lookback: int) -> FileBoosterModel:
        import lightgbm as lgb  # on first use: a runtime without models (a data node) never loads it

        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"cannot load LightGBM model {str(path)!r}: {exc}") from exc
        if booster.num_feature() != lookback:
            raise InvalidInput(
                f"LightGBM model {str(path)!r} takes {booster.num_feature()} features, but lookback is {lookback}"
            )
        return cls(booster, lookback)

    def forecast_windows(
        self, windows: np.ndarray, last_times: np.ndarray, horizon: int, ids: Sequence[str | None],
        drivers: FutureDrivers | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each step predicted from the previous `lookback` raw values; spreads are the windows' own."""
        lookback = self.lookback
        windows = np.asarray(windows, dtype=np.float64)
        n = windows.shape[0]
        threads = predict_threads(n)
        buffer = np.empty((n, lookback + horizon), dtype=np.float64)
        buffer[:, :lookback] = windows
        if n == 1:  # step by step through the single-row path, as TrainedModel forecasts one window
            x, [predict] = self._single_row.row_readers()
            for k in range(horizon):
                x[:] = buffer[0, k:k + lookback]
                buffer[0, lookback + k] = predict()
        else:
            for k in range(horizon):
                buffer[:, lookback + k] = self._order.predict(self.booster, buffer[:, k:k + lookback], threads)
        return buffer[:, lookback:], windows.std(axis=1)

