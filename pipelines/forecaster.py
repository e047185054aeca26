"""Forecaster: forecasts of one series or of many from the served models, kept in the ForecastCache, and
every forecast served waiting for its actuals (live accuracy)."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.challengers import Challengers
from pipelines.flight_client import FlightDataClient
from pipelines.forecast_cache import Entry, ForecastCache
from pipelines.forecast_drivers import (
    apply_sent,
    check_future,
    drivers_of,
    explainable,
    future_needed,
    parse_covariates,
)
from pipelines.forecasts import BulkForecast, Forecast, Level
from pipelines.frequency import Frequency
from pipelines.grid import Windows
from pipelines.intervals import interval_bounds
from pipelines.live import LiveScorer
from pipelines.model import FileBoosterModel, TrainedModel
from pipelines.portfolio import PortfolioModel
from pipelines.state import Foreground, ModelState, ServedModel, check_series, find_model
from spicepod import InvalidInput, NotReady
from spicepod.timestamps import iso_utc

CACHED_HORIZON = 100  # forecasts up to this many steps (or the model's own horizon) are cached
FUTURES_KEPT = 1024  # (frequency, newest period, steps) whose forecast timestamps are kept for the next model
# `at_hand` makes a model's forecasts of a horizon only while its last one from a window at hand took at most this
# long: the caller runs them where a longer one would hold others up (the HTTP server's IOLoop).
AT_HAND_SECONDS = 0.002
AT_HAND_KEPT = 4096  # (model load, steps) whose last forecast time from a window at hand is kept


class Forecaster:
    """predict (one series), forecasts (many in one batch), and `cached` for the IOLoop. Thread-safe."""

    def __init__(
        self, states: Mapping[str, ModelState], client: FlightDataClient, cache: ForecastCache, live: LiveScorer,
        max_horizon: int, challengers: Challengers | None = None,
    ):
        self._states = states
        self._challengers = challengers
        self._client = client
        self._cache = cache
        self._live = live
        self.max_horizon = max_horizon
        self.foreground = Foreground()  # bulk batches being computed for a caller
        # (model load, steps) -> the seconds of its last forecast from a window at hand
        self._at_hand_seconds: dict[tuple[int, int], float] = {}

    def at_hand(
        self, name: str, horizon: int | None = None, series: str | None = None, levels: Sequence[Level] = (),
    ) -> Forecast | None:
        """predict's forecast when it needs no I/O and is short: its window is at hand (the rows kept from the
        last read, current by the commit notices since), the model has no drivers (their future rows are read),
        no challengers (which may read windows of their own) and no method that fits when it forecasts, the
        served version's last forecast of this horizon from a window at hand took at most AT_HAND_SECONDS, and
        no other thread holds the live scorer (which records the forecast). None otherwise: `predict` then
        makes it, reading what it needs. Raises what predict raises for a bad request."""
        state = self._states.get(name)
        served = state.current if state is not None else None
        if served is None or drivers_of(served) or state.spec.challengers or self._live.busy:
            return None
        if isinstance(served.model, PortfolioModel) and served.model.fits_when_forecasting:
            return None
        steps = state.spec.horizon if horizon is None else horizon
        seconds = self._at_hand_seconds.get((served.cache_id, steps))
        if seconds is None or seconds > AT_HAND_SECONDS:
            return None
        return self._predict(name, horizon, series, levels, None, False, at_hand=True)

    def predict(
        self, name: str, horizon: int | None = None, series: str | None = None, levels: Sequence[Level] = (),
        covariates: Mapping[str, Sequence[Any]] | None = None, explain: bool = False,
    ) -> Forecast:
        """The forecast of one series (the model's only one, or `series` of a panel); `covariates` are future
        driver values sent with the request (`timestamps` and a list per covariate), `explain` adds each
        input group's contributions."""
        return self._predict(name, horizon, series, levels, covariates, explain, at_hand=False)

    def _predict(
        self, name: str, horizon: int | None, series: str | None, levels: Sequence[Level],
        covariates: Mapping[str, Sequence[Any]] | None, explain: bool, at_hand: bool,
    ) -> Forecast | None:
        """predict's forecast; with `at_hand`, None where it would need a read (see at_hand)."""
        state = find_model(self._states, name)
        served = state.served()
        steps = self._steps(state, served, horizon)
        check_series(state, served, series)
        self._check_levels(state, served, levels)
        if explain and not explainable(served.model):
            raise InvalidInput(f"model '{state.name}' cannot explain its forecasts (a `file:` model has no "
                               "feature groups)")
        sent = parse_covariates(served, state.name, covariates) if covariates else None
        dataset = state.spec.dataset
        generation = self._cache.generation
        known = self._cache.data(dataset, ask=not at_hand)
        if known is None:
            return None
        version, newest = known
        stamp = (generation, version)
        if sent is not None:  # made for this request alone: never cached
            entry, contributions = self._compute(served, state, series, steps, stamp, newest, sent, explain)
            return self._forecast(served, series, steps, entry, levels, contributions)
        key = self._cache.forecast_key(served, dataset, series, steps)
        if explain:  # an explained forecast is kept apart, with its contributions
            key = (*key, "explain")
        kept = self._cache.forecast(key)
        if kept is None:
            computed = self._compute(served, state, series, steps, stamp, newest, None, explain, at_hand)
            if computed is None:
                return None
            entry, contributions = computed
            kept = (entry, contributions) if explain else entry
            if steps <= max(state.spec.horizon, CACHED_HORIZON):  # long odd horizons would crowd the cache
                self._cache.keep_forecast(key, kept)
        entry, contributions = kept if explain else (kept, None)
        return self._forecast(served, series, steps, entry, levels, contributions)

    def cached(
        self, name: str, horizon: int | None = None, series: str | None = None, levels: Sequence[Level] = (),
        explain: bool = False,
    ) -> Forecast | None:
        """The forecast when it is cached for the current data; None when computing it needs I/O or checks."""
        state = self._states.get(name)
        served = state.current if state is not None else None
        if served is None:
            return None
        steps = state.spec.horizon if horizon is None else horizon
        kept = self._cache.current_forecast(served, state.spec.dataset, series, steps, explain)
        if kept is None or (levels and not calibrated(served.model)):
            return None
        entry, contributions = kept if explain else (kept, None)
        return self._forecast(served, series, steps, entry, levels, contributions)

    def forecasts(
        self, name: str, horizon: int | None = None, series: Sequence[str] = (), levels: Sequence[Level] = (),
    ) -> BulkForecast:
        """Forecasts of every ready series of a model (or of the named ones), computed in one batch."""
        state = find_model(self._states, name)
        served = state.served()
        steps = self._steps(state, served, horizon)
        self._check_levels(state, served, levels)
        if series and not state.panel:
            raise InvalidInput(f"model '{state.name}' forecasts a single series; 'series' is only for panel models")
        with self.foreground.running():  # upkeep waits: the caller waits on this batch
            windows, stamp = self._cache.windows(served, state.spec.dataset, steps if drivers_of(served) else 0)
            # One batch per (model load, data version, horizon): a bulk call for unchanged data is answered
            # from it, and recorded for live accuracy only once.
            key = (stamp, steps)
            batch = self._cache.bulk(served, key)
            if batch is None:
                batch = self._forecast_all(state, served, windows, steps)
                self._cache.keep_bulk(served, key, batch)
        ids_all, predicted_all, spread_all, timestamps_all, methods_all = batch
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
            intervals = {label: bounded(served.model, bounds[level]) for label, level in levels}
        methods = [methods_all[i] for i in rows] if methods_all is not None else None
        return BulkForecast(served.meta.model_name, served.meta.model_version, steps, ids, timestamps, predicted,
                            intervals, methods)

    # --- checks ------------------------------------------------------------------------------------

    def _steps(self, state: ModelState, served: ServedModel, horizon: int | None) -> int:
        if horizon is None:
            return state.spec.horizon
        cap = min(self.max_horizon, served.model.max_horizon)
        if horizon > cap:
            why = " (a direct model forecasts only the horizon it was trained for)" if cap < self.max_horizon else ""
            raise InvalidInput(
                f"horizon must be an integer from 1 to {cap} for model '{state.name}', got {horizon}{why}")
        return horizon

    def _check_levels(self, state: ModelState, served: ServedModel, levels: Sequence[Level]) -> None:
        if levels and not calibrated(served.model):
            raise InvalidInput(f"model '{state.name}' has no calibrated intervals (a `file:` model has no backtest)")

    # --- computing ---------------------------------------------------------------------------------

    def _compute(
        self, served: ServedModel, state: ModelState, series: str | None, steps: int, stamp: tuple[int, int],
        newest: np.datetime64 | None, sent: dict | None = None, explain: bool = False, at_hand: bool = False,
    ) -> tuple[Entry, dict[str, list[float]] | None] | None:
        """The forecast's entry and contributions; with `at_hand`, None where the window would be read."""
        dataset = state.spec.dataset
        if newest is None:
            raise NotReady(f"not enough data: dataset '{dataset}' has no rows")
        started = time.perf_counter()
        windows = None if drivers_of(served) else self._cache.tail_windows(served, series)
        from_tail = windows is not None
        if windows is None:
            if at_hand:
                return None
            windows = self._window(served, series, steps, stamp, newest)
        if not windows.ids:
            have = windows.short.get(series)
            if have is None and served.panel:
                raise InvalidInput(f"series '{series}' not found in model '{state.name}'")
            raise NotReady(
                f"not enough data: {'series ' + repr(series) + ' of ' if served.panel else ''}dataset '{dataset}' "
                f"has {have or 0} periods, the window needs {served.model.min_periods or served.model.window_length}"
            )
        future, times = future_times(served.grid.freq, windows.last[0], steps)
        if future_needed(served):
            if sent is not None:
                apply_sent(windows, sent, future)
            check_future(served, windows, steps)
        contributions = None
        if explain:
            predicted, spread, parts = served.model.explain_windows(windows.values, windows.last, steps, windows.ids,
                                                                    windows.drivers)
            contributions = {group: values[0].tolist() for group, values in parts.items()}
        else:
            predicted, spread = served.model.forecast_windows(windows.values, windows.last, steps, windows.ids,
                                                              windows.drivers)
        self._remember(served, [series], predicted, spread, future[None, :])
        if state.spec.challengers and self._challengers is not None:
            self._challengers.beside(state, served, windows, steps, predicted, spread, future[None, :], self._remember)
        entry = predicted[0], spread, list(times), _methods(served.model, windows)[0]
        if from_tail and not explain:
            if len(self._at_hand_seconds) >= AT_HAND_KEPT:
                self._at_hand_seconds.clear()
            self._at_hand_seconds[(served.cache_id, steps)] = time.perf_counter() - started
        return entry, contributions

    def _window(
        self, served: ServedModel, series: str | None, steps: int, stamp: tuple[int, int], newest: np.datetime64,
    ) -> Windows:
        """One series' latest window (with its drivers' future rows), read (and its rows kept: see
        ForecastCache.tail_windows)."""
        future = steps if drivers_of(served) else 0
        lookback = served.model.window_length  # the lookback, and a season more when the model differences
        shortest = served.model.min_periods
        if served.panel:
            # Bounded by the series' newest period when known, else by the dataset's (a series that ended
            # earlier has too few points inside that bound, and is read again without it).
            last = self._cache.series_last(served, series)
            windows = served.grid.windows(self._client, lookback, newest=newest if last is None else last,
                                          ids=[series], min_points=shortest, future=future)
            if windows.ids:
                self._cache.saw_series(served, windows.ids, windows.last)
        else:
            windows = served.grid.windows(self._client, lookback, newest=newest, min_points=shortest, future=future)
        self._cache.keep_tail(served, series, stamp, windows)
        return windows

    def _forecast_all(self, state: ModelState, served: ServedModel, windows: Windows, steps: int) -> tuple:
        """Every series' forecast in one batch (remembered once for live accuracy)."""
        if future_needed(served):
            check_future(served, windows, steps)
        predicted, spread = served.model.forecast_windows(windows.values, windows.last, steps, windows.ids,
                                                          windows.drivers)
        timestamps = np.asarray(served.grid.freq.add(windows.last[:, None], np.arange(1, steps + 1)[None, :]))
        timestamps = timestamps.reshape(len(windows.ids), steps)
        self._remember(served, list(windows.ids), predicted, spread, timestamps)
        if state.spec.challengers and self._challengers is not None:
            self._challengers.beside(state, served, windows, steps, predicted, spread, timestamps, self._remember)
        return list(windows.ids), predicted, spread, timestamps, _methods(served.model, windows)

    def _remember(
        self, served: ServedModel, ids: list[str | None], predicted: np.ndarray, spread: np.ndarray,
        timestamps: np.ndarray, key: str | None = None,
    ) -> None:
        """Served forecasts (n, steps) at `timestamps` (n, steps) wait, with their 80% interval, to be scored
        against the actuals (live accuracy), under the model's name or `key`."""
        model = served.model
        if not isinstance(model, (TrainedModel, PortfolioModel)):
            return
        lower = upper = None
        if calibrated(model):
            lower, upper = bounded(model, interval_bounds(predicted, spread, model.calibration, [80.0])[80.0])
        scales = model.stats.scales(ids)
        self._live.record(key or served.meta.model_name, ids, timestamps, predicted, lower, upper, scales)

    def _forecast(
        self, served: ServedModel, series: str | None, steps: int, entry: Entry, levels: Sequence[Level],
        contributions: dict[str, list[float]] | None = None,
    ) -> Forecast:
        values, spread, timestamps, method = entry
        intervals = {}
        if levels:
            bounds = interval_bounds(values[None, :], spread, served.model.calibration, [v for _, v in levels])
            for label, level in levels:
                lower, upper = bounded(served.model, bounds[level])
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
            method=method,
            contributions=contributions,
        )


