"""What the prediction service keeps per model and per dataset: served versions, training status, data
versions from commit notices."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.forecasts import ModelInfo
from pipelines.grid import GridQuery
from pipelines.model import FileBoosterModel, TrainedModel
from pipelines.registry import VersionMeta
from pipelines.versions import Candidate
from spicepod import DatasetSpec, InvalidInput, ModelSpec, NotFound, NotReady

LOAD_IDS = itertools.count(1)  # a ServedModel's cache_id: unique per load


@dataclass(frozen=True)
class ServedModel:
    """One loaded version of a model, with everything the hot path needs prepared; never changed once served
    (what is learnt while serving it, windows and forecasts, is kept by the ForecastCache under cache_id)."""

    meta: VersionMeta
    model: TrainedModel | FileBoosterModel
    grid: GridQuery
    cache_id: int  # unique per load, so a retrained version never hits an older forecast
    dataset_rows: int  # rows of the dataset when this version's data was read (retrain_after_rows)
    panel: bool


class ModelState:
    """A model's spec, its served version and its training status; owns its lock and its transitions.

    Status: `training` until a first version is served or training failed; `ready` while a version is
    served (a retraining in the background keeps serving the old one); `failed` with the reason.
    """

    def __init__(self, spec: ModelSpec, dataset: DatasetSpec):
        self.spec = spec
        self.dataset = dataset
        self.current: ServedModel | None = None
        self.own: ServedModel | None = None  # the model's own version (current, unless a challenger serves)
        self.challenger: str | None = None  # the promoted challenger whose forecasts answer for this model
        self.candidate: Candidate | None = None  # a retrained version kept without serving
        self.error: str | None = None
        self._training = False
        self._retry_pending = False
        self._data_changed_while_training = False
        self.train_lock = threading.Lock()  # one training at a time
        # One change of the serving version at a time (a training's end, a rollback); never held over training.
        self.serve_lock = threading.Lock()
        self._guard = threading.Lock()  # the fields above

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def panel(self) -> bool:
        return self.dataset.series_column is not None

    @property
    def status(self) -> str:
        with self._guard:
            if self.current is not None:
                return "ready"
            return "failed" if self.error and not self._training else "training"

    @property
    def settled(self) -> bool:
        """A version is served, or training failed with a reason (what readiness waits for)."""
        return self.current is not None or self.error is not None

    def served(self) -> ServedModel:
        served = self.current
        if served is not None:
            return served
        with self._guard:
            if self.error and not self._training:
                raise NotReady(f"model '{self.name}' failed to train: {self.error}")
        raise NotReady(f"model '{self.name}' is not trained yet (training in progress)")

    def begin(self) -> None:
        with self._guard:
            self._training = True
            self._data_changed_while_training = False

    def succeed(self, served: ServedModel, candidate: Candidate | None = None) -> None:
        """`served` serves from now on (a new version, or the same one when a candidate was kept; then a
        promoted challenger goes on serving in its place)."""
        with self._guard:
            self.candidate, self.error, self._training = candidate, None, False
            if self.challenger is None or self.own is None or served.meta.run != self.own.meta.run:
                self.current, self.challenger = served, None
            self.own = served

    def swap(self, served: ServedModel, candidate: Candidate | None, challenger: str | None = None) -> None:
        """Serve another stored version (a rollback), or a challenger's; a training under way is not affected."""
        with self._guard:
            self.current, self.candidate, self.challenger = served, candidate, challenger
            if challenger is None:
                self.own = served

    def fail(self, reason: str) -> None:
        with self._guard:
            self.error, self._training = reason, False

    def want_retry(self) -> bool:
        """On new data: whether a failed model should be trained again now (True at most once at a time)."""
        with self._guard:
            if self.current is not None or not self.error or self._retry_pending:
                return False
            if self._training:  # it may have read the data before this change: try once more after
                self._data_changed_while_training = True
                return False
            self._retry_pending = True
            return True

    def retry_done(self) -> bool:
        """A retry finished; True when data changed during it and the model is still failed."""
        with self._guard:
            self._retry_pending = False
            return self.current is None and self._data_changed_while_training

    def changed_during_training(self) -> bool:
        with self._guard:
            return self.current is None and self._data_changed_while_training

    def info(self, live_metrics: dict[str, Any] | None, health: str = "ok") -> ModelInfo:
        """The listing entry: the spec, and the served version's facts when there is one."""
        spec, served = self.spec, self.current
        status, error = self.status, self.error
        if served is None:
            return ModelInfo(spec.name, spec.source, list(spec.datasets), status, spec.lookback, spec.horizon,
                             spec.strategy, spec.frequency, live_metrics=live_metrics, health=health,
                             error_message=error)
        meta = served.meta
        return ModelInfo(
            spec.name, spec.source, list(spec.datasets), status, spec.lookback, spec.horizon,
            meta.strategy, meta.frequency, model_version=meta.model_version, trained_at=meta.trained_at,
            training_rows=meta.training_rows, series_count=meta.series_count, mase=meta.metrics.get("mase"),
            smape=meta.metrics.get("smape"), backtest_windows=meta.backtest_windows,
            calibration_errors=meta.calibration_errors, live_metrics=live_metrics, health=health,
            strategy_chosen=spec.strategy == "auto", strategy_mase=meta.strategy_mase, methods=meta.methods,
            error_message=error, feature_importance=feature_importance(served.model), candidate=self.candidate,
        )


