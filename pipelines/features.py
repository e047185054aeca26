"""The one feature transform, used by training and by forecasting alike (rows for a batch of windows).

A window's values are normalised by the window's own mean and spread, so one model serves every level
and scale; two level features (the window mean and log spread relative to its series' mean and spread)
give back what normalising threw away, and a seasonal position and the value one season back help
seasonal series. The target is normalised like the window and mapped back after prediction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipelines.drivers import Drivers
from spicepod import InvalidInput

# Window spread floor as a share of the series' spread: keeps flat windows (intermittent zeros) from
# blowing the normalised target up.
SD_FLOOR_SHARE = 0.05


class FeatureLayout:
    """Which columns a feature row has.

    Columns: `lookback` normalised lags (oldest first), level mean, level log std, then when the season
    is > 1 the target's position in the season and, when lookback >= season, the normalised value at the
    same position of the latest season in the window; then the driver columns (pipelines/drivers.py).
    """

    def __init__(self, lookback: int, season: int, drivers: Drivers | None = None):
        self.lookback = int(lookback)
        self.season = int(season)
        self.use_position = self.season > 1
        self.use_season_lag = self.season > 1 and self.lookback >= self.season
        self.drivers = drivers or Drivers()
        self.base_width = self.lookback + 2 + int(self.use_position) + int(self.use_season_lag)
        self.width = self.base_width + self.drivers.width

    def names(self) -> list[str]:
        names = [f"lag_{self.lookback - i}" for i in range(self.lookback)] + ["level_mean", "level_log_std"]
        if self.use_position:
            names.append("season_position")
        if self.use_season_lag:
            names.append("season_lag")
        return names + self.drivers.names()

    def groups(self) -> list[str]:
        """The input group of each column, as explanations report them: lags, level, season, then the
        drivers' (each covariate, each static attribute, calendar, holidays)."""
        groups = ["lags"] * self.lookback + ["level", "level"]
        if self.use_position:
            groups.append("season")
        if self.use_season_lag:
            groups.append("lags")
        return groups + self.drivers.groups()

    def categorical_columns(self) -> list[int]:
        """Columns LightGBM treats as categories."""
        return [self.base_width + i for i in self.drivers.categorical_positions()]

    def to_json(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "season": self.season, "names": self.names(),
                "drivers": self.drivers.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureLayout:
        layout = cls(int(data["lookback"]), int(data["season"]), Drivers.from_json(data.get("drivers")))
        if layout.names() != data["names"]:
            raise InvalidInput("model.json: the feature layout does not match this version of flightcast")
        return layout

    def season_lag_index(self, step: int) -> int:
        """Window index of the latest value at the same season position as the target `step` (1-based)."""
        return self.lookback - self.season + (step - 1) % self.season

    def rows(
        self,
        windows: np.ndarray,
        series_mean: np.ndarray,
        series_std: np.ndarray,
        positions: np.ndarray,
        step: int,
        dtype: type = np.float64,
        drivers: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature rows for predicting `step` values after each window; also each window's mean and spread
        (the target is normalised by them: (value - mean) / spread).

        `windows` is (n, lookback), oldest first; `series_mean`/`series_std` (n,) are the level statistics
        of each window's series; `positions` (n,) the season position of each target; `drivers` (n, width
        of the driver columns) the driver columns of each row.
        """
        lookback = self.lookback
        mu, std, deviations = _row_moments(windows)
        sd = np.maximum(std, SD_FLOOR_SHARE * series_std)  # window_spread's, from the std at hand
        x = np.empty((windows.shape[0], self.width), dtype=dtype)
        np.divide(deviations, sd[:, None], out=x[:, :lookback], casting="unsafe")
        x[:, lookback] = (mu - series_mean) / series_std
        x[:, lookback + 1] = np.log(sd / series_std)
        col = lookback + 2
        if self.use_position:
            x[:, col] = positions
            col += 1
        if self.use_season_lag:
            x[:, col] = x[:, self.season_lag_index(step)]
        if self.drivers:
            x[:, self.base_width:] = drivers
        return x, mu, sd

    def row_into(
        self, out: np.ndarray, window: np.ndarray, series_mean: float, series_std: float, position: float, step: int,
        drivers: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """`rows` of one window (lookback,) written into `out` (width,), bit for bit, and the window's mean and
        spread; `drivers` (the driver columns) are given exactly when the layout has drivers. A recursive
        forecast of one series builds a row per step, and on arrays of one row the numpy calls of `rows` cost
        more than the features: here each is made once, on scalars where it can."""
        lookback = self.lookback
        # The same reductions as row_mean_std (numpy's pairwise sums), so the same bits.
        mu = np.add.reduce(window) / lookback
        deviations = np.subtract(window, mu, out=out[:lookback])
        std = math.sqrt(np.add.reduce(deviations * deviations) / lookback)
        floor = SD_FLOOR_SHARE * series_std
        sd = std if std >= floor or std != std else floor  # np.maximum's: NaN wins
        np.divide(deviations, sd, out=deviations)
        out[lookback] = (mu - series_mean) / series_std
        out[lookback + 1] = np.log(sd / series_std)
        col = lookback + 2
        if self.use_position:
            out[col] = position
            col += 1
        if self.use_season_lag:
            out[col] = out[self.season_lag_index(step)]
        if drivers is not None:
            out[self.base_width:] = drivers
        return mu, sd


def window_spread(windows: np.ndarray, series_std: np.ndarray) -> np.ndarray:
    """Each window's spread, floored at a share of its series' spread: what features, targets and interval
    widths are normalised by."""
    return np.maximum(row_mean_std(windows)[1], SD_FLOOR_SHARE * series_std)


def row_mean_std(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and (population) standard deviation, computed as numpy's mean and std compute them
    (the same bits) without their per-call overhead, which a recursive forecast pays at every step."""
    return _row_moments(windows)[:2]


def _row_moments(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """row_mean_std's, and each value's deviation from its row's mean (which the features are made of)."""
    n = windows.shape[1]
    mean = np.add.reduce(windows, axis=1, keepdims=True) / n
    deviations = windows - mean
    return mean[:, 0], np.sqrt(np.add.reduce(deviations * deviations, axis=1) / n), deviations


def level_stats(values: np.ndarray) -> tuple[float, float]:
    """A series' mean and spread for the level features (a constant series still gets a finite spread)."""
    mean = float(np.mean(values))
    std = float(np.std(values))
    if not (std > 0 and math.isfinite(std)):
        std = max(abs(mean), 1.0)
    return mean, std


def differenced(values: np.ndarray, lag: int) -> np.ndarray:
    """Each value less the value `lag` periods before it, along the last axis (a series, or windows in rows);
    the values themselves for lag 0."""
    return values[..., lag:] - values[..., :-lag] if lag else values


def undifferenced(season: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Values (n, lag + horizon) from the last season of each window (n, lag) and the changes after it (n,
    horizon): each value is its change plus the value one season before it, added as a loop over the steps adds
    them (the same bits), a season at a time: a numpy call a season, not a step."""
    n, lag = season.shape
    horizon = changes.shape[1]
    seasons = -(-horizon // lag)
    table = np.zeros((n, seasons + 1, lag))  # a season a row: the window's last, then the forecast's changes
    table[:, 0] = season
    table.reshape(n, -1)[:, lag:lag + horizon] = changes
    for s in range(1, seasons + 1):
        table[:, s] += table[:, s - 1]
    return table.reshape(n, -1)[:, :lag + horizon]
