"""LightGBM training and forecasting on normalised lookback windows; numpy only in the forecast loop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipelines.frequency import Frequency, check_regular
from spicepod.errors import InvalidInput

STRATEGIES = ("recursive", "direct")
# A recursive forecast feeds on itself; beyond this many steps it is noise and costs ~0.1 ms a step.
MAX_RECURSIVE_HORIZON = 1000
# Window std floor as a share of the training series' std: keeps flat windows (intermittent zeros)
# from blowing the normalised target up.
SD_FLOOR_SHARE = 0.05
MODEL_FORMAT = 1
DEFAULT_NUM_BOOST_ROUND = 200

__all__ = [
    "STRATEGIES",
    "FileBoosterModel",
    "FeatureLayout",
    "TrainedModel",
    "mase",
    "smape",
    "train_model",
]


# --------------------------------------------------------------------------------------------- metrics


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season: int) -> float:
    """Mean absolute scaled error: forecast MAE over the in-sample seasonal naive MAE of `history`.

    Falls back to season 1 when the history is too short for `season`; NaN when the history is flat.
    """
    actual, forecast, history = (np.asarray(a, dtype=np.float64) for a in (actual, forecast, history))
    if actual.shape != forecast.shape or actual.size == 0:
        raise ValueError("actual and forecast must be non-empty and of the same shape")
    if season < 1 or history.size <= season:
        season = 1
    if history.size <= season:
        return math.nan
    scale = float(np.mean(np.abs(history[season:] - history[:-season])))
    if scale == 0.0:
        return math.nan
    return float(np.mean(np.abs(actual - forecast))) / scale


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in percent (0..200); a step where both are 0 counts 0."""
    actual, forecast = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape or actual.size == 0:
        raise ValueError("actual and forecast must be non-empty and of the same shape")
    denom = np.abs(actual) + np.abs(forecast)
    safe = np.where(denom == 0.0, 1.0, denom)
    terms = np.where(denom == 0.0, 0.0, 2.0 * np.abs(actual - forecast) / safe)
    return float(100.0 * np.mean(terms))


# -------------------------------------------------------------------------------------------- features