def feature_importance(model: object) -> dict[str, float] | None:
    """The shares of gain of a model's LightGBM boosters by input group (None without LightGBM)."""
    booster_model = getattr(model, "lightgbm", model)  # a portfolio's LightGBM member, or the model itself
    if not hasattr(booster_model, "feature_importance"):
        return None
    return {group: round(share, 6) for group, share in booster_model.feature_importance().items()}


def find_model(states: Mapping[str, ModelState], name: str) -> ModelState:
    state = states.get(name)
    if state is None:
        raise NotFound(f"model '{name}' not found")
    return state


def check_series(state: ModelState, served: ServedModel, series: str | None) -> None:
    """A panel model needs a series id; a single-series model takes none."""
    if not state.panel:
        if series is not None:
            raise InvalidInput(f"model '{state.name}' forecasts a single series; 'series' is only for panel models")
        return
    if series is None:
        count = served.meta.series_count
        raise InvalidInput(f"model '{state.name}' has {count} series; pass series=ID")


class DataVersions:
    """Each dataset's version and newest timestamp from commit notices, and which series each changed.

    A forecast of series S is current while neither a notice naming S nor one naming no series (all
    changed) arrived after it was computed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, np.datetime64 | None]] = {}
        self._reset: dict[str, int] = {}  # the version of the last notice that changed every series
        self._touched: dict[str, dict[str, int]] = {}  # dataset -> series -> version of its last change

    def record(self, dataset: str, version: int, last: np.datetime64 | None, series: frozenset[str] | None) -> bool:
        """Remember a notice; False when it is not newer than the version known. A notice that arrives after a
        newer one (listeners of concurrent commits run in any order) still marks its series as changed."""
        with self._lock:
            known = self._latest.get(dataset)
            newer = known is None or version > known[0]
            if newer:
                self._latest[dataset] = (version, last)
            if series is None:
                self._reset[dataset] = max(version, self._reset.get(dataset, 0))
                if newer:
                    self._touched[dataset] = {}
            else:
                touched = self._touched.setdefault(dataset, {})
                for sid in series:
                    touched[sid] = max(version, touched.get(sid, 0))
            return newer

    def latest(self, dataset: str) -> tuple[int, np.datetime64 | None] | None:
        return self._latest.get(dataset)

    def of_series(self, dataset: str, sid: str | None) -> int:
        """The version after which series `sid` (None: the whole dataset) last changed."""
        reset = self._reset.get(dataset, 0)
        if sid is None:
            latest = self._latest.get(dataset)
            return latest[0] if latest else 0
        return max(reset, self._touched.get(dataset, {}).get(sid, 0))

    def changed_since(self, dataset: str, version: int) -> set[str] | None:
        """Series changed after `version`; None when every series may have."""
        with self._lock:
            if self._reset.get(dataset, 0) > version:
                return None
            return {sid for sid, v in self._touched.get(dataset, {}).items() if v > version}


class Foreground:
    """Work a caller waits on (a bulk forecast), counted, so that background upkeep can wait for it to end
    rather than take the cores and the interpreter from it."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = threading.Condition()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                if not self._running:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no foreground work runs, or `timeout` seconds; True when none runs."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)
