"""PredictionService: trains and loads models, serves forecasts from the latest window, caches them.

A forecast depends only on the model version and the data, so it is cached on (model version, data
version, horizon). Data versions come from the Flight server's commit notices (`on_data_changed`,
called before a DoPut returns), or, when the service runs apart from the data, from asking the server
on every prediction.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.flight_client import FlightDataClient
from pipelines.forecasting import FileBoosterModel, TrainedModel, train_model
from pipelines.frequency import Frequency, check_regular, infer_frequency
from pipelines.registry import ModelRegistry, VersionMeta, data_fingerprint, file_digest, spec_hash
from pipelines.window import WindowQuery, value_column
from spicepod import FlightcastError, InvalidInput, ModelSpec, NotFound, NotReady

log = logging.getLogger("flightcast.pipelines")

MAX_TRAINING_ROWS = 20_000  # training reads at most the latest this many points of a series
CACHE_ENTRIES = 4096
CACHED_HORIZON = 100  # forecasts up to this many steps (or the model's own horizon) are cached

_load_ids = itertools.count(1)


def iso_utc(ts: np.datetime64) -> str:
    return str(np.datetime64(ts, "s")) + "Z"


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass(frozen=True)
class ServedModel:
    """One loaded version of a model, everything the hot path needs prepared."""

    meta: VersionMeta
    model: TrainedModel | FileBoosterModel
    freq: Frequency
    query: WindowQuery
    cache_id: int  # unique per load, so a retrained version never hits an older forecast


class ModelState:
    """A model's spec, its served version and its training status."""

    def __init__(self, spec: ModelSpec, time_column: str):
        self.spec = spec
        self.time_column = time_column
        self.current: ServedModel | None = None
        self.training = False
        self.error: str | None = None  # why the last training failed
        self.retry_pending = False  # a retry after a data change is queued or running
        self.data_changed_while_training = False
        self.lock = threading.Lock()  # one training at a time per model

    @property
    def status(self) -> str:
        if self.training and self.current is None:
            return "training"
        if self.current is not None:
            return "ready"
        return "failed" if self.error else "training"


