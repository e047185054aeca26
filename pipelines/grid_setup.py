"""What a model's grid is made of, chosen before there is a grid: the column it forecasts, the timestamps its
frequency is inferred from, the origin of its periods; and the period each timestamp falls in."""

from __future__ import annotations

import numpy as np

from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from spicepod import WEEKDAYS, InvalidInput, NotReady, quote_ident

NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat", "decimal")
INFERENCE_POINTS = 20_000  # timestamps read to infer a frequency
_US = np.timedelta64(1, "us")


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


def bucket(timestamps: np.ndarray | np.datetime64, freq: Frequency, origin: np.datetime64) -> np.ndarray:
    """The start of each timestamp's period on the grid (numpy twin of the SQL bucket expression)."""
    ts = np.asarray(timestamps).astype("datetime64[us]", copy=False)
    if freq.is_calendar:
        months = ts.astype("datetime64[M]").astype(np.int64) - 360  # months since 2000-01, as DuckDB counts
        start = (months // freq.months) * freq.months + 360
        return start.astype("datetime64[M]").astype("datetime64[us]")
    if ts.ndim == 0:
        offset = (ts - origin).astype(np.int64)
        return origin + ((offset // freq.step_us) * freq.step_us) * _US
    # In place on one new array: a window read buckets hundreds of thousands of rows.
    base = np.datetime64(origin, "us").astype(np.int64)
    start = np.subtract(ts.view(np.int64), base)
    start //= freq.step_us
    start *= freq.step_us
    start += base
    return start.view("datetime64[us]")
