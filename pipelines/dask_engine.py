"""The Dask training engine: a model's series are read and held in chunks on the workers of a Dask cluster,
and its fits run there (a panel's global fit data-parallel through `lightgbm.dask`).

The serve node lists the series ids (one small query), hands each worker its share, and from then on sees
only what the algorithm gathers (per-series statistics, lengths, backtest errors, digests) and the fitted
boosters: never the training rows. Nothing falls back to local training: a cluster that cannot be reached,
or that dies under a fit, fails the training with an `Unavailable` naming the scheduler.

Needs the optional `flightcast[dask]` extra; dask is imported only when the engine first connects.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightgbm as lgb
import numpy as np

from pipelines.backends import fit_rows
from pipelines.flight_client import FlightDataClient
from pipelines.grid import GridQuery
from pipelines.model import TrainedModel
from pipelines.registry import fingerprint_of, series_digests
from pipelines.series import SeriesSet
from pipelines.training import train_model
from spicepod import FlightcastError, InvalidInput, Unavailable

log = logging.getLogger("flightcast.dask")

CONNECT_TIMEOUT_S = 5.0  # to reach the scheduler at first training
WORKERLESS_TIMEOUT_S = 30.0  # a cluster with no worker for this long fails the training that waits on it
CHUNK_SERIES = 5000  # at most this many series per chunk (more chunks than workers past that)
POLL_S = 2.0


# --- what runs on the workers ------------------------------------------------------------------------------


def read_chunk(
    grid: GridQuery, location: str, api_key: str | None, max_points: int, ids: list[str] | None,
) -> SeriesSet:
    """The chunk's series on their grid, read by this worker from the data node over Flight."""
    return grid.history(FlightDataClient(location, api_key), max_points, ids=ids)


def chunk_summary(chunk: SeriesSet) -> tuple[int, int, bytes, int | None]:
    """(series, grid periods, a digest per series, the newest period): what the serve node keeps of a chunk."""
    return len(chunk), chunk.rows, series_digests(chunk), chunk.newest()


def _call(fn: Callable[..., Any], chunk: SeriesSet, args: tuple) -> Any:
    return fn(chunk, *args)


