"""Work that follows new data, off the commit path: checking the new values for anomalies, scoring served
forecasts (and challengers' beside them) against the actuals that arrived, promoting a challenger that
beat its model, and retraining models after `retrain.after_rows` new rows or when live accuracy drifts.
One background thread; notices for the same dataset that arrive while it works are coalesced (the
series they touched joined)."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from pipelines.anomalies import AnomalyDetector
from pipelines.challengers import Challengers, live_keys
from pipelines.flight_client import FlightDataClient
from pipelines.grid_setup import bucket
from pipelines.live import LiveScorer
from pipelines.state import Foreground, ModelState
from spicepod.timestamps import parse_iso

log = logging.getLogger("flightcast.upkeep")

FLUSH_SECONDS = 2.0  # live accuracy is written at most this long after it changed
UPKEEP_NICE = 5  # the upkeep thread's nice value (Linux)
SETTLE_SECONDS = 0.05  # work on new data starts this long after its notice
# and this long after the last pass started: a stream of small commits is seen to a few at a time, each pass
# reading once for every series they touched, rather than with reads for each commit beside the requests.
PASS_SECONDS = 0.25
YIELD_SECONDS = 5.0  # the longest one pass of work on new data waits for bulk forecasts callers wait on
MAX_SCORED_POINTS = 10_000  # grid points per series read back to score served forecasts
MAX_NAMED_SERIES = 1000  # more series than this waiting: read them all rather than name each


def background_priority() -> None:
    """Lower this thread's CPU priority (Linux threads have their own): on a busy machine, writes and
    predictions go before the upkeep that follows them."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPKEEP_NICE)
        except OSError as exc:
            log.info("upkeep runs at normal priority (%s)", exc)


