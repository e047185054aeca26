"""Windows on the grid from what a grid query read: partial end periods left out, gaps and nulls filled, and
the latest `lookback` points of many series at once (regular series without a loop over them), also from
rows read as they are, one a period."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.drivers import FutureDrivers
from pipelines.frequency import Frequency
from spicepod import InvalidInput
from spicepod.timestamps import iso_utc


def complete_periods(times: np.ndarray, values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without a partial period at either end: when periods hold several rows, an end period with fewer
    rows than the typical (median) one is not yet (or no longer) covered by the data, and would pass a
    partial sum or mean for a whole period's. The one being filled now is forecast instead."""
    if counts.size < 3 or counts[1:-1].max() <= 1:  # one row a period (the usual case): no median to take
        return times, values
    typical = float(np.median(counts[1:-1]))
    if typical <= 1:
        return times, values
    first = 1 if counts[0] < typical else 0
    last = counts.size - 1 if counts[-1] < typical else counts.size
    return times[first:last], values[first:last]


def fill_series(
    times: np.ndarray, values: np.ndarray, freq: Frequency, fill: str, dataset: str, series: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bucketed (times, values) onto every grid point from the first known value to the last bucket.

    Leading nulls are dropped (a series starts at its first value), and so are trailing ones: periods after
    the newest value are not observations (they may carry future values of drivers). Interior gaps and
    nulls are filled by `fill` (linear, previous, zero) or, with `none`, refused naming the first missing
    period.
    """
    known = np.isfinite(values)
    if not known.any():
        return times[:0], values[:0]
    first = int(np.argmax(known))
    last = known.size - int(np.argmax(known[::-1]))
    times, values = times[first:last], values[first:last]
    steps = freq.steps_between(times[0], times)
    size = int(steps[-1]) + 1
    if size == times.size and np.isfinite(values).all():
        return times, values
    grid_values = np.full(size, np.nan)
    grid_values[steps] = values
    grid_times = np.asarray(freq.add(times[0], np.arange(size, dtype=np.int64))).astype("datetime64[us]")
    missing = ~np.isfinite(grid_values)
    if fill == "none":
        where = f" series '{series}'" if series is not None else ""
        raise InvalidInput(
            f"dataset '{dataset}'{where}: no value for the period starting {iso_utc(grid_times[np.argmax(missing)])} "
            f"(frequency {freq}); set params.fill to linear, previous or zero to fill gaps"
        )
    idx = np.arange(size)
    have = ~missing
    if fill == "linear":
        filled = np.interp(idx, idx[have], grid_values[have])
    elif fill == "previous":
        filled = grid_values[np.maximum.accumulate(np.where(have, idx, 0))]
    else:
        filled = np.where(have, grid_values, 0.0)
    return grid_times, filled


@dataclass
class Windows:
    """The latest window of each series: ids, values (n, lookback), newest grid timestamp (n,)."""

    ids: list[str | None]
    values: np.ndarray
    last: np.ndarray
    short: dict[str | None, int]  # series with fewer grid points than the window: how many they have
    drivers: FutureDrivers | None = None  # a model with drivers: each window's driver inputs
    raw: Columns | None = None  # one series' window read as its rows, one a period: what it was made of
    # Per window: its series' rows as read, one a period, every one with a value and no gap (what a later
    # row in the next period moves on without a read; see moved_on). None: not known for any.
    regular: np.ndarray | None = None


@dataclass
class Columns:
    """A grid query's result: rows sorted by series then period, series i in rows starts[i]:ends[i]."""

    ids: list[str | None]
    starts: np.ndarray
    ends: np.ndarray
    times: np.ndarray
    values: np.ndarray
    counts: np.ndarray


@dataclass
class Latest:
    """The last `lookback` filled grid points of each series (left-padded with NaN), with how many it has
    and whether they are its rows as read (Windows.regular)."""

    ids: list[str | None]
    rows: np.ndarray
    last: np.ndarray
    sizes: np.ndarray
    regular: np.ndarray

    def updated(self, other: Latest) -> Latest:
        """These series with those of `other` in place of their own (new ones added), by id."""
        index = {sid: i for i, sid in enumerate(self.ids)}
        added = [i for i, sid in enumerate(other.ids) if sid not in index]
        rows, last, sizes, regular = self.rows.copy(), self.last.copy(), self.sizes.copy(), self.regular.copy()
        for j, sid in enumerate(other.ids):
            i = index.get(sid)
            if i is not None:
                rows[i], last[i], sizes[i], regular[i] = other.rows[j], other.last[j], other.sizes[j], other.regular[j]
        ids = self.ids + [other.ids[j] for j in added]
        merged = Latest(ids, np.concatenate([rows, other.rows[added]]), np.concatenate([last, other.last[added]]),
                        np.concatenate([sizes, other.sizes[added]]), np.concatenate([regular, other.regular[added]]))
        if not added:
            return merged
        order = sorted(range(len(ids)), key=lambda i: (ids[i] is None, ids[i] or ""))  # as ORDER BY sid
        return Latest([ids[i] for i in order], merged.rows[order], merged.last[order], merged.sizes[order],
                      merged.regular[order])


def latest_windows(c: Columns, freq: Frequency, fill: str, dataset: str, lookback: int) -> Latest:
    """The tail of each series on its filled grid. A series whose periods are consecutive, all with a value
    and the same number of rows (what regular data gives) is its own filled grid: its tail is taken for all
    of them at once. Any other goes through complete_periods and fill_series, one by one."""
    n = len(c.ids)
    rows = np.full((n, lookback), np.nan)
    last = np.zeros(n, dtype="datetime64[us]")
    sizes = c.ends - c.starts
    regular = np.zeros(n, dtype=bool)
    nonempty = sizes > 0
    if nonempty.all() and n:
        first = c.starts
        steps = freq.steps_between(c.times[0], c.times)
        gaps = (np.diff(steps) != 1).astype(np.int64)
        gaps[c.ends[:-1] - 1] = 0  # from one series to the next is no gap
        before = np.concatenate([[0], np.cumsum(gaps)])
        regular = ((before[c.ends - 1] - before[first]) == 0)
        regular &= np.logical_and.reduceat(np.isfinite(c.values), first)
        regular &= np.minimum.reduceat(c.counts, first) == np.maximum.reduceat(c.counts, first)
        fast = np.flatnonzero(regular)
        if fast.size:
            index = c.ends[fast, None] - lookback + np.arange(lookback)[None, :]
            inside = index >= c.starts[fast, None]
            rows[fast] = np.where(inside, c.values[np.maximum(index, 0)], np.nan)
            last[fast] = c.times[c.ends[fast] - 1]
    for i in np.flatnonzero(~regular):
        sid, s, e = c.ids[i], c.starts[i], c.ends[i]
        times, values = complete_periods(c.times[s:e], c.values[s:e], c.counts[s:e])
        grid_times, grid_values = fill_series(times, values, freq, fill, dataset, sid)
        sizes[i] = grid_values.size
        tail = grid_values[-lookback:]
        if tail.size:
            rows[i, lookback - tail.size:] = tail
            last[i] = grid_times[-1]
    return Latest(list(c.ids), rows, last, sizes, regular)


def rows_by_series(sids: pa.Array, times: np.ndarray, values: np.ndarray, freq: Frequency) -> Columns | None:
    """Rows of many series at most one a period (`times` their period starts) as a grid query's result: by
    series (ids compared as bytes, as SQL's ORDER BY compares them), then period, NaN values left out as
    SQL's NULLs. None when a period holds several rows of a series, or an id is null."""
    if sids.null_count:
        return None  # a null id sorts after every other in SQL: left to the query that groups the periods
    values = np.asarray(values, dtype=np.float64)
    encoded = sids.dictionary_encode()
    order_of_names = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(order_of_names.size, np.int64)  # each id's place in that order: a row's series code
    rank[order_of_names] = np.arange(order_of_names.size)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    times = np.asarray(times).astype("datetime64[us]", copy=False)
    observed = ~np.isnan(values)
    if not observed.all():  # copies only when some value is missing (a query leaves NULLs out already)
        codes, times, values = codes[observed], times[observed], values[observed]
    if not codes.size:
        return Columns([], np.zeros(0, np.int64), np.zeros(0, np.int64), times, values, np.zeros(0, np.int64))
    order = _by_cell(codes, freq.steps_between(times.min(), times))
    if order is None:
        return None
    codes, times, values = codes[order], times[order], values[order]
    starts = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1])
    ends = np.concatenate([starts[1:], [codes.size]])
    ids = encoded.dictionary.take(pa.array(order_of_names[codes[starts]])).to_pylist()
    return Columns(ids, starts, ends, times, values, np.ones(codes.size, np.int64))


