"""PredictionService: what the HTTP layer calls. It composes a Trainer (the model life cycle), a Forecaster
(forecasts, kept in one ForecastCache) and a SeriesBrowser (series and history) over the same model states,
and routes commit notices to them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.anomalies import Anomaly, AnomalyDetector, AnomalyLog
from pipelines.browser import SeriesBrowser
from pipelines.challengers import Challengers, live_keys
from pipelines.flight_client import FlightDataClient
from pipelines.forecast_cache import ForecastCache
from pipelines.forecaster import Forecaster
from pipelines.forecasts import ModelInfo, VersionInfo
from pipelines.live import LiveScorer
from pipelines.state import ModelState, find_model
from pipelines.subscription import NoticeSubscription
from pipelines.trainer import Trainer
from pipelines.upkeep import Upkeep
from spicepod import DatasetSpec, FlightcastError, InvalidInput, ModelSpec, TrainingSpec
from spicepod.constants import SERVING_ACTION, SERVINGS_ACTION
from spicepod.timestamps import parse_iso

log = logging.getLogger("flightcast.pipelines")


class PredictionService:
    """Everything the HTTP layer needs: predict (one series or many), browse, list, train. Thread-safe."""

    def __init__(
        self,
        models: Sequence[ModelSpec],
        datasets: Mapping[str, DatasetSpec],
        client: FlightDataClient,
        data_dir: Path,
        *,
        max_horizon: int = 1000,
        remote: bool = False,
        training: TrainingSpec | None = None,
    ):
        self.client = client
        # remote: the data lives on another node; commit notices arrive over a subscription to it.
        self.remote = remote
        self._subscription: NoticeSubscription | None = None
        self.states = {m.name: ModelState(m, datasets[m.dataset]) for m in models}  # by name; read, never replaced
        self.live = LiveScorer(Path(data_dir) / "live")
        self.live.load([key for m in models for key in (m.name, *live_keys(m))])
        self.anomaly_log = AnomalyLog(Path(data_dir) / "anomalies")
        self.anomaly_log.load(list(self.states))
        self.cache = ForecastCache(client, notices_live=not remote)
        self.trainer = Trainer(self.states, client, data_dir, training or TrainingSpec())
        self.challengers = Challengers(self.states, client, self.live)
        self.forecaster = Forecaster(self.states, client, self.cache, self.live, max_horizon, self.challengers)
        self.browser = SeriesBrowser(self.states, client, self.cache)
        self._upkeep = Upkeep(self.states.values(), client, self.live, self.trainer.retrain,
                              detector=AnomalyDetector(client, self.anomaly_log), challengers=self.challengers,
                              promote=self.trainer.serving.promote_challenger, foreground=self.forecaster.foreground)
        if remote:  # serve nodes agree on the version each model serves through their data node
            self.trainer.serving.announce = self._announce
        # The routes, by the names the HTTP layer calls.
        self.predict = self.forecaster.predict
        self.cached = self.forecaster.cached
        self.at_hand = self.forecaster.at_hand
        self.forecasts = self.forecaster.forecasts
        self.foreground = self.forecaster.foreground  # upkeep waits while a caller waits on a bulk answer
        self.series_matching = self.browser.series_matching
        self.history = self.browser.history

    @property
    def max_horizon(self) -> int:
        return self.forecaster.max_horizon

    @property
    def on_training(self) -> Callable[[str, str, float], None] | None:
        """Called as (model, "success" | "failed", seconds) after each real training run."""
        return self.trainer.on_training

    @on_training.setter
    def on_training(self, callback: Callable[[str, str, float], None] | None) -> None:
        self.trainer.on_training = callback

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Train or load every model in the background, one after another."""
        self.trainer.start()
        self._upkeep.start()
        if self.remote:
            self._subscription = NoticeSubscription(
                self.client.location, self.client.call_options, self.on_data_changed, self._notices_state,
                self.trainer.serving.follow)
            self._subscription.start()

    def stop(self) -> None:
        """Stop background work and write what live accuracy has not written yet."""
        self.trainer.stop()  # first: no retraining starts while the rest stops
        if self._subscription is not None:
            self._subscription.stop()
        self._upkeep.stop()
        self.trainer.close()

    def ready(self) -> bool:
        """Every model has a version or a recorded failure (a retry in progress keeps its failure), and a
        serve node hears its data node."""
        return self.cache.notices_live and all(s.settled for s in self.states.values())

    def _notices_state(self, live: bool) -> None:
        """The subscription to a data node's notices came up or went down."""
        if live:
            self.cache.reset()
            for dataset in {state.spec.dataset for state in self.states.values()}:
                try:
                    self.cache.data(dataset)
                except FlightcastError:
                    pass
            try:  # rollbacks made on other serve nodes while this one did not hear them
                for choice in self.client.action(SERVINGS_ACTION).values():
                    self.trainer.serving.follow(choice)
            except Exception as exc:  # the subscription must go on
                log.warning("cannot follow the serving choices of the data node: %s: %s", type(exc).__name__, exc)
        elif self.cache.notices_lost():
            log.warning("lost the data node's commit notices; checking its data version on every prediction")

    def on_data_changed(
        self, dataset: str, version: int, last_timestamp: str | None = None, series: frozenset[str] | None = None,
        rows: pa.Table | None = None,
    ) -> None:
        """A commit notice (with its rows when they were few): forecasts of these series computed before it
        are stale from now on."""
        last = parse_iso(last_timestamp) if last_timestamp else None
        if self.cache.notice(dataset, version, last, series, rows):
            self.trainer.retry_failed(dataset)
            self._upkeep.notify(dataset, series)

    def _announce(self, model: str, run: int, digest: str, challenger: str | None) -> dict:
        body = json.dumps({"model": model, "run": run, "spec_hash": digest, "challenger": challenger}).encode()
        return self.client.action(SERVING_ACTION, body)

    # --- models ------------------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec | None:
        state = self.states.get(name)
        return state.spec if state else None

    def models(self) -> list[ModelInfo]:
        return [self._info(state) for state in self.states.values()]

    def train(self, name: str) -> ModelInfo:
        """Train a model again on the current data (blocking); returns its listing entry."""
        return self._info(self.trainer.train(name))

    def _info(self, state: ModelState) -> ModelInfo:
        baseline = self.backtest_mase(state)
        spec = state.spec
        live = self.live.metrics(state.name, spec.drift_window, baseline)
        drifting = self.live.drifting(state.name, spec.drift_window, spec.drift_ratio, baseline)
        info = state.info(live, health="drifting" if drifting else "ok")
        challengers = self.challengers.metrics(spec)
        if challengers is None:
            return info
        for name, entry in challengers.items():
            entry["serving"] = state.challenger == name
        return replace(info, challengers=challengers)

    @staticmethod
    def backtest_mase(state: ModelState) -> float | None:
        """The served version's backtest MASE: what drift compares the live MASE with."""
        served = state.current
        return served.meta.metrics.get("mase") if served is not None else None

    def drifting(self, name: str) -> bool:
        """Whether a model's live MASE over its drift window is above `drift_ratio` times its backtest MASE."""
        state = find_model(self.states, name)
        spec = state.spec
        return self.live.drifting(name, spec.drift_window, spec.drift_ratio, self.backtest_mase(state))

    # --- anomalies ---------------------------------------------------------------------------------

    def anomalies(
        self, name: str, series: str | None = None, since: np.datetime64 | None = None, limit: int | None = None,
    ) -> list[Anomaly]:
        """A model's anomalies, newest period first (of one series, from `since` on, at most `limit`)."""
        state = find_model(self.states, name)
        if series is not None and not state.panel:
            raise InvalidInput(f"model '{name}' forecasts a single series; 'series' is only for panel models")
        return self.anomaly_log.list(name, series, since, limit)

    def upkeep_backlog(self) -> int:
        """Datasets whose new data background upkeep has not finished with (0: the runtime is idle)."""
        return self._upkeep.backlog

    def anomaly_totals(self) -> dict[str, int]:
        """Anomalies found per model since each model's first (for /metrics)."""
        return {name: self.anomaly_log.total(name) for name in self.states}

    def versions(self, name: str) -> list[VersionInfo]:
        """A model's stored versions, newest first, with the one serving and the candidate marked."""
        state, stored = self.trainer.serving.versions(name)
        own, candidate = state.own, state.candidate
        serving_run = own.meta.run if own is not None and state.challenger is None else None  # else a challenger's
        digest = own.meta.spec_hash if own is not None else None
        return [
            VersionInfo(meta.model_version, meta.run, meta.trained_at, meta.training_rows, dict(meta.metrics),
                        serving=meta.run == serving_run, candidate=candidate is not None and candidate.run == meta.run,
                        servable=meta.spec_hash == digest)
            for meta in reversed(stored)
        ]

    def rollback(self, name: str, version: str | None = None) -> ModelInfo:
        """Serve a stored version again (default: the one served before); returns the listing entry."""
        return self._info(self.trainer.serving.rollback(name, version))
