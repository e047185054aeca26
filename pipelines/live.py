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


_NO_POINTS = np.zeros(0, np.int64)  # the columns of no pending point
NONE_PENDING = np.iinfo(np.int64).max  # the oldest pending target of a series with none


@dataclass(frozen=True)
class _Pending:
    """Served forecast points waiting for their actuals, as columns in the order they were served (the
    latest forecast of each (series, target period) once): a bulk forecast leaves hundreds of thousands, too
    many to handle one by one. Never changed in place: a change makes new columns (a flush writes the ones
    it took without a copy)."""

    codes: np.ndarray = field(default_factory=lambda: _NO_POINTS)  # each point's series, a place in `names`
    stamps: np.ndarray = field(default_factory=lambda: _NO_POINTS)  # its target period, in microseconds
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # prediction, lower 80, upper 80, scale

    def __len__(self) -> int:
        return self.codes.size

    def then(self, later: _Pending, limit: int) -> _Pending:
        """These points, then `later`'s (which replace any of the same series and period), the newest `limit`."""
        codes, stamps = np.concatenate([self.codes, later.codes]), np.concatenate([self.stamps, later.stamps])
        # Each (series, period) is here once, so only points of the series `later` has can be replaced: the
        # rest keep their places unsorted, and the few points of a single forecast merge at the cost of a scan.
        touched = np.isin(self.codes, np.unique(later.codes), kind="table")
        kept = np.zeros(codes.size, bool)
        kept[:len(self)] = ~touched
        rivals = np.concatenate([np.flatnonzero(touched), np.arange(len(self), codes.size)])
        kept[rivals[_last_of_each(codes[rivals], stamps[rivals])]] = True
        places = np.flatnonzero(kept)[-limit:]
        return _Pending(codes[places], stamps[places], np.concatenate([self.values, later.values])[places])

    def without(self, taken: np.ndarray) -> _Pending:
        kept = np.ones(len(self), bool)
        kept[taken] = False
        return _Pending(self.codes[kept], self.stamps[kept], self.values[kept])


@dataclass
class _Model:
    pending: _Pending = field(default_factory=_Pending)
    names: list[str | None] = field(default_factory=list)  # series ids by code
    codes: dict[str | None, int] = field(default_factory=dict)  # series id -> code
    abs_scaled: float = 0.0
    scaled_points: int = 0
    smape: float = 0.0
    covered: int = 0
    interval_points: int = 0
    points: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_RECENT))  # latest scaled errors
    arrived: list[tuple] = field(default_factory=list)  # batches recorded, not yet merged into `pending`

    def code_of(self, sid: str | None) -> int:
        code = self.codes.get(sid)
        if code is None:
            code = self.codes[sid] = len(self.names)
            self.names.append(sid)
        return code


