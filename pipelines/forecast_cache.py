"""ForecastCache: everything the forecasting path remembers between requests, and the data versions it is
valid for, under one lock.

A forecast depends only on the model load and the data, so it is kept on (model load, series, horizon, data
version of that series). Data versions come from the Flight server's commit notices (`notice`), which name
the series a commit touched; a notice naming none changes every series of its dataset.

When a serve node's subscription to its data node comes (back) up, notices may have been missed and a
restarted data node counts versions afresh, so `reset` forgets every version and everything kept. Request
threads read and insert concurrently with it: every key carries the generation it was taken in, `reset`
starts a new one, and an insert from an older generation is dropped, so a version number counted by the old
data node can never answer for the new one's data. The lock is never held over I/O or a model call; reads
of a model's windows are serialised by a lock of their own per model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.drivers import FutureDrivers
from pipelines.flight_client import FlightDataClient
from pipelines.grid import MAX_NAMED_SERIES, Windows
from pipelines.gridfill import moved_on, rows_by_series
from pipelines.state import DataVersions, ServedModel
from pipelines.tails import WindowTails, committed_rows
from spicepod.timestamps import parse_iso

CACHE_ENTRIES = 4096  # single forecasts kept; past that the cache starts again empty
# Notices (and their rows) kept per dataset to move all-series windows on; past either, the oldest go first.
ARRIVED_NOTICES = 1_000
ARRIVED_ROWS = 200_000

# A single forecast as computed: values (horizon,), the window's spread (1,), ISO timestamps.
Entry = tuple[np.ndarray, np.ndarray, list[str], str | None]  # values, spread, timestamps, method


@dataclass(frozen=True)
class _Kept:
    """A value kept for a model, valid while its `key` (the model load's cache_id, with the generation and data
    version it was computed at where those matter) still holds."""

    key: Any
    value: Any


class ForecastCache:
    """Single forecasts, bulk batches, the all-series windows, each panel series' newest period and the
    per-series stats of a search, with the data versions they were computed at. Thread-safe."""

    def __init__(self, client: FlightDataClient, notices_live: bool):
        self._client = client
        self._lock = threading.Lock()  # every field below
        self._generation = 0
        self._versions = DataVersions()
        self._notices_live = notices_live
        self._forecasts: dict[tuple, Entry] = {}
        # Per model, each for one load (its cache_id in the key): a retrained version replaces them on first use,
        # so the values of a version no longer served are not kept.
        self._bulk: dict[str, _Kept] = {}
        self._windows: dict[str, _Kept] = {}
        self._series_stats: dict[str, _Kept] = {}
        # The newest period of each panel series seen so far: a series only grows, so its next window starts
        # after this minus the window, and that bound lets DuckDB skip older row groups.
        self._series_last: dict[str, _Kept] = {}
        self._window_reads: dict[str, threading.Lock] = {}  # one read of a model's windows at a time
        self._tails = WindowTails()  # the rows behind single windows, moved on by the rows notices carry
        # The rows of each notice since all-series windows of the dataset were kept: what moves them on.
        self._arrived: dict[str, list[tuple[int, pa.Table]]] = {}

    # --- data versions -----------------------------------------------------------------------------

    @property
    def notices_live(self) -> bool:
        return self._notices_live

    def notice(
        self, dataset: str, version: int, last: np.datetime64 | None, series: frozenset[str] | None,
        rows: pa.Table | None = None,
    ) -> bool:
        """A commit notice, with the rows committed when they were few; False when it is not newer than the
        version known."""
        with self._lock:
            self._tails.notice(dataset, version, series, rows, self._versions)
            if rows is not None and dataset in self._arrived:
                self._keep_arrived(dataset, version, rows)
            return self._versions.record(dataset, version, last, series)

    def _keep_arrived(self, dataset: str, version: int, rows: pa.Table) -> None:
        arrived = self._arrived[dataset]
        arrived.append((version, rows))
        total = sum(table.num_rows for _, table in arrived)
        while total > ARRIVED_ROWS or len(arrived) > ARRIVED_NOTICES:
            total -= arrived.pop(0)[1].num_rows

    def _arrived_since(self, dataset: str, since: int, upto: int) -> list[pa.Table] | None:
        """The rows of every commit after version `since` up to `upto`; None when one of them is not kept."""
        rows = {version: table for version, table in self._arrived.get(dataset, ()) if since < version <= upto}
        if len(rows) != upto - since:
            return None
        return [rows[version] for version in range(since + 1, upto + 1)]

    def reset(self) -> None:
        """Notices (re)started: forget every data version and everything computed from them."""
        with self._lock:
            self._generation += 1
            self._versions = DataVersions()
            self._forecasts.clear()
            self._bulk.clear()
            self._windows.clear()
            self._series_stats.clear()
            self._series_last.clear()
            self._tails.clear()
            self._arrived.clear()
            self._notices_live = True

    def notices_lost(self) -> bool:
        """Notices stopped: data versions are asked of the server from now on. True when they were live."""
        with self._lock:
            was, self._notices_live = self._notices_live, False
            return was

    @property
    def generation(self) -> int:
        """Counts resets: what was computed in an older generation is never kept."""
        with self._lock:
            return self._generation

    def data(self, dataset: str, ask: bool = True) -> tuple[int, np.datetime64 | None] | None:
        """(version, newest timestamp) of a dataset: from commit notices, or asked of the server (None instead
        when `ask` is false)."""
        while True:
            with self._lock:
                known = self._versions.latest(dataset) if self._notices_live else None
                generation = self._generation
            if known is not None or not ask:
                return known
            info = self._client.dataset_info(dataset)
            last = info["last_timestamp"]
            with self._lock:
                if generation != self._generation:
                    continue  # asked of the data node before a reset: ask again
                self._versions.record(dataset, int(info["version"]),
                                      parse_iso(last) if last else None, None)
                return self._versions.latest(dataset)

    # --- single forecasts --------------------------------------------------------------------------

    def forecast_key(self, served: ServedModel, dataset: str, series: str | None, steps: int) -> tuple:
        with self._lock:
            return (self._generation, served.cache_id, series, steps, self._versions.of_series(dataset, series))

    def forecast(self, key: tuple) -> Entry | None:
        with self._lock:
            return self._forecasts.get(key)

    def current_forecast(
        self, served: ServedModel, dataset: str, series: str | None, steps: int, explain: bool = False,
    ) -> Any:
        """The forecast kept for the current data (an explained one: with its contributions), when notices say
        what current is (no I/O)."""
        with self._lock:
            if not self._notices_live or self._versions.latest(dataset) is None:
                return None
            key = (self._generation, served.cache_id, series, steps, self._versions.of_series(dataset, series))
            return self._forecasts.get((*key, "explain") if explain else key)

    def tail_windows(self, served: ServedModel, series: str | None) -> Windows | None:
        """One series' window made from the rows kept for it, when notices say they are current (no I/O)."""
        with self._lock:
            if not self._notices_live:
                return None
            return self._tails.windows(served, series, self._versions)

    def keep_tail(self, served: ServedModel, series: str | None, stamp: tuple[int, int], windows: Windows) -> None:
        """The rows a single window was read from, at `stamp` (generation, data version) taken before the read."""
        with self._lock:
            if stamp[0] == self._generation and self._notices_live:
                self._tails.keep(served, series, stamp[1], windows)

    def keep_forecast(self, key: tuple, entry: Entry) -> None:
        with self._lock:
            if key[0] != self._generation:
                return
            if len(self._forecasts) >= CACHE_ENTRIES:
                self._forecasts.clear()
            self._forecasts[key] = entry

    # --- panels: newest periods, all-series windows, bulk batches, search stats --------------------------

    def series_last(self, served: ServedModel, series: str | None) -> np.datetime64 | None:
        with self._lock:
            kept = self._series_last.get(served.meta.model_name)
            return kept.value.get(series) if kept is not None and kept.key == served.cache_id else None

    def saw_series(self, served: ServedModel, ids: list[str], last: np.ndarray) -> None:
        """The newest period of each of these series, as just read."""
        with self._lock:
            self._last_of(served).update(zip(ids, last, strict=True))

    def _last_of(self, served: ServedModel) -> dict[str, np.datetime64]:
        kept = self._series_last.get(served.meta.model_name)
        if kept is None or kept.key != served.cache_id:
            kept = self._series_last[served.meta.model_name] = _Kept(served.cache_id, {})
        return kept.value

    def windows(self, served: ServedModel, dataset: str, future: int = 0) -> tuple[Windows, tuple]:
        """The latest windows of every series of a model, re-read only for the series changed since they were
        last read, and a stamp (generation, data version) for what is computed from them. A model with
        drivers reads the drivers of `future` periods after each window with it."""
        name = served.meta.model_name
        with self._lock:
            reading = self._window_reads.setdefault(name, threading.Lock())
        with reading:
            with self._lock:
                generation = self._generation
            version, newest = self.data(dataset)
            with self._lock:
                kept = self._windows.get(name)
                changed = arrived = None
                if kept is not None and kept.key[:2] == (generation, served.cache_id) and kept.key[3] >= future:
                    changed = self._versions.changed_since(dataset, kept.key[2])
                    future = kept.key[3]
                    if changed and not future and served.panel:
                        arrived = self._arrived_since(dataset, kept.key[2], version)
            base = kept.value if changed is not None else None
            if arrived is not None:
                # The windows the rows of those commits continue are moved on; the rest are read below.
                base, changed = self._moved(served, base, arrived, changed)
            if changed is not None and len(changed) > MAX_NAMED_SERIES:
                changed = None  # so many that naming each costs more than reading every series
            lookback = served.model.window_length
            # Bounded by the newest data: only the latest row groups are read, whatever the table's size.
            if changed is None:
                windows = served.grid.windows(self._client, lookback, newest=newest,
                                              min_points=served.model.min_periods, future=future)
            elif changed:
                fresh = served.grid.windows(self._client, lookback, newest=newest, ids=sorted(changed),
                                            min_points=served.model.min_periods, future=future)
                windows = _merge(base, fresh, changed)
            else:
                windows = base
            with self._lock:
                if generation == self._generation:
                    self._windows[name] = _Kept((generation, served.cache_id, version, future, dataset), windows)
                    if served.panel:
                        self._last_of(served).update(zip(windows.ids, windows.last, strict=True))
                        self._arrived.setdefault(dataset, [])
                        # Rows no kept windows of the dataset need any more (every model's are newer) go.
                        oldest = min(k.key[2] for k in self._windows.values() if k.key[4] == dataset)
                        self._arrived[dataset] = [(v, t) for v, t in self._arrived[dataset] if v > oldest]
            return windows, (generation, version)

    @staticmethod
    def _moved(
        served: ServedModel, windows: Windows, arrived: list[pa.Table], changed: set[str],
    ) -> tuple[Windows, set[str]]:
        """`windows` moved on by the rows of the commits since they were read (see gridfill.moved_on), and
        the changed series still to read; as they were, and every changed series, when the rows cannot
        move them (several in one period, data aggregated by period, columns of other types)."""
        grid = served.grid
        committed = committed_rows(grid, arrived) if grid.reads_rows else None
        columns = None if committed is None or committed[0] is None else rows_by_series(*committed, grid.freq)
        if columns is None:
            return windows, changed
        moved, rest = moved_on(windows, columns, grid.freq)
        return moved, rest & changed

    def bulk(self, served: ServedModel, key: tuple) -> Any:
        """The batch kept for `key` (a stamp from `windows` and the horizon), or None."""
        with self._lock:
            kept = self._bulk.get(served.meta.model_name)
            return kept.value if kept is not None and kept.key == (served.cache_id, key) else None

    def keep_bulk(self, served: ServedModel, key: tuple, batch: Any) -> None:
        with self._lock:
            if key[0][0] == self._generation:
                self._bulk[served.meta.model_name] = _Kept((served.cache_id, key), batch)

    def series_stats(self, served: ServedModel) -> list:
        """Rows and time range of every series of a model (grid.series_stats), kept until its data changes."""
        with self._lock:
            generation = self._generation
        key = (generation, served.cache_id, self.data(served.grid.dataset)[0])
        name = served.meta.model_name
        with self._lock:
            kept = self._series_stats.get(name)
        if kept is not None and kept.key == key:
            return kept.value
        stats = served.grid.series_stats(self._client)
        with self._lock:
            if generation == self._generation:
                self._series_stats[name] = _Kept(key, stats)
        return stats


