"""Training engines: where a model's fits run. `local` runs on this machine, each fit in a child process of
this one (pipelines/fit_process.py); `dask` on a Dask cluster (the optional `flightcast[dask]` extra,
imported only when configured).

An engine loads a model's series (`load`: in this process, or in chunks on the cluster's workers, each
read from the data node over Flight), fingerprints them (so an unchanged model is loaded, not
retrained), and trains on them (`train`): the same algorithm (pipelines/training.py) on a backend that
holds the chunks where they were loaded.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipelines.fit_process import FitProcesses
from pipelines.flight_client import FlightDataClient
from pipelines.grid import GridQuery
from pipelines.model import TrainedModel
from pipelines.registry import data_fingerprint
from pipelines.series import SeriesSet
from spicepod import TrainingSpec


class LoadedSeries(Protocol):
    count: int  # series
    rows: int  # grid periods over all series
    newest: int | None  # the newest period of any series (microseconds), None without a period

    def fingerprint(self) -> str: ...


class TrainingEngine(Protocol):
    def load(self, grid: GridQuery, max_points: int) -> LoadedSeries: ...

    def train(self, loaded: LoadedSeries, **kwargs: Any) -> TrainedModel: ...

    def close(self) -> None: ...


class LocalSeries:
    def __init__(self, series: SeriesSet):
        self.series = series
        self.count = len(series)
        self.rows = series.rows
        self.newest = series.newest()

    def fingerprint(self) -> str:
        return data_fingerprint(self.series)


class LocalEngine:
    """Reads series through this process's Flight client and fits on them in a child process: the process
    that answers requests keeps its interpreter lock while a model trains."""

    def __init__(self, client: FlightDataClient, library: bool = True):
        """`library`: whether a model may fit statsforecast's methods (see fit_process.FitProcesses)."""
        self.client = client
        self.fits = FitProcesses(library)

    def load(self, grid: GridQuery, max_points: int) -> LocalSeries:
        return LocalSeries(grid.history(self.client, max_points))

    def train(self, loaded: LocalSeries, **kwargs: Any) -> TrainedModel:
        return self.fits.train(loaded.series, **kwargs)

    def close(self) -> None:
        self.fits.close()


def make_engine(spec: TrainingSpec, client: FlightDataClient, library: bool = True) -> TrainingEngine:
    if spec.engine == "dask":
        from pipelines.dask_engine import DaskEngine  # optional: needs flightcast[dask]

        return DaskEngine(spec.scheduler, client)
    return LocalEngine(client, library)
