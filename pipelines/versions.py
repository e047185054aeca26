"""Which stored version of a model serves, and the test a retrained version must pass to replace it.

The choice is a `Serving` record, kept in the data dir beside the runs (ModelRegistry.set_serving) and
written before the new version is swapped in, so a restart serves what was served before it, not simply
the newest run: a rolled-back model stays rolled back, and a candidate that lost stays a candidate.

With `retrain.promote: if_better` a retrained version serves only when its backtest MASE beats the
serving version's on the same latest origins. The serving version is not refitted there: it forecasts
from each of the new version's backtest origins with what it learnt before, which is what it would have
served had it stayed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.driver_training import backtest_drivers
from pipelines.metrics import finite_mean, mase
from pipelines.series import SeriesSet

FORMAT = 1
REMEMBERED = 10  # runs served before the current one, newest last (rollback's default is the last)
MAX_SCORED_SERIES = 1000  # a panel's serving version is scored on a seeded sample, like a backtest


@dataclass(frozen=True)
class Candidate:
    """A retrained version kept without serving: its backtest MASE did not beat the serving version's."""

    run: int
    version: str
    mase: float | None
    serving_mase: float | None  # the serving version's MASE on the candidate's backtest origins
    trained_at: str


@dataclass(frozen=True)
class Serving:
    """The serving choice of one model, as persisted."""

    run: int
    spec_hash: str
    previous: tuple[int, ...] = ()  # runs served before, oldest first
    candidate: Candidate | None = None
    challenger: str | None = None  # a promoted challenger whose forecasts answer for this model
    reason: str = "trained"  # trained | loaded | kept | rollback | promoted
    announced: int = 0  # the newest choice of the serve nodes (a data node's sequence number) applied here

    def pinned(self) -> frozenset[int]:
        """Runs that pruning must keep: the serving one, the candidate, and those rollback may go back to."""
        runs = {self.run, *self.previous}
        if self.candidate is not None:
            runs.add(self.candidate.run)
        return frozenset(runs)

    def moved_to(self, run: int, spec_hash: str, reason: str, candidate: Candidate | None) -> Serving:
        """The record once `run` serves: the current run joins the ones served before."""
        previous = self.previous if run == self.run else (*[r for r in self.previous if r != run], self.run)
        # A promoted challenger goes on serving while the model's run stays (a restart, a candidate kept).
        challenger = self.challenger if run == self.run and reason != "rollback" else None
        return Serving(run, spec_hash, tuple(previous[-REMEMBERED:]), candidate, challenger, reason, self.announced)

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["format"] = FORMAT
        doc["previous"] = list(self.previous)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Serving:
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        candidate = Candidate(**doc["candidate"]) if doc.get("candidate") else None
        return cls(int(doc["run"]), str(doc["spec_hash"]), tuple(int(r) for r in doc.get("previous", ())),
                   candidate, doc.get("challenger"), str(doc.get("reason", "trained")), int(doc.get("announced", 0)))


def beats(new_mase: float | None, serving_mase: float) -> bool:
    """Strictly lower MASE wins; a serving version that cannot be scored loses to one that can."""
    if new_mase is None or not math.isfinite(new_mase):
        return not math.isfinite(serving_mase)
    return not math.isfinite(serving_mase) or new_mase < serving_mase


def mase_on_origins(model: Any, series: SeriesSet, horizon: int, windows: int) -> float:
    """The MASE of an already-fitted `model` forecasting `horizon` points from the latest `windows` origins
    (spaced `horizon` apart, as the training backtest places them): the mean over origins, then over series."""
    need = max(1, model.min_periods)
    length, season = model.window_length, model.freq.season
    order = sorted(range(len(series)), key=lambda i: (series.ids[i] is not None, series.ids[i]))
    usable = [i for i in order if series.values[i].size - windows * horizon >= need]
    if len(usable) > MAX_SCORED_SERIES:
        picked = np.random.default_rng(0).choice(len(usable), MAX_SCORED_SERIES, replace=False)
        usable = [usable[i] for i in sorted(picked)]
    if not usable:
        return math.nan
    rows, last, ids, origins = [], [], [], []
    for i in usable:
        values, times = series.values[i], series.times[i]
        for j in range(1, windows + 1):
            cut = values.size - j * horizon
            window = values[max(0, cut - length):cut]
            rows.append(np.concatenate([np.full(length - window.size, np.nan), window]))
            last.append(times[cut - 1])
            ids.append(series.ids[i])
            origins.append((i, cut))
    inputs = None
    drivers = getattr(getattr(model, "lightgbm", model), "layout", None)
    if series.drivers is not None and drivers is not None and drivers.drivers:
        owner = np.array([i for i, _ in origins], dtype=np.int64)
        cuts = np.array([cut for _, cut in origins], dtype=np.int64)
        inputs = backtest_drivers(series, drivers.drivers, owner, cuts, horizon)  # the drivers' actual values
    predicted, _ = model.forecast_windows(np.vstack(rows), np.asarray(last), horizon, ids, inputs)
    per_series: dict[int, list[float]] = {}
    for (i, cut), forecast in zip(origins, predicted, strict=True):
        values = series.values[i]
        per_series.setdefault(i, []).append(mase(values[cut:cut + horizon], forecast, values[:cut], season))
    return finite_mean([finite_mean(scores) for scores in per_series.values()])
