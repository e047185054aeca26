"""Anomalies on arrival: each observed value new data brings for a period a model forecasts, compared with
the one-step-ahead forecast of that period from the data before it, at the model's `anomaly_level`.

A value outside that interval is an anomaly, scored by its distance from the forecast over the interval's
half-width. The detector runs in the upkeep thread from commit notices (never inside a DoPut), for every
touched series of a model in one batch: one read of the latest grid points, one batched one-step forecast.
The AnomalyLog keeps the newest MAX_KEPT anomalies of each model in one JSON file per model, written
atomically before they are listed, so an anomaly once listed survives a crash.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.drivers import FutureDrivers
from pipelines.flight_client import FlightDataClient
from pipelines.forecast_drivers import drivers_at
from pipelines.forecaster import bounded, calibrated
from pipelines.grid import GridQuery
from pipelines.grid_setup import bucket
from pipelines.gridfill import fill_series, windows_ending
from pipelines.model import TrainedModel
from pipelines.portfolio import PortfolioModel
from pipelines.series import SeriesSet
from pipelines.state import ModelState, ServedModel
from spicepod import InvalidInput

log = logging.getLogger("flightcast.anomalies")

MAX_KEPT = 10_000  # anomalies kept per model, the newest
MAX_NEW_PERIODS = 16  # periods of one series checked per notice (a larger backfill: its newest ones)
MARKS_FLUSH_SECONDS = 2.0  # checked periods alone are written at most this often (losing them rechecks)
MAX_NAMED_SERIES = 1000  # more touched series than this: read the whole panel rather than name each
FURTHER = 8  # a series short inside a window's bound is read again inside a bound this many windows back first
FORMAT = 1
NOT_CHECKED = np.iinfo(np.int64).min  # the mark of a series never checked


@dataclass(frozen=True)
class Anomaly:
    """An observed value outside the one-step-ahead interval of its period; `ts` in microseconds (UTC)."""

    series: str | None
    ts: int
    value: float
    expected: float
    lower: float
    upper: float
    level: float
    score: float


@dataclass
class _Model:
    anomalies: dict[tuple[str | None, int], Anomaly]  # (series, period) -> anomaly, oldest period first
    checked: dict[str | None, int]  # the newest period checked of each series (microseconds)
    total: int = 0  # anomalies found since the model's first, the ones no longer kept included


class AnomalyLog:
    """The newest anomalies of each model and the periods already checked. Thread-safe."""

    def __init__(self, folder: Path, max_kept: int = MAX_KEPT):
        self.folder = Path(folder)
        self.max_kept = max_kept
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer of the files at a time, in order
        self._dirty: set[str] = set()
        self._flushed = time.monotonic()

    def load(self, models: Iterable[str]) -> None:
        """Read the stored anomalies of these models (at start, so they are listed at once)."""
        with self._lock:
            for model in models:
                self._state(model)

    def checked(self, model: str) -> dict[str | None, int]:
        with self._lock:
            return dict(self._state(model).checked)

    def add(self, model: str, found: list[Anomaly], checked: dict[str | None, int]) -> int:
        """Record new anomalies and the periods now checked; returns how many anomalies are new.

        The file is written before the anomalies are listed: what a client saw is never lost by a crash.
        """
        with self._write_lock:
            with self._lock:
                state = self._state(model)
                marks = dict(state.checked)
                for sid, stamp in checked.items():
                    marks[sid] = max(stamp, marks.get(sid, stamp))
                if not found:  # only the marks changed: written by the next flush
                    state.checked = marks
                    self._dirty.add(model)
                    return 0
                anomalies = dict(state.anomalies)
                fresh = 0
                for anomaly in found:
                    key = (anomaly.series, anomaly.ts)
                    fresh += key not in anomalies  # a period checked again after a restart counts once
                    anomalies.pop(key, None)
                    anomalies[key] = anomaly
                ordered = sorted(anomalies.items(), key=lambda item: item[0][1])[-self.max_kept:]
                after = _Model(dict(ordered), marks, state.total + fresh)
            self._write(model, after)
            with self._lock:
                self._models[model] = after
            return fresh

    def list(
        self, model: str, series: str | None = None, since: np.datetime64 | None = None, limit: int | None = None,
    ) -> list[Anomaly]:
        """Anomalies newest period first; of one series, from `since` on, at most `limit`."""
        with self._lock:
            rows = list(self._state(model).anomalies.values())
        low = None if since is None else int(np.datetime64(since, "us").astype(np.int64))
        out = []
        for anomaly in reversed(rows):
            if low is not None and anomaly.ts < low:
                break  # oldest-first storage: everything further is older still
            if series is not None and anomaly.series != series:
                continue
            out.append(anomaly)
            if limit is not None and len(out) >= limit:
                break
        return out

    def total(self, model: str) -> int:
        with self._lock:
            state = self._models.get(model)
            return state.total if state is not None else 0

    def flush(self, force: bool = False) -> None:
        """Write the models whose checked periods changed since they were last written (every few seconds,
        or now with `force`)."""
        if not force and time.monotonic() - self._flushed < MARKS_FLUSH_SECONDS:
            return
        with self._write_lock:
            self._flushed = time.monotonic()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                states = {m: self._models[m] for m in dirty if m in self._models}
            for model, state in states.items():
                self._write(model, state)

    # --- persistence -------------------------------------------------------------------------------

    def _state(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = self._read(model)
        return state

    def _path(self, model: str) -> Path:
        return self.folder / f"{model}.json"

    def _read(self, model: str) -> _Model:
        path = self._path(model)
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
            anomalies = {}
            for row in doc["anomalies"]:
                anomaly = Anomaly(row[0], int(row[1]), *(float(v) for v in row[2:]))
                anomalies[(anomaly.series, anomaly.ts)] = anomaly
            checked = {sid: int(stamp) for sid, stamp in doc["checked"]}
            return _Model(anomalies, checked, int(doc["total"]))
        except FileNotFoundError:
            return _Model({}, {})
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("anomalies of %s: cannot read %s (%s); starting afresh", model, path, exc)
            return _Model({}, {})

    def _write(self, model: str, state: _Model) -> None:
        """Atomically: a temp file, flushed to disk, renamed over the old one."""
        doc = {
            "format": FORMAT,
            "total": state.total,
            "anomalies": [(a.series, a.ts, a.value, a.expected, a.lower, a.upper, a.level, a.score)
                          for a in state.anomalies.values()],
            "checked": list(state.checked.items()),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{model}-", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(doc))  # json.dump would encode in Python, a panel's marks piece by piece
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path(model))
        except OSError as exc:
            log.warning("anomalies of %s: cannot write %s: %s", model, self._path(model), exc)
            Path(tmp).unlink(missing_ok=True)


class AnomalyDetector:
    """Checks the periods new data brought against one-step-ahead forecasts, a whole batch at a time."""

    def __init__(self, client: FlightDataClient, log_: AnomalyLog):
        self._client = client
        self.log = log_

    def detect(self, state: ModelState, series: frozenset[str] | None, newest: np.datetime64 | None = None) -> int:
        """Check the new periods of the touched `series` (None: every series); returns the new anomalies.

        `newest` (the data's newest timestamp) bounds how many periods are read per series: those since the
        oldest one checked, and the window before them.
        """
        served = state.current
        if served is None:
            return 0
        model = served.model
        if not isinstance(model, (TrainedModel, PortfolioModel)) or not calibrated(model):
            return 0  # no backtest errors, no interval to compare with
        grid, length = served.grid, model.window_length
        ids = None
        if served.panel and series is not None and len(series) <= MAX_NAMED_SERIES:
            ids = sorted(series)
        checked = self.log.checked(state.name)
        trained = served.meta.newest_period
        points = length + self._new_periods(served, checked, trained, series, newest)
        # Rows committed after `newest` was looked up are left to the check their own notice brings: read here,
        # they would push the window of the periods this check sized its read for out of it.
        found = grid.history(self._client, points, ids=ids, observed=True, newest=newest, until=newest)
        if newest is not None:
            # Series with gaps, or that last changed long before the newest data, have their window further back.
            short = {sid for sid, times in zip(found.ids, found.times, strict=True)
                     if times.size <= length and (series is None or sid in series)}
            if short and len(short) <= MAX_NAMED_SERIES:
                kept = found.subset([i for i, sid in enumerate(found.ids) if sid not in short])
                found = kept.joined(self._further(served, points, sorted(short), newest))
        wanted = [i for i, (sid, times) in enumerate(zip(found.ids, found.times, strict=True))
                  if times.size and not (served.panel and series is not None and sid not in series)]
        to_check = _periods_to_check(found, wanted, checked, trained, grid, length, model.min_periods)
        marks, anomalies = to_check.marks, []
        if to_check.sids:
            inputs = drivers_at(served, self._client, points, ids, to_check.sids, to_check.lasts)
            anomalies = self._compare(model, float(state.spec.anomaly_level), to_check.windows, to_check.lasts,
                                      to_check.sids, to_check.periods.tolist(), to_check.values, inputs)
        if not marks:
            return 0
        fresh = self.log.add(state.name, anomalies, marks)
        if fresh:
            log.info("model %s: %d anomalies in new data", state.name, fresh)
        return fresh

    def _further(self, served: ServedModel, points: int, short: list[str | None], newest: np.datetime64) -> SeriesSet:
        """The latest `points` observed periods of each `short` series, as the read with no time bound gives them.

        They are read first inside a bound FURTHER times as far back: a series with `points` periods inside it
        has its latest ones all there, the rows the read with no bound would give, and DuckDB skips the row groups
        before the bound. Only the series still short (long gaps, or ended long ago) pass over the whole table."""
        grid, ids = served.grid, short if served.panel else None
        wide = grid.history(self._client, points, ids=ids, observed=True, newest=newest, until=newest,
                            span=FURTHER * points)
        found = wide.subset([i for i, times in enumerate(wide.times) if times.size >= points])
        rest = set(short) - set(found.ids)
        if rest:
            found = found.joined(grid.history(self._client, points, ids=sorted(rest) if served.panel else None,
                                              observed=True, until=newest))
        return found

    @staticmethod
    def _new_periods(
        served: ServedModel, checked: dict[str | None, int], trained: int | None, series: frozenset[str] | None,
        newest: np.datetime64 | None,
    ) -> int:
        """Periods to read after each window: from the oldest period checked of the touched series on (the
        newest period of the training data, `trained`, for one not checked yet)."""
        if series is None or not served.panel:
            touched = list(checked.values()) or [trained]
        else:
            touched = [checked.get(s, trained) for s in series]
        oldest = min((mark for mark in touched if mark is not None), default=None)
        if oldest is None:
            return 1  # no series seen before and no training mark: only the newest period of each is checked
        if newest is None:
            return MAX_NEW_PERIODS
        grid = served.grid
        steps = int(grid.freq.steps_between(np.datetime64(oldest, "us"),
                                            np.asarray([bucket(newest, grid.freq, grid.origin)]))[0])
        return int(np.clip(steps + 1, 1, MAX_NEW_PERIODS))

    @staticmethod
    def _compare(
        model: TrainedModel | PortfolioModel, level: float, windows: np.ndarray, lasts: np.ndarray,
        sids: list[str | None], periods: list[int], values: np.ndarray, inputs: FutureDrivers | None = None,
    ) -> list[Anomaly]:
        """One batched one-step forecast of every checked period (with its drivers' values, for a model that
        has drivers); the values outside its interval."""
        predicted, spread = model.forecast_windows(windows, lasts, 1, sids, inputs)
        half = spread * model.calibration.half_widths(level, 1)[0]
        expected = predicted[:, 0]
        lower, upper = bounded(model, (expected - half, expected + half))
        outside = (half > 0) & ((values < lower) | (values > upper))
        return [
            Anomaly(sids[i], periods[i], float(values[i]), float(expected[i]), float(lower[i]), float(upper[i]),
                    level, float(abs(values[i] - expected[i]) / half[i]))
            for i in np.flatnonzero(outside).tolist()
            if math.isfinite(expected[i])
        ]


@dataclass(frozen=True)
class _Checks:
    """The periods a detection checks, each with the window before it, and each series' newest period."""

    windows: np.ndarray  # (checks, window length), NaN before a series' first period
    lasts: np.ndarray  # the period before each checked one (datetime64[us])
    sids: list[str | None]
    periods: np.ndarray  # each checked period (microseconds)
    values: np.ndarray  # its observed value
    marks: dict[str | None, int]  # the newest period of each series with a period to check


def _periods_to_check(
    found: SeriesSet, wanted: list[int], checked: dict[str | None, int], trained: int | None, grid: GridQuery,
    length: int, min_periods: int,
) -> _Checks:
    """The periods of these series (places in `found`, observed periods read) after each one's last checked
    period, in the series' order and then in time. For a series not checked yet that is the newest period of
    the training data, `trained` (when it is not known: only its newest period is new). A period needs
    `min_periods` periods before it.

    Series on the grid's own step without a gap (the common case) are taken all at once, in columns; any
    other is filled (its gaps made up as the grid fills them) one at a time."""
    stamps = np.concatenate([found.times[i] for i in wanted] or [np.zeros(0, "datetime64[us]")]).astype(np.int64)
    observed = np.concatenate([found.values[i] for i in wanted] or [np.zeros(0)]).astype(np.float64, copy=False)
    sizes = np.array([found.times[i].size for i in wanted], dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    newest = stamps[ends - 1]
    marks_before = np.array([checked.get(found.ids[i], NOT_CHECKED) for i in wanted], dtype=np.int64)
    marks_before = np.where(marks_before == NOT_CHECKED, newest - 1 if trained is None else trained, marks_before)
    new = stamps > np.repeat(marks_before, sizes)
    has_new = np.add.reduceat(new, starts) > 0 if wanted else np.zeros(0, bool)
    marks = {found.ids[wanted[k]]: int(newest[k]) for k in np.flatnonzero(has_new).tolist()}
    step = None if grid.freq.is_calendar else grid.freq.step_us
    regular = (newest - stamps[starts] == (sizes - 1) * step) if step is not None else np.zeros(len(wanted), bool)

    first = np.repeat(starts, sizes)
    chosen = np.flatnonzero(new & np.repeat(regular, sizes) & (np.arange(stamps.size) - first >= min_periods))
    windows = [windows_ending(observed, chosen, first[chosen], length)]
    lasts, place_parts = [stamps[chosen - 1]], [chosen]  # a place among the rows orders by series, then time
    for k in np.flatnonzero(has_new & ~regular).tolist():
        sid, a, b = found.ids[wanted[k]], starts[k], ends[k]
        times = stamps[a:b].astype("datetime64[us]")
        try:
            grid_times, grid_values = fill_series(times, observed[a:b], grid.freq, grid.fill, grid.dataset, sid)
        except InvalidInput:  # a gap that `fill: none` leaves open: no forecast of this series
            continue
        at = a + np.flatnonzero(new[a:b])
        positions = np.searchsorted(grid_times, stamps[at].astype("datetime64[us]"))
        at, positions = at[positions >= min_periods], positions[positions >= min_periods]
        windows.append(windows_ending(grid_values, positions, 0, length))
        lasts.append(grid_times[positions - 1].astype(np.int64))
        place_parts.append(at)
    places = np.concatenate(place_parts)
    order = np.argsort(places, kind="stable")
    at = places[order]
    series_of = np.repeat(np.arange(len(wanted)), sizes)
    return _Checks(np.concatenate(windows)[order],
                   np.concatenate(lasts)[order].astype("datetime64[us]"),
                   [found.ids[wanted[k]] for k in series_of[at].tolist()], stamps[at], observed[at], marks)
