"""What a prediction is, as a value: the service returns these and the HTTP layer writes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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
