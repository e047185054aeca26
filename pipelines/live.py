"""Live accuracy: the forecasts the runtime served, scored against the actuals that arrive later.

For each model, the latest served forecast of each (series, target period) waits until a value for
that period is on the grid; it is then scored (absolute error scaled by the series' in-sample naive
MAE, sMAPE, and whether it fell inside the 80% interval) and dropped. Pending forecasts are bounded per
model (the oldest targets go first) and persisted in the data dir with the running sums: the sums in a
JSON file per model, the pending forecasts as columns beside it (`<model>.pending.npz`: a bulk forecast
leaves hundreds of thousands, which JSON takes a second of the interpreter to write). Both are written
atomically a few seconds after a change, and at shutdown.

Drift compares the live MASE over the latest scored points (a bounded ring of their scaled errors, kept
with the rest) with the backtest MASE of the model.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("flightcast.live")

MAX_PENDING = 100_000  # served forecast points waiting for their actuals, per model
MAX_RECENT = 10_000  # the latest scaled errors kept per model for drift (the largest drift_window)
FORMAT = 2  # 1: pending forecasts inside the JSON file, as rows
PENDING_COLUMNS = ("predicted", "lower", "upper", "scale")


@dataclass
class _Model:
    # (series, target period in microseconds) -> (prediction, lower 80, upper 80, scale)
    pending: dict[tuple[str | None, int], tuple[float, float, float, float]] = field(default_factory=dict)
    targets: dict[str | None, set[int]] = field(default_factory=dict)  # `pending`'s periods, by series
    abs_scaled: float = 0.0
    scaled_points: int = 0
    smape: float = 0.0
    covered: int = 0
    interval_points: int = 0
    points: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_RECENT))  # latest scaled errors
    arrived: list[tuple] = field(default_factory=list)  # batches recorded, not yet merged into `pending`


class LiveScorer:
    """Remembers served forecasts and scores them when their actuals arrive. Thread-safe."""

    def __init__(self, folder: Path, max_pending: int = MAX_PENDING):
        self.folder = Path(folder)
        self.max_pending = max_pending
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._dirty: set[str] = set()

    # --- recording and scoring ---------------------------------------------------------------------

    def record(
        self, model: str, series: list[str | None], timestamps: np.ndarray, predictions: np.ndarray,
        lower80: np.ndarray | None, upper80: np.ndarray | None, scales: np.ndarray,
    ) -> None:
        """Remember forecasts (n series x steps); a later forecast of the same target replaces an earlier one.

        The batch is kept as it came and merged point by point when pending forecasts are next read (scoring,
        `waiting`, the flush a few seconds later): a bulk forecast's caller does not wait for its points."""
        stamps = np.asarray(timestamps).astype("datetime64[us]").astype(np.int64)
        with self._lock:
            self._state(model).arrived.append((list(series), stamps, predictions, lower80, upper80, scales))
            self._dirty.add(model)

    def _pending(self, state: _Model) -> dict[tuple[str | None, int], tuple[float, float, float, float]]:
        """The pending forecasts of a model, with the batches recorded since merged in (under the lock)."""
        for batch in state.arrived:
            self._merge(state, *batch)
        state.arrived.clear()
        return state.pending

    def _merge(
        self, state: _Model, series: list[str | None], stamps: np.ndarray, predictions: np.ndarray,
        lower80: np.ndarray | None, upper80: np.ndarray | None, scales: np.ndarray,
    ) -> None:
        pending, targets = state.pending, state.targets
        n, steps = predictions.shape
        # Whole columns, not point by point: a bulk forecast has hundreds of thousands of points. When they
        # alone overflow the pending forecasts, only the latest of them would be kept: the rest are not built.
        skip = max(0, n * steps - self.max_pending)

        def column(values: np.ndarray | None) -> list:
            if values is None:
                return [math.nan] * (n * steps - skip)
            return np.asarray(values, dtype=np.float64).reshape(-1)[skip:].tolist()

        sids = [sid for sid in series for _ in range(steps)][skip:]
        keys = list(zip(sids, stamps.reshape(-1)[skip:].tolist(), strict=True))
        entries = zip(column(predictions), column(lower80), column(upper80),
                      np.repeat(np.asarray(scales, dtype=np.float64), steps)[skip:].tolist(), strict=True)
        if skip or len(keys) == self.max_pending:  # these fill it alone
            pending.clear()
            targets.clear()
        else:
            for key in pending.keys() & keys:  # re-inserted below, last: insertion order is recency
                del pending[key]
        pending.update(zip(keys, entries, strict=True))
        rows = stamps.reshape(n, steps).tolist()  # a series' targets at once, not point by point
        first = skip // steps
        if first < n:
            targets.setdefault(series[first], set()).update(rows[first][skip - first * steps:])
        for sid, row in zip(series[first + 1:], rows[first + 1:], strict=True):
            targets.setdefault(sid, set()).update(row)
        overflow = len(pending) - self.max_pending
        if overflow > 0:  # the oldest first; one pass (popping the front one by one rescans the dict)
            for key in list(itertools.islice(pending, overflow)):
                del pending[key]
                _forget(targets, key)

    def waiting(self, model: str, series: Iterable[str | None] | None = None) -> dict[str | None, int]:
        """Series with pending forecasts (of those in `series`, when given), and the oldest pending target of
        each (microseconds). By series, not by a pass over every pending point: after each commit, upkeep asks
        this for the few series it touched, of a panel's hundreds of thousands of pending points."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                return {}
            self._pending(state)
            targets = state.targets
            names = targets.keys() if series is None else [sid for sid in series if sid in targets]
            return {sid: min(targets[sid]) for sid in names}

    def score(self, model: str, series: str | None, times: np.ndarray, values: np.ndarray) -> int:
        """Score the pending forecasts of `series` whose periods are among `times`; returns how many."""
        stamps = np.asarray(times).astype("datetime64[us]").astype(np.int64)
        scored = 0
        with self._lock:
            state = self._state(model)
            pending = self._pending(state)
            for stamp, actual in zip(stamps.tolist(), np.asarray(values, dtype=np.float64).tolist(), strict=True):
                entry = pending.pop((series, stamp), None)
                if entry is None:
                    continue
                _forget(state.targets, (series, stamp))
                if not math.isfinite(actual):
                    continue
                predicted, lower, upper, scale = entry
                error = abs(actual - predicted)
                if scale > 0 and math.isfinite(scale):
                    state.abs_scaled += error / scale
                    state.scaled_points += 1
                    state.recent.append(error / scale)
                denominator = abs(actual) + abs(predicted)
                state.smape += 0.0 if denominator == 0 else 200.0 * error / denominator
                if math.isfinite(lower) and math.isfinite(upper):
                    state.covered += int(lower <= actual <= upper)
                    state.interval_points += 1
                state.points += 1
                scored += 1
            if scored:
                self._dirty.add(model)
        return scored

    def metrics(self, model: str, window: int = 50, baseline: float | None = None) -> dict[str, Any] | None:
        """{"mase", "smape", "coverage_80", "points", "drift"}; None before any point is scored.

        `drift` is the live MASE of the latest `window` scaled points over `baseline` (the backtest MASE).
        """
        with self._lock:
            state = self._models.get(model)
            if state is None or not state.points:
                return None
            return {
                "mase": state.abs_scaled / state.scaled_points if state.scaled_points else None,
                "smape": state.smape / state.points,
                "coverage_80": state.covered / state.interval_points if state.interval_points else None,
                "points": state.points,
                "drift": _drift(state.recent, window, baseline),
            }

    def drift(self, model: str, window: int, baseline: float | None) -> tuple[float | None, int]:
        """(live MASE of the latest `window` scaled points over `baseline`, how many points that is)."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                return None, 0
            return _drift(state.recent, window, baseline), min(window, len(state.recent))

    def drifting(self, model: str, window: int, ratio: float, baseline: float | None) -> bool:
        """Whether drift is above `ratio` over a whole window of points (what `health` and retraining read)."""
        drift, points = self.drift(model, window, baseline)
        return drift is not None and points >= window and drift > ratio

    def reset_drift(self, model: str) -> None:
        """Forget the latest errors (a new version serves: its drift starts afresh)."""
        with self._lock:
            self._state(model).recent.clear()
            self._dirty.add(model)

    def _state(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = self._load(model)
        return state

    # --- persistence -------------------------------------------------------------------------------

    def _path(self, model: str) -> Path:
        return self.folder / f"{model}.json"

    def _load(self, model: str) -> _Model:
        path = self._path(model)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return _Model()
        except (OSError, ValueError) as exc:
            log.warning("live accuracy of %s: cannot read %s (%s); starting afresh", model, path, exc)
            return _Model()
        if doc.get("format") not in (1, FORMAT):
            return _Model()
        state = _Model(**{k: doc[k] for k in ("abs_scaled", "scaled_points", "smape", "covered",
                                               "interval_points", "points")})
        state.recent.extend(float(v) for v in doc.get("recent", []))
        if doc["format"] == 1:
            for sid, stamp, predicted, lower, upper, scale in doc["pending"]:
                state.pending[(sid, int(stamp))] = tuple(_num(v) for v in (predicted, lower, upper, scale))
            return _indexed(state)
        try:
            with np.load(self._pending_path(model), allow_pickle=False) as columns:
                names = [s if n else None for s, n in zip(columns["series"].tolist(), columns["named"].tolist(),
                                                          strict=True)]
                sids = [names[code] for code in columns["codes"].tolist()]
                entries = np.column_stack([columns[c] for c in PENDING_COLUMNS]).tolist()
                keys = zip(sids, columns["stamps"].tolist(), strict=True)
                state.pending.update(zip(keys, map(tuple, entries), strict=True))
        except FileNotFoundError:
            pass  # nothing was pending when it was written
        except (OSError, ValueError, KeyError) as exc:
            log.warning("live accuracy of %s: cannot read %s (%s); its pending forecasts start afresh", model,
                        self._pending_path(model), exc)
            state.pending.clear()
        return _indexed(state)

    def load(self, models: list[str]) -> None:
        """Read the stored state of these models (at start, so /v1/models shows it at once)."""
        with self._lock:
            for model in models:
                self._state(model)

    def flush(self) -> None:
        """Write every model changed since the last flush (atomically: temp files renamed over). Only the copy
        of the pending forecasts is taken under the lock: serving records forecasts meanwhile."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            taken = {m: (self._sums(self._models[m]), dict(self._pending(self._models[m])))
                     for m in dirty if m in self._models}
        if not taken:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for model, (doc, pending) in taken.items():
            try:
                self._write(self._pending_path(model), lambda handle, p=pending: np.savez(handle, **_columns(p)))
                self._write(self._path(model), lambda handle, d=doc: handle.write(json.dumps(d).encode()))
            except OSError as exc:
                log.warning("live accuracy of %s: cannot write %s: %s", model, self.folder, exc)

    def _write(self, path: Path, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _pending_path(self, model: str) -> Path:
        return self.folder / f"{model}.pending.npz"

    @staticmethod
    def _sums(state: _Model) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "abs_scaled": state.abs_scaled, "scaled_points": state.scaled_points, "smape": state.smape,
            "covered": state.covered, "interval_points": state.interval_points, "points": state.points,
            "recent": list(state.recent),
        }


def _indexed(state: _Model) -> _Model:
    """`state` with the index of its pending targets by series built."""
    for sid, stamp in state.pending:
        state.targets.setdefault(sid, set()).add(stamp)
    return state


def _forget(targets: dict[str | None, set[int]], key: tuple[str | None, int]) -> None:
    """A pending target gone from the index by series (a series with none left leaves it)."""
    stamps = targets.get(key[0])
    if stamps is not None:
        stamps.discard(key[1])
        if not stamps:
            del targets[key[0]]


def _columns(pending: dict[tuple[str | None, int], tuple[float, float, float, float]]) -> dict[str, np.ndarray]:
    """Pending forecasts as arrays: each distinct series id once (`named` False for a model's one series,
    None), each point's series as its place among them, its target stamp and one column per value."""
    index: dict[str | None, int] = {}
    codes = np.fromiter((index.setdefault(sid, len(index)) for sid, _ in pending), np.int64, len(pending))
    values = np.fromiter(itertools.chain.from_iterable(pending.values()), np.float64, len(pending) * 4)
    values = values.reshape(len(pending), len(PENDING_COLUMNS))
    out = {"series": np.array(["" if sid is None else sid for sid in index], dtype=np.str_),
           "named": np.array([sid is not None for sid in index], dtype=bool),
           "codes": codes,
           "stamps": np.fromiter((stamp for _, stamp in pending), np.int64, len(pending))}
    out.update({name: values[:, i] for i, name in enumerate(PENDING_COLUMNS)})
    return out


def _drift(recent: deque[float], window: int, baseline: float | None) -> float | None:
    if not recent or baseline is None or not baseline > 0 or not math.isfinite(baseline):
        return None
    latest = list(itertools.islice(reversed(recent), window))
    return float(np.mean(latest)) / baseline


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)
