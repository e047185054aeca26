"""PredictionService: trains and loads models, serves forecasts from the latest windows, caches them.

A forecast depends only on the model version and the data, so it is cached on (model load, series,
horizon, data version of that series). Data versions come from the Flight server's commit notices
(`on_data_changed`, called before a DoPut returns), which name the series a commit touched; a notice
naming none changes every series of its dataset.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.engines import make_engine
from pipelines.flight_client import FlightDataClient
from pipelines.forecasts import BulkForecast, Forecast, Level
from pipelines.frequency import Frequency, infer_frequency
from pipelines.grid import GridQuery, Windows, bucket, phase_origin, raw_timestamps, value_column
from pipelines.intervals import interval_bounds
from pipelines.live import LiveScorer
from pipelines.model import FileBoosterModel, TrainedModel
from pipelines.registry import ModelRegistry, VersionMeta, file_digest, spec_hash
from pipelines.state import DataVersions, ModelState, ServedModel
from pipelines.subscription import NoticeSubscription
from pipelines.upkeep import Upkeep
from spicepod import DatasetSpec, FlightcastError, InvalidInput, ModelSpec, NotFound, NotReady, TrainingSpec
from spicepod.timestamps import iso_utc

log = logging.getLogger("flightcast.pipelines")

MAX_TRAINING_POINTS = 20_000  # training reads at most the latest this many periods of each series
CACHE_ENTRIES = 4096
CACHED_HORIZON = 100  # forecasts up to this many steps (or the model's own horizon) are cached

_load_ids = itertools.count(1)


class PredictionService:
    """Everything the HTTP layer needs: predict (one series or many), list, train. Thread-safe."""

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
        self._notices_live = not remote
        self.registry = ModelRegistry(Path(data_dir) / "models")
        self.engine = make_engine(training or TrainingSpec(), client)
        self.max_horizon = max_horizon
        self._states = {m.name: ModelState(m, datasets[m.dataset]) for m in models}
        self.live = LiveScorer(Path(data_dir) / "live")
        self.live.load(list(self._states))
        self._upkeep = Upkeep(self._states.values(), client, self.live, self._retrain)
        self.versions = DataVersions()
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._series_stats: dict[str, tuple[tuple, list]] = {}  # model -> ((load, data version), stats)
        # The last bulk forecast of each model, on (model load, data version, horizon): a bulk call for
        # unchanged data is answered from it, and recorded for live accuracy only once.
        self._bulk: dict[str, tuple[tuple, Any]] = {}
        self._trainer: threading.Thread | None = None
        self._stopping = threading.Event()
        # Called as (model, "success" | "failed", seconds) after each real training run.
        self.on_training: Callable[[str, str, float], None] | None = None

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Train or load every model in the background, one after another."""
        for state in self._states.values():
            state.begin()
        self._trainer = threading.Thread(target=self._train_all, name="trainer", daemon=True)
        self._trainer.start()
        self._upkeep.start()
        if self.remote:
            self._subscription = NoticeSubscription(
                self.client.location, self.client.call_options, self.on_data_changed, self._notices_state)
            self._subscription.start()

    def stop(self) -> None:
        """Stop background work and write what live accuracy has not written yet."""
        self._stopping.set()
        if self._subscription is not None:
            self._subscription.stop()
        self._upkeep.stop()
        self.engine.close()

    def ready(self) -> bool:
        """Every model has a version or a recorded failure (a retry in progress keeps its failure), and a
        serve node hears its data node."""
        return self._notices_live and all(s.settled for s in self._states.values())

    def _notices_state(self, live: bool) -> None:
        """The subscription to a data node's notices came up or went down."""
        if live:
            # Notices may have been missed, and a restarted data node counts versions afresh: forget every
            # version and cached forecast, then ask for each dataset's version.
            self.versions = DataVersions()
            self._cache.clear()
            for state in self._states.values():
                if state.current is not None:
                    state.current.windows = None
            self._notices_live = True
            for dataset in {state.spec.dataset for state in self._states.values()}:
                try:
                    self._data(dataset)
                except FlightcastError:
                    pass
        elif self._notices_live:
            log.warning("lost the data node's commit notices; checking its data version on every prediction")
            self._notices_live = False

    def _train_all(self) -> None:
        for state in self._states.values():
            if self._stopping.is_set():
                return
            self._train(state, force=False)

    # --- data versions -----------------------------------------------------------------------------

    def on_data_changed(
        self, dataset: str, version: int, last_timestamp: str | None = None, series: frozenset[str] | None = None,
    ) -> None:
        """A commit notice: forecasts of these series computed before it are stale from now on."""
        last = np.datetime64(last_timestamp.rstrip("Z"), "us") if last_timestamp else None
        if self.versions.record(dataset, version, last, series):
            self._retry_failed(dataset)
            self._upkeep.notify(dataset)

    def _data(self, dataset: str) -> tuple[int, np.datetime64 | None]:
        """(version, newest timestamp) of a dataset: from commit notices, or asked of the server once."""
        known = self.versions.latest(dataset) if self._notices_live else None
        if known is None:
            info = self.client.dataset_info(dataset)
            last = info["last_timestamp"]
            self.versions.record(dataset, int(info["version"]),
                                 np.datetime64(last.rstrip("Z"), "us") if last else None, None)
            known = self.versions.latest(dataset)
        return known

    def _retry_failed(self, dataset: str) -> None:
        """A model that failed to train (too few rows, say) gets another try when its data changes."""
        for state in self._states.values():
            if state.spec.dataset == dataset and not self._stopping.is_set() and state.want_retry():
                threading.Thread(target=self._retry, args=(state,), name=f"retrain-{state.name}", daemon=True).start()

    def _retrain(self, state: ModelState) -> None:
        """Train again on new data in the background; the old version serves until the new one is ready."""
        if not self._stopping.is_set():
            self._train(state, force=True)

    def _retry(self, state: ModelState) -> None:
        again = True
        while again and not self._stopping.is_set():
            self._train(state, force=False)
            again = state.retry_done() and state.want_retry()

    # --- training ----------------------------------------------------------------------------------

    def train(self, name: str) -> dict[str, Any]:
        """Train a model again on the current data (blocking); returns its listing entry."""
        state = self._states.get(name)
        if state is None:
            raise NotFound(f"model '{name}' not found")
        self._train(state, force=True)
        return self._entry(state)

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
            self._retry_failed(state.spec.dataset)

    def _grid(self, state: ModelState) -> tuple[GridQuery, dict]:
        spec, dataset = state.spec, state.dataset
        info = self.client.dataset_info(spec.dataset)
        column = value_column(info, spec.value_column, dataset.series_column)
        raw = raw_timestamps(self.client, spec.dataset, dataset.time_column, dataset.series_column)
        freq = Frequency.parse(spec.frequency) if spec.frequency else infer_frequency(raw, spec.dataset)
        grid = GridQuery(spec.dataset, dataset.time_column, column, dataset.series_column, freq,
                         phase_origin(raw, freq), spec.aggregate, spec.fill)
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
                    model = TrainedModel.load(path)
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

    # --- predicting --------------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec | None:
        state = self._states.get(name)
        return state.spec if state else None

    def _state(self, name: str) -> ModelState:
        state = self._states.get(name)
        if state is None:
            raise NotFound(f"model '{name}' not found")
        return state

    def _steps(self, state: ModelState, served: ServedModel, horizon: int | None) -> int:
        if horizon is None:
            return state.spec.horizon
        cap = min(self.max_horizon, served.model.max_horizon)
        if horizon > cap:
            why = " (a direct model forecasts only the horizon it was trained for)" if cap < self.max_horizon else ""
            raise InvalidInput(
                f"horizon must be an integer from 1 to {cap} for model '{state.name}', got {horizon}{why}")
        return horizon

    def _check_series(self, state: ModelState, served: ServedModel, series: str | None) -> None:
        if not state.panel:
            if series is not None:
                raise InvalidInput(f"model '{state.name}' forecasts a single series; 'series' is only for panel models")
            return
        if series is None:
            count = served.meta.series_count
            raise InvalidInput(f"model '{state.name}' has {count} series; pass series=ID")

    def _check_levels(self, state: ModelState, served: ServedModel, levels: Sequence[Level]) -> None:
        if levels and not _calibrated(served.model):
            raise InvalidInput(f"model '{state.name}' has no calibrated intervals (a `file:` model has no backtest)")

    def predict(
        self, name: str, horizon: int | None = None, series: str | None = None, levels: Sequence[Level] = (),
    ) -> Forecast:
        """The forecast of one series (the model's only one, or `series` of a panel)."""
        state = self._state(name)
        served = state.served()
        steps = self._steps(state, served, horizon)
        self._check_series(state, served, series)
        self._check_levels(state, served, levels)
        dataset = state.spec.dataset
        _, newest = self._data(dataset)
        version = self.versions.of_series(dataset, series)
        key = (served.cache_id, series, steps, version)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._compute(served, state, series, steps, newest)
            if steps <= max(state.spec.horizon, CACHED_HORIZON):  # long odd horizons would crowd the cache
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = entry
        return self._forecast(served, series, steps, entry, levels)

    def cached(
        self, name: str, horizon: int | None = None, series: str | None = None, levels: Sequence[Level] = (),
    ) -> Forecast | None:
        """The forecast when it is cached for the current data; None when computing it needs I/O or checks."""
        state = self._states.get(name)
        served = state.current if state is not None else None
        if served is None or not self._notices_live or self.versions.latest(state.spec.dataset) is None:
            return None
        steps = state.spec.horizon if horizon is None else horizon
        version = self.versions.of_series(state.spec.dataset, series)
        entry = self._cache.get((served.cache_id, series, steps, version))
        if entry is None or (levels and not _calibrated(served.model)):
            return None
        return self._forecast(served, series, steps, entry, levels)

    def _compute(
        self, served: ServedModel, state: ModelState, series: str | None, steps: int, newest: np.datetime64 | None,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        lookback = served.model.window_length  # the lookback, and a season more when the model differences
        dataset = state.spec.dataset
        if newest is None:
            raise NotReady(f"not enough data: dataset '{dataset}' has no rows")
        if served.panel:
            windows = served.grid.windows(self.client, lookback, newest=served.series_last.get(series), ids=[series])
            if windows.ids:
                served.series_last[series] = windows.last[0]
        else:
            windows = served.grid.windows(self.client, lookback, newest=newest)
        if not windows.ids:
            have = windows.short.get(series)
            if have is None and served.panel:
                raise InvalidInput(f"series '{series}' not found in model '{state.name}'")
            raise NotReady(
                f"not enough data: {'series ' + repr(series) + ' of ' if served.panel else ''}dataset '{dataset}' "
                f"has {have or 0} periods, the window needs {lookback}"
            )
        predicted, spread = served.model.forecast_windows(windows.values, windows.last, steps, windows.ids)
        future = served.grid.freq.future(windows.last[0], steps)
        self._remember(served, [series], predicted, spread, future[None, :])
        return predicted[0], spread, [iso_utc(t) for t in future]

    def _remember(
        self, served: ServedModel, ids: list[str | None], predicted: np.ndarray, spread: np.ndarray,
        timestamps: np.ndarray,
    ) -> None:
        """Served forecasts (n, steps) at `timestamps` (n, steps) wait, with their 80% interval, to be scored
        against the actuals (live accuracy)."""
        model = served.model
        if not isinstance(model, TrainedModel):
            return
        lower = upper = None
        if _calibrated(model):
            lower, upper = interval_bounds(predicted, spread, model.calibration, [80.0])[80.0]
        scales = np.array([model.stats.scale_of(sid) for sid in ids])
        self.live.record(served.meta.model_name, ids, timestamps, predicted, lower, upper, scales)

    def _forecast(
        self, served: ServedModel, series: str | None, steps: int,
        entry: tuple[np.ndarray, np.ndarray, list[str]], levels: Sequence[Level],
    ) -> Forecast:
        values, spread, timestamps = entry
        intervals = {}
        if levels:
            bounds = interval_bounds(values[None, :], spread, served.model.calibration, [v for _, v in levels])
            for label, level in levels:
                lower, upper = bounds[level]
                intervals[label] = (lower[0].tolist(), upper[0].tolist())
        return Forecast(
            model_name=served.meta.model_name,
            model_version=served.meta.model_version,
            lookback=served.model.lookback,
            horizon=steps,
            series=series,
            timestamps=timestamps,
            values=values.tolist(),
            intervals=intervals,
        )

    # --- many series at once -----------------------------------------------------------------------

    def _all_windows(self, served: ServedModel, state: ModelState) -> Windows:
        """The latest windows of every series, refreshed for the series changed since they were read."""
        dataset = state.spec.dataset
        with served.windows_lock:
            version, newest = self._data(dataset)
            lookback = served.model.window_length
            if served.windows is None:
                changed = None
            else:
                changed = self.versions.changed_since(dataset, served.windows_as_of)
            if changed is None:
                served.windows = served.grid.windows(
                    self.client, lookback, newest=None if served.panel else newest)
            elif changed:
                fresh = served.grid.windows(self.client, lookback, ids=sorted(changed))
                served.windows = _merge(served.windows, fresh, changed)
            served.windows_as_of = version
            if served.panel:
                served.series_last.update(zip(served.windows.ids, served.windows.last, strict=True))
            return served.windows

    def forecasts(
        self, name: str, horizon: int | None = None, series: Sequence[str] = (), levels: Sequence[Level] = (),
    ) -> BulkForecast:
        """Forecasts of every ready series of a model (or of the named ones), computed in one batch."""
        state = self._state(name)
        served = state.served()
        steps = self._steps(state, served, horizon)
        self._check_levels(state, served, levels)
        if series and not state.panel:
            raise InvalidInput(f"model '{state.name}' forecasts a single series; 'series' is only for panel models")
        windows = self._all_windows(served, state)
        key = (served.cache_id, served.windows_as_of, steps)
        kept = self._bulk.get(name)
        if kept is None or kept[0] != key:
            kept = self._bulk[name] = (key, self._forecast_all(served, windows, steps))
        ids_all, predicted_all, spread_all, timestamps_all = kept[1]
        rows = np.arange(len(ids_all))
        if series:
            index = {sid: i for i, sid in enumerate(ids_all)}
            missing = [s for s in series if s not in index]
            if missing:
                raise InvalidInput(f"series '{missing[0]}' not found in model '{state.name}'")
            rows = np.array([index[s] for s in series], dtype=np.int64)
        ids = [ids_all[i] for i in rows]
        predicted, spread, timestamps = predicted_all[rows], spread_all[rows], timestamps_all[rows]
        intervals = {}
        if levels:
            bounds = interval_bounds(predicted, spread, served.model.calibration, [v for _, v in levels])
            intervals = {label: bounds[level] for label, level in levels}
        return BulkForecast(served.meta.model_name, served.meta.model_version, steps, ids, timestamps, predicted,
                            intervals)

    def _forecast_all(self, served: ServedModel, windows: Windows, steps: int) -> tuple:
        """Every series' forecast in one batch (remembered once for live accuracy)."""
        predicted, spread = served.model.forecast_windows(windows.values, windows.last, steps, windows.ids)
        timestamps = np.asarray(served.grid.freq.add(windows.last[:, None], np.arange(1, steps + 1)[None, :]))
        timestamps = timestamps.reshape(len(windows.ids), steps)
        self._remember(served, list(windows.ids), predicted, spread, timestamps)
        return list(windows.ids), predicted, spread, timestamps

    def series_matching(
        self, name: str, text: str | None = None, limit: int | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(how many ids contain `text`, any case; the first `limit` of those entries): each with its rows,
        time range and whether it is long enough to forecast (`ready` | `too_short`), by id.

        Only the entries returned are built, and the per-series stats are kept until the model's data or
        version changes, so a search box over 10,000 series stays quick.
        """
        state = self._state(name)
        served = state.served()
        grid, spec = served.grid, state.spec
        key = (served.cache_id, self._data(grid.dataset)[0])
        kept = self._series_stats.get(name)
        if kept is None or kept[0] != key:
            kept = self._series_stats[name] = (key, grid.series_stats(self.client))
        stats = kept[1]
        if text:
            needle = text.casefold()
            stats = [row for row in stats if row[0] is not None and needle in row[0].casefold()]
        need = spec.lookback + spec.horizon
        entries = []
        for sid, rows, first, last in stats if limit is None else stats[:limit]:
            periods = int(grid.freq.steps_between(bucket(first, grid.freq, grid.origin),
                                                  np.asarray([bucket(last, grid.freq, grid.origin)]))[0]) + 1
            entries.append({"series": sid, "rows": rows, "first_timestamp": iso_utc(first),
                            "last_timestamp": iso_utc(last), "status": "ready" if periods >= need else "too_short"})
        return len(stats), entries

    def history(self, name: str, series: str | None = None, limit: int = 200) -> dict[str, Any]:
        """The latest `limit` points of a series exactly as the model sees it (on its grid, filled)."""
        state = self._state(name)
        served = state.served()
        self._check_series(state, served, series)
        found = served.grid.history(self.client, limit, ids=[series] if served.panel else None)
        if not len(found):
            if served.panel:
                raise InvalidInput(f"series '{series}' not found in model '{state.name}'")
            return {"series": None, "timestamps": [], "values": []}
        return {"series": series, "timestamps": [iso_utc(t) for t in found.times[0]],
                "values": found.values[0].tolist()}

    # --- listing -----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return [self._entry(state) for state in self._states.values()]

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
            "strategy": meta.strategy if meta else spec.strategy,
            "frequency": meta.frequency if meta else spec.frequency,
            "trained_at": meta.trained_at if meta else None,
            "training_rows": meta.training_rows if meta else None,
            "series_count": meta.series_count if meta else None,
            "metrics": {
                "mase": meta.metrics.get("mase") if meta else None,
                "smape": meta.metrics.get("smape") if meta else None,
                "backtest_windows": meta.backtest_windows if meta else None,
            },
            "intervals": {"calibration_errors": meta.calibration_errors if meta else None},
            "live_metrics": self.live.metrics(spec.name),
        }
        if spec.strategy == "auto" and meta is not None:
            entry["strategy_mase"] = meta.strategy_mase
        if state.error:
            entry["error_message"] = state.error
        return entry


def _merge(old: Windows, fresh: Windows, changed: set[str]) -> Windows:
    """`old` with the changed series replaced by their `fresh` windows (new series appended)."""
    keep = [i for i, sid in enumerate(old.ids) if sid not in changed]
    ids = [old.ids[i] for i in keep] + list(fresh.ids)
    values = np.concatenate([old.values[keep], fresh.values]) if fresh.ids else old.values[keep]
    last = np.concatenate([old.last[keep], fresh.last]) if fresh.ids else old.last[keep]
    short = {k: v for k, v in old.short.items() if k not in changed} | fresh.short
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    return Windows([ids[i] for i in order], values[order], last[order], short)


def _calibrated(model: TrainedModel | FileBoosterModel) -> bool:
    """Whether the model has backtest errors for every step (what intervals need)."""
    return model.calibration is not None and model.calibration.usable()


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _now() -> str:
    return iso_utc(datetime.now(timezone.utc).replace(microsecond=0))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