class PredictionService:
    """Everything the HTTP layer needs: predict, list and train models. Thread-safe."""

    def __init__(
        self,
        models: Sequence[ModelSpec],
        time_columns: dict[str, str],
        client: FlightDataClient,
        registry_root: Path,
        *,
        max_horizon: int = 1000,
        commit_notices: bool = True,
    ):
        self.client = client
        self.registry = ModelRegistry(registry_root)
        self.max_horizon = max_horizon
        self._states = {m.name: ModelState(m, time_columns[m.dataset]) for m in models}
        self._commit_notices = commit_notices
        self._data_versions: dict[str, tuple[int, str | None]] = {}
        self._versions_lock = threading.Lock()
        self._cache: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._trainer: threading.Thread | None = None
        self._stopping = threading.Event()
        # Called as (model, "success" | "failed", seconds) after each real training run.
        self.on_training: Callable[[str, str, float], None] | None = None

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Train or load every model in the background, one after another."""
        for state in self._states.values():
            state.training = True
        self._trainer = threading.Thread(target=self._train_all, name="trainer", daemon=True)
        self._trainer.start()

    def stop(self) -> None:
        self._stopping.set()

    def ready(self) -> bool:
        """Every model has a version or a recorded failure (a retry in progress keeps its failure)."""
        return all(s.current is not None or s.error for s in self._states.values())

    def _train_all(self) -> None:
        for state in self._states.values():
            if self._stopping.is_set():
                return
            self._train(state, force=False)

    # --- data versions -----------------------------------------------------------------------------

    def on_data_changed(
        self, dataset: str, version: int, last_timestamp: str | None = None, series: frozenset[str] | None = None,
    ) -> None:
        """A commit notice: forecasts of this dataset computed before it are stale from now on."""
        if self._record(dataset, version, last_timestamp):
            self._retry_failed(dataset)

    def _record(self, dataset: str, version: int, last_timestamp: str | None) -> bool:
        """Remember a dataset's version; True when it is newer than the one known."""
        with self._versions_lock:
            known = self._data_versions.get(dataset)
            if known is not None and version <= known[0]:
                return False
            self._data_versions[dataset] = (version, last_timestamp)
            return True

    def _retry_failed(self, dataset: str) -> None:
        """A model that failed to train (too few rows, say) gets another try when its data changes."""
        for state in self._states.values():
            if state.spec.dataset != dataset or self._stopping.is_set():
                continue
            with self._versions_lock:
                if state.current is not None or not state.error or state.retry_pending:
                    continue
                if state.training:  # it may have read the data before this change: try once more after
                    state.data_changed_while_training = True
                    continue
                state.retry_pending = True
            threading.Thread(target=self._retry, args=(state,), name=f"retrain-{state.spec.name}", daemon=True).start()

    def _retry(self, state: ModelState) -> None:
        try:
            self._train(state, force=False)
        finally:
            state.retry_pending = False

    def _data_state(self, dataset: str) -> tuple[int, str | None]:
        """(data version, newest timestamp) of a dataset: from commit notices, or asked of the server."""
        state = self._data_versions.get(dataset) if self._commit_notices else None
        if state is None:
            info = self.client.dataset_info(dataset)
            self._record(dataset, int(info["version"]), info["last_timestamp"])
            state = self._data_versions[dataset]
        return state

    # --- training ----------------------------------------------------------------------------------

    def train(self, name: str) -> dict[str, Any]:
        """Train a model again on the current data (blocking); returns its listing entry."""
        state = self._state(name, status=NotFound)
        self._train(state, force=True)
        return self._entry(state)

    def _train(self, state: ModelState, force: bool) -> None:
        spec = state.spec
        with state.lock:
            state.training = True
            state.data_changed_while_training = False
            started = time.perf_counter()
            outcome = "failed"
            try:
                served, trained = self._build(state, force, started)
                state.current, state.error = served, None
                outcome = "success" if trained else "loaded"
            except FlightcastError as exc:
                state.error = exc.message
                log.warning("model %s: training failed: %s", spec.name, exc.message)
            except Exception as exc:  # noqa: BLE001 - a failed model must not take the runtime down
                state.error = f"internal error while training: {type(exc).__name__}: {exc}"
                log.exception("model %s: training failed", spec.name)
            finally:
                state.training = False
            if self.on_training is not None and outcome != "loaded":
                self.on_training(spec.name, outcome, time.perf_counter() - started)
        if state.current is None and state.data_changed_while_training:
            self._retry_failed(spec.dataset)

    def _build(self, state: ModelState, force: bool, started: float) -> tuple[ServedModel, bool]:
        """The model to serve, and whether it was trained (rather than loaded)."""
        spec = state.spec
        info = self.client.dataset_info(spec.dataset)
        query = WindowQuery(spec.dataset, state.time_column, value_column(info, spec.value_column))
        times, values = query.history(self.client, MAX_TRAINING_ROWS)
        if times.size < spec.lookback + spec.horizon:
            raise NotReady(
                f"dataset '{spec.dataset}' has {times.size} rows, fewer than lookback + horizon = "
                f"{spec.lookback + spec.horizon}"
            )
        freq = Frequency.parse(spec.frequency) if spec.frequency else infer_frequency(times, spec.dataset)
        if spec.kind == "file":
            return self._load_file_model(state, query, freq, times, values), False

        digest, fingerprint = spec_hash(spec), data_fingerprint(times, values)
        if not force:
            stored = self.registry.find(spec.name, digest, fingerprint)
            if stored is not None:
                meta, path = stored
                try:
                    model = TrainedModel.load(path)
                except Exception as exc:  # noqa: BLE001 - an unreadable version is trained again
                    log.warning("model %s: stored version %s is unreadable (%s: %s); training again",
                                spec.name, meta.model_version, type(exc).__name__, exc)
                else:
                    log.info("model %s: loaded stored version %s (spec and data unchanged)",
                             spec.name, meta.model_version)
                    return ServedModel(meta, model, freq, query, next(_load_ids)), False

        log.info("model %s: training on %d rows of %s (frequency %s)", spec.name, times.size, spec.dataset, freq)
        model = train_model(
            values, times, freq=freq, lookback=spec.lookback, horizon=spec.horizon,
            strategy=spec.strategy, lightgbm_params=dict(spec.lightgbm), dataset=spec.dataset,
        )
        elapsed = time.perf_counter() - started
        meta, _ = self.registry.store(
            {
                "model_name": spec.name,
                "model_version": spec.tag,
                "spec_hash": digest,
                "data_fingerprint": fingerprint,
                "metrics": {k: _finite_or_none(v) for k, v in model.metrics.items()},
                "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "training_rows": int(times.size),
                "frequency": str(freq),
                "value_column": query.value_column,
                "training_seconds": round(elapsed, 3),
            },
            model.save,
        )
        log.info(
            "model %s: trained version %s on %d rows in %.2f s (MASE %s, sMAPE %s)",
            spec.name, meta.model_version, times.size, elapsed,
            _fmt(meta.metrics.get("mase")), _fmt(meta.metrics.get("smape")),
        )
        return ServedModel(meta, model, freq, query, next(_load_ids)), True

    def _load_file_model(
        self, state: ModelState, query: WindowQuery, freq: Frequency, times: np.ndarray, values: np.ndarray
    ) -> ServedModel:
        spec = state.spec
        model = FileBoosterModel.load(spec.path, spec.lookback)
        digest = file_digest(spec.path)
        meta = VersionMeta(
            model_name=spec.name,
            model_version=digest[:12],
            run=0,
            spec_hash=spec_hash(spec),
            data_fingerprint=data_fingerprint(times, values),
            metrics={"mase": None, "smape": None},
            trained_at=datetime.fromtimestamp(spec.path.stat().st_mtime, timezone.utc)
            .isoformat(timespec="seconds").replace("+00:00", "Z"),
            training_rows=0,
            frequency=str(freq),
            value_column=query.value_column,
            training_seconds=0.0,
        )
        log.info("model %s: loaded LightGBM model file %s (version %s)", spec.name, spec.path, meta.model_version)
        return ServedModel(meta, model, freq, query, next(_load_ids))

    # --- predicting --------------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec | None:
        state = self._states.get(name)
        return state.spec if state else None

    def _state(self, name: str, status: type[FlightcastError] = NotFound) -> ModelState:
        state = self._states.get(name)
        if state is None:
            raise status(f"model '{name}' not found")
        return state

    def _served(self, state: ModelState) -> ServedModel:
        served = state.current
        if served is not None:
            return served
        if state.error and not state.training:
            raise NotReady(f"model '{state.spec.name}' failed to train: {state.error}")
        raise NotReady(f"model '{state.spec.name}' is not trained yet (training in progress)")

    def _horizon(self, state: ModelState, served: ServedModel, horizon: Any) -> int:
        if horizon is None:
            return state.spec.horizon
        cap = min(self.max_horizon, served.model.max_horizon)
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= cap:
            raise InvalidInput(f"horizon must be an integer from 1 to {cap}, got {horizon!r}")
        return horizon

    def predict(self, name: str, horizon: Any = None) -> dict[str, Any]:
        """A Success body (without duration_ms) or a typed error."""
        state = self._state(name)
        served = self._served(state)
        steps = self._horizon(state, served, horizon)
        version, last_timestamp = self._data_state(served.query.dataset)
        key = (served.cache_id, version, steps)
        body = self._cache.get(key)
        if body is None:
            body = self._forecast(served, steps, last_timestamp)
            if steps <= max(state.spec.horizon, CACHED_HORIZON):  # long odd horizons would crowd the cache
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = body
        return dict(body)

    def cached(self, name: str, horizon: Any = None) -> dict[str, Any] | None:
        """The forecast when it is cached for the current data; None when computing it needs I/O."""
        state = self._states.get(name)
        served = state.current if state is not None else None
        if served is None or not self._commit_notices:
            return None
        if horizon is None:
            horizon = state.spec.horizon
        elif type(horizon) is not int:  # noqa: E721 - bools and floats are validated by predict()
            return None
        known = self._data_versions.get(served.query.dataset)
        body = self._cache.get((served.cache_id, known[0], horizon)) if known else None
        return dict(body) if body is not None else None

    def _forecast(self, served: ServedModel, steps: int, last_timestamp: str | None) -> dict[str, Any]:
        dataset = served.query.dataset
        lookback = served.model.lookback
        if last_timestamp is None:  # a notice without it (or an empty dataset): ask the server
            last_timestamp = self.client.dataset_info(dataset)["last_timestamp"]
        if last_timestamp is None:
            raise NotReady(f"not enough data: dataset '{dataset}' has no rows")
        last = np.datetime64(last_timestamp.rstrip("Z"), "us")
        times, values = served.query.latest(self.client, lookback, served.freq, last)
        if times.size < lookback:
            raise NotReady(
                f"not enough data: dataset '{dataset}' has {times.size} rows, the window needs {lookback}"
            )
        check_regular(times, served.freq, dataset)
        missing = np.flatnonzero(~np.isfinite(values))
        if missing.size:
            raise InvalidInput(
                f"dataset '{dataset}': the window has missing values at {iso_utc(times[missing[0]])}"
            )
        prediction = served.model.forecast(values, times[-1], steps)
        future = served.freq.future(times[-1], steps, served.freq.anchor(times))
        return {
            "status": "Success",
            "model_name": served.meta.model_name,
            "model_version": served.meta.model_version,
            "lookback": lookback,
            "prediction": [float(v) for v in prediction],
            "horizon": steps,
            "timestamps": [iso_utc(t) for t in future],
        }

    # --- listing -----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return [self._entry(state) for state in self._states.values()]

    def model(self, name: str) -> dict[str, Any]:
        return self._entry(self._state(name))

    def _entry(self, state: ModelState) -> dict[str, Any]:
        spec, served = state.spec, state.current
        meta = served.meta if served else None
        entry: dict[str, Any] = {
            "name": spec.name,
            "from": spec.source,
            "datasets": list(spec.datasets),
            "model_version": meta.model_version if meta else None,
            "status": state.status,
            "lookback": spec.lookback,
            "horizon": spec.horizon,
            "strategy": spec.strategy,
            "frequency": meta.frequency if meta else spec.frequency,
            "trained_at": meta.trained_at if meta else None,
            "training_rows": meta.training_rows if meta else None,
            "metrics": {
                "mase": meta.metrics.get("mase") if meta else None,
                "smape": meta.metrics.get("smape") if meta else None,
            },
        }
        if state.error:
            entry["error_message"] = state.error
        return entry


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