def _merge(old: Windows, fresh: Windows, changed: set[str]) -> Windows:
    """`old` with the changed series replaced by their `fresh` windows (new series appended)."""
    keep = [i for i, sid in enumerate(old.ids) if sid not in changed]
    ids = [old.ids[i] for i in keep] + list(fresh.ids)
    values = np.concatenate([old.values[keep], fresh.values]) if fresh.ids else old.values[keep]
    last = np.concatenate([old.last[keep], fresh.last]) if fresh.ids else old.last[keep]
    short = {k: v for k, v in old.short.items() if k not in changed} | fresh.short
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    regular = None
    if old.regular is not None and fresh.regular is not None:
        regular = np.concatenate([old.regular[keep], fresh.regular])[order]
    drivers = None
    if old.drivers is not None and fresh.drivers is not None:
        def joined(a: dict, b: dict) -> dict:
            return {k: np.concatenate([a[k][keep], b[k]])[order] for k in a}

        drivers = FutureDrivers(joined(old.drivers.future, fresh.drivers.future),
                                joined(old.drivers.past, fresh.drivers.past),
                                joined(old.drivers.static, fresh.drivers.static),
                                joined(old.drivers.history, fresh.drivers.history))
    return Windows([ids[i] for i in order], values[order], last[order], short, drivers, regular=regular)