class Upkeep:
    def __init__(
        self, states: Iterable[ModelState], client: FlightDataClient, live: LiveScorer,
        retrain: Callable[[ModelState], None], detector: AnomalyDetector | None = None,
        challengers: Challengers | None = None, promote: Callable[[ModelState, str], None] | None = None,
        foreground: Foreground | None = None,
    ):
        self._states = list(states)
        self._client = client
        self._live = live
        self._retrain = retrain
        self._detector = detector
        self._challengers = challengers
        self._promote = promote
        self._foreground = foreground
        self._yield_until = 0.0
        self._flushed = time.monotonic()  # when live accuracy was last written
        self._passed = -math.inf  # when the last pass over new data started
        self._due: dict[str, frozenset[str] | None] = {}  # dataset -> series touched (None: any may be)
        self._working: frozenset[str] = frozenset()  # the datasets of the pass under way
        self._wake = threading.Condition()
        self._stopping = False
        self._retraining: set[str] = set()
        self._versions_seen: dict[str, int] = {}  # model -> the load of its version drift was last judged for
        self._thread = threading.Thread(target=self._run, name="upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)
        self._live.flush()
        if self._detector is not None:
            self._detector.log.flush(force=True)

    @property
    def backlog(self) -> int:
        """Datasets whose new data awaits this upkeep or is being worked on (0: idle, every commit seen to)."""
        with self._wake:
            return len(self._due.keys() | self._working)

    def notify(self, dataset: str, series: frozenset[str] | None = None) -> None:
        """New data in `dataset`, for these series (None: any series may have changed)."""
        with self._wake:
            if dataset in self._due:
                known = self._due[dataset]
                self._due[dataset] = None if known is None or series is None else known | series
            else:
                self._due[dataset] = series
            self._wake.notify()

    def _run(self) -> None:
        background_priority()
        while True:
            with self._wake:
                if not self._due and not self._stopping:
                    self._wake.wait(timeout=FLUSH_SECONDS)
                # A forecast request often follows a commit at once: let it read first, and take the notices
                # of a burst of commits together (one read and one forecast for all of them).
                settled = max(time.monotonic() + SETTLE_SECONDS, self._passed + PASS_SECONDS)
                while self._due and not self._stopping and time.monotonic() < settled:
                    self._wake.wait(timeout=max(0.0, settled - time.monotonic()))
                if self._stopping:
                    return
            self._yield_until = time.monotonic() + YIELD_SECONDS  # the most a pass waits for bulk forecasts
            if self._due:
                self._yield()
            with self._wake:
                if self._stopping:
                    return
                due, self._due = self._due, {}
                self._working = frozenset(due)
                self._passed = time.monotonic()
            for dataset, series in due.items():
                models = [s for s in self._states if s.spec.dataset == dataset and s.current is not None]
                if not models:
                    continue
                try:
                    info = self._client.dataset_info(dataset)  # once for every model on the dataset
                except Exception as exc:  # upkeep must go on for the other datasets
                    log.warning("dataset %s: upkeep cannot read its info: %s: %s", dataset, type(exc).__name__, exc)
                    continue
                if self._detector is not None:  # first: anomalies are awaited within a second, scores are not
                    newest = parse_iso(info["last_timestamp"]) if info["last_timestamp"] else None
                    for state in models:
                        self._guarded(self._detect, state, (series, newest))
                for state in models:
                    self._guarded(self._score, state, (info, series))
                    self._guarded(self._maybe_promote, state, info)
                    self._guarded(self._maybe_retrain, state, info)
            if time.monotonic() - self._flushed >= FLUSH_SECONDS:  # a burst of commits is written once
                self._yield()  # writing what bulk forecasts left waiting takes the interpreter a while too
                self._live.flush()
                self._flushed = time.monotonic()
            if self._detector is not None:
                self._detector.log.flush()
            with self._wake:
                self._working = frozenset()

    def _yield(self) -> None:
        """Wait while a bulk forecast a caller waits on runs: it takes every core for about a second, and the
        anomalies and scores can wait that long."""
        if self._foreground is not None:
            self._foreground.wait_idle(max(0.0, self._yield_until - time.monotonic()))

    def _guarded(self, work: Callable[[ModelState, Any], Any], state: ModelState, arg: Any) -> None:
        self._yield()  # before each step too: a bulk call may have come since the last
        try:
            work(state, arg)
        except Exception as exc:  # upkeep must go on for the other models
            log.warning("model %s: %s failed: %s: %s", state.name, work.__name__.strip("_"), type(exc).__name__, exc)

    def _detect(self, state: ModelState, touched: tuple[frozenset[str] | None, np.datetime64 | None]) -> None:
        self._detector.detect(state, *touched)

    def _score(self, state: ModelState, arg: tuple[dict, frozenset[str] | None]) -> None:
        """Score pending forecasts whose periods now have values on the grid (one query for all series); only
        those of the touched series (when known): no other series has new values."""
        info, touched = arg
        served = state.current
        keys = [state.name, *live_keys(state.spec)]  # the model's own, and each side of each challenger pair
        # A panel's commit names the series it touched: no other series has new values to score.
        named = touched if touched is not None and served is not None and served.panel else None
        waiting: dict[str | None, int] = {}
        for key in keys:
            for sid, stamp in self._live.waiting(key, named).items():
                waiting[sid] = min(stamp, waiting.get(sid, stamp))
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
        found = found.subset([i for i, sid in enumerate(found.ids) if sid in waiting])
        scored = self._live.score_many(state.name, found.ids, found.times, found.values)
        for key in keys[1:]:
            self._live.score_many(key, found.ids, found.times, found.values)
        if scored:
            log.info("model %s: scored %d served forecast points against new data", state.name, scored)

    def _maybe_retrain(self, state: ModelState, info: dict) -> None:
        retrain = state.spec.retrain
        served = state.own  # the model's own version (a promoted challenger may serve in its place)
        if served is None or state.name in self._retraining or not (retrain.after_rows or retrain.on_drift):
            return
        new_rows = served.grid.observed_rows(self._client, info) - served.dataset_rows
        if retrain.after_rows and new_rows >= retrain.after_rows:
            why = f"{new_rows} new rows since version {served.meta.model_version}"
        elif retrain.on_drift and new_rows >= state.spec.drift_window and self._drifting(state):
            # At most once per drift_window new rows: the live points that drifted stay in the window a while.
            why = f"live accuracy drifted from the backtest of version {served.meta.model_version}"
        else:
            return
        log.info("model %s: %s; retraining in the background", state.name, why)
        self._retraining.add(state.name)

        def work() -> None:
            try:
                self._retrain(state)
            finally:
                self._retraining.discard(state.name)

        threading.Thread(target=work, name=f"retrain-{state.name}", daemon=True).start()

    def _maybe_promote(self, state: ModelState, info: dict) -> None:
        """`promote: if_better`: serve a challenger that beat the model on live MASE over enough common points."""
        if state.spec.promote != "if_better" or self._challengers is None or self._promote is None:
            return
        winner = self._challengers.winner(state.spec, state.spec.drift_window)
        if winner is not None and state.challenger != winner:
            self._promote(state, winner)

    def _drifting(self, state: ModelState) -> bool:
        """Whether the model's live accuracy drifted from its backtest (SPEC 15 drift). A version new since the
        last look starts afresh: the errors of the one it replaced are not its drift."""
        served = state.own
        if served is None:
            return False
        seen = self._versions_seen.get(state.name)
        if seen is not None and seen != served.cache_id:
            self._live.reset_drift(state.name)
        self._versions_seen[state.name] = served.cache_id
        baseline = served.meta.metrics.get("mase")
        return self._live.drifting(state.name, state.spec.drift_window, state.spec.drift_ratio, baseline)
