"""WindowTails: the rows behind each served series' latest window, kept current from the rows that commit
notices carry, so that the first forecast after a small DoPut needs no read.

A tail is what GridQuery.windows read for one series (Windows.raw: one row per period, inside the window's
time bound), with the data version it was read at. A notice with rows moves the tail on when they continue
it: every new row in a later period than the tail's newest, one a period. Anything else (a late or
corrected row, several rows in one period, a notice without rows, a notice out of order) forgets the tail,
and the next forecast of that series reads its window again, as it would without tails. So a window made
from a tail is always the one the read would have given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.grid import GridQuery
from pipelines.grid_setup import bucket
from pipelines.gridfill import Columns, Windows
from pipelines.state import DataVersions, ServedModel

MAX_TAILS = 100_000  # series kept; past that the tails start again empty


@dataclass(frozen=True)
class _Tail:
    cache_id: object  # the model load the tail was read for
    grid: GridQuery
    lookback: int
    version: int  # the data version it holds every row of
    times: np.ndarray  # periods, strictly increasing
    values: np.ndarray


class WindowTails:
    """Tails by dataset, series and model; the caller (ForecastCache) holds its lock around every method."""

    def __init__(self) -> None:
        self._tails: dict[str, dict[str | None, dict[str, _Tail]]] = {}  # dataset -> series -> model -> tail
        self._count = 0

    def clear(self) -> None:
        self._tails.clear()
        self._count = 0

    def windows(self, served: ServedModel, series: str | None, versions: DataVersions) -> Windows | None:
        """The series' window from its tail, when the tail holds every change of the series; else None."""
        dataset = served.grid.dataset
        tail = self._tails.get(dataset, {}).get(series, {}).get(served.meta.model_name)
        if tail is None or tail.cache_id != served.cache_id or tail.version < versions.of_series(dataset, series):
            return None
        rows = Columns([series], np.zeros(1, np.int64), np.array([tail.times.size]), tail.times, tail.values,
                       np.ones(tail.times.size, np.int64))
        return served.grid.tail_windows(rows, tail.lookback)

    def keep(self, served: ServedModel, series: str | None, version: int, windows: Windows) -> None:
        """The rows a window was just read from, at `version` (the data version known before the read)."""
        raw = windows.raw
        if raw is None or not raw.times.size or not windows.ids:
            return
        if self._count >= MAX_TAILS:
            self.clear()
        models = self._tails.setdefault(served.grid.dataset, {}).setdefault(series, {})
        self._count += served.meta.model_name not in models
        models[served.meta.model_name] = _Tail(served.cache_id, served.grid, served.model.window_length, version,
                                               raw.times, raw.values)

    def notice(self, dataset: str, version: int, series: frozenset[str] | None, rows: pa.Table | None,
               versions: DataVersions) -> None:
        """A commit notice, before `versions` records it: the tails of the series it touched move on by its
        rows, or are forgotten."""
        by_series = self._tails.get(dataset)
        if not by_series:
            return
        latest = versions.latest(dataset)
        usable = rows is not None and latest is not None and version == latest[0] + 1  # none missed
        # A panel's series the commit did not touch keep their tails; the one series of a model without
        # series (None) is touched by every commit.
        touched = list(by_series) if series is None else [s for s in (None, *series) if s in by_series]
        new_rows: dict[int, dict[str | None, tuple[np.ndarray, np.ndarray]] | None] = {}  # per grid
        for sid in touched:
            models = by_series.pop(sid)
            self._count -= len(models)
            for name, tail in models.items():
                if not usable or tail.version < versions.of_series(dataset, sid):
                    continue
                if id(tail.grid) not in new_rows:
                    new_rows[id(tail.grid)] = _by_series(tail.grid, rows)
                rows_of = new_rows[id(tail.grid)]
                moved = None if rows_of is None else _moved_on(tail, *rows_of.get(sid, _NONE), version)
                if moved is not None:
                    by_series.setdefault(sid, {})[name] = moved
                    self._count += 1


_NONE = (np.array([], dtype="datetime64[us]"), np.array([], dtype=np.float64))


def committed_rows(grid: GridQuery, tables: list[pa.Table]) -> tuple[pa.Array | None, np.ndarray, np.ndarray] | None:
    """The rows of commit notices that carry a value, as the grid reads them: (series ids as text, or None
    for a model without series; period starts; values). None when the columns are not what a window can
    be moved on by (a value column that is not numeric, no series column)."""
    sids, times, numbers = [], [], []
    for rows in tables:
        names = rows.column_names
        if grid.time_column not in names or grid.value_column not in names:
            return None
        if not pa.types.is_timestamp(rows.schema.field(grid.time_column).type):
            return None
        values = rows.column(grid.value_column)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            return None  # what DuckDB's CAST to DOUBLE does with other types is DuckDB's to say: read again
        valued = pc.is_valid(values)
        times.append(rows.column(grid.time_column).filter(valued).to_numpy().astype("datetime64[us]"))
        numbers.append(pc.cast(values.filter(valued), pa.float64()).to_numpy(zero_copy_only=False))
        if grid.series_column is not None:
            if grid.series_column not in names:
                return None
            sids.append(pc.cast(rows.column(grid.series_column).filter(valued), pa.string()).combine_chunks())
    series = pa.concat_arrays(sids) if grid.series_column is not None else None
    return series, bucket(np.concatenate(times), grid.freq, grid.origin), np.concatenate(numbers)


def _by_series(grid: GridQuery, rows: pa.Table) -> dict[str | None, tuple[np.ndarray, np.ndarray]] | None:
    """Each series' (period, value) of the rows with a value, sorted by time, as the grid reads them; None
    when the columns are not what a tail can take."""
    committed = committed_rows(grid, [rows])
    if committed is None:
        return None
    sids, times, numbers = committed
    if sids is None:
        order = np.argsort(times, kind="stable")
        return {None: (times[order], numbers[order])}
    # Grouped by sorting once, not by comparing every row with every series: a panel's commit names thousands.
    names = np.asarray(sids.to_numpy(zero_copy_only=False), dtype=object)
    if not names.size:
        return {}
    order = np.lexsort((times, names.astype(str)))
    names, times, numbers = names[order], times[order], numbers[order]
    bounds = np.flatnonzero(names[1:] != names[:-1]) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [names.size]])
    return {names[a]: (times[a:b], numbers[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)}


def _moved_on(tail: _Tail, times: np.ndarray, values: np.ndarray, version: int) -> _Tail | None:
    """The tail with these periods after it, trimmed to the window's bound; None when they do not continue it."""
    if times.size and (times[0] <= tail.times[-1] or (np.diff(times.astype(np.int64)) <= 0).any()):
        return None
    all_times = np.concatenate([tail.times, times]) if times.size else tail.times
    all_values = np.concatenate([tail.values, values]) if times.size else tail.values
    start = int(np.searchsorted(all_times, tail.grid.window_bound(all_times[-1], tail.lookback)))
    return _Tail(tail.cache_id, tail.grid, tail.lookback, version, all_times[start:], all_values[start:])
