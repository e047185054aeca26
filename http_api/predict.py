"""Forecast routes: GET predict and POST predict in the Spice envelope, and the panel routes (series,
bulk forecasts, history). Handlers parse, call the prediction service, and write; the envelope is
built here from the service's Forecast values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from http_api.base import MANY, ONE, BaseHandler, encode_json, error_body, error_status, write_error_json
from http_api.params import (
    parse_covariates,
    parse_explain,
    parse_horizon,
    parse_levels,
    parse_limit,
    parse_series,
    query_value,
    query_values,
)
from pipelines.forecasts import BulkForecast, Forecast, History, Level, SeriesEntry
from spicepod import InvalidInput

MAX_BATCH_ITEMS = 1000  # models in one POST /v1/predict
FORECASTS_PER_HOP = 4  # forecasts of a batch not made on the IOLoop, computed one after another in one worker
AT_HAND_BUDGET_SECONDS = 0.004  # a batch's forecasts from windows at hand made on the IOLoop, up to this long
MAX_HISTORY = 100_000
DEFAULT_HISTORY = 200
MAX_SERIES_LIST = 1_000_000

# Statuses that refuse the HTTP request itself (no key, wrong method, body too large): the predict routes
# answer them like every route, not in the Spice envelope.
HTTP_REFUSALS = frozenset({401, 405, 413})

# One forecast asked for: model name, horizon, series, levels, covariates, explain.
Request = tuple[str, int | None, str | None, list[Level], dict[str, list[Any]] | None, bool]
# What a forecast asked for comes to: the forecast, or the (HTTP status, body) it failed with.
Outcome = Forecast | tuple[int, dict[str, Any]]


def forecast_body(forecast: Forecast) -> dict[str, Any]:
    """The Spice predict body, plus horizon, timestamps, series and intervals."""
    body: dict[str, Any] = {
        "status": "Success",
        "model_name": forecast.model_name,
        "model_version": forecast.model_version,
        "lookback": forecast.lookback,
        "prediction": forecast.values,
        "horizon": forecast.horizon,
        "timestamps": forecast.timestamps,
    }
    if forecast.series is not None:
        body["series"] = forecast.series
    if forecast.method is not None:
        body["method"] = forecast.method
    if forecast.intervals:
        body["intervals"] = {label: {"lower": lower, "upper": upper}
                             for label, (lower, upper) in forecast.intervals.items()}
    if forecast.contributions is not None:
        body["contributions"] = forecast.contributions
    return body


class ForecastJson:
    """The JSON bodies of the forecasts answered last, one per kind of request (model, series, horizon,
    levels, explain). A warm GET answers the same forecast until the data moves, and encoding its numbers
    costs more than the rest of the handler: an equal forecast reuses its encoding, only `duration_ms` is new.
    Used on the IOLoop only."""

    MAX_KEPT = 1024  # series ids come from clients: past this many kinds, start again

    def __init__(self) -> None:
        self._kept: dict[tuple[Any, ...], tuple[Forecast, bytes]] = {}

    def body(self, forecast: Forecast, duration_ms: float) -> bytes:
        """`forecast_body(forecast)` with `duration_ms` last, as write_json would encode it."""
        key = (forecast.model_name, forecast.series, forecast.horizon, tuple(forecast.intervals),
               forecast.contributions is not None)
        kept = self._kept.get(key)
        if kept is None or kept[0] != forecast:
            if len(self._kept) >= self.MAX_KEPT:
                self._kept.clear()
            head = encode_json(forecast_body(forecast)).encode()[:-1]  # the closing brace follows duration_ms
            kept = self._kept[key] = (forecast, head)
        return b'%s, "duration_ms": %s}' % (kept[1], repr(duration_ms).encode())


def bulk_table(bulk: BulkForecast) -> pa.Table:
    """Long form: one row per (series, step) with `series`, `ts`, `value`, and `lower_L`/`upper_L` per level."""
    n, steps = len(bulk.ids), bulk.horizon
    ids = pa.array([None if sid is None else sid for sid in bulk.ids], pa.string())
    columns = {
        "series": ids.take(pa.array(np.repeat(np.arange(n), steps))),
        "ts": pa.array(bulk.timestamps.reshape(-1).astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
        "value": pa.array(bulk.values.reshape(-1), pa.float64()),
    }
    for label, (lower, upper) in bulk.intervals.items():
        columns[f"lower_{label}"] = pa.array(lower.reshape(-1), pa.float64())
        columns[f"upper_{label}"] = pa.array(upper.reshape(-1), pa.float64())
    if bulk.methods is not None:
        columns["method"] = pa.array(bulk.methods, pa.string()).take(pa.array(np.repeat(np.arange(n), steps)))
    return pa.table(columns)


def series_json(entry: SeriesEntry) -> dict[str, Any]:
    return {"series": entry.series, "rows": entry.rows, "first_timestamp": entry.first_timestamp,
            "last_timestamp": entry.last_timestamp, "status": entry.status}


def history_json(history: History) -> dict[str, Any]:
    return {"series": history.series, "timestamps": history.timestamps, "values": history.values}


# --- handlers ----------------------------------------------------------------------------------------


class PredictBase(BaseHandler):
    """The predict routes answer errors in the Spice envelope, as 400 BadRequest or 500 InternalError."""

    def compute_etag(self) -> None:
        """No ETag: every predict answer carries its own duration_ms, so no two bodies are alike and no
        If-None-Match could ever match; hashing each body for one, and parsing If-None-Match against it, took
        about 3% of a warm GET's CPU in a profile."""
        return None

    def check_etag_header(self) -> bool:
        return False  # no ETag (compute_etag): never a 304

    def spice_error(self, status: int, message: str, name: str | None) -> tuple[int, dict[str, Any]]:
        """The Spice re-mapping of an error: a server failure is 500 InternalError, any other problem (an
        unknown or unready model, a bad parameter) 400 BadRequest; the body names the model and its lookback."""
        status = 500 if status >= 500 else 400
        body = error_body(status, message)
        if name is not None:
            body["model_name"] = name
            spec = self.ctx.predictions.spec(name)
            if spec is not None:
                body["lookback"] = spec.lookback
        return status, body

    def error_response(self, exc: BaseException | None, status_code: int) -> tuple[int, dict[str, Any]]:
        """A route naming a model answers as Spice does, except where the HTTP request itself is refused."""
        status, body = super().error_response(exc, status_code)
        if self.path_args and status not in HTTP_REFUSALS:
            return self.spice_error(status, body["error_message"], self.path_args[0])
        return status, body

    async def forecast(
        self, name: str, horizon: int | None, series: str | None, levels: list[Level],
        covariates: dict[str, list[Any]] | None = None, explain: bool = False,
    ) -> tuple[Outcome, float]:
        """The forecast of one model, or the (HTTP status, body) it failed with, and its seconds; counted."""
        started = self.ctx.clock()
        predictions = self.ctx.predictions
        try:
            forecast = self.answered_here(name, horizon, series, levels, covariates, explain)
            if forecast is None:
                forecast = await self.ctx.run(predictions.predict, name, horizon, series, levels, covariates, explain)
        except Exception as exc:  # each item carries its own status
            return self.counted(name, exc, self.ctx.clock() - started)
        return self.counted(name, forecast, self.ctx.clock() - started)

    def answered_here(
        self, name: str, horizon: int | None, series: str | None, levels: list[Level],
        covariates: dict[str, list[Any]] | None, explain: bool, at_hand: bool = True,
    ) -> Forecast | None:
        """The forecast when the IOLoop answers it itself: cached for the current data, or (with `at_hand`) made
        from a window at hand (no I/O, short: Forecaster.at_hand), as a hop to a worker and back costs about as
        much as such a forecast. None: it goes to a worker."""
        if covariates:  # made for the request alone
            return None
        predictions = self.ctx.predictions
        forecast = predictions.cached(name, horizon, series, levels, explain)
        if forecast is None and at_hand and not explain:
            forecast = predictions.at_hand(name, horizon, series, levels)
        return forecast

    async def forecast_batch(self, requests: list[Request]) -> list[tuple[Outcome, float]]:
        """`forecast` of each request, in order. Those cached are answered here, and those from windows at hand
        too (as in `forecast`) until the batch has spent AT_HAND_BUDGET_SECONDS on them: a long batch must not
        hold the IOLoop. The others are computed in workers, up to FORECASTS_PER_HOP one after another in each:
        forecasts from windows at hand (past the budget, or explained) hold the interpreter nearly all of their
        time, so in threads of their own they would only take turns, each paying for the switches and a hop;
        forecasts that read their windows from the data node wait on it, and a large batch of them still has
        many workers reading side by side."""
        predictions = self.ctx.predictions
        outcomes: list[Any] = [None] * len(requests)
        todo = []
        budget_ends = self.ctx.clock() + AT_HAND_BUDGET_SECONDS
        for i, (name, horizon, series, levels, covariates, explain) in enumerate(requests):
            started = self.ctx.clock()
            try:
                forecast = self.answered_here(name, horizon, series, levels, covariates, explain,
                                              at_hand=started < budget_ends)
            except Exception as exc:  # each item carries its own status
                forecast = exc
            if forecast is None:
                todo.append(i)
            else:
                outcomes[i] = self.counted(name, forecast, self.ctx.clock() - started)
        hops = -(-len(todo) // FORECASTS_PER_HOP)
        shares = [todo[k::hops] for k in range(hops)]  # as even as they go
        # Every worker starts now. Their futures are awaited in turn, not gathered: a gather wraps each in a
        # task that starts a turn of the IOLoop later, and wakes this handler a turn after the last.
        jobs = [self.ctx.submit(compute_all, predictions.predict, [requests[i] for i in share], self.ctx.clock)
                for share in shares]
        computed = [await job for job in jobs]
        for share, results in zip(shares, computed, strict=True):
            for i, (outcome, seconds) in zip(share, results, strict=True):
                outcomes[i] = self.counted(requests[i][0], outcome, seconds)
        return outcomes

    def counted(self, name: str, outcome: Forecast | Exception, seconds: float) -> tuple[Outcome, float]:
        """A forecast, or the (HTTP status, body) of its failure (logged when the server failed), counted."""
        if isinstance(outcome, Forecast):
            self.ctx.metrics.prediction(name, "Success", seconds)
            return outcome, seconds
        failed = self.spice_error(*error_status(outcome), name)
        if failed[0] == 500:
            self.log_exception(type(outcome), outcome, outcome.__traceback__)
        self.ctx.metrics.prediction(name, failed[1]["status"], seconds)
        return failed, seconds


def compute_all(
    predict: Callable[..., Forecast], requests: list[Request], clock: Callable[[], float],
) -> list[tuple[Forecast | Exception, float]]:
    """Each request's forecast, or the exception it failed with, and its seconds (in a worker)."""
    out: list[tuple[Forecast | Exception, float]] = []
    for request in requests:
        started = clock()
        try:
            outcome: Forecast | Exception = predict(*request)
        except Exception as exc:  # each item carries its own status
            outcome = exc
        out.append((outcome, clock() - started))
    return out


def item_body(outcome: Outcome, seconds: float) -> dict[str, Any]:
    """A batch item: the forecast's body or its error's, with its own duration."""
    body = forecast_body(outcome) if isinstance(outcome, Forecast) else outcome[1]
    body["duration_ms"] = round(seconds * 1000, 3)
    return body


class PredictHandler(PredictBase):
    query_params = {"horizon": ONE, "series": ONE, "level": MANY, "explain": ONE}

    async def get(self, name: str) -> None:
        horizon = parse_horizon(query_value(self, "horizon"), self.ctx.predictions.max_horizon)
        series = parse_series(query_value(self, "series"))
        levels = parse_levels(query_values(self, "level"))
        explain = parse_explain(query_value(self, "explain"))
        outcome, _ = await self.forecast(name, horizon, series, levels, explain=explain)
        if isinstance(outcome, Forecast):
            self.write_json_bytes(self.ctx.forecast_json.body(outcome, self.elapsed_ms()))
        else:
            write_error_json(self, *outcome, self.elapsed_ms())


class BatchPredictHandler(PredictBase):
    async def post(self) -> None:
        items = self._items(self.json_body())
        requests = [item for item in items if not isinstance(item, dict)]
        done = iter(await self.forecast_batch(requests))
        bodies = []
        for item in items:  # items that fail their checks answer in place, in request order
            if isinstance(item, dict):
                item["duration_ms"] = 0.0
                bodies.append(item)
            else:
                bodies.append(item_body(*next(done)))
        self.write_json({"duration_ms": self.elapsed_ms(), "predictions": bodies})

    def _items(self, body: Any) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
            raise InvalidInput("body must be a JSON object with a 'predictions' list")
        if len(body["predictions"]) > MAX_BATCH_ITEMS:
            raise InvalidInput(f"at most {MAX_BATCH_ITEMS} predictions per request, got {len(body['predictions'])}")
        items: list[Any] = []
        cap = self.ctx.predictions.max_horizon
        for index, item in enumerate(body["predictions"]):
            if not isinstance(item, dict) or not isinstance(item.get("model_name"), str):
                raise InvalidInput(f"predictions[{index}] must be an object with a string 'model_name'")
            name = item["model_name"]
            try:
                unknown = sorted(set(item) - {"model_name", "horizon", "series", "level", "covariates", "explain"})
                if unknown:
                    raise InvalidInput(f"predictions[{index}]: unknown key '{unknown[0]}'; expected model_name, "
                                       "horizon, series, level, covariates, explain")
                levels = item.get("level", [])
                if not isinstance(levels, list):
                    raise InvalidInput("level must be a list of numbers, e.g. [80, 95]")
                horizon = parse_horizon(item.get("horizon"), cap, text=False)
                explain = parse_explain(item.get("explain"), text=False)
                items.append((name, horizon, parse_series(item.get("series")), parse_levels(levels),
                              parse_covariates(item.get("covariates")), explain))
            except InvalidInput as exc:
                items.append(self.spice_error(exc.http_status, exc.message, name)[1])
        return items


class ForecastsHandler(BaseHandler):
    """The bulk path: forecasts of every (or each named) ready series in long form, JSON, CSV or Arrow."""

    query_params = {"horizon": ONE, "series": MANY, "level": MANY}

    async def get(self, name: str) -> None:
        media = self.table_media()
        horizon = parse_horizon(query_value(self, "horizon"), self.ctx.predictions.max_horizon)
        series = [parse_series(s) for s in query_values(self, "series")]
        levels = parse_levels(query_values(self, "level"))
        # Upkeep waits until the body is written to the socket too: the scores and pending forecasts a new
        # batch leaves it would otherwise take the interpreter from building and sending the body.
        with self.ctx.predictions.foreground.running():
            bulk = await self.ctx.run(self.ctx.predictions.forecasts, name, horizon, series, levels)
            await self.write_table(await self.ctx.run(bulk_table, bulk), media)


class SeriesHandler(BaseHandler):
    """The series of a model, by id; `q` keeps the ids that contain it (any case), `limit` the first N.

    The header X-Total-Count tells how many matched before the limit, so a search box can say "50 of 812".
    """

    query_params = {"q": ONE, "limit": ONE}

    async def get(self, name: str) -> None:
        text = query_value(self, "q")
        limit = parse_limit(query_value(self, "limit"), MAX_SERIES_LIST, None)
        total, entries = await self.ctx.run(self.ctx.predictions.series_matching, name, text, limit)
        self.set_header("X-Total-Count", str(total))
        self.write_json([series_json(entry) for entry in entries])


class HistoryHandler(BaseHandler):
    query_params = {"series": ONE, "limit": ONE}

    async def get(self, name: str) -> None:
        series = parse_series(query_value(self, "series"))
        limit = parse_limit(query_value(self, "limit"), MAX_HISTORY, DEFAULT_HISTORY)
        self.write_json(history_json(await self.ctx.run(self.ctx.predictions.history, name, series, limit)))