class LiveScorer:
    """Remembers served forecasts and scores them when their actuals arrive. Thread-safe."""

    def __init__(self, folder: Path, max_pending: int = MAX_PENDING):
        self.folder = Path(folder)
        self.max_pending = max_pending
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._dirty: set[str] = set()

    @property
    def busy(self) -> bool:
        """Whether another thread holds the scorer now (scoring or merging can hold it for milliseconds)."""
        return self._lock.locked()

    # --- recording and scoring ---------------------------------------------------------------------

    def record(
        self, model: str, series: list[str | None], timestamps: np.ndarray, predictions: np.ndarray,
        lower80: np.ndarray | None, upper80: np.ndarray | None, scales: np.ndarray,
    ) -> None:
        """Remember forecasts (n series x steps); a later forecast of the same target replaces an earlier one.

        The batch is kept as it came and merged when pending forecasts are next read (scoring, `waiting`, the
        flush a few seconds later): a bulk forecast's caller does not wait for its points."""
        stamps = np.asarray(timestamps).astype("datetime64[us]").astype(np.int64)
        with self._lock:
            self._state(model).arrived.append((list(series), stamps, predictions, lower80, upper80, scales))
            self._dirty.add(model)

    def _pending(self, state: _Model) -> _Pending:
        """The pending forecasts of a model, with the batches recorded since merged in (under the lock)."""
        batches = []
        for series, stamps, predictions, lower80, upper80, scales in state.arrived:
            n, steps = predictions.shape
            # When a batch alone overflows the pending forecasts, only its latest points are kept.
            keep = min(n * steps, self.max_pending)

            def column(values: np.ndarray | None, keep: int = keep) -> np.ndarray:
                if values is None:
                    return np.full(keep, np.nan)
                return np.asarray(values, dtype=np.float64).reshape(-1)[-keep:]

            codes = np.repeat(np.fromiter(map(state.code_of, series), np.int64, n), steps)[-keep:]
            values = np.column_stack([column(predictions), column(lower80), column(upper80),
                                      np.repeat(np.asarray(scales, dtype=np.float64), steps)[-keep:]])
            batches.append(_Pending(codes, stamps.reshape(-1)[-keep:], values))
        if batches:  # merged in one step: each GET predict adds a batch, and upkeep reads after a burst of them
            arrived = _Pending(*(np.concatenate([getattr(b, name) for b in batches])
                                 for name in ("codes", "stamps", "values")))
            state.pending = state.pending.then(arrived, self.max_pending)
        state.arrived.clear()
        return state.pending

    def waiting(self, model: str, series: Iterable[str | None] | None = None) -> dict[str | None, int]:
        """Series with pending forecasts (of those in `series`, when given), and the oldest pending target of
        each (microseconds). After each commit, upkeep asks this for the series it touched."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                return {}
            pending = self._pending(state)
            codes, stamps = pending.codes, pending.stamps
            if series is not None:  # the few series a commit touched, among every served series' points
                wanted = np.fromiter((c for c in map(state.codes.get, series) if c is not None), np.int64)
                named = np.isin(codes, wanted, kind="table")
                codes, stamps = codes[named], stamps[named]
            oldest = np.full(len(state.names), NONE_PENDING)
            np.minimum.at(oldest, codes, stamps)
            return {state.names[c]: int(oldest[c]) for c in np.flatnonzero(oldest != NONE_PENDING).tolist()}

    def score(self, model: str, series: str | None, times: np.ndarray, values: np.ndarray) -> int:
        """Score the pending forecasts of `series` whose periods are among `times`; returns how many."""
        return self.score_many(model, [series], [times], [values])

    def score_many(
        self, model: str, series: list[str | None], times: list[np.ndarray], values: list[np.ndarray],
    ) -> int:
        """Score the pending forecasts of these series (each with the periods and values of its actuals) whose
        periods have an actual, in the order of the actuals; returns how many. A pending point whose actual is
        missing (NaN) is dropped unscored."""
        with self._lock:
            state = self._state(model)
            pending = self._pending(state)
            known = [i for i, sid in enumerate(series) if sid in state.codes]
            if not known or not len(pending):
                return 0
            sizes = [times[i].size for i in known]
            codes = np.repeat(np.fromiter((state.codes[series[i]] for i in known), np.int64, len(known)), sizes)
            stamps = np.concatenate([np.asarray(times[i]).astype("datetime64[us]").astype(np.int64) for i in known])
            actual = np.concatenate([np.asarray(values[i], dtype=np.float64) for i in known])
            taken, matched = _matches(pending.codes, pending.stamps, codes, stamps)
            if not taken.size:
                return 0
            state.pending = pending.without(taken)
            scored = self._add(state, pending.values[taken], actual[matched])
            if scored:
                self._dirty.add(model)
        return scored

    @staticmethod
    def _add(state: _Model, entries: np.ndarray, actual: np.ndarray) -> int:
        """Add the errors of these (pending forecast, actual) pairs to the model's sums; returns how many count."""
        finite = np.isfinite(actual)
        entries, actual = entries[finite], actual[finite]
        predicted, lower, upper, scale = entries.T
        error = np.abs(actual - predicted)
        scalable = (scale > 0) & np.isfinite(scale)
        scaled = error[scalable] / scale[scalable]
        state.abs_scaled += float(scaled.sum())
        state.scaled_points += int(scaled.size)
        state.recent.extend(scaled.tolist())
        denominator = np.abs(actual) + np.abs(predicted)
        smape = np.divide(200.0 * error, denominator, out=np.zeros_like(error), where=denominator != 0)
        state.smape += float(smape.sum())
        bounded = np.isfinite(lower) & np.isfinite(upper)
        state.covered += int(((lower <= actual) & (actual <= upper) & bounded).sum())
        state.interval_points += int(bounded.sum())
        state.points += int(actual.size)
        return int(actual.size)

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
            rows = doc["pending"]
            state.pending = _Pending(
                np.fromiter((state.code_of(row[0]) for row in rows), np.int64, len(rows)),
                np.fromiter((int(row[1]) for row in rows), np.int64, len(rows)),
                np.array([[_num(v) for v in row[2:]] for row in rows], dtype=np.float64).reshape(len(rows), 4))
            return state
        try:
            with np.load(self._pending_path(model), allow_pickle=False) as columns:
                state.names = [s if n else None for s, n in zip(columns["series"].tolist(),
                                                                columns["named"].tolist(), strict=True)]
                state.codes = {sid: code for code, sid in enumerate(state.names)}
                stored = _Pending(columns["codes"].astype(np.int64), columns["stamps"].astype(np.int64),
                                  np.column_stack([columns[c] for c in PENDING_COLUMNS]).astype(np.float64))
                if stored.codes.size and not 0 <= stored.codes.min() <= stored.codes.max() < len(state.names):
                    raise ValueError("a series code is out of range")
                state.pending = _Pending().then(stored, self.max_pending)
        except FileNotFoundError:
            pass  # nothing was pending when it was written
        except (OSError, ValueError, KeyError) as exc:
            log.warning("live accuracy of %s: cannot read %s (%s); its pending forecasts start afresh", model,
                        self._pending_path(model), exc)
            state.pending, state.names, state.codes = _Pending(), [], {}
        return state

    def load(self, models: list[str]) -> None:
        """Read the stored state of these models (at start, so /v1/models shows it at once)."""
        with self._lock:
            for model in models:
                self._state(model)

    def flush(self) -> None:
        """Write every model changed since the last flush (atomically: temp files renamed over). Only the
        pending columns (never changed in place) are taken under the lock: serving records forecasts meanwhile."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            taken = {m: (self._sums(self._models[m]), self._pending(self._models[m]), list(self._models[m].names))
                     for m in dirty if m in self._models}
        if not taken:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for model, (doc, pending, names) in taken.items():
            try:
                self._write(self._pending_path(model),
                            lambda handle, p=pending, n=names: np.savez(handle, **_columns(p, n)))
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


def _last_of_each(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """The places, in order, of the last point of each (series, period) among these."""
    order = np.lexsort((stamps, codes))  # stable: the points of one (series, period) stay in their order
    codes, stamps = codes[order], stamps[order]
    last = np.ones(order.size, bool)
    last[:-1] = (codes[1:] != codes[:-1]) | (stamps[1:] != stamps[:-1])
    return np.sort(order[last])


def _matches(codes: np.ndarray, stamps: np.ndarray, their_codes: np.ndarray, their_stamps: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray]:
    """The places of the points (`codes`, `stamps`: each (series, period) once) that the other points have a
    (series, period) of, and the places of those others, in the others' order."""
    both = np.lexsort((np.concatenate([stamps, their_stamps]), np.concatenate([codes, their_codes])))
    key_codes = np.concatenate([codes, their_codes])[both]
    key_stamps = np.concatenate([stamps, their_stamps])[both]
    ours = both < codes.size
    # A point and an other of the same (series, period) sort side by side, ours first (the sort is stable).
    pair = np.flatnonzero((key_codes[1:] == key_codes[:-1]) & (key_stamps[1:] == key_stamps[:-1])
                          & ours[:-1] & ~ours[1:])
    taken, matched = both[pair], both[pair + 1] - codes.size
    in_their_order = np.argsort(matched, kind="stable")
    return taken[in_their_order], matched[in_their_order]


def _columns(pending: _Pending, names: list[str | None]) -> dict[str, np.ndarray]:
    """Pending forecasts as arrays: each distinct series id once (`named` False for a model's one series,
    None), each point's series as its place among them, its target stamp and one column per value."""
    used, codes = np.unique(pending.codes, return_inverse=True)
    ids = [names[code] for code in used.tolist()]
    out = {"series": np.array(["" if sid is None else sid for sid in ids], dtype=np.str_),
           "named": np.array([sid is not None for sid in ids], dtype=bool),
           "codes": codes.astype(np.int64).reshape(-1),
           "stamps": pending.stamps}
    out.update({name: np.ascontiguousarray(pending.values[:, i]) for i, name in enumerate(PENDING_COLUMNS)})
    return out


def _drift(recent: deque[float], window: int, baseline: float | None) -> float | None:
    if not recent or baseline is None or not baseline > 0 or not math.isfinite(baseline):
        return None
    latest = list(itertools.islice(reversed(recent), window))
    return float(np.mean(latest)) / baseline


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)
