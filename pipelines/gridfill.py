"""Windows on the grid from what a grid query read: partial end periods left out, gaps and nulls filled, and
the latest `lookback` points of many series at once (regular series without a loop over them), also from
rows read as they are, one a period."""

from __future__ import annotations

from collections.abc import Callable
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
    """The tail of each series on its filled grid: the tails of the regular series (regular_series) taken for
    all of them at once, any other's through complete_periods and fill_series, one by one."""
    n = len(c.ids)
    rows = np.full((n, lookback), np.nan)
    last = np.zeros(n, dtype="datetime64[us]")
    sizes = c.ends - c.starts
    regular = regular_series(c, freq)
    fast = np.flatnonzero(regular)
    if fast.size:
        rows[fast] = windows_ending(c.values, c.ends[fast], c.starts[fast], lookback)
        last[fast] = c.times[c.ends[fast] - 1]
    for i in np.flatnonzero(~regular):
        s, e = c.starts[i], c.ends[i]
        sizes[i] = _filled_tail(rows, last, i, c.times[s:e], c.values[s:e], c.counts[s:e], freq, fill, dataset,
                                c.ids[i])
    return Latest(list(c.ids), rows, last, sizes, regular)


def filled_series(
    c: Columns, freq: Frequency, fill: str, dataset: str,
) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(series, grid times, filled values) of each series of `c`, as complete_periods and fill_series make them:
    a regular series (regular_series) is its rows as read, any other goes through the two, one by one."""
    def filled(sid: str | None, times: np.ndarray, values: np.ndarray, counts: np.ndarray) -> tuple:
        return fill_series(*complete_periods(times, values, counts), freq, fill, dataset, sid)

    return _as_read_or(c, regular_series(c, freq), filled)


def observed_series(c: Columns) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(series, periods, values) of each series of `c` as observed: without a partial period at either end
    (complete_periods) nor the periods with no value, nothing filled. A series whose periods all hold a value
    and as many rows (regular_series, gaps allowed) is its rows as read; any other is cut one by one."""
    def observed(sid: str | None, times: np.ndarray, values: np.ndarray, counts: np.ndarray) -> tuple:
        times, values = complete_periods(times, values, counts)
        known = np.isfinite(values)
        return times[known], values[known]

    return _as_read_or(c, regular_series(c, None), observed)


