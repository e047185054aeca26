"""Accuracy metrics: MASE (scaled by the in-sample seasonal naive) and sMAPE."""

from __future__ import annotations

import math

import numpy as np


def naive_scale(history: np.ndarray, season: int) -> float:
    """The in-sample seasonal naive MAE of `history` (season 1 when it is too short); NaN when undefined."""
    history = np.asarray(history, dtype=np.float64)
    if season < 1 or history.size <= season:
        season = 1
    if history.size <= season:
        return math.nan
    return float(np.mean(np.abs(history[season:] - history[:-season])))


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season: int) -> float:
    """Mean absolute scaled error: forecast MAE over the in-sample seasonal naive MAE of `history`.

    NaN when the history is flat (a zero scale) or too short.
    """
    actual, forecast = _pair(actual, forecast)
    scale = naive_scale(history, season)
    if not scale or math.isnan(scale):
        return math.nan
    return float(np.mean(np.abs(actual - forecast))) / scale


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in percent (0..200); a step where both are 0 counts 0."""
    actual, forecast = _pair(actual, forecast)
    denom = np.abs(actual) + np.abs(forecast)
    safe = np.where(denom == 0.0, 1.0, denom)
    terms = np.where(denom == 0.0, 0.0, 2.0 * np.abs(actual - forecast) / safe)
    return float(100.0 * np.mean(terms))


def _pair(actual: np.ndarray, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actual, forecast = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape or actual.size == 0:
        raise ValueError("actual and forecast must be non-empty and of the same shape")
    return actual, forecast


def finite_mean(values: list[float]) -> float:
    """The mean of the finite values; NaN when there are none."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else math.nan
