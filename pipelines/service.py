"""PredictionService: what the HTTP layer calls. It composes a Trainer (the model life cycle), a Forecaster
(forecasts, kept in one ForecastCache) and a SeriesBrowser (series and history) over the same model states,
and routes commit notices to them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pipelines.browser import SeriesBrowser
from pipelines.flight_client import FlightDataClient
from pipelines.forecast_cache import ForecastCache
from pipelines.forecaster import Forecaster
from pipelines.forecasts import ModelInfo
from pipelines.live import LiveScorer
from pipelines.state import ModelState
from pipelines.subscription import NoticeSubscription
from pipelines.trainer import Trainer
from pipelines.upkeep import Upkeep
from spicepod import DatasetSpec, FlightcastError, ModelSpec, TrainingSpec
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
        self.live.load(list(self.states))
        self.cache = ForecastCache(client, notices_live=not remote)
        self.trainer = Trainer(self.states, client, data_dir, training or TrainingSpec())
        self.forecaster = Forecaster(self.states, client, self.cache, self.live, max_horizon)
        self.browser = SeriesBrowser(self.states, client, self.cache)
        self._upkeep = Upkeep(self.states.values(), client, self.live, self.trainer.retrain)
        # The routes, by the names the HTTP layer calls.
        self.predict = self.forecaster.predict
        self.cached = self.forecaster.cached
        self.forecasts = self.forecaster.forecasts
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
                self.client.location, self.client.call_options, self.on_data_changed, self._notices_state)
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
        elif self.cache.notices_lost():
            log.warning("lost the data node's commit notices; checking its data version on every prediction")

    def on_data_changed(
        self, dataset: str, version: int, last_timestamp: str | None = None, series: frozenset[str] | None = None,
    ) -> None:
        """A commit notice: forecasts of these series computed before it are stale from now on."""
        last = parse_iso(last_timestamp) if last_timestamp else None
        if self.cache.notice(dataset, version, last, series):
            self.trainer.retry_failed(dataset)
            self._upkeep.notify(dataset, series)

    # --- models ------------------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec | None:
        state = self.states.get(name)
        return state.spec if state else None

    def models(self) -> list[ModelInfo]:
        return [state.info(self.live.metrics(state.name)) for state in self.states.values()]

    def train(self, name: str) -> ModelInfo:
        """Train a model again on the current data (blocking); returns its listing entry."""
        state = self.trainer.train(name)
        return state.info(self.live.metrics(state.name))