def bounded(model: object, interval: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """An interval inside the model's bounds (a portfolio's `bounds`), like its forecasts."""
    if not isinstance(model, PortfolioModel):
        return interval
    return model.bounded(interval[0]), model.bounded(interval[1])


def _methods(model: object, windows: Windows) -> list[str | None]:
    """The method each window's series is forecast by (None for a model of one method)."""
    if isinstance(model, PortfolioModel):
        return model.methods_of(windows.ids, windows.values)
    return [None] * len(windows.ids)


@functools.lru_cache(maxsize=FUTURES_KEPT)
def future_times(freq: Frequency, last: np.datetime64, steps: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The `steps` periods after `last` (read-only), and their iso_times. Models over one dataset share its
    newest period, so a batch of them (an ensemble, an A/B test) or a GET of each after one commit writes
    the same timestamps again: each model after the first finds them here."""
    future = freq.future(last, steps)
    future.flags.writeable = False  # shared by every forecast from this period
    return future, tuple(iso_times(future))


def iso_times(times: np.ndarray) -> list[str]:
    """iso_utc of each timestamp, written for all at once when they are whole seconds (grid periods are)."""
    exact = np.asarray(times).astype("datetime64[us]")
    if (exact.view(np.int64) % 1_000_000).any():
        return [iso_utc(t) for t in exact]
    return [text + "Z" for text in np.datetime_as_string(exact, unit="s").tolist()]


def calibrated(model: TrainedModel | FileBoosterModel | PortfolioModel) -> bool:
    """Whether the model has backtest errors for every step (what intervals need)."""
    return model.calibration is not None and model.calibration.usable()
