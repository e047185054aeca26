"""What the prediction service answers, as values: the service returns these and the HTTP layer writes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.versions import Candidate

# A requested interval level: its label as the client wrote it ("80", "97.5") and its value.
Level = tuple[str, float]


@dataclass(frozen=True)
class Forecast:
    """The forecast of one series: `horizon` values after its newest period, with intervals per level."""

    model_name: str
    model_version: str
    lookback: int
    horizon: int
    series: str | None
    timestamps: list[str]  # ISO 8601 UTC
    values: list[float]
    intervals: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # label -> bounds
    method: str | None = None  # the method (or '+'-joined combination) the series is forecast by
    contributions: dict[str, list[float]] | None = None  # input group -> its share of each step (explain)


@dataclass(frozen=True)
class BulkForecast:
    """Forecasts of many series at once: arrays (series, step)."""

    model_name: str
    model_version: str
    horizon: int
    ids: Sequence[str | None]
    timestamps: np.ndarray  # (n, horizon) datetime64[us]
    values: np.ndarray  # (n, horizon)
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    methods: Sequence[str] | None = None  # per series, as Forecast.method


@dataclass(frozen=True)
class ModelInfo:
    """A model's listing entry: its spec, its served version (None fields before one) and its status."""

    name: str
    source: str  # the spec's `from`
    datasets: list[str]
    status: str  # training | ready | failed
    lookback: int
    horizon: int
    strategy: str
    frequency: str | None
    model_version: str | None = None
    trained_at: str | None = None
    training_rows: int | None = None
    series_count: int | None = None
    mase: float | None = None
    smape: float | None = None
    backtest_windows: int | None = None
    calibration_errors: int | None = None
    live_metrics: dict[str, Any] | None = None  # from live accuracy: mase, smape, coverage_80, points, drift
    health: str = "ok"  # ok | drifting (live MASE well above the backtest's)
    # A version whose strategy was chosen by backtest (`strategy: auto`) carries each candidate's MASE.
    strategy_chosen: bool = False
    strategy_mase: dict[str, Any] | None = None
    # A portfolio's candidates: each one's backtest MASE and the number of series it serves.
    methods: dict[str, Any] | None = None
    error_message: str | None = None
    # Each input group's share of the LightGBM model's total gain (lags, level, season, each driver).
    feature_importance: dict[str, float] | None = None
    candidate: Candidate | None = None  # a retrained version kept without serving
    challengers: dict[str, Any] | None = None  # each challenger's live metrics on this model's points


@dataclass(frozen=True)
class VersionInfo:
    """A stored version of a model, and whether it serves or is a candidate."""

    version: str
    run: int
    trained_at: str
    training_rows: int
    metrics: dict[str, float | None]
    serving: bool
    candidate: bool
    servable: bool  # trained from the model's current spec: rollback may serve it


@dataclass(frozen=True)
class SeriesEntry:
    """One series of a panel model: its rows, time range, and whether it is long enough to forecast."""

    series: str | None
    rows: int
    first_timestamp: str  # ISO 8601 UTC
    last_timestamp: str
    status: str  # ready | too_short


@dataclass(frozen=True)
class History:
    """The latest points of a series on the model's grid; `series` None and no points when there are none."""

    series: str | None
    timestamps: list[str]  # ISO 8601 UTC
    values: list[float]
