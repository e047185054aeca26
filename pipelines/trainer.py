"""Trainer: the model life cycle. Each model is trained (or its stored version loaded) in the background at
start, trained again on demand or after enough new rows, and retried when a failed model's data changes; the
version served is swapped in whole when the new one is ready. A retrain by itself serves only when it passes
`retrain.promote` (otherwise it is kept as a candidate); the swap itself, and rollback, are the ServingSwitch's
(pipelines/serving.py)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.drivers import Covariate, Drivers, HolidayCalendar
from pipelines.engines import make_engine
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency, infer_frequency
from pipelines.grid import GridQuery
from pipelines.grid_setup import NUMERIC_PREFIXES, phase_origin, raw_timestamps, value_column
from pipelines.methods import uses_library
from pipelines.model import FileBoosterModel
from pipelines.portfolio import load_model
from pipelines.registry import ModelRegistry, VersionMeta, file_digest, spec_hash
from pipelines.serving import ServingSwitch
from pipelines.state import LOAD_IDS, ModelState, ServedModel, find_model
from pipelines.versions import Candidate, Serving, beats, mase_on_origins
from spicepod import FlightcastError, InvalidInput, ModelSpec, NotReady, TrainingSpec
from spicepod.timestamps import iso_utc

log = logging.getLogger("flightcast.pipelines")

MAX_TRAINING_POINTS = 20_000  # training reads at most the latest this many periods of each series


@dataclass(frozen=True)
class _Built:
    """What a training run decided: the version to serve, and the candidate kept instead when it lost."""

    served: ServedModel
    trained: bool
    reason: str  # trained | loaded | kept
    candidate: Candidate | None = None


class Trainer:
    """Trains, loads and retrains the models in `states`; thread-safe (one training per model at a time)."""

    def __init__(
        self, states: Mapping[str, ModelState], client: FlightDataClient, data_dir: Path, training: TrainingSpec,
    ):
        self._states = states
        self.client = client
        self.registry = ModelRegistry(Path(data_dir) / "models")
        self.engine = make_engine(training, client, any(uses_library(s.spec.method) for s in states.values()))
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Called as (model, "success" | "failed", seconds) after each real training run.
        self.on_training: Callable[[str, str, float], None] | None = None
        self.serving = ServingSwitch(states, self.registry, client)  # which stored version serves

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
            self._train(state, force=False, promote=state.spec.retrain.promote)

    def train(self, name: str) -> ModelState:
        """Train a model again on the current data (blocking) and serve it: asked for, so never only a
        candidate; returns its state."""
        state = find_model(self._states, name)
        self._train(state, force=True, promote="always")
        return state

    def retry_failed(self, dataset: str) -> None:
        """A model that failed to train (too few rows, say) gets another try when its data changes."""
        for state in self._states.values():
            if state.spec.dataset == dataset and not self._stopping.is_set() and state.want_retry():
                threading.Thread(target=self._retry, args=(state,), name=f"retrain-{state.name}", daemon=True).start()

    def retrain(self, state: ModelState) -> None:
        """Train again on new data in the background; the old version serves until the new one is ready."""
        if not self._stopping.is_set():
            self._train(state, force=True, promote=state.spec.retrain.promote)

    def _retry(self, state: ModelState) -> None:
        again = True
        while again and not self._stopping.is_set():
            self._train(state, force=False, promote=state.spec.retrain.promote)
            again = state.retry_done() and state.want_retry()

    def _train(self, state: ModelState, force: bool, promote: str) -> None:
        with state.train_lock:
            state.begin()
            started = time.perf_counter()
            outcome = "failed"
            try:
                built = self._build(state, force, started, promote)
                self.serving.commit(state, built.served, built.reason, built.candidate)
                outcome = "success" if built.trained else "loaded"
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
        drivers = drivers_of(spec, info)
        column = value_column(info, spec.value_column, dataset.series_column, drivers.columns)
        raw = raw_timestamps(self.client, spec.dataset, dataset.time_column, dataset.series_column)
        freq = Frequency.parse(spec.frequency) if spec.frequency else infer_frequency(raw, spec.dataset)
        grid = GridQuery(spec.dataset, dataset.time_column, column, dataset.series_column, freq,
                         phase_origin(raw, freq, spec.week_start), spec.aggregate, spec.fill, drivers)
        return grid, info

    def _build(self, state: ModelState, force: bool, started: float, promote: str) -> _Built:
        """The version to serve: a stored one loaded, a new one trained, or the serving one kept (a candidate
        that did not beat it)."""
        spec = state.spec
        grid, info = self._grid(state)
        rows = grid.observed_rows(self.client, info)
        if spec.kind == "file":
            model = FileBoosterModel.load(spec.path, spec.lookback)
            count = len(grid.series_stats(self.client)) if state.panel else 1
            meta = self._file_meta(spec, grid, count)
            log.info("model %s: loaded LightGBM model file %s (version %s)", spec.name, spec.path, meta.model_version)
            return _Built(ServedModel(meta, model, grid, next(LOAD_IDS), rows, state.panel), False, "loaded")

        series = self.engine.load(grid, MAX_TRAINING_POINTS)
        if not series.count:
            raise NotReady(f"dataset '{spec.dataset}' has no values yet")
        digest, fingerprint = spec_hash(spec, state.dataset), series.fingerprint()
        record = self.registry.serving(spec.name)
        pinned = self._pinned(spec.name, record, digest)
        if not force:
            stored = self.registry.find(spec.name, digest, fingerprint)
            newest = max((m.run for m, _ in self.registry.versions(spec.name) if m.spec_hash == digest), default=0)
            chosen = pinned is not None and (pinned[0].run != newest or record.challenger is not None)
            if chosen and (stored is None or stored[0].run != pinned[0].run):
                # Rolled back, a candidate kept, a challenger promoted: serve what served before the restart.
                stored = pinned
            if stored is not None:
                meta, path = stored
                try:
                    model = load_model(path)
                except Exception as exc:  # an unreadable version is trained again
                    log.warning("model %s: stored version %s is unreadable (%s: %s); training again",
                                spec.name, meta.model_version, type(exc).__name__, exc)
                else:
                    log.info("model %s: loaded stored version %s", spec.name, meta.model_version)
                    candidate = record.candidate if record is not None and record.run == meta.run else None
                    served = ServedModel(meta, model, grid, next(LOAD_IDS), rows, state.panel)
                    return _Built(served, False, "loaded", candidate)

        log.info("model %s: training on %d periods of %d series of %s (frequency %s)",
                 spec.name, series.rows, series.count, spec.dataset, grid.freq)
        model = self.engine.train(
            series, freq=grid.freq, lookback=spec.lookback, horizon=spec.horizon, strategy=spec.strategy,
            backtest_windows=spec.backtest_windows, lightgbm_params=dict(spec.lightgbm), dataset=spec.dataset,
            method=spec.method, bounds=spec.bounds, drivers=grid.drivers,
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
                "newest_period": series.newest,
            },
            model.save,
        )
        log.info(
            "model %s: trained version %s (%s) on %d periods in %.2f s (MASE %s, sMAPE %s)",
            spec.name, meta.model_version, model.strategy, series.rows, elapsed,
            _fmt(meta.metrics.get("mase")), _fmt(meta.metrics.get("smape")),
        )
        served = ServedModel(meta, model, grid, next(LOAD_IDS), rows, state.panel)
        incumbent = self._incumbent(state, pinned, digest, grid, rows)
        if promote != "if_better" or incumbent is None:
            return _Built(served, True, "trained")
        local = series.series if hasattr(series, "series") else grid.history(self.client, MAX_TRAINING_POINTS)
        try:
            serving_mase = mase_on_origins(incumbent.model, local, spec.horizon, spec.backtest_windows)
        except Exception as exc:  # a serving version that cannot be scored cannot hold a better one back
            log.warning("model %s: cannot score the serving version %s on the new origins (%s: %s)",
                        spec.name, incumbent.meta.model_version, type(exc).__name__, exc)
            serving_mase = math.nan
        new_mase = meta.metrics.get("mase")
        if beats(new_mase, serving_mase):
            log.info("model %s: version %s (MASE %s) beats the serving version %s (%s on the same origins); "
                     "serving it", spec.name, meta.model_version, _fmt(new_mase), incumbent.meta.model_version,
                     _fmt(_finite_or_none(serving_mase)))
            return _Built(served, True, "trained")
        log.info("model %s: version %s (MASE %s) does not beat the serving version %s (%s on the same origins); "
                 "kept as a candidate", spec.name, meta.model_version, _fmt(new_mase),
                 incumbent.meta.model_version, _fmt(_finite_or_none(serving_mase)))
        candidate = Candidate(meta.run, meta.model_version, new_mase, _finite_or_none(serving_mase), meta.trained_at)
        # The serving version goes on with the row count of now, so `after_rows` counts from this training.
        return _Built(replace(incumbent, dataset_rows=rows), True, "kept", candidate)

    def _pinned(self, model: str, record: Serving | None, digest: str) -> tuple[VersionMeta, Path] | None:
        """The stored run the serving choice names, when it was trained from the current spec."""
        if record is None or record.spec_hash != digest:
            return None
        stored = self.registry.version(model, str(record.run))
        return stored if stored is not None and stored[0].spec_hash == digest else None

    def _incumbent(
        self, state: ModelState, pinned: tuple[VersionMeta, Path] | None, digest: str, grid: GridQuery, rows: int,
    ) -> ServedModel | None:
        """The version a retrained one must beat: the serving one, or (at start) the one served before; None
        when there is none from the same spec (a changed spec serves its first version at once)."""
        current = state.own  # a retrain is judged against the model's own version, even while a challenger serves
        if current is not None:
            return current if current.meta.spec_hash == digest and current.meta.run else None
        if pinned is None:
            return None
        try:
            return ServedModel(pinned[0], load_model(pinned[1]), grid, next(LOAD_IDS), rows, state.panel)
        except Exception as exc:
            log.warning("model %s: the version served before (%s) is unreadable (%s); serving the new one",
                        state.name, pinned[0].model_version, exc)
            return None

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


def drivers_of(spec: ModelSpec, info: dict) -> Drivers:
    """The model's drivers, checked against its dataset's columns (an error names the model and the column)."""
    columns = {c["name"]: c["type"] for c in info["columns"]}
    where = f"model '{spec.name}'"
    for name in [c["column"] for c in spec.covariates] + list(spec.static):
        if columns and name not in columns:
            raise InvalidInput(f"{where}: dataset '{spec.dataset}' has no column '{name}' "
                               f"(columns: {', '.join(columns)})")
    for c in spec.covariates:
        kind = columns.get(c["column"], "double")
        if c["type"] == "numeric" and not kind.startswith(NUMERIC_PREFIXES):
            raise InvalidInput(f"{where}: covariate column '{c['column']}' is {kind}, not numeric; declare it "
                               "with type: categorical")
    holidays = spec.holidays
    return Drivers(
        [Covariate(c["column"], c["type"] == "categorical", c["known"]) for c in spec.covariates],
        spec.static, spec.calendar,
        HolidayCalendar(holidays["country"], holidays.get("subdivision")) if holidays else None,
    )


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _now() -> str:
    return iso_utc(datetime.now(timezone.utc).replace(microsecond=0))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
