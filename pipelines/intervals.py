"""Conformal prediction intervals from backtest errors, per horizon step, in units of the window's spread.

Each calibration error is |actual - forecast| / s, where s is the spread of the window the forecast was
made from: the same normalisation the features use, so errors of series of any level and scale pool
into one distribution per step, and an interval maps back to each series by its own window's spread.
For level L the half-width at step k is the ceil((n + 1) L / 100)-th smallest of the n errors of step k
(split conformal), so about L% of future values fall inside when the errors are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_ERRORS_PER_STEP = 5000  # kept per step (a seeded sample when there are more)
MAX_KEPT_WIDTHS = 1000  # (level, horizon) pairs whose half-widths a calibration keeps


class Calibration:
    """Sorted normalised absolute errors for each horizon step (1-based), from the model's backtest."""

    def __init__(self, errors: Sequence[np.ndarray], seen: Sequence[int] | None = None):
        self.errors = [np.sort(np.asarray(e, dtype=np.float64)) for e in errors]
        # How many errors the backtest produced per step (more than are kept when sampled).
        self.seen = list(seen) if seen is not None else [e.size for e in self.errors]
        self._widths: dict[tuple[float, int], np.ndarray] = {}  # half_widths by (level, horizon)
        self._usable = bool(self.errors) and all(e.size > 0 for e in self.errors)  # asked of every forecast

    @classmethod
    def from_errors(cls, errors: Sequence[list[np.ndarray]], seed: int = 0) -> Calibration:
        rng = np.random.default_rng(seed)
        kept, seen = [], []
        for parts in errors:
            step = np.concatenate(parts) if parts else np.empty(0)
            step = step[np.isfinite(step)]
            seen.append(int(step.size))
            if step.size > MAX_ERRORS_PER_STEP:
                step = rng.choice(step, MAX_ERRORS_PER_STEP, replace=False)
            kept.append(step)
        return cls(kept, seen)

    @property
    def steps(self) -> int:
        return len(self.errors)

    @property
    def count(self) -> int:
        """Calibration errors behind the intervals: the fewest any step has."""
        return min(self.seen) if self.seen else 0

    def usable(self) -> bool:
        return self._usable

    def half_widths(self, level: float, horizon: int) -> np.ndarray:
        """The normalised half-width of the `level`% interval at steps 1..horizon (read-only: kept, as every
        forecast served asks again for its 80% interval).

        Steps beyond the calibrated ones (a recursive model asked for a longer horizon) widen the last
        calibrated width by the square root of the step ratio, as errors of a random walk would.
        """
        key = (level, horizon)
        widths = self._widths.get(key)
        if widths is None:
            if len(self._widths) >= MAX_KEPT_WIDTHS:  # levels come from clients
                self._widths.clear()
            widths = self._widths[key] = self._half_widths(level, horizon)
            widths.flags.writeable = False
        return widths

    def _half_widths(self, level: float, horizon: int) -> np.ndarray:
        widths = np.empty(horizon, dtype=np.float64)
        for k in range(horizon):
            errors = self.errors[min(k, self.steps - 1)]
            n = errors.size
            rank = math.ceil((n + 1) * level / 100.0)
            width = float(errors[min(rank, n) - 1])
            if k >= self.steps:
                width *= math.sqrt((k + 1) / self.steps)
            widths[k] = width
        # A later step is never more certain than an earlier one.
        return np.maximum.accumulate(widths)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {f"step_{k + 1:04d}": e.astype(np.float32) for k, e in enumerate(self.errors)}
        out["seen"] = np.asarray(self.seen, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Calibration:
        steps = sorted(k for k in arrays if k.startswith("step_"))
        return cls([arrays[k].astype(np.float64) for k in steps], [int(v) for v in arrays["seen"]])


def interval_bounds(
    prediction: np.ndarray, spread: np.ndarray, calibration: Calibration, levels: Sequence[float]
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """(lower, upper) per level for predictions (n, horizon) made from windows of spread `spread` (n,)."""
    horizon = prediction.shape[1]
    out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    widest = np.zeros(horizon)
    for level in sorted(levels):
        # Sorted so that a higher level is never narrower, whatever rounding of ranks does.
        widest = np.maximum(widest, calibration.half_widths(level, horizon))
        half = spread[:, None] * widest[None, :]
        out[level] = (prediction - half, prediction + half)
    return out
