"""The regular grid a model sees: rows bucketed to the start of their period, combined by `aggregate`,
missing periods and nulls filled by `fill`. The bucketing and aggregation run in DuckDB (SQL built once
per model and sent through Flight); the fill runs in numpy on the small result.

Fixed steps (s, min, h, d, w) are bucketed from an origin in the data's own phase (weekly data on
Sundays stays on Sundays); calendar steps (mo, q, y) from month starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.driver_grid import (
    DriverPart,
    driver_columns_sql,
    driver_values,
    future_inputs,
    limit_sql,
    place,
    regular_windows,
    split_parts,
)
from pipelines.drivers import Drivers, FutureDrivers
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from pipelines.series import SeriesSet
from spicepod import WEEKDAYS, InvalidInput, NotReady, quote_ident
from spicepod.timestamps import iso_utc

_US = np.timedelta64(1, "us")
NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat", "decimal")
AGGREGATE_SQL = {
    "mean": "avg(v)",
    "sum": "sum(v)",
    "last": "arg_max(v, raw_ts)",
    "min": "min(v)",
    "max": "max(v)",
}
INFERENCE_POINTS = 20_000  # timestamps read to infer a frequency
WINDOW_PAD = 8  # grid points read beyond the window, so a gap at its start can still be interpolated


def value_column(dataset: dict, declared: str | None, series_column: str | None, drivers: list[str] = ()) -> str:
    """The column to forecast: the declared one, or the only numeric column besides time, series and drivers."""
    columns = {c["name"]: c["type"] for c in dataset["columns"]}
    name = dataset["name"]
    if not columns:
        raise NotReady(f"dataset '{name}' has no rows yet")
    if declared is not None:
        if declared not in columns:
            raise InvalidInput(f"dataset '{name}' has no column '{declared}' (columns: {', '.join(columns)})")
        if not columns[declared].startswith(NUMERIC_PREFIXES):
            raise InvalidInput(f"column '{declared}' of dataset '{name}' is {columns[declared]}, not numeric")
        return declared
    skip = {dataset["time_column"], series_column, *drivers}
    numeric = [c for c, t in columns.items() if c not in skip and t.startswith(NUMERIC_PREFIXES)]
    if len(numeric) != 1:
        raise InvalidInput(
            f"dataset '{name}' has {len(numeric)} numeric columns ({', '.join(numeric) or 'none'}); "
            "set params.value_column"
        )
    return numeric[0]


def sql_string(value: str) -> str:
    """A DuckDB string literal: series ids are data, quoted here and never spliced in raw."""
    if "\x00" in value:
        raise InvalidInput("a series id may not contain a NUL character")
    return "'" + value.replace("'", "''") + "'"


MONDAY = np.datetime64("1970-01-05T00:00:00", "us")  # ISO weeks start on Mondays


def phase_origin(timestamps: np.ndarray, freq: Frequency, week_start: str | None = None) -> np.datetime64:
    """The grid origin of a fixed step: the most common phase of the timestamps (the epoch if none).

    Weeks of finer data (daily rows summed into weeks) start on `week_start`, Monday unless set: the
    data's own phase would start them on whatever weekday the data happens to favour. Weekly data
    keeps its own phase (weekly rows on Sundays stay on Sundays) unless `week_start` is set.
    """
    if freq.is_calendar or timestamps.size == 0:
        return np.datetime64(0, "us")
    ts = timestamps.astype("datetime64[us]")
    if freq.unit == "w" and freq.count == 1:
        finer = ts.size > 1 and int(np.median(np.diff(ts.astype(np.int64)))) < freq.step_us
        if week_start is not None or finer:
            return MONDAY + np.timedelta64(WEEKDAYS.index(week_start or "monday"), "D")
    phases = ts.astype(np.int64) % freq.step_us
    values, counts = np.unique(phases, return_counts=True)
    return np.datetime64(int(values[np.argmax(counts)]), "us")


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


def bucket(timestamps: np.ndarray | np.datetime64, freq: Frequency, origin: np.datetime64) -> np.ndarray:
    """The start of each timestamp's period on the grid (numpy twin of the SQL bucket expression)."""
    ts = np.asarray(timestamps).astype("datetime64[us]")
    if freq.is_calendar:
        months = ts.astype("datetime64[M]").astype(np.int64) - 360  # months since 2000-01, as DuckDB counts
        start = (months // freq.months) * freq.months + 360
        return start.astype("datetime64[M]").astype("datetime64[us]")
    offset = (ts - origin).astype(np.int64)
    return origin + ((offset // freq.step_us) * freq.step_us) * _US


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


def raw_timestamps(
    client: FlightDataClient, dataset: str, time_column: str, series_column: str | None
) -> np.ndarray:
    """Distinct timestamps of one series (a panel's longest), the newest INFERENCE_POINTS, sorted: what
    a frequency is inferred from, before there is a grid."""
    ts, table = quote_ident(time_column), quote_ident(dataset)
    where = ""
    if series_column:
        sc = quote_ident(series_column)
        where = f" WHERE {sc} = (SELECT {sc} FROM {table} GROUP BY {sc} ORDER BY count(*) DESC, {sc} LIMIT 1)"
    result = client.query(f"SELECT DISTINCT {ts} FROM {table}{where} ORDER BY {ts} DESC LIMIT {INFERENCE_POINTS}")
    if not result.num_rows:
        raise NotReady(f"dataset '{dataset}' has no rows yet")
    return np.sort(result.column(0).to_numpy().astype("datetime64[us]"))


@dataclass
class Windows:
    """The latest window of each series: ids, values (n, lookback), newest grid timestamp (n,)."""

    ids: list[str | None]
    values: np.ndarray
    last: np.ndarray
    short: dict[str | None, int]  # series with fewer grid points than the window: how many they have
    drivers: FutureDrivers | None = None  # a model with drivers: each window's driver inputs


class GridQuery:
    """Reads a model's series on its grid through Flight; the SQL is built once, here."""

    def __init__(
        self, dataset: str, time_column: str, value_column: str, series_column: str | None,
        freq: Frequency, origin: np.datetime64, aggregate: str, fill: str, drivers: Drivers | None = None,
    ):
        self.dataset = dataset
        self.drivers = drivers if drivers else None
        self.value_column = value_column
        self.freq = freq
        self.origin = origin
        self.fill = fill
        self.series_column = series_column
        ts = quote_ident(time_column)
        if freq.is_calendar:
            bucket_sql = f"time_bucket(INTERVAL '{freq.months} months', {ts})"
        else:
            bucket_sql = (f"time_bucket(INTERVAL '{freq.step_us} microseconds', {ts}, "
                          f"TIMESTAMP '{np.datetime64(origin, 'us')}')")
        sid = f"CAST({quote_ident(series_column)} AS VARCHAR) AS sid, " if series_column else ""
        inner_drivers, grouped_drivers = driver_columns_sql(self.drivers) if self.drivers else ("", "")
        self._inner = (
            f"SELECT {sid}{bucket_sql} AS bucket, {ts} AS raw_ts, "
            f"CASE WHEN isnan(CAST({quote_ident(value_column)} AS DOUBLE)) THEN NULL "
            f"ELSE CAST({quote_ident(value_column)} AS DOUBLE) END AS v"
            f"{', ' + inner_drivers if inner_drivers else ''} FROM {quote_ident(dataset)}"
        )
        self._ts = ts
        sc = quote_ident(series_column) if series_column else "NULL"
        self._stats_sql = (
            f"SELECT CAST({sc} AS VARCHAR) AS sid, count(*) AS n, min({ts}) AS first, max({ts}) AS last "
            f"FROM {quote_ident(dataset)} GROUP BY ALL ORDER BY sid"
        )
        self._select = (f"SELECT {'sid, ' if series_column else ''}bucket, {AGGREGATE_SQL[aggregate]} AS value, "
                        f"count(raw_ts) AS n{', ' + grouped_drivers if grouped_drivers else ''}")
        self._partition = "PARTITION BY sid " if series_column else ""

    def _sql(self, where: list[str], per_series: int | None) -> str:
        inner = self._inner + (f" WHERE {' AND '.join(where)}" if where else "")
        # Rows without a value are left out: a gap is filled the same either way, and rows after the newest
        # value (future rows of drivers) must not take the window's places.
        group = f"GROUP BY {'sid, ' if self.series_column else ''}bucket"
        sql = f"{self._select} FROM ({inner}) WHERE v IS NOT NULL {group}"
        if per_series is not None:
            sql += f" QUALIFY row_number() OVER ({self._partition}ORDER BY bucket DESC) <= {int(per_series)}"
        return sql + f" ORDER BY {'sid, ' if self.series_column else ''}bucket"

    def _driver_parts(
        self, client: FlightDataClient, where: list[str], per_series: int | None, future: int | None,
    ) -> list[DriverPart]:
        """Each series' observed grid (filled) and its drivers, periods after its newest value included."""
        return self._parts_of(self._driver_table(client, where, per_series, future))

    def _driver_table(
        self, client: FlightDataClient, where: list[str], per_series: int | None, future: int | None,
    ) -> pa.Table:
        inner = self._inner + (f" WHERE {' AND '.join(where)}" if where else "")
        grouped = f"{self._select} FROM ({inner}) GROUP BY {'sid, ' if self.series_column else ''}bucket"
        return client.query(limit_sql(grouped, bool(self.series_column), per_series, future))

    def _parts_of(self, table: pa.Table) -> list[DriverPart]:
        out = []
        for sid, times, values, counts, columns in split_parts(table, self.drivers, bool(self.series_column)):
            observed = np.isfinite(values)
            end = observed.size - int(np.argmax(observed[::-1])) if observed.any() else 0
            kept_times, kept_values = complete_periods(times[:end], values[:end], counts[:end])
            grid_times, grid_values = fill_series(kept_times, kept_values, self.freq, self.fill, self.dataset, sid)
            covariates, static = place(self.drivers, self.freq, sid, grid_times, times, columns, self.dataset)
            out.append(DriverPart(sid, grid_times, grid_values, covariates, static))
        return out

    def _where(self, lower: np.datetime64 | None, ids: list[str] | None) -> list[str]:
        where = []
        if lower is not None:
            where.append(f"{self._ts} >= TIMESTAMP '{np.datetime64(lower, 'us')}'")
        if ids is not None:
            where.append(f"CAST({quote_ident(self.series_column)} AS VARCHAR) IN "
                         f"({', '.join(sql_string(i) for i in ids)})")
        return where

    def _read(self, client: FlightDataClient, sql: str) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
        """(series, period starts, values) of each series, without partial periods at either end."""
        table = client.query(sql)
        times = table.column("bucket").to_numpy().astype("datetime64[us]")
        values = table.column("value").cast(pa.float64()).to_numpy(zero_copy_only=False)
        counts = table.column("n").to_numpy()
        if not self.series_column:
            return [(None, *complete_periods(times, values, counts))]
        sids = table.column("sid")
        if not len(sids):
            return []
        codes = sids.combine_chunks().dictionary_encode()
        bounds = np.flatnonzero(np.diff(codes.indices.to_numpy(zero_copy_only=False))) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(sids)]])
        names = sids.take(pa.array(starts)).to_pylist()  # one id per series, not one per row
        return [(name, *complete_periods(times[s:e], values[s:e], counts[s:e]))
                for name, s, e in zip(names, starts, ends, strict=True)]

    def observed_rows(self, client: FlightDataClient, info: dict) -> int:
        """Rows that carry a value: what retraining counts. A model with drivers does not count the future
        rows (drivers only); for any other, every row of the dataset (`info`, its dataset_info) counts."""
        if self.drivers is None:
            return int(info["rows"])
        table = client.query(f"SELECT count({quote_ident(self.value_column)}) AS n FROM {quote_ident(self.dataset)}")
        return int(table.column("n")[0].as_py())

    def series_stats(self, client: FlightDataClient) -> list[tuple[str | None, int, object, object]]:
        """(series id, rows, first timestamp, last timestamp) of every series, by id."""
        table = client.query(self._stats_sql)
        firsts = table.column("first").to_numpy().astype("datetime64[us]")
        lasts = table.column("last").to_numpy().astype("datetime64[us]")
        return list(zip(table.column("sid").to_pylist(), table.column("n").to_pylist(), firsts, lasts, strict=True))

    def _filled(self, parts: list[tuple[str | None, np.ndarray, np.ndarray]]) -> list[tuple]:
        return [(sid, *fill_series(times, values, self.freq, self.fill, self.dataset, sid))
                for sid, times, values in parts]

    def history(
        self, client: FlightDataClient, max_points: int, ids: list[str] | None = None, observed: bool = False,
        newest: np.datetime64 | None = None,
    ) -> SeriesSet:
        """The latest `max_points` grid points of each series (or of the named ones), filled; with `observed`,
        only the periods the data has a value for (nothing `fill` made up). With `newest` (the data's newest
        timestamp), only rows of the latest `max_points` periods before it are read (a series that has
        fewer there gets fewer)."""
        if self.drivers is not None and not observed:
            found = self._driver_parts(client, self._where(None, ids), max_points, None)
            return SeriesSet([p.sid for p in found], [p.times for p in found], [p.values for p in found],
                             driver_values(found, self.drivers))
        out = SeriesSet()
        lower = None
        if newest is not None:
            lower = self.freq.add(bucket(newest, self.freq, self.origin), -(max_points + WINDOW_PAD))
        parts = self._read(client, self._sql(self._where(lower, ids), max_points))
        if observed:
            parts = [(sid, times[np.isfinite(values)], values[np.isfinite(values)]) for sid, times, values in parts]
        else:
            parts = self._filled(parts)
        for sid, grid_times, grid_values in parts:
            out.ids.append(sid)
            out.times.append(grid_times[-max_points:])
            out.values.append(grid_values[-max_points:])
        return out

    def windows(
        self, client: FlightDataClient, lookback: int, newest: np.datetime64 | None = None,
        ids: list[str] | None = None, min_points: int | None = None, future: int = 0,
    ) -> Windows:
        """The latest `lookback` grid points of each series (or of the named ones); a series with fewer
        points but at least `min_points` (default: all `lookback`) is left-padded with NaN.

        With `newest` (the newest timestamp of the data), a lower time bound lets DuckDB skip every row
        group before the window (zone maps), so the cost does not grow with the table. A model with drivers
        reads the `future` periods after each window with it (their driver values).
        """
        if self.drivers is not None:
            return self._driver_windows(client, lookback, newest, ids, min_points, future)
        per_series = lookback + WINDOW_PAD
        lower = None
        if newest is not None:
            lower = self.freq.add(bucket(newest, self.freq, self.origin), -per_series)
        parts = self._filled(self._read(client, self._sql(self._where(lower, ids), per_series)))
        needed = lookback if min_points is None else min(min_points, lookback)
        if lower is not None and any(v.size < lookback for _, _, v in parts):
            # Gaps inside the bound left too few points: read the latest rows without it.
            parts = self._filled(self._read(client, self._sql(self._where(None, ids), per_series)))
        kept_ids, rows, last, short = [], [], [], {}
        for sid, grid_times, grid_values in parts:
            if grid_values.size < needed:
                short[sid] = int(grid_values.size)
                continue
            kept_ids.append(sid)
            row = grid_values[-lookback:]
            if row.size < lookback:
                row = np.concatenate([np.full(lookback - row.size, np.nan), row])
            rows.append(row)
            last.append(grid_times[-1])
        values = np.stack(rows) if rows else np.empty((0, lookback))
        return Windows(kept_ids, values, np.array(last, dtype="datetime64[us]"), short)


    def _driver_windows(
        self, client: FlightDataClient, lookback: int, newest: np.datetime64 | None, ids: list[str] | None,
        min_points: int | None, future: int,
    ) -> Windows:
        per_series = lookback + WINDOW_PAD
        lower = None
        if newest is not None:  # the newest row may be a future one: leave room for the periods after the window
            lower = self.freq.add(bucket(newest, self.freq, self.origin), -(per_series + future + WINDOW_PAD))
        needed = lookback if min_points is None else min(min_points, lookback)
        table = self._driver_table(client, self._where(lower, ids), per_series, future)
        if self.series_column:  # a panel of regular series: every window at once, no loop over series
            regular = regular_windows(table, self.drivers, self.freq, lookback, needed, future)
            if regular is not None and (lower is None or not regular[3]):
                return Windows(*regular)
        parts = self._parts_of(table)
        if lower is not None and any(p.values.size < lookback for p in parts):
            # More future rows than room left, or gaps inside the bound: read the latest rows without it.
            parts = self._driver_parts(client, self._where(None, ids), per_series, future)
        kept = [p for p in parts if p.values.size >= needed]
        short = {p.sid: int(p.values.size) for p in parts if p.values.size < needed}
        values = np.full((len(kept), lookback), np.nan)
        for i, p in enumerate(kept):
            row = p.values[-lookback:]
            values[i, lookback - row.size:] = row
        last = np.array([p.times[-1] for p in kept], dtype="datetime64[us]")
        return Windows([p.sid for p in kept], values, last, short, future_inputs(kept, self.drivers, future, lookback))