def _by_cell(codes: np.ndarray, periods: np.ndarray) -> np.ndarray | None:
    """The order of rows by series code, then period; None when two rows share a cell (series, period).

    Rows inside a window's bound span a few dozen periods, so they are sorted by counting them into a table
    of cells; a table much larger than the rows (a row far from the others) is sorted by comparison."""
    span = int(periods.max()) + 1
    if span * (int(codes.max()) + 1) <= 8 * codes.size + 4096:
        cells = codes * span
        cells += periods
        taken = np.bincount(cells)
        if taken.max() > 1:
            return None
        row_of = np.empty(taken.size, np.int64)
        row_of[cells] = np.arange(cells.size)
        return row_of[taken.astype(bool)]
    order = np.lexsort((periods, codes))
    if ((np.diff(codes[order]) == 0) & (np.diff(periods[order]) == 0)).any():
        return None
    return order


def moved_on(windows: Windows, rows: Columns, freq: Frequency) -> tuple[Windows, set[str | None]]:
    """`windows` moved on by rows committed since they were read (one a period, as rows_by_series gives
    them), and the series these rows touch that a read must give instead.

    A window moves on when it is its series' rows as read (Windows.regular) and the new rows continue it:
    the first in the period after its newest, then one a period. The read would then find the same
    rows with these after them, and take the same latest `lookback` of them; anything else (a late or
    corrected row, a gap, a series new or too short so far) is left to a read."""
    index = {sid: i for i, sid in enumerate(windows.ids)}
    found = np.array([index.get(sid, -1) for sid in rows.ids], dtype=np.int64)
    counts = rows.ends - rows.starts
    movable = found >= 0
    if windows.regular is not None:
        movable &= windows.regular[np.maximum(found, 0)]
    else:
        movable[:] = False
    if movable.any():
        # Each new row's steps after its window's newest period: 1, 2, ... for rows that continue it.
        code = np.repeat(np.arange(len(rows.ids)), counts)
        after = freq.steps_between(windows.last[np.maximum(found, 0)][code], rows.times)
        expected = np.arange(rows.times.size) - np.repeat(rows.starts, counts) + 1
        movable &= np.logical_and.reduceat(after == expected, rows.starts)
    values, last = windows.values.copy(), windows.last.copy()
    lookback = values.shape[1]
    chosen = np.flatnonzero(movable)
    for k in np.unique(counts[chosen]):  # series with the same number of new rows together
        group = chosen[counts[chosen] == k]
        target = found[group]
        new = rows.values[rows.starts[group, None] + np.arange(k)[None, :]]
        values[target] = np.concatenate([values[target], new], axis=1)[:, -lookback:]
        last[target] = rows.times[rows.ends[group] - 1]
    rest = {rows.ids[j] for j in np.flatnonzero(~movable)}
    return Windows(windows.ids, values, last, windows.short, windows.drivers, None, windows.regular), rest
