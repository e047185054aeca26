"""Drivers in training: the categories every chunk of series holds (what categorical columns are coded by),
and the driver inputs of backtest forecasts (the drivers' actual values after each origin)."""

from __future__ import annotations

import numpy as np

from pipelines.backends import SeriesBackend
from pipelines.drivers import Drivers, FutureDrivers
from pipelines.series import SeriesSet


def backtest_drivers(part: SeriesSet, drivers: Drivers, owner: np.ndarray, origin: np.ndarray,
                     horizon: int) -> FutureDrivers:
    """The drivers of forecasts from each (series owner[r], origin[r]): the covariates' actual values, as a
    forecast with perfect future covariates would have them."""
    values = part.drivers
    steps = np.arange(horizon)

    def gather(name: str, offset: np.ndarray) -> np.ndarray:
        arrays = values.covariates[name]
        categorical = drivers.categorical(name)
        out = np.full(offset.shape, None if categorical else np.nan, dtype=object if categorical else np.float64)
        for i in np.unique(owner):
            rows = owner == i
            at = offset[rows]
            inside = (at >= 0) & (at < arrays[i].size)
            picked = out[rows]
            picked[inside] = arrays[i][at[inside]]
            out[rows] = picked
        return out

    return FutureDrivers(
        {c.column: gather(c.column, origin[:, None] + steps[None, :]) for c in drivers.future},
        {c.column: gather(c.column, origin - 1) for c in drivers.past},
        {s: np.array([values.static[s][i] for i in owner], dtype=object) for s in drivers.static},
    )


def chunk_categories(chunk: SeriesSet, drivers: Drivers) -> dict[str, list[str]]:
    """The categories of each categorical driver column in the chunk."""
    learnt = Drivers(drivers.covariates, drivers.static)
    if chunk.drivers is not None:
        learnt.learn(chunk.drivers)
    return learnt.categories


def learn_categories(backend: SeriesBackend, drivers: Drivers) -> Drivers:
    """`drivers` with the categories every chunk holds (what the codes of categorical columns are)."""
    merged: dict[str, set[str]] = {}
    for part in backend.map(chunk_categories, drivers):
        for name, seen in part.items():
            merged.setdefault(name, set()).update(seen)
    return Drivers(drivers.covariates, drivers.static, drivers.calendar, drivers.holidays,
                   {name: sorted(seen) for name, seen in merged.items()})
