"""The regular grid a model sees: rows bucketed to the start of their period, combined by `aggregate`,
missing periods and nulls filled by `fill`. The bucketing and aggregation run in DuckDB (SQL built once
per model and sent through Flight); the fill runs in numpy on the small result (pipelines.gridfill). The
window of one series whose rows are one per period is read as it is: there is nothing to aggregate.

Fixed steps (s, min, h, d, w) are bucketed from an origin in the data's own phase (weekly data on
Sundays stays on Sundays); calendar steps (mo, q, y) from month starts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.driver_grid import (
    DriverPart,
    driver_columns_sql,
    driver_values,
    limit_sql,
    part_windows,
    parts_of,
    regular_windows,
)
from pipelines.drivers import Drivers
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from pipelines.grid_setup import bucket
from pipelines.gridfill import (
    Columns,
    Latest,
    Windows,
    filled_series,
    latest_of_rows,
    latest_windows,
    observed_series,
)
from pipelines.series import SeriesSet
from spicepod import InvalidInput, quote_ident, quote_literal

AGGREGATE_SQL = {
    "mean": "avg(v)",
    "sum": "sum(v)",
    "last": "arg_max(v, raw_ts)",
    "min": "min(v)",
    "max": "max(v)",
}
WINDOW_PAD = 8  # grid points read beyond the window, so a gap at its start can still be interpolated
# The same for periods of many rows each (aggregated): every period more costs a period's rows, and a gap of
# more periods at the window's start is rare there; it is still filled, by a read without the bound.
AGGREGATED_PAD = 2
MAX_NAMED_SERIES = 1000  # series read again by name; more than this, and all are read again


def _row_limit(lookback: int) -> int:
    """Rows a read of one series' rows takes at most: more than its window's periods, so a read that reaches
    the limit holds several rows in some period."""
    return 4 * (lookback + WINDOW_PAD + 1)


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
        self.time_column = time_column
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
        self._aggregates = False  # set once a window held several rows in one period
        # The rows themselves (NULL and NaN values both arrive as NaN), for windows of data on the grid's own step.
        # Rows without a value are left out: rows after the newest value (future rows of drivers) are no
        # observations, and a gap is filled the same either way.
        self._raw = (f"SELECT {ts} AS raw_ts, CAST({quote_ident(value_column)} AS DOUBLE) AS v "
                     f"FROM {quote_ident(dataset)} WHERE {quote_ident(value_column)} IS NOT NULL")
        if series_column:  # every series' rows as they are, for panels whose data is on the grid's own step
            self._every_columns = (f"CAST({quote_ident(series_column)} AS VARCHAR) AS sid, {ts} AS raw_ts, "
                                   f"CAST({quote_ident(value_column)} AS DOUBLE) AS v")
            self._every_rows = f"FROM {quote_ident(dataset)} WHERE {quote_ident(value_column)} IS NOT NULL"
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

    def _driver_table(
        self, client: FlightDataClient, where: list[str], per_series: int | None, future: int | None,
    ) -> pa.Table:
        inner = self._inner + (f" WHERE {' AND '.join(where)}" if where else "")
        grouped = f"{self._select} FROM ({inner}) GROUP BY {'sid, ' if self.series_column else ''}bucket"
        return client.query(limit_sql(grouped, bool(self.series_column), per_series, future))

    def _driver_parts(self, table: pa.Table) -> list[DriverPart]:
        """Each series' observed grid (filled) and its drivers, periods after its newest value included."""
        return parts_of(table, self.drivers, self.freq, self.fill, self.dataset, bool(self.series_column))

    def _where(
        self, lower: np.datetime64 | None, ids: list[str] | None, upper: np.datetime64 | None = None,
    ) -> list[str]:
        where = []
        if lower is not None:
            where.append(f"{self._ts} >= TIMESTAMP '{np.datetime64(lower, 'us')}'")
        if upper is not None:
            where.append(f"{self._ts} <= TIMESTAMP '{np.datetime64(upper, 'us')}'")
        if ids is not None:
            if any("\x00" in i for i in ids):
                raise InvalidInput("a series id may not contain a NUL character")
            where.append(f"CAST({quote_ident(self.series_column)} AS VARCHAR) IN "
                         f"({', '.join(quote_literal(i) for i in ids)})")
        return where

    @property
    def reads_rows(self) -> bool:
        """Whether windows are read as the rows themselves (one a period), not aggregated by period."""
        return not self._aggregates

    def window_bound(self, newest: np.datetime64 | None, points: int) -> np.datetime64 | None:
        """The start of the period `points` and a pad of periods before the one holding `newest` (None without it)."""
        if newest is None:
            return None
        pad = AGGREGATED_PAD if self._aggregates else WINDOW_PAD
        return self.freq.add(bucket(newest, self.freq, self.origin), -(points + pad))

    def _columns(self, table: pa.Table) -> Columns:
        times = table.column("bucket").to_numpy().astype("datetime64[us]")
        values = table.column("value").cast(pa.float64()).to_numpy(zero_copy_only=False)
        counts = table.column("n").to_numpy()
        if not self.series_column:
            return Columns([None], np.array([0]), np.array([len(times)]), times, values, counts)
        sids = table.column("sid")
        if not len(sids):
            return Columns([], np.zeros(0, np.int64), np.zeros(0, np.int64), times, values, counts)
        codes = sids.combine_chunks().dictionary_encode()
        bounds = np.flatnonzero(np.diff(codes.indices.to_numpy(zero_copy_only=False))) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(sids)]])
        names = sids.take(pa.array(starts)).to_pylist()  # one id per series, not one per row
        return Columns(names, starts, ends, times, values, counts)

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

    def history(
        self, client: FlightDataClient, max_points: int, ids: list[str] | None = None, observed: bool = False,
        newest: np.datetime64 | None = None, until: np.datetime64 | None = None, span: int | None = None,
    ) -> SeriesSet:
        """The latest `max_points` grid points of each series (or of the named ones), filled; with `observed`,
        only the periods the data has a value for (nothing `fill` made up).

        With `newest` (the newest timestamp of the data), only the `max_points` periods up to it are read (or
        `span` periods): DuckDB skips every older row group instead of ranking the buckets of the whole table.
        With `until`, no row after that timestamp is read (rows committed since it was looked up wait for their
        own read). A model with drivers reads them with its series (their values after each series' newest one
        included).
        """
        if self.drivers is not None and not observed:
            found = self._driver_parts(self._driver_table(client, self._where(None, ids), max_points, None))
            return SeriesSet([p.sid for p in found], [p.times for p in found], [p.values for p in found],
                             driver_values(found, self.drivers))
        out = SeriesSet()
        where = self._where(self.window_bound(newest, max_points if span is None else span), ids, until)
        # The regular series at once: a training, and the checks after a DoPut, read every series of a panel in
        # the process that answers requests.
        found = self._columns(client.query(self._sql(where, max_points)))
        parts = observed_series(found) if observed else filled_series(found, self.freq, self.fill, self.dataset)
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
        group before the window (zone maps), so the cost does not grow with the table; a series with too
        few points inside the bound (it ended earlier, or has gaps) is read again without it. A model with
        drivers reads the `future` periods after each window with it (their driver values).
        """
        if self.drivers is not None:
            return self._driver_windows(client, lookback, newest, ids, min_points, future)
        lower = self.window_bound(newest, lookback)
        ended: list[str] = []
        raw = None
        if lower is not None and ids is None and self.series_column is not None:
            found, ended = self._every_latest(client, lower, lookback)
        else:
            found, raw = self._latest(client, lower, ids, lookback)
        if lower is not None:
            few = [sid for sid, size in zip(found.ids, found.sizes, strict=True) if size < lookback]
            if self.series_column is not None:  # and the series with no rows inside the bound at all
                seen = set(found.ids)
                few += [sid for sid in (ended if ids is None else ids) if sid not in seen]
            if few and raw is not None and self.series_column is not None and self._ended(raw, newest):
                # One named series that ended before the dataset's newest period (series of a panel report at
                # their own times): its rows inside the bound of its own newest row are its window's rows,
                # kept as its tail like those of a series that is up to date.
                rows = self._newest_rows(client, ids, lookback)
                if rows is not None:
                    newest_found = latest_windows(rows, self.freq, self.fill, self.dataset, lookback)
                    if newest_found.ids and newest_found.sizes[0] >= lookback:
                        return self._kept(newest_found, lookback, min_points, rows)
            if few:
                by_name = self.series_column is not None and len(few) <= MAX_NAMED_SERIES
                found, raw = found.updated(self._latest(client, None, few if by_name else ids, lookback)[0]), None
        return self._kept(found, lookback, min_points, raw)

    def _ended(self, rows: Columns, newest: np.datetime64) -> bool:
        """Whether one series' rows read inside the bound end before the period of the dataset's newest row (a
        series that is up to date but short, or has gaps, is read again as before)."""
        return not rows.times.size or rows.times[-1] < bucket(newest, self.freq, self.origin)

    def tail_windows(self, rows: Columns, lookback: int) -> Windows | None:
        """The window of one series from its rows as `windows` read them (Windows.raw, kept current by
        commit notices); None when they no longer hold a whole window (a read is needed)."""
        times, values = rows.times, rows.values
        if times.size >= lookback:
            # The usual tail: its newest `lookback` periods consecutive and valued, so they are the window as
            # filling would give it, whatever gaps lie before them (a cold forecast's most costly step else).
            recent = values[-lookback:]
            if self.freq.steps_between(times[-lookback], times[-1:])[0] == lookback - 1 and np.isfinite(recent).all():
                return Windows(list(rows.ids[:1]), recent[None, :].copy(), times[-1:].copy(), {})
        found = latest_windows(rows, self.freq, self.fill, self.dataset, lookback)
        if not found.ids or found.sizes[0] < lookback:
            return None
        return self._kept(found, lookback, None)

    @staticmethod
    def _kept(found: Latest, lookback: int, min_points: int | None, raw: Columns | None = None) -> Windows:
        needed = lookback if min_points is None else min(min_points, lookback)
        kept = found.sizes >= needed
        short = {sid: int(size) for sid, size, keep in zip(found.ids, found.sizes, kept, strict=True) if not keep}
        return Windows([sid for sid, keep in zip(found.ids, kept, strict=True) if keep], found.rows[kept],
                       found.last[kept], short, raw=raw, regular=found.regular[kept])

    def _one_row_per_period(
        self, client: FlightDataClient, lower: np.datetime64, ids: list[str] | None, lookback: int,
    ) -> Columns | None:
        """One series' rows inside the bound as they are, when each is alone in its period (data at the grid's
        own step, the usual case): aggregating them would give them back unchanged, and costs DuckDB more
        than the read. None when a period holds several rows, or more rows came than a window has periods."""
        limit = _row_limit(lookback)
        table = client.query(f"{self._raw} AND {' AND '.join(self._where(lower, ids))} LIMIT {limit}")
        if table.num_rows >= limit:
            return None
        return self._period_rows(table, ids)

    def _newest_rows(self, client: FlightDataClient, ids: list[str], lookback: int) -> Columns | None:
        """One named series' rows inside the window bound of its own newest row, when each is alone in its
        period (as _one_row_per_period), read newest first: no time bound is known before the read."""
        limit = _row_limit(lookback)
        table = client.query(f"{self._raw} AND {' AND '.join(self._where(None, ids))} "
                             f"ORDER BY raw_ts DESC LIMIT {limit}")
        if not table.num_rows:
            return None
        raw = table.column("raw_ts").to_numpy().astype("datetime64[us]")
        lower = self.window_bound(raw.max(), lookback)
        if table.num_rows >= limit and raw.min() >= lower:
            return None  # more rows inside the bound than one a period: aggregated by the read after this
        return self._period_rows(table.filter(raw >= lower), ids)

    def _period_rows(self, table: pa.Table, ids: list[str] | None) -> Columns | None:
        """Rows (raw_ts, v) of one series as Columns on the grid, sorted; None when a period holds several."""
        raw = table.column("raw_ts").to_numpy().astype("datetime64[us]")
        order = np.argsort(raw, kind="stable")
        times = bucket(raw[order], self.freq, self.origin)
        if not (np.diff(times.astype(np.int64)) > 0).all():
            return None
        values = table.column("v").to_numpy(zero_copy_only=False)[order]
        if self.series_column is None:
            found = [None]  # a single series is there even without rows, as the aggregated read has it
        else:
            found = list(ids)[:1] if times.size else []
        return Columns(found, np.zeros(len(found), np.int64), np.full(len(found), times.size), times,
                        values.astype(np.float64), np.ones(times.size, np.int64))

    def _every_latest(self, client: FlightDataClient, lower: np.datetime64, lookback: int) -> tuple[Latest, list[str]]:
        """The filled tail of every series of a panel from its rows inside the bound, and the series whose
        newest row is older than the bound (they have none inside it).

        Each row read as it is when each is alone in its period (data at the grid's own step, the usual case):
        grouping rows one a period gives them back, and costs DuckDB several times the read. They are put in a
        table of cells (latest_of_rows); several rows in a cell, or more rows than that many series can have
        one a period, and DuckDB aggregates the periods instead.
        """
        # Kept by the store as rows commit: no pass over the series column and time of the whole table.
        series, ended = client.series_census(self.dataset, lower)
        if not self._aggregates:
            limit = _row_limit(lookback) * max(series, 1)
            rows = f"{self._every_rows} AND {self._where(lower, None)[0]}"
            # Bounded by a count, not a LIMIT: a LIMIT keeps the rows in the table's order, which costs DuckDB a
            # third of the read more. No rows come when there are as many as the limit, or none at all.
            table = client.query(f"SELECT {self._every_columns} {rows} AND (SELECT count(*) {rows}) < {limit}")
            found = None
            if table.num_rows or client.query(f"SELECT count(*) AS n {rows}").column("n")[0].as_py() < limit:
                found = latest_of_rows(table.column("sid").combine_chunks(),
                                       bucket(table.column("raw_ts").to_numpy(), self.freq, self.origin),
                                       table.column("v").to_numpy(zero_copy_only=False), self.freq, self.fill,
                                       self.dataset, lookback)
            if found is not None:
                return found, ended
            self._aggregates = True  # the data is finer than the grid: every later window is aggregated at once
        table = client.query(self._sql(self._where(lower, None), None))
        return latest_windows(self._columns(table), self.freq, self.fill, self.dataset, lookback), ended

    def _latest(
        self, client: FlightDataClient, lower: np.datetime64 | None, ids: list[str] | None, lookback: int,
    ) -> tuple[Latest, Columns | None]:
        """The filled tail of every series one query finds (regular series without a loop over them), and
        the rows themselves when they are one series' one row per period (what its window is made of)."""
        one = self.series_column is None or (ids is not None and len(ids) == 1)
        if lower is not None and one and not self._aggregates:
            columns = self._one_row_per_period(client, lower, ids, lookback)
            if columns is not None:
                return latest_windows(columns, self.freq, self.fill, self.dataset, lookback), columns
            self._aggregates = True  # the data is finer than the grid: every later window is aggregated at once
        # Inside a time bound every bucket is wanted (and there are few): ranking them would only cost.
        per_series = None if lower is not None else lookback + WINDOW_PAD
        table = client.query(self._sql(self._where(lower, ids), per_series))
        return latest_windows(self._columns(table), self.freq, self.fill, self.dataset, lookback), None

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
        parts = self._driver_parts(table)
        if lower is not None and any(p.values.size < lookback for p in parts):
            # More future rows than room left, or gaps inside the bound: read the latest rows without it.
            parts = self._driver_parts(self._driver_table(client, self._where(None, ids), per_series, future))
        return part_windows(parts, self.drivers, lookback, needed, future)

