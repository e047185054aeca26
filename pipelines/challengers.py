"""Challengers: other models on a model's dataset, forecast beside it on the points it serves and scored live
on those same points, never served under its name (unless promoted: `promote: if_better`).

Each time the model's forecast is computed, each challenger forecasts the same series from the data the
model's forecast read, at the model's target periods; both are remembered for live accuracy under a pair of
keys (`<model>~vs~<challenger>~model` and `~challenger`), so the two are scored on exactly the same points
when the actuals arrive. A challenger that beats the model on live MASE over at least `drift_window` such
points is promoted with `promote: if_better`: the model's name then answers with the challenger's forecasts
(version `<challenger>/<its version>`) until a rollback, or until the model's own retrain serves again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np

from pipelines.drivers import FutureDrivers
from pipelines.grid import Windows
from pipelines.live import LiveScorer
from pipelines.state import ModelState, ServedModel
from spicepod import ModelSpec

log = logging.getLogger("flightcast.challengers")

# (served version, series ids, forecasts (n, steps), spreads (n,), target periods (n, steps), live key)
Remember = Callable[[ServedModel, list, np.ndarray, np.ndarray, np.ndarray, str], None]


def pair_key(model: str, challenger: str, side: str) -> str:
    """The live accuracy key of one side (`model` or `challenger`) of a model and its challenger."""
    return f"{model}~vs~{challenger}~{side}"


def live_keys(spec: ModelSpec) -> list[str]:
    return [pair_key(spec.name, c, side) for c in spec.challengers for side in ("model", "challenger")]


class Challengers:
    """Forecasts challengers beside the models that name them, and judges them. Thread-safe."""

    def __init__(self, states: Mapping[str, ModelState], client, live: LiveScorer):
        self._states = states
        self._client = client
        self._live = live

    def beside(
        self, state: ModelState, served: ServedModel, windows: Windows, steps: int, predicted: np.ndarray,
        spread: np.ndarray, timestamps: np.ndarray, remember: Remember,
    ) -> None:
        """Forecast every challenger of `state` on the windows the model just forecast from; remember both."""
        for name in state.spec.challengers:
            rival = self._states[name].current
            if rival is None or not windows.ids or steps > rival.model.max_horizon:  # a direct one forecasts less
                continue
            try:
                rows, values, last, inputs = self._windows(rival, windows, steps)
                if not rows:
                    continue
                ids = [windows.ids[i] for i in rows]
                theirs, their_spread = rival.model.forecast_windows(values, last, steps, ids, inputs)
            except Exception as exc:  # a challenger never fails the model's own forecast
                log.warning("model %s: challenger %s cannot forecast: %s: %s", state.name, name,
                            type(exc).__name__, exc)
                continue
            remember(rival, ids, theirs, their_spread, timestamps[rows], pair_key(state.name, name, "challenger"))
            remember(served, ids, predicted[rows], spread[rows], timestamps[rows], pair_key(state.name, name, "model"))

    def _windows(
        self, rival: ServedModel, windows: Windows, steps: int,
    ) -> tuple[list[int], np.ndarray, np.ndarray, FutureDrivers | None]:
        """The rows of `windows` the rival can forecast, with its windows ending at the same periods (and its
        drivers' values, for a rival with drivers)."""
        length = rival.model.window_length
        drivers = rival.grid.drivers is not None
        if windows.values.shape[1] >= length and not drivers:
            return list(range(len(windows.ids))), windows.values[:, -length:], windows.last, None
        # The rival reads further back than the model did: its own windows, kept where they end where the model's did.
        shortest = rival.model.min_periods
        future = steps if drivers else 0
        if rival.panel:
            theirs = rival.grid.windows(self._client, length, ids=list(windows.ids), min_points=shortest, future=future)
        else:
            theirs = rival.grid.windows(self._client, length, newest=windows.last[0], min_points=shortest,
                                        future=future)
        index = {sid: i for i, sid in enumerate(theirs.ids)}
        rows = [i for i, sid in enumerate(windows.ids) if sid in index and theirs.last[index[sid]] == windows.last[i]]
        picked = [index[windows.ids[i]] for i in rows]
        inputs = theirs.drivers.rows(np.array(picked, dtype=np.int64)) if theirs.drivers is not None else None
        return rows, theirs.values[picked], windows.last[rows], inputs

    def metrics(self, spec: ModelSpec) -> dict[str, dict] | None:
        """Each challenger's live metrics on the model's points, beside the model's own on the same points."""
        if not spec.challengers:
            return None
        return {c: {"live_metrics": self._live.metrics(pair_key(spec.name, c, "challenger")),
                    "model_live_metrics": self._live.metrics(pair_key(spec.name, c, "model"))}
                for c in spec.challengers}

    def winner(self, spec: ModelSpec, window: int) -> str | None:
        """The challenger with the lowest live MASE among those beating the model over >= `window` common points."""
        best, best_mase = None, None
        for name in spec.challengers:
            mine = self._live.metrics(pair_key(spec.name, name, "model"))
            theirs = self._live.metrics(pair_key(spec.name, name, "challenger"))
            if not mine or not theirs or mine["mase"] is None or theirs["mase"] is None:
                continue
            if min(mine["points"], theirs["points"]) < window or theirs["mase"] >= mine["mase"]:
                continue
            if best_mase is None or theirs["mase"] < best_mase:
                best, best_mase = name, theirs["mase"]
        return best
