"""The grid read of a model with drivers: its series and their driver columns in one query.

Rows after a series' newest value are not observations: their driver values are the future ones a
forecast needs (a DoPut of tomorrow's weather). The query keeps, per series, the latest `per_series`
periods up to the newest value and the first `future` periods after it, so one read gives a forecast its
window and its future drivers. Numeric covariates are averaged within a period; categorical ones and static
attributes take the period's latest value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.drivers import Drivers, DriverValues, FutureDrivers
from pipelines.frequency import Frequency
from pipelines.gridfill import Windows, complete_periods, fill_series
from spicepod import InvalidInput, quote_ident


@dataclass
class DriverPart:
    """One series as read: its observed grid (times, values) and its drivers from its first period on."""

    sid: str | None
    times: np.ndarray
    values: np.ndarray
    covariates: dict[str, np.ndarray]  # each from times[0], running past the values into future periods
    static: dict[str, object]


def driver_columns_sql(drivers: Drivers) -> tuple[str, str]:
    """The inner select's driver columns, and the grouped select's aggregates of them."""
    inner, grouped = [], []
    for i, name in enumerate(drivers.columns):
        column = quote_ident(name)
        if drivers.categorical(name):
            inner.append(f"{column} AS d{i}")
            grouped.append(f"arg_max(d{i}, raw_ts) FILTER (WHERE d{i} IS NOT NULL) AS d{i}")
        else:
            inner.append(f"CAST({column} AS DOUBLE) AS d{i}")
            grouped.append(f"avg(CASE WHEN isnan(d{i}) THEN NULL ELSE d{i} END) AS d{i}")
    return ", ".join(inner), ", ".join(grouped)


def limit_sql(grouped: str, panel: bool, per_series: int | None, future: int | None) -> str:
    """Keep the latest `per_series` periods up to each series' newest value (all when None) and the first
    `future` periods after it (all when None)."""
    partition = "PARTITION BY sid" if panel else ""
    marked = (f"SELECT *, max(bucket) FILTER (WHERE value IS NOT NULL) OVER ({partition}) AS newest "
              f"FROM ({grouped})")
    after = "bucket > newest"
    rank = (f"row_number() OVER (PARTITION BY {'sid, ' if panel else ''}{after} "
            f"ORDER BY CASE WHEN {after} THEN epoch_us(bucket) ELSE -epoch_us(bucket) END)")
    past = "TRUE" if per_series is None else f"{rank} <= {int(per_series)}"
    ahead = "TRUE" if future is None else f"{rank} <= {int(future)}"
    return (f"SELECT * EXCLUDE (newest) FROM ({marked}) WHERE newest IS NOT NULL "
            f"QUALIFY CASE WHEN {after} THEN {ahead} ELSE {past} END "
            f"ORDER BY {'sid, ' if panel else ''}bucket")


def driver_columns(table: pa.Table, drivers: Drivers) -> dict[str, np.ndarray]:
    """Each driver column of a read: float64 for numeric ones (NaN missing), objects for categorical ones."""
    columns = {}
    for i, name in enumerate(drivers.columns):
        column = table.column(f"d{i}")
        if drivers.categorical(name):
            columns[name] = np.array(column.to_pylist(), dtype=object)
        else:
            columns[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return columns


def split_parts(table: pa.Table, drivers: Drivers, panel: bool) -> list[tuple]:
    """(series, period starts, values, counts, {column: values}) of each series in the result."""
    times = table.column("bucket").to_numpy().astype("datetime64[us]")
    values = table.column("value").cast(pa.float64()).to_numpy(zero_copy_only=False)
    counts = table.column("n").to_numpy()
    columns = driver_columns(table, drivers)
    if not panel:
        return [(None, times, values, counts, columns)]
    sids = table.column("sid")
    if not len(sids):
        return []
    codes = sids.combine_chunks().dictionary_encode()
    bounds = np.flatnonzero(np.diff(codes.indices.to_numpy(zero_copy_only=False))) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(sids)]])
    names = sids.take(pa.array(starts)).to_pylist()
    return [(name, times[s:e], values[s:e], counts[s:e], {k: v[s:e] for k, v in columns.items()})
            for name, s, e in zip(names, starts, ends, strict=True)]


def place(drivers: Drivers, freq: Frequency, sid: str | None, grid_times: np.ndarray, times: np.ndarray,
          columns: dict[str, np.ndarray], dataset: str) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """A series' covariates on its grid from grid_times[0] to its last period read, and its static values
    (an error when one changes within the series)."""
    covariates: dict[str, np.ndarray] = {}
    static: dict[str, object] = {}
    if grid_times.size:
        steps = freq.steps_between(grid_times[0], times)
        keep = steps >= 0
        size = max(int(grid_times.size), int(steps[keep].max()) + 1 if keep.any() else 0)
    for c in drivers.covariates:
        raw = columns[c.column]
        if c.categorical:
            out = np.full(size if grid_times.size else 0, None, dtype=object)
        else:
            out = np.full(size if grid_times.size else 0, np.nan)
        if grid_times.size:
            out[steps[keep]] = raw[keep]
        covariates[c.column] = out
    for name in drivers.static:
        seen = {v for v in columns[name].tolist() if v is not None}
        if len(seen) > 1:
            shown = ", ".join(repr(v) for v in sorted(seen, key=str)[:3])
            raise InvalidInput(f"dataset '{dataset}' series '{sid}': static column '{name}' changes within the "
                               f"series ({shown}); a static attribute has one value per series")
        static[name] = next(iter(seen)) if seen else None
    return covariates, static


def parts_of(
    table: pa.Table, drivers: Drivers, freq: Frequency, fill: str, dataset: str, panel: bool,
) -> list[DriverPart]:
    """Each series of a driver read (`limit_sql`'s result): its observed grid, filled, up to its newest value,
    and its drivers placed on the grid from its first period on."""
    out = []
    for sid, times, values, counts, columns in split_parts(table, drivers, panel):
        observed = np.isfinite(values)
        end = observed.size - int(np.argmax(observed[::-1])) if observed.any() else 0
        kept_times, kept_values = complete_periods(times[:end], values[:end], counts[:end])
        grid_times, grid_values = fill_series(kept_times, kept_values, freq, fill, dataset, sid)
        covariates, static = place(drivers, freq, sid, grid_times, times, columns, dataset)
        out.append(DriverPart(sid, grid_times, grid_values, covariates, static))
    return out


def part_windows(parts: list[DriverPart], drivers: Drivers, lookback: int, needed: int, future: int) -> Windows:
    """The latest `lookback` points of each series with at least `needed` (NaN before a shorter one starts),
    with the inputs of its drivers for the `future` periods after them; the others are named short."""
    kept = [p for p in parts if p.values.size >= needed]
    short = {p.sid: int(p.values.size) for p in parts if p.values.size < needed}
    values = np.full((len(kept), lookback), np.nan)
    for i, p in enumerate(kept):
        row = p.values[-lookback:]
        values[i, lookback - row.size:] = row
    last = np.array([p.times[-1] for p in kept], dtype="datetime64[us]")
    return Windows([p.sid for p in kept], values, last, short, future_inputs(kept, drivers, future, lookback))


def driver_values(parts: list[DriverPart], drivers: Drivers) -> DriverValues:
    return DriverValues({c.column: [p.covariates[c.column] for p in parts] for c in drivers.covariates},
                        {s: [p.static[s] for p in parts] for s in drivers.static})


def future_inputs(parts: list[DriverPart], drivers: Drivers, steps: int, window: int = 0) -> FutureDrivers:
    """Each window's driver inputs: known-future covariates of the `steps` periods after its newest value,
    known-past ones at it, its static attributes, and the numeric known-future ones over its `window`
    latest periods (right-aligned, NaN before the series starts)."""
    future = {}
    for c in drivers.future:
        out = np.full((len(parts), steps), None if c.categorical else np.nan, dtype=object if c.categorical else None)
        for i, p in enumerate(parts):
            ahead = p.covariates[c.column][p.values.size:p.values.size + steps]
            out[i, :ahead.size] = ahead
        future[c.column] = out
    past = {c.column: np.array([p.covariates[c.column][p.values.size - 1] for p in parts],
                               dtype=object if c.categorical else np.float64) for c in drivers.past}
    static = {s: np.array([p.static[s] for p in parts], dtype=object) for s in drivers.static}
    history = {}
    for c in drivers.future if window else ():
        if c.categorical:
            continue
        out = np.full((len(parts), window), np.nan)
        for i, p in enumerate(parts):
            seen = p.covariates[c.column][:p.values.size][-window:]
            out[i, window - seen.size:] = seen
        history[c.column] = out
    return FutureDrivers(future, past, static, history)


def grid_index(times: np.ndarray, freq: Frequency) -> np.ndarray:
    """Each period start as a whole number of steps (consecutive periods differ by one)."""
    if freq.is_calendar:
        return times.astype("datetime64[M]").astype(np.int64) // freq.months
    return times.astype("datetime64[us]").astype(np.int64) // freq.step_us


def regular_windows(
    table: pa.Table, drivers: Drivers, freq: Frequency, lookback: int, needed: int, future: int,
) -> tuple[list, np.ndarray, np.ndarray, dict, FutureDrivers] | None:
    """The windows of a panel read whose every series is already regular (consecutive periods, a value in
    each up to the newest, one row or the same number of rows in each): no filling to do, so the windows and
    future drivers are gathered for all series at once. None when any series needs the general path."""
    n_rows = table.num_rows
    if not n_rows:
        return None
    times = table.column("bucket").to_numpy().astype("datetime64[us]")
    values = table.column("value").cast(pa.float64()).to_numpy(zero_copy_only=False)
    counts = table.column("n").to_numpy()
    codes = table.column("sid").combine_chunks().dictionary_encode()
    owner_change = np.flatnonzero(np.diff(codes.indices.to_numpy(zero_copy_only=False))) + 1
    starts = np.concatenate([[0], owner_change])
    ends = np.concatenate([owner_change, [n_rows]])
    sizes = ends - starts
    owner = np.repeat(np.arange(starts.size), sizes)
    index = grid_index(times, freq)
    step = np.diff(index, prepend=index[0] - 1)
    step[starts] = 1
    observed = np.isfinite(values)
    # The newest value of each series, and whether everything before it is observed and everything after not.
    last = np.maximum.reduceat(np.where(observed, np.arange(n_rows), -1), starts)
    first_future = last + 1
    position = np.arange(n_rows)
    before = position <= last[owner]
    if (last < starts).any() or not (step == 1).all() or (observed != before).any():
        return None
    seen = counts[before]
    if seen.size and seen.max() > 1 and seen.min() != seen.max():
        return None  # periods of uneven row counts: partial periods to drop, on the general path
    kept = last - starts + 1
    keep = kept >= needed
    rows = np.flatnonzero(keep)
    width = np.minimum(kept[rows], lookback)
    window = np.full((rows.size, lookback), np.nan)
    offsets = np.arange(lookback)[None, :] - lookback + 1  # relative to the newest value
    at = last[rows][:, None] + offsets
    valid = offsets >= -(width[:, None] - 1)
    window[valid] = values[at[valid]]
    names = codes.dictionary.to_pylist()
    sid_codes = codes.indices.to_numpy(zero_copy_only=False)[starts]
    ids = [names[c] for c in sid_codes[rows]]
    short = {names[c]: int(k) for c, k in zip(sid_codes[~keep], kept[~keep], strict=True)}
    newest = times[last[rows]]
    columns = driver_columns(table, drivers)
    inputs = FutureDrivers()
    ahead = np.arange(future)[None, :]
    room = (first_future[rows][:, None] + ahead) < ends[rows][:, None]
    for c in drivers.future:
        raw = columns[c.column]
        out = np.full((rows.size, future), None if c.categorical else np.nan, dtype=object if c.categorical else None)
        out[room] = raw[(first_future[rows][:, None] + ahead)[room]]
        inputs.future[c.column] = out
    for c in drivers.past:
        inputs.past[c.column] = columns[c.column][last[rows]]
    for c in drivers.future:
        if not c.categorical:  # the numeric ones over each window too (what a method with regressors fits on)
            seen = np.full((rows.size, lookback), np.nan)
            seen[valid] = columns[c.column][at[valid]]
            inputs.history[c.column] = seen
    for name in drivers.static:
        raw = columns[name]
        present = np.array([v is not None for v in raw.tolist()], dtype=bool)
        text = np.where(present, raw.astype(str), "")
        firsts = text[starts]
        changed = present & (text != firsts[owner])
        if changed.any():
            return None  # the general path names the series whose attribute changes
        inputs.static[name] = np.array([raw[s] if present[s] else None for s in starts[rows]], dtype=object)
    return ids, window, newest, short, inputs
