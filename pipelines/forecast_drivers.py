"""Future driver values at forecast time: from the stored rows after each series' newest value, or sent with
the request (which wins for the periods it names); a forecast missing one is refused, naming it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.drivers import Drivers, FutureDrivers
from pipelines.flight_client import FlightDataClient
from pipelines.grid_setup import bucket
from pipelines.gridfill import Windows
from pipelines.model import TrainedModel
from pipelines.portfolio import PortfolioModel
from pipelines.state import ServedModel
from spicepod import InvalidInput
from spicepod.timestamps import iso_utc, parse_iso

MAX_SENT_PERIODS = 10_000  # periods of covariates one request may carry


def model_drivers(model: object) -> Drivers:
    """The drivers a model forecasts with (a portfolio's are its LightGBM model's)."""
    if isinstance(model, PortfolioModel):
        model = model.lightgbm
    return model.layout.drivers if isinstance(model, TrainedModel) else Drivers()


def drivers_of(served: ServedModel) -> bool:
    """Whether the model's grid reads drivers (so windows come with them)."""
    return served.grid.drivers is not None


def future_needed(served: ServedModel) -> bool:
    return drivers_of(served) and bool(model_drivers(served.model))


def explainable(model: object) -> bool:
    return isinstance(model, (TrainedModel, PortfolioModel))


def drivers_at(
    served: ServedModel, client: FlightDataClient, points: int, ids: list[str] | None, sids: Sequence[str | None],
    lasts: np.ndarray,
) -> FutureDrivers | None:
    """The driver inputs of one-step forecasts of the periods after `lasts` (one per row, series `sids`), from
    the data's own driver values (None for a model without drivers)."""
    drivers = model_drivers(served.model)
    if not drivers or served.grid.drivers is None:
        return None
    found = served.grid.history(client, points + 1, ids=ids)
    where = {sid: i for i, sid in enumerate(found.ids)}
    values = found.drivers
    n = len(sids)
    future = {c.column: np.full((n, 1), None if c.categorical else np.nan, dtype=object if c.categorical else None)
              for c in drivers.future}
    past = {c.column: np.full(n, None if c.categorical else np.nan, dtype=object if c.categorical else None)
            for c in drivers.past}
    static = {s: np.full(n, None, dtype=object) for s in drivers.static}
    window = served.model.window_length
    history = {c.column: np.full((n, window), np.nan) for c in drivers.future if not c.categorical}
    for row, (sid, last) in enumerate(zip(sids, lasts, strict=True)):
        i = where.get(sid)
        if i is None or not found.times[i].size:
            continue
        at = int(served.grid.freq.steps_between(found.times[i][0], np.asarray([last]))[0])
        for c in drivers.future:
            column = values.covariates[c.column][i]
            if 0 <= at + 1 < column.size:
                future[c.column][row, 0] = column[at + 1]
        for c in drivers.past:
            column = values.covariates[c.column][i]
            if 0 <= at < column.size:
                past[c.column][row] = column[at]
        for name, out in history.items():  # over the window that ends at `last`
            seen = np.asarray(values.covariates[name][i][max(0, at + 1 - window):at + 1], dtype=np.float64)
            out[row, window - seen.size:] = seen
        for s in drivers.static:
            static[s][row] = values.static[s][i]
    return FutureDrivers(future, past, static, history)


def parse_covariates(served: ServedModel, name: str, sent: Mapping[str, Sequence[Any]]) -> dict[str, dict[int, Any]]:
    """A request's `covariates` ({"timestamps": [...], "<covariate>": [...]}) as covariate -> {period start
    (microseconds): value}, checked against the model's known-future covariates."""
    drivers = model_drivers(served.model)
    future = {c.column: c for c in drivers.future}
    if not future:
        raise InvalidInput(f"model '{name}' has no covariates known ahead; 'covariates' cannot be sent to it")
    stamps = sent.get("timestamps")
    if not isinstance(stamps, list) or not stamps:
        raise InvalidInput("covariates.timestamps must be a non-empty list of ISO 8601 timestamps")
    if len(stamps) > MAX_SENT_PERIODS:
        raise InvalidInput(f"covariates: at most {MAX_SENT_PERIODS} periods, got {len(stamps)}")
    periods = []
    for raw in stamps:
        try:
            moment = parse_iso(raw) if isinstance(raw, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise InvalidInput(f"covariates.timestamps: {str(raw)[:40]!r} is not an ISO 8601 timestamp")
        periods.append(int(bucket(np.datetime64(moment, "us"), served.grid.freq, served.grid.origin)
                           .astype("datetime64[us]").astype(np.int64)))
    out: dict[str, dict[int, Any]] = {}
    for column, values in sent.items():
        if column == "timestamps":
            continue
        covariate = future.get(column)
        if covariate is None:
            past = [c.column for c in drivers.past]
            why = " (it is known: past; its values come from the data)" if column in past else ""
            raise InvalidInput(f"covariates: '{column}' is not a future covariate of model '{name}'{why}; "
                               f"expected {', '.join(future)}")
        if not isinstance(values, list) or len(values) != len(periods):
            raise InvalidInput(f"covariates.{column} must be a list of {len(periods)} values, one per timestamp")
        for value in values:
            ok = value is None or isinstance(value, str) if covariate.categorical else value is None or (
                isinstance(value, (int, float)) and not isinstance(value, bool))
            if not (ok or (covariate.categorical and isinstance(value, (int, float, bool)))):
                raise InvalidInput(f"covariates.{column}: {value!r} is not a number")
        out[column] = dict(zip(periods, values, strict=True))
    return out


def apply_sent(windows: Windows, sent: dict[str, dict[int, Any]], future: np.ndarray) -> None:
    """The request's values over the stored ones, for the forecast periods it names."""
    stamps = np.asarray(future).astype("datetime64[us]").astype(np.int64).tolist()
    for column, by_period in sent.items():
        target = windows.drivers.future[column]
        for k, stamp in enumerate(stamps):
            if stamp in by_period and by_period[stamp] is not None:
                target[:, k] = by_period[stamp]


def check_future(served: ServedModel, windows: Windows, steps: int) -> None:
    """Every known-future covariate has a value for each forecast period of each window, or an error names
    the first one missing."""
    drivers = model_drivers(served.model)
    freq = served.grid.freq
    for c in drivers.future:
        values = windows.drivers.future[c.column][:, :steps]
        if values.dtype == object:  # categorical: None (or NaN) where missing
            missing = np.array([v is None or (isinstance(v, float) and v != v) for v in values.ravel().tolist()],
                               dtype=bool).reshape(values.shape)
        else:
            missing = np.isnan(values)
        if not missing.any():
            continue
        row = int(np.flatnonzero(missing.any(axis=1))[0])
        first = int(np.argmax(missing[row]))
        when = iso_utc(np.asarray(freq.add(windows.last[row], first + 1)))
        more = int(missing[row].sum()) - 1
        sid = windows.ids[row]
        where = f"series '{sid}': " if sid is not None else ""
        tail = f" (and {more} more period{'s' if more != 1 else ''})" if more else ""
        raise InvalidInput(f"{where}covariate '{c.column}' has no value for {when}{tail}; send them with DoPut or "
                           "in the request")