def _row_summary(rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[int, int, float]:
    x, _, w = rows
    return int(x.shape[0]), int(x.shape[1]), float(w.astype(np.float64).sum())


def _weighted(rows: tuple[np.ndarray, np.ndarray, np.ndarray], mean: float) -> tuple:
    x, y, w = rows
    return x, y, (w / np.float32(mean)).astype(np.float32)


def _worker_threads() -> int:
    from distributed import get_worker

    return max(1, int(get_worker().state.nthreads))


def fit_one(params: dict[str, Any], rounds: int, rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> str:
    """One chunk's rows fit on its worker, exactly as LocalBackend fits (training.fit_rows)."""
    x, y, w = rows
    params = dict(params)
    if not params.get("num_threads"):
        params["num_threads"] = _worker_threads()  # 0 would mean every core of the worker's machine
    return fit_rows(params, rounds, x, y, w).model_to_string()


# --- the serve node's side -----------------------------------------------------------------------------------


class DaskSeries:
    """A model's series as chunk futures on the workers, with their counts and per-series digests."""

    def __init__(self, chunks: list[Any], count: int, rows: int, digests: bytes, newest: int | None = None):
        self.chunks = chunks
        self.count = count
        self.rows = rows
        self.newest = newest
        self._digests = digests

    def fingerprint(self) -> str:
        # Per-series digests in id order: the same for the same data however the series were chunked.
        return fingerprint_of(self._digests)


class DaskEngine:
    """Reads and fits on a Dask cluster at `scheduler` (tcp://HOST:PORT); reads go to `client`'s data node."""

    def __init__(self, scheduler: str | None, client: FlightDataClient):
        if not scheduler:
            raise InvalidInput("training engine dask needs a scheduler (tcp://HOST:PORT)")
        self.scheduler = scheduler
        self.flight = client
        self._dask: Any = None
        self._lock = threading.Lock()

    # connection

    def _client(self) -> Any:
        with self._lock:
            if self._dask is not None and self._dask.status == "running":
                return self._dask
            if self._dask is not None:
                self._close()
            try:
                from distributed import Client
                from lightgbm.compat import PANDAS_INSTALLED, SKLEARN_INSTALLED
                installed = PANDAS_INSTALLED and SKLEARN_INSTALLED  # what lightgbm.dask needs
            except ImportError:
                installed = False
            if not installed:
                raise InvalidInput("training engine dask needs the dask extra: pip install 'flightcast[dask]'")
            try:
                self._dask = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                raise Unavailable(f"Dask scheduler {self.scheduler} cannot be reached: {_reason(exc)}") from None
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"Dask scheduler {self.scheduler!r} is not a valid address: {exc}") from None
            log.info("connected to the Dask scheduler %s (%d workers)", self.scheduler, len(self._workers()))
            return self._dask

    def _workers(self) -> dict[str, dict]:
        return self._dask.scheduler_info(n_workers=-1).get("workers", {})

    def _close(self) -> None:
        try:
            self._dask.close(timeout=CONNECT_TIMEOUT_S)
        except Exception:  # closing a client of a dead cluster may fail; it is dropped anyway
            pass
        self._dask = None

    def close(self) -> None:
        with self._lock:
            if self._dask is not None:
                self._close()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Cluster failures as Unavailable naming the scheduler; errors of the work itself as they are."""
        try:
            yield
        except (FlightcastError, lgb.basic.LightGBMError):
            raise
        except (OSError, TimeoutError, asyncio.TimeoutError, asyncio.CancelledError) as exc:
            raise Unavailable(f"Dask cluster at {self.scheduler} failed during training: {_reason(exc)}") from None
        except Exception as exc:
            from distributed.scheduler import KilledWorker

            if isinstance(exc, KilledWorker):
                raise Unavailable(f"Dask cluster at {self.scheduler}: a worker died during training "
                                  f"({_reason(exc)})") from None
            raise

    def gather(self, futures: list[Any]) -> list[Any]:
        """The futures' results, waiting while the cluster has workers; Unavailable when it has none."""
        client = self._dask
        pending = [len(futures)]
        lock, done = threading.Lock(), threading.Event()

        def finished(_: Any) -> None:  # called once per future, erred or cancelled ones too
            with lock:
                pending[0] -= 1
                if pending[0] <= 0:
                    done.set()

        if not futures:
            done.set()
        for future in futures:
            future.add_done_callback(finished)
        workerless_since = None
        while not done.wait(POLL_S):
            if client.status != "running":
                raise Unavailable(f"lost the Dask scheduler {self.scheduler} during training")
            if self._workers():
                workerless_since = None
            elif workerless_since is None:
                workerless_since = time.monotonic()
            elif time.monotonic() - workerless_since > WORKERLESS_TIMEOUT_S:
                raise Unavailable(f"Dask cluster at {self.scheduler} has had no workers for "
                                  f"{WORKERLESS_TIMEOUT_S:.0f} s during training")
        return client.gather(futures)

    # the engine interface

    def load(self, grid: GridQuery, max_points: int) -> DaskSeries:
        client = self._client()
        with self.guard():
            workers = sorted(self._workers().items())
            if not workers:
                raise Unavailable(f"Dask cluster at {self.scheduler} has no workers")
            if grid.series_column:
                ids = [sid for sid, *_ in grid.series_stats(self.flight) if sid is not None]
                if not ids:
                    return DaskSeries([], 0, 0, b"")
                slots = sum(max(1, int(info.get("nthreads", 1))) for _, info in workers)
                n = min(len(ids), max(slots, math.ceil(len(ids) / CHUNK_SERIES)))
                # Contiguous runs of the sorted ids: chunk order is the order a local read gives.
                shares: list[list[str] | None] = [list(part) for part in np.array_split(np.array(ids, dtype=object), n)]
            else:
                shares = [None]
            api_key = getattr(self.flight, "api_key", None)
            chunks = [
                client.submit(read_chunk, grid, self.flight.location, api_key, max_points, share,
                              workers=[workers[i % len(workers)][0]], allow_other_workers=True, pure=False)
                for i, share in enumerate(shares)
            ]
            summaries = self.gather([client.submit(chunk_summary, c, pure=False) for c in chunks])
        newest = [s[3] for s in summaries if s[3] is not None]
        return DaskSeries(chunks, sum(s[0] for s in summaries), sum(s[1] for s in summaries),
                          b"".join(s[2] for s in summaries), max(newest, default=None))

    def train(self, loaded: DaskSeries, **kwargs: Any) -> TrainedModel:
        return train_model(backend=DaskBackend(self, loaded.chunks), **kwargs)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DaskBackend:
    """A SeriesBackend whose chunks are futures on the workers: work is sent to the chunks, not data back."""

    def __init__(self, engine: DaskEngine, chunks: list[Any]):
        self.engine = engine
        self.client = engine._client()
        self.chunks = chunks
        with engine.guard():
            held = self.client.who_has(chunks)
        # The worker holding each chunk: its work is placed there (elsewhere only if that worker is gone).
        self.homes = [sorted(held.get(chunk.key, ())) or None for chunk in chunks]

    def _at(self, i: int, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, workers=self.homes[i], allow_other_workers=True, pure=False)

    def _submit_each(self, fn: Callable[..., Any], args: tuple) -> list[Any]:
        # The arguments (cuts, a backtest model) go to every worker once, not once per chunk.
        [packed] = self.client.scatter([args], broadcast=True, hash=False) if args else [()]
        return [self._at(i, _call, fn, chunk, packed) for i, chunk in enumerate(self.chunks)]

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        with self.engine.guard():
            return self.engine.gather(self._submit_each(fn, args))

    def fit(self, params: dict[str, Any], rounds: int, rows: Callable[..., Any], *args: Any) -> lgb.Booster:
        with self.engine.guard():
            parts = self._submit_each(rows, args)
            sizes = self.engine.gather([self._at(i, _row_summary, p) for i, p in enumerate(parts)])
            kept = [i for i, size in enumerate(sizes) if size[0]]
            if len(kept) <= 1:
                # One partition: distributed LightGBM is pointless, so one lightgbm.train task on its worker.
                i = kept[0] if kept else 0
                [model] = self.engine.gather([self._at(i, fit_one, params, rounds, parts[i])])
                return lgb.Booster(model_str=model)
            return self._fit_parallel(params, rounds, [(i, parts[i], sizes[i]) for i in kept])

    def _fit_parallel(self, params: dict[str, Any], rounds: int, kept: list[tuple[int, Any, tuple]]) -> lgb.Booster:
        """Data-parallel LightGBM over the chunks' rows where they were built (lightgbm.dask)."""
        import dask.array as da
        from lightgbm.dask import DaskLGBMRegressor

        total = sum(size[0] for _, _, size in kept)
        mean = sum(size[2] for _, _, size in kept) / total  # weights over their mean over all rows, as locally
        width = kept[0][2][1]
        xs, ys, ws = [], [], []
        for i, part, (n, _, _) in kept:
            weighted = self._at(i, _weighted, part, mean)
            xs.append(da.from_delayed(self._at(i, operator.getitem, weighted, 0), (n, width), dtype=np.float32))
            ys.append(da.from_delayed(self._at(i, operator.getitem, weighted, 1), (n,), dtype=np.float32))
            ws.append(da.from_delayed(self._at(i, operator.getitem, weighted, 2), (n,), dtype=np.float32))
        # lightgbm.dask sets each worker's num_threads to its Dask threads, and the machines list itself.
        dropped = {"num_threads", "num_thread", "nthread", "nthreads", "n_jobs", "num_machines", "machines",
                   "local_listen_port", "tree_learner"}
        options = {k: v for k, v in params.items() if k not in dropped}
        categorical = options.pop("categorical_feature", "auto")
        estimator = DaskLGBMRegressor(client=self.client, n_estimators=rounds, tree_learner="data", **options)
        with self.client.as_current(), warnings.catch_warnings():
            # lightgbm.dask waits on its parts through the current client, and warns that it replaces the
            # estimator's n_jobs (always there, None) with the workers' threads.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            estimator.fit(da.concatenate(xs), da.concatenate(ys), sample_weight=da.concatenate(ws),
                          categorical_feature=categorical)
        return estimator.booster_
