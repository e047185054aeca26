"""Trainer: the model life cycle. Each model is trained (or its stored version loaded) in the background at
start, trained again on demand or after enough new rows, and retried when a failed model's data changes; the
version served is swapped in whole when the new one is ready."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.engines import make_engine
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency, infer_frequency
from pipelines.grid import GridQuery, phase_origin, raw_timestamps, value_column
from pipelines.model import FileBoosterModel
from pipelines.portfolio import load_model
from pipelines.registry import ModelRegistry, VersionMeta, file_digest, spec_hash
from pipelines.state import ModelState, ServedModel, find_model
from spicepod import FlightcastError, ModelSpec, NotReady, TrainingSpec
from spicepod.timestamps import iso_utc

log = logging.getLogger("flightcast.pipelines")

MAX_TRAINING_POINTS = 20_000  # training reads at most the latest this many periods of each series

_load_ids = itertools.count(1)


class Trainer:
    """Trains, loads and retrains the models in `states`; thread-safe (one training per model at a time)."""

    def __init__(
        self, states: Mapping[str, ModelState], client: FlightDataClient, data_dir: Path, training: TrainingSpec,
    ):
        self._states = states
        self.client = client
        self.registry = ModelRegistry(Path(data_dir) / "models")
        self.engine = make_engine(training, client)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Called as (model, "success" | "failed", seconds) after each real training run.
        self.on_training: Callable[[str, str, float], None] | None = None

    def start(self) -> None:
        """Train or load every model in the background, one after another."""
        for state in self._states.values():
            state.begin()
        self._thread = threading.Thread(target=self._train_all, name="trainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No training starts from now on (one under way finishes)."""
        self._stopping.set()

    def close(self) -> None:
        self.engine.close()

    def _train_all(self) -> None:
        for state in self._states.values():
            if self._stopping.is_set():
                return
            self._train(state, force=False)

    def train(self, name: str) -> ModelState:
        """Train a model again on the current data (blocking); returns its state."""
        state = find_model(self._states, name)
        self._train(state, force=True)
        return state

    def retry_failed(self, dataset: str) -> None:
        """A model that failed to train (too few rows, say) gets another try when its data changes."""
        for state in self._states.values():
            if state.spec.dataset == dataset and not self._stopping.is_set() and state.want_retry():
                threading.Thread(target=self._retry, args=(state,), name=f"retrain-{state.name}", daemon=True).start()

    def retrain(self, state: ModelState) -> None:
        """Train again on new data in the background; the old version serves until the new one is ready."""
        if not self._stopping.is_set():
            self._train(state, force=True)

    def _retry(self, state: ModelState) -> None:
        again = True
        while again and not self._stopping.is_set():
            self._train(state, force=False)
            again = state.retry_done() and state.want_retry()

    def _train(self, state: ModelState, force: bool) -> None:
        with state.train_lock:
            state.begin()
            started = time.perf_counter()
            outcome = "failed"
            try:
                served, trained = self._build(state, force, started)
                state.succeed(served)
                outcome = "success" if trained else "loaded"
            except FlightcastError as exc:
                state.fail(exc.message)
                log.warning("model %s: training failed: %s", state.name, exc.message)
            except Exception as exc:  # a failed model must not take the runtime down
                state.fail(f"internal error while training: {type(exc).__name__}: {exc}")
                log.exception("model %s: training failed", state.name)
            if self.on_training is not None and outcome != "loaded":
                self.on_training(state.name, outcome, time.perf_counter() - started)
        if state.changed_during_training():
            self.retry_failed(state.spec.dataset)

    def _grid(self, state: ModelState) -> tuple[GridQuery, dict]:
        spec, dataset = state.spec, state.dataset
        info = self.client.dataset_info(spec.dataset)
        column = value_column(info, spec.value_column, dataset.series_column)
        raw = raw_timestamps(self.client, spec.dataset, dataset.time_column, dataset.series_column)
        freq = Frequency.parse(spec.frequency) if spec.frequency else infer_frequency(raw, spec.dataset)
        grid = GridQuery(spec.dataset, dataset.time_column, column, dataset.series_column, freq,
                         phase_origin(raw, freq, spec.week_start), spec.aggregate, spec.fill)
        return grid, info

    def _build(self, state: ModelState, force: bool, started: float) -> tuple[ServedModel, bool]:
        """The model to serve, and whether it was trained (rather than loaded)."""
        spec = state.spec
        grid, info = self._grid(state)
        rows = int(info["rows"])
        if spec.kind == "file":
            model = FileBoosterModel.load(spec.path, spec.lookback)
            count = len(grid.series_stats(self.client)) if state.panel else 1
            meta = self._file_meta(spec, grid, count)
            log.info("model %s: loaded LightGBM model file %s (version %s)", spec.name, spec.path, meta.model_version)
            return ServedModel(meta, model, grid, next(_load_ids), rows, state.panel), False

        series = self.engine.load(grid, MAX_TRAINING_POINTS)
        if not series.count:
            raise NotReady(f"dataset '{spec.dataset}' has no values yet")
        digest, fingerprint = spec_hash(spec, state.dataset), series.fingerprint()
        if not force:
            stored = self.registry.find(spec.name, digest, fingerprint)
            if stored is not None:
                meta, path = stored
                try:
                    model = load_model(path)
                except Exception as exc:  # an unreadable version is trained again
                    log.warning("model %s: stored version %s is unreadable (%s: %s); training again",
                                spec.name, meta.model_version, type(exc).__name__, exc)
                else:
                    log.info("model %s: loaded stored version %s (spec and data unchanged)",
                             spec.name, meta.model_version)
                    return ServedModel(meta, model, grid, next(_load_ids), rows, state.panel), False

        log.info("model %s: training on %d periods of %d series of %s (frequency %s)",
                 spec.name, series.rows, series.count, spec.dataset, grid.freq)
        model = self.engine.train(
            series, freq=grid.freq, lookback=spec.lookback, horizon=spec.horizon, strategy=spec.strategy,
            backtest_windows=spec.backtest_windows, lightgbm_params=dict(spec.lightgbm), dataset=spec.dataset,
            method=spec.method, bounds=spec.bounds,
        )
        elapsed = time.perf_counter() - started
        meta, _ = self.registry.store(
            {
                "model_name": spec.name,
                "model_version": spec.tag,
                "spec_hash": digest,
                "data_fingerprint": fingerprint,
                "metrics": {k: _finite_or_none(model.metrics.get(k)) for k in ("mase", "smape")},
                "trained_at": _now(),
                "training_rows": series.rows,
                "frequency": str(grid.freq),
                "value_column": grid.value_column,
                "training_seconds": round(elapsed, 3),
                "strategy": model.strategy,
                "series_count": len(model.stats.ids),
                "backtest_windows": int(model.metrics.get("backtest_windows", 0)),
                "calibration_errors": int(model.metrics.get("calibration_errors", 0)),
                "strategy_mase": model.metrics.get("strategy_mase"),
                "methods": model.metrics.get("methods"),
            },
            model.save,
        )
        log.info(
            "model %s: trained version %s (%s) on %d periods in %.2f s (MASE %s, sMAPE %s)",
            spec.name, meta.model_version, model.strategy, series.rows, elapsed,
            _fmt(meta.metrics.get("mase")), _fmt(meta.metrics.get("smape")),
        )
        return ServedModel(meta, model, grid, next(_load_ids), rows, state.panel), True

    def _file_meta(self, spec: ModelSpec, grid: GridQuery, series_count: int) -> VersionMeta:
        """A `file:` model's version is its file's digest; it is never stored, so nothing fingerprints its data."""
        return VersionMeta(
            model_name=spec.name,
            model_version=file_digest(spec.path)[:12],
            run=0,
            spec_hash=spec_hash(spec, None),
            data_fingerprint="",
            metrics={"mase": None, "smape": None},
            trained_at=iso_utc(datetime.fromtimestamp(spec.path.stat().st_mtime, timezone.utc)),
            training_rows=0,
            frequency=str(grid.freq),
            value_column=grid.value_column,
            training_seconds=0.0,
            series_count=series_count,
        )


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _now() -> str:
    return iso_utc(datetime.now(timezone.utc).replace(microsecond=0))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