def _as_read_or(
    c: Columns, as_read: np.ndarray, made: Callable[[str | None, np.ndarray, np.ndarray, np.ndarray], tuple],
) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(series, times, values) of each series of `c`: its rows as read where `as_read`, else what `made` makes of
    its (series, times, values, counts)."""
    out = []
    for sid, s, e, plain in zip(c.ids, c.starts.tolist(), c.ends.tolist(), as_read.tolist(), strict=True):
        times, values = c.times[s:e], c.values[s:e]
        out.append((sid, times, values) if plain else (sid, *made(sid, times, values, c.counts[s:e])))
    return out


def regular_series(c: Columns, freq: Frequency | None) -> np.ndarray:
    """Whether each series of `c` is its own filled grid: its periods consecutive, every one with a value and
    the same number of rows (what regular data gives), so that complete_periods and fill_series leave it as
    it is. With no `freq`, gaps between periods are allowed (what complete_periods and dropping the periods
    with no value leave as it is). Found for all series at once; none is where some series has no rows."""
    n = len(c.ids)
    if not n or not (c.ends > c.starts).all():
        return np.zeros(n, dtype=bool)
    # Flag each row that breaks its series: a row without a value, or one after which the next period is
    # not the next grid point or has another number of rows; then each series, whether any of its rows does.
    broken = np.empty(c.times.size, dtype=bool)
    if freq is None:
        broken[:-1] = False
    elif freq.is_calendar:
        np.not_equal(np.diff(freq.steps_between(c.times[0], c.times)), 1, out=broken[:-1])
    else:  # grid points are whole steps apart
        np.not_equal(np.diff(c.times.astype("datetime64[us]", copy=False).view(np.int64)), freq.step_us,
                     out=broken[:-1])
    broken[:-1] |= np.diff(c.counts) != 0
    broken[c.ends - 1] = False  # from one series to the next is no break (nor is anything after the last row)
    broken |= ~np.isfinite(c.values)
    return ~np.logical_or.reduceat(broken, c.starts)


def windows_ending(values: np.ndarray, ends: np.ndarray, starts: np.ndarray | int, length: int) -> np.ndarray:
    """The `length` values before each of `ends` (one past a window's last place in `values`), each window's
    places before its series' first (`starts`) NaN: the windows of many series laid end to end, at once."""
    index = np.asarray(ends)[:, None] - length + np.arange(length)[None, :]
    return np.where(index >= np.reshape(starts, (-1, 1)), values[np.maximum(index, 0)], np.nan)


def _filled_tail(
    rows: np.ndarray, last: np.ndarray, i: int, times: np.ndarray, values: np.ndarray, counts: np.ndarray,
    freq: Frequency, fill: str, dataset: str, sid: str | None,
) -> int:
    """Series i's tail on its filled grid (one series' periods, one by one) into rows[i] and last[i]; returns
    how many grid points it has."""
    times, values = complete_periods(times, values, counts)
    grid_times, grid_values = fill_series(times, values, freq, fill, dataset, sid)
    tail = grid_values[-rows.shape[1]:]
    if tail.size:
        rows[i, rows.shape[1] - tail.size:] = tail
        last[i] = grid_times[-1]
    return grid_values.size


def latest_of_rows(
    sids: pa.Array, times: np.ndarray, values: np.ndarray, freq: Frequency, fill: str, dataset: str, lookback: int,
) -> Latest | None:
    """latest_windows of rows_by_series (the same windows, bit for bit), made on a table of cells, a row of
    periods per series, when the rows fill one (a bounded read of regular data): each row goes to its cell,
    and a series whose cells hold a value from its first to its last is its own filled grid, its window the
    end of its row; nothing is sorted. None, as rows_by_series, for several rows in a cell or a null id."""
    if sids.null_count:
        return None
    codes, times, values, names = _coded(sids, times, values)
    if not codes.size:
        return latest_windows(_no_rows(times, values), freq, fill, dataset, lookback)
    start = times.min()
    periods = freq.steps_between(start, times)
    span, n = int(periods.max()) + 1, len(names)
    if span * n > 8 * codes.size + 4096:  # a row far from the others: a table mostly empty
        columns = _by_series(codes, times, values, names, periods)
        return None if columns is None else latest_windows(columns, freq, fill, dataset, lookback)
    cells = codes * span
    cells += periods
    taken = np.bincount(cells, minlength=n * span)
    if taken.max() > 1:
        return None
    table = np.full(n * span, np.nan)
    table[cells] = values
    table, have = table.reshape(n, span), taken.reshape(n, span).astype(bool)
    found = np.flatnonzero(have.any(axis=1))  # series with a value inside the bound
    table, have = table[found], have[found]
    first = np.argmax(have, axis=1)
    end = span - np.argmax(have[:, ::-1], axis=1)  # one past each series' last period
    sizes = end - first
    regular = np.isfinite(table).sum(axis=1) == sizes  # every cell from the first to the last has a finite value
    row_starts = np.arange(found.size) * span  # each series' row of cells, in the table laid flat
    rows = windows_ending(table.reshape(-1), row_starts + end, row_starts + first, lookback)
    last = np.asarray(freq.add(start, end - 1)).astype("datetime64[us]")
    ids = names.take(pa.array(found)).to_pylist()
    for i in np.flatnonzero(~regular):
        period = np.flatnonzero(have[i])
        rows[i], last[i] = np.nan, np.datetime64(0, "us")  # as latest_windows leaves a series with no value
        sizes[i] = _filled_tail(rows, last, i, np.asarray(freq.add(start, period)).astype("datetime64[us]"),
                                table[i, period], np.ones(period.size, np.int64), freq, fill, dataset, ids[i])
    return Latest(ids, rows, last, sizes, regular)


def rows_by_series(sids: pa.Array, times: np.ndarray, values: np.ndarray, freq: Frequency) -> Columns | None:
    """Rows of many series at most one a period (`times` their period starts) as a grid query's result: by
    series (ids compared as bytes, as SQL's ORDER BY compares them), then period, NaN values left out as
    SQL's NULLs. None when a period holds several rows of a series, or an id is null."""
    if sids.null_count:
        return None  # a null id sorts after every other in SQL: left to the query that groups the periods
    codes, times, values, names = _coded(sids, times, values)
    if not codes.size:
        return _no_rows(times, values)
    return _by_series(codes, times, values, names, freq.steps_between(times.min(), times))


def _coded(sids: pa.Array, times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           pa.Array]:
    """The rows with a value (NaN left out as SQL's NULL): each one's series as a code, its id's place among
    the distinct ids in SQL's order (compared as bytes), its time and value; and those ids in that order."""
    values = np.asarray(values, dtype=np.float64)
    encoded = sids.dictionary_encode()
    order_of_names = pc.sort_indices(encoded.dictionary)
    rank = np.empty(len(order_of_names), np.int64)  # each id's place in that order: a row's series code
    rank[order_of_names.to_numpy()] = np.arange(len(order_of_names))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    times = np.asarray(times).astype("datetime64[us]", copy=False)
    observed = ~np.isnan(values)
    if not observed.all():  # copies only when some value is missing (a query leaves NULLs out already)
        codes, times, values = codes[observed], times[observed], values[observed]
    return codes, times, values, encoded.dictionary.take(order_of_names)


def _no_rows(times: np.ndarray, values: np.ndarray) -> Columns:
    return Columns([], np.zeros(0, np.int64), np.zeros(0, np.int64), times, values, np.zeros(0, np.int64))


def _by_series(codes: np.ndarray, times: np.ndarray, values: np.ndarray, names: pa.Array,
               periods: np.ndarray) -> Columns | None:
    """Coded rows (see _coded) as Columns: by series, then period; None when two rows share a period."""
    order = _by_cell(codes, periods)
    if order is None:
        return None
    codes, times, values = codes[order], times[order], values[order]
    starts = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1])
    ends = np.concatenate([starts[1:], [codes.size]])
    ids = names.take(pa.array(codes[starts])).to_pylist()
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
