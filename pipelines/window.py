"""Series and window queries: SQL built once per model, run by DuckDB behind the Flight server."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from spicepod import InvalidInput, NotReady, quote_ident

NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat", "decimal")


def value_column(dataset: dict, declared: str | None) -> str:
    """The column to forecast: the declared one, or the only numeric column besides the time column."""
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
    numeric = [c for c, t in columns.items() if c != dataset["time_column"] and t.startswith(NUMERIC_PREFIXES)]
    if len(numeric) != 1:
        raise InvalidInput(
            f"dataset '{name}' has {len(numeric)} numeric columns ({', '.join(numeric) or 'none'}); "
            "set params.value_column"
        )
    return numeric[0]


def _arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps as datetime64[us], values as float64 with NaN for nulls), in the table's order."""
    ts = table.column(0).to_numpy().astype("datetime64[us]")
    values = table.column(1).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return ts, values


class WindowQuery:
    """Reads a model's series: (time, value) rows of its dataset, oldest first. SQL is built once here."""

    def __init__(self, dataset: str, time_column: str, value_column: str):
        self.dataset = dataset
        self.time_column = time_column
        self.value_column = value_column
        ts = quote_ident(time_column)
        select = f"SELECT {ts}, {quote_ident(value_column)} FROM {quote_ident(dataset)}"
        self._history_sql = f"SELECT * FROM ({select} ORDER BY {ts} DESC LIMIT {{}}) ORDER BY {ts}"
        self._latest_prefix = f"{select} WHERE {ts} >= TIMESTAMP '"
        self._latest_suffix = f"' ORDER BY {ts}"

    def history(self, client: FlightDataClient, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The latest `max_rows` points, for training."""
        return _arrays(client.query(self._history_sql.format(int(max_rows))))

    def latest(
        self, client: FlightDataClient, lookback: int, freq: Frequency, last_ts: np.datetime64
    ) -> tuple[np.ndarray, np.ndarray]:
        """The latest `lookback` points.

        A lower time bound computed from the dataset's newest timestamp lets DuckDB skip every row
        group before the window (zone maps), so the cost does not grow with the table. Rows newer than
        `last_ts` (appended since) are still read; the newest `lookback` are kept. A plain ORDER BY
        without LIMIT: DuckDB's top-N plan for `DESC LIMIT` costs twice as much here.
        """
        # One step more than the window: a calendar step back from a short month's last day can land a
        # day or two late (Feb 28 - 1mo is Jan 31 for a series on the 30th), and must not cut a row off.
        lower = str(np.datetime64(freq.back(last_ts, lookback), "us"))
        times, values = _arrays(client.query(self._latest_prefix + lower + self._latest_suffix))
        if times.size < lookback:  # a gap inside the window: read the plain latest rows and let checks name it
            return self.history(client, lookback)
        return times[-lookback:], values[-lookback:]
