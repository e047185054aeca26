"""Work that follows new data, off the commit path: scoring served forecasts against the actuals that
arrived, and retraining models after `retrain_after_rows` new rows. One background thread; notices for
the same dataset that arrive while it works are coalesced."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from pipelines.flight_client import FlightDataClient
from pipelines.grid import bucket
from pipelines.live import LiveScorer
from pipelines.state import ModelState
from spicepod.timestamps import parse_iso

log = logging.getLogger("flightcast.upkeep")

FLUSH_SECONDS = 2.0  # live accuracy is written at most this long after it changed
SETTLE_SECONDS = 0.05  # work on new data starts this long after its notice
MAX_SCORED_POINTS = 10_000  # grid points per series read back to score served forecasts
MAX_NAMED_SERIES = 1000  # more series than this waiting: read them all rather than name each


class Upkeep:
    def __init__(
        self, states: Iterable[ModelState], client: FlightDataClient, live: LiveScorer,
        retrain: Callable[[ModelState], None],
    ):
        self._states = list(states)
        self._client = client
        self._live = live
        self._retrain = retrain
        # Datasets with new data, each with the series its commits touched (None: every series, or unknown).
        self._due: dict[str, set[str] | None] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._retraining: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)
        self._live.flush()

    def notify(self, dataset: str, series: frozenset[str] | None = None) -> None:
        with self._wake:
            touched = self._due.get(dataset, set())
            self._due[dataset] = None if touched is None or series is None else touched | series
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._due and not self._stopping:
                    self._wake.wait(timeout=FLUSH_SECONDS)
                # A forecast request often follows a commit at once: let it read first, and take the notices
                # of a burst of commits together.
                settled = time.monotonic() + SETTLE_SECONDS
                while self._due and not self._stopping and time.monotonic() < settled:
                    self._wake.wait(timeout=max(0.0, settled - time.monotonic()))
                if self._stopping:
                    return
                due, self._due = self._due, {}
            for dataset, touched in due.items():
                models = [s for s in self._states if s.spec.dataset == dataset and s.current is not None]
                if not models:
                    continue
                try:
                    info = self._client.dataset_info(dataset)  # once for every model on the dataset
                except Exception as exc:  # upkeep must go on for the other datasets
                    log.warning("dataset %s: upkeep cannot read its info: %s: %s", dataset, type(exc).__name__, exc)
                    continue
                for state in models:
                    self._guarded(self._score, state, info, touched)
                    self._guarded(self._maybe_retrain, state, info)
            self._live.flush()

    def _guarded(self, work: Callable[..., None], state: ModelState, info: dict, *args: object) -> None:
        try:
            work(state, info, *args)
        except Exception as exc:  # upkeep must go on for the other models
            log.warning("model %s: %s failed: %s: %s", state.name, work.__name__.strip("_"), type(exc).__name__, exc)

    def _score(self, state: ModelState, info: dict, touched: set[str] | None) -> None:
        """Score pending forecasts whose periods now have values on the grid (one query for all series); only
        those of the `touched` series (when known): no other series has new values."""
        served = state.current
        waiting = self._live.waiting(state.name)
        if touched is not None and served is not None and served.panel:
            waiting = {sid: since for sid, since in waiting.items() if sid in touched}
        if served is None or not waiting:
            return
        last = info["last_timestamp"]
        if last is None:
            return
        grid = served.grid
        newest = bucket(parse_iso(last), grid.freq, grid.origin)
        oldest = np.datetime64(min(waiting.values()), "us")
        if oldest > newest:
            return
        points = min(int(grid.freq.steps_between(oldest, np.asarray([newest]))[0]) + 1, MAX_SCORED_POINTS)
        ids = None
        if served.panel and len(waiting) <= MAX_NAMED_SERIES:
            ids = sorted(sid for sid in waiting if sid is not None)
        # Bounded by the newest period: only the periods scored are read, not the whole table.
        found = grid.history(self._client, points, ids=ids, observed=True, newest=newest)  # made-up values never score
        scored = 0
        for sid, times, values in zip(found.ids, found.times, found.values, strict=True):
            if sid in waiting:
                scored += self._live.score(state.name, sid, times, values)
        if scored:
            log.info("model %s: scored %d served forecast points against new data", state.name, scored)

    def _maybe_retrain(self, state: ModelState, info: dict) -> None:
        every = state.spec.retrain_after_rows
        served = state.current
        if not every or served is None or state.name in self._retraining:
            return
        rows = int(info["rows"])
        if rows - served.dataset_rows < every:
            return
        log.info("model %s: %d new rows since version %s; retraining in the background",
                 state.name, rows - served.dataset_rows, served.meta.model_version)
        self._retraining.add(state.name)

        def work() -> None:
            try:
                self._retrain(state)
            finally:
                self._retraining.discard(state.name)

        threading.Thread(target=work, name=f"retrain-{state.name}", daemon=True).start()