class FeatureLayout:
    """Which columns a feature row has, and the level statistics the level features are relative to.

    Columns: `lookback` normalised lags (oldest first), level mean, level log std, then when the season
    is > 1 the target's position in the season and, when lookback >= season, the normalised value at the
    same position of the latest season in the window.
    """

    def __init__(self, lookback: int, season: int, mean: float, std: float):
        self.lookback = lookback
        self.season = season
        self.mean = float(mean)
        # A constant series still needs a finite scale.
        self.std = float(std) if std > 0 and math.isfinite(std) else 1.0
        self.sd_floor = SD_FLOOR_SHARE * self.std
        self.use_position = season > 1
        self.use_season_lag = season > 1 and lookback >= season
        self.width = lookback + 2 + int(self.use_position) + int(self.use_season_lag)

    @classmethod
    def for_series(cls, values: np.ndarray, lookback: int, season: int) -> FeatureLayout:
        return cls(lookback, season, float(np.mean(values)), float(np.std(values)))

    def names(self) -> list[str]:
        names = [f"lag_{self.lookback - i}" for i in range(self.lookback)] + ["level_mean", "level_log_std"]
        if self.use_position:
            names.append("season_position")
        if self.use_season_lag:
            names.append("season_lag")
        return names

    def season_lag_index(self, step: int) -> int:
        """Window index of the latest value at the same season position as the target `step` (1-based)."""
        return self.lookback - self.season + (step - 1) % self.season

    def to_json(self) -> dict[str, Any]:
        return {
            "lookback": self.lookback,
            "season": self.season,
            "mean": self.mean,
            "std": self.std,
            "names": self.names(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureLayout:
        layout = cls(int(data["lookback"]), int(data["season"]), float(data["mean"]), float(data["std"]))
        if layout.names() != data["names"]:
            raise InvalidInput("model.json: the feature layout does not match this version of flightcast")
        return layout

    def training_set(
        self, values: np.ndarray, positions: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and normalised targets for predicting `step` values ahead of each window."""
        lookback = self.lookback
        count = values.size - lookback - step + 1
        windows = sliding_window_view(values, lookback)[:count]
        mu = windows.mean(axis=1)
        sd = np.maximum(windows.std(axis=1), self.sd_floor)
        x = np.empty((count, self.width), dtype=np.float64)
        x[:, :lookback] = (windows - mu[:, None]) / sd[:, None]
        x[:, lookback] = (mu - self.mean) / self.std
        x[:, lookback + 1] = np.log(sd / self.std)
        col = lookback + 2
        target = np.arange(count) + lookback + step - 1
        if self.use_position:
            x[:, col] = positions[target]
            col += 1
        if self.use_season_lag:
            x[:, col] = x[:, self.season_lag_index(step)]
        y = (values[target] - mu) / sd
        return x, y

    def fill_row(self, row: np.ndarray, window: np.ndarray, position: int, step: int) -> tuple[float, float]:
        """Write the features of `window` into `row` (in place); return the window's mean and std."""
        lookback = self.lookback
        mu = float(window.mean())
        sd = max(float(window.std()), self.sd_floor)
        np.subtract(window, mu, out=row[:lookback])
        row[:lookback] /= sd
        row[lookback] = (mu - self.mean) / self.std
        row[lookback + 1] = math.log(sd / self.std)
        col = lookback + 2
        if self.use_position:
            row[col] = position
            col += 1
        if self.use_season_lag:
            row[col] = row[self.season_lag_index(step)]
        return mu, sd


# -------------------------------------------------------------------------------------------- training


def _lightgbm_params(user: dict[str, Any], windows: int) -> tuple[dict[str, Any], int]:
    """Defaults scaled with the number of training windows, then the user's params; and the round count."""
    params: dict[str, Any] = {
        # L2: L1 scored ~5% better in a backtest over the sample series, but boosting on L1 gradients
        # converges too slowly to reproduce a clean seasonal shape (a noiseless weekly series came out 20% off).
        "objective": "regression",
        "learning_rate": 0.05,
        # Small-data settings for ~100-200 windows, growing towards LightGBM's defaults for long series.
        "num_leaves": int(np.clip(windows // 10, 4, 31)),
        "min_data_in_leaf": int(np.clip(round(windows / 30), 2, 20)),
        "min_data_in_bin": 1,
        "feature_pre_filter": False,
        "deterministic": True,
        "force_row_wise": True,
        "seed": 0,
        "num_threads": 1,
        "verbosity": -1,
    }
    user = dict(user or {})
    rounds = user.pop("num_boost_round", DEFAULT_NUM_BOOST_ROUND)
    for alias in ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                  "num_rounds", "nrounds", "n_estimators", "max_iter"):
        if alias in user:
            rounds = user.pop(alias)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise InvalidInput(f"lightgbm num_boost_round must be a positive integer, got {rounds!r}")
    params.update(user)
    return params, rounds


def _fit(layout: FeatureLayout, values: np.ndarray, positions: np.ndarray, steps: range,
         user_params: dict[str, Any]) -> list[lgb.Booster]:
    boosters = []
    for step in steps:
        x, y = layout.training_set(values, positions, step)
        params, rounds = _lightgbm_params(user_params, x.shape[0])
        dataset = lgb.Dataset(x, y, params=params, free_raw_data=True)
        try:
            booster = lgb.train(params, dataset, num_boost_round=rounds)
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"LightGBM rejected the training parameters: {exc}") from exc
        # Round-trip through the text format so an in-memory model predicts exactly like a loaded one.
        boosters.append(lgb.Booster(model_str=booster.model_to_string()))
    return boosters


def _check_int(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _fmt_ts(ts: np.datetime64) -> str:
    return str(np.datetime64(ts, "s"))


def train_model(
    values: np.ndarray,
    timestamps: np.ndarray,
    *,
    freq: Frequency,
    lookback: int,
    horizon: int,
    strategy: str = "recursive",
    lightgbm_params: dict[str, Any] | None = None,
    dataset: str,
) -> TrainedModel:
    """Score a fit on all but the last `horizon` points on those points, then fit on every point."""
    lookback = _check_int("lookback", lookback)
    horizon = _check_int("horizon", horizon)
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    values = np.asarray(values, dtype=np.float64)
    timestamps = np.asarray(timestamps).astype("datetime64[us]")
    if values.ndim != 1 or values.shape != timestamps.shape:
        raise InvalidInput(f"dataset {dataset!r}: values and timestamps must be 1-D and of the same length")
    if values.size < lookback + horizon:
        raise InvalidInput(
            f"dataset {dataset!r}: {values.size} rows, fewer than lookback + horizon = "
            f"{lookback} + {horizon} = {lookback + horizon}"
        )
    missing = np.flatnonzero(~np.isfinite(values))
    if missing.size:
        shown = ", ".join(_fmt_ts(t) for t in timestamps[missing[:3]])
        more = f" and {missing.size - 3} more" if missing.size > 3 else ""
        raise InvalidInput(f"dataset {dataset!r}: missing or non-finite values at {shown}{more}")
    check_regular(timestamps, freq, dataset)
    positions = freq.position(timestamps)
    steps = range(1, 2) if strategy == "recursive" else range(1, horizon + 1)

    def fit(part: int) -> TrainedModel:
        layout = FeatureLayout.for_series(values[:part], lookback, freq.season)
        boosters = _fit(layout, values[:part], positions[:part], steps, lightgbm_params or {})
        return TrainedModel(layout, freq, horizon, strategy, boosters, metrics={}, training_rows=part)

    # Held-out scoring needs at least one training window for the longest step.
    held_part = values.size - horizon
    if held_part - lookback - steps[-1] + 1 >= 1:
        held = fit(held_part)
        predicted = held.forecast(values[held_part - lookback:held_part], timestamps[held_part - 1], horizon)
        actual = values[held_part:]
        metrics = {
            "mase": mase(actual, predicted, values[:held_part], freq.season),
            "smape": smape(actual, predicted),
        }
    else:
        metrics = {"mase": math.nan, "smape": math.nan}
    model = fit(values.size)
    model.metrics = metrics
    return model


# ------------------------------------------------------------------------------------------- models


def _check_window(window: np.ndarray, lookback: int) -> np.ndarray:
    window = np.asarray(window, dtype=np.float64)
    if window.ndim != 1 or window.size != lookback:
        raise InvalidInput(f"the window must hold the latest {lookback} values, got {window.size}")
    if not np.isfinite(window).all():
        raise InvalidInput("the window has missing or non-finite values")
    return window


def _check_horizon(horizon: Any, cap: int) -> int:
    horizon = _check_int("horizon", horizon)
    if horizon > cap:
        raise InvalidInput(f"horizon {horizon} exceeds the maximum of {cap} for this model")
    return horizon


class TrainedModel:
    """A model trained in product: LightGBM booster(s) on normalised windows plus their feature layout."""

    def __init__(
        self,
        layout: FeatureLayout,
        freq: Frequency,
        horizon: int,
        strategy: str,
        boosters: list[lgb.Booster],
        *,
        metrics: dict[str, float],
        training_rows: int,
    ):
        self.layout = layout
        self.freq = freq
        self.horizon = horizon
        self.strategy = strategy
        self.boosters = boosters
        self.metrics = metrics
        self.training_rows = training_rows
        self.max_horizon = MAX_RECURSIVE_HORIZON if strategy == "recursive" else horizon

    @property
    def lookback(self) -> int:
        return self.layout.lookback

    def forecast(self, window: np.ndarray, last_timestamp: np.datetime64, horizon: int) -> np.ndarray:
        """The `horizon` values after `window` (the latest `lookback` values, oldest first)."""
        layout = self.layout
        lookback = layout.lookback
        window = _check_window(window, lookback)
        horizon = _check_horizon(horizon, self.max_horizon)
        if layout.use_position:
            positions = self.freq.position(self.freq.future(last_timestamp, horizon)).tolist()
        else:
            positions = [0] * horizon
        row = np.empty((1, layout.width), dtype=np.float64)
        if self.strategy == "direct":
            out = np.empty(horizon, dtype=np.float64)
            for k in range(horizon):
                mu, sd = layout.fill_row(row[0], window, positions[k], k + 1)
                out[k] = self.boosters[k].predict(row, num_threads=1)[0] * sd + mu
            return out
        booster = self.boosters[0]
        buffer = np.empty(lookback + horizon, dtype=np.float64)
        buffer[:lookback] = window
        for k in range(horizon):
            mu, sd = layout.fill_row(row[0], buffer[k:k + lookback], positions[k], 1)
            buffer[lookback + k] = booster.predict(row, num_threads=1)[0] * sd + mu
        return buffer[lookback:].copy()

    def _booster_files(self) -> list[str]:
        if self.strategy == "recursive":
            return ["booster.txt"]
        return [f"booster_step{k:03d}.txt" for k in range(1, len(self.boosters) + 1)]

    def save(self, directory: Path) -> None:
        """Write the booster(s) as LightGBM text model files and the rest as model.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._booster_files()
        for booster, name in zip(self.boosters, files, strict=True):
            booster.save_model(str(directory / name))
        meta = {
            "format": MODEL_FORMAT,
            "lookback": self.lookback,
            "horizon": self.horizon,
            "strategy": self.strategy,
            "frequency": str(self.freq),
            "features": self.layout.to_json(),
            "boosters": files,
            # JSON has no NaN: unscored metrics are stored as null.
            "metrics": {k: (None if not math.isfinite(v) else v) for k, v in self.metrics.items()},
            "training_rows": self.training_rows,
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
        boosters = [lgb.Booster(model_file=str(directory / name)) for name in meta["boosters"]]
        metrics = {k: (math.nan if v is None else float(v)) for k, v in meta["metrics"].items()}
        return cls(
            layout,
            Frequency.parse(meta["frequency"]),
            int(meta["horizon"]),
            meta["strategy"],
            boosters,
            metrics=metrics,
            training_rows=int(meta["training_rows"]),
        )


class FileBoosterModel:
    """A user-saved LightGBM model that maps `lookback` raw lags (oldest first) to the next value."""

    strategy = "recursive"
    max_horizon = MAX_RECURSIVE_HORIZON

    def __init__(self, booster: lgb.Booster, lookback: int):
        self.booster = booster
        self.lookback = lookback

    @classmethod
    def load(cls, path: Path, lookback: int) -> FileBoosterModel:
        lookback = _check_int("lookback", lookback)
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"cannot load LightGBM model {str(path)!r}: {exc}") from exc
        if booster.num_feature() != lookback:
            raise InvalidInput(
                f"LightGBM model {str(path)!r} takes {booster.num_feature()} features, "
                f"but lookback is {lookback}"
            )
        return cls(booster, lookback)

    def forecast(self, window: np.ndarray, last_timestamp: np.datetime64, horizon: int) -> np.ndarray:
        """The `horizon` values after `window`, each predicted from the previous `lookback` values."""
        lookback = self.lookback
        window = _check_window(window, lookback)
        horizon = _check_horizon(horizon, self.max_horizon)
        buffer = np.empty(lookback + horizon, dtype=np.float64)
        buffer[:lookback] = window
        for k in range(horizon):
            row = buffer[k:k + lookback].reshape(1, lookback)
            buffer[lookback + k] = self.booster.predict(row, num_threads=1)[0]
        return buffer[lookback:].copy()
