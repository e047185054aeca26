"""What a model's grid is made of, chosen before there is a grid: the column it forecasts, and the timestamps
its frequency is inferred from."""

from __future__ import annotations

import numpy as np

from pipelines.flight_client import FlightDataClient
from spicepod import InvalidInput, NotReady, quote_ident

NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat", "decimal")
INFERENCE_POINTS = 20_000  # timestamps read to infer a frequency


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
