"""Route handlers: parse, call the service off the IOLoop, write."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pyarrow as pa
import tornado.web

from http_api.base import MANY, ONE, BaseHandler, BodyTooLarge, internal_message
from http_api.formats import TABLE_ENCODINGS, negotiate
from pipelines.flight_client import typed_errors
from spicepod import FlightcastError, InvalidInput, LimitExceeded

MAX_BATCH_ITEMS = 1000  # models in one POST /v1/predict
MAX_SQL_ROWS = 1_000_000  # rows one POST /v1/sql may return; use Flight DoGet for more
MAX_SQL_BYTES = 256 * 1024 * 1024  # Arrow bytes of that result: a few huge strings must not fill memory either


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.write_text("ok")


class ReadyHandler(BaseHandler):
    def get(self) -> None:
        if self.ctx.predictions.ready():
            self.write_text("ready")
        else:
            self.write_text("not ready", status=503)


class DatasetsHandler(BaseHandler):
    async def get(self) -> None:
        datasets = await self.ctx.run(self.ctx.data.datasets)
        for dataset in datasets:
            dataset.pop("version", None)
        self.write_json(datasets)


class MetricsHandler(BaseHandler):
    """Prometheus text format; row counts are refreshed from the datasets listing on each scrape."""

    def given_key(self) -> str:
        auth = self.request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and "X-API-Key" not in self.request.headers:
            return auth[len("Bearer "):]
        return super().given_key()

    async def get(self) -> None:
        datasets = await self.ctx.run(self.ctx.data.datasets)
        self.ctx.metrics.observe_datasets(datasets)
        self.set_header("Content-Type", self.ctx.metrics.content_type)
        self.finish(self.ctx.metrics.exposition())


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(self.ctx.openapi)


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(self.ctx.predictions.models())


class TrainHandler(BaseHandler):
    async def post(self, name: str) -> None:
        self.write_json(await self.ctx.run(self.ctx.predictions.train, name, pool="training"))


class PredictBase(BaseHandler):
    """Predict bodies follow the Spice envelope: every error is BadRequest or InternalError."""

    def prediction_error(self, exc: BaseException, name: str | None) -> dict[str, Any]:
        internal = not isinstance(exc, FlightcastError) or exc.internal
        body: dict[str, Any] = {
            "status": "InternalError" if internal else "BadRequest",
            "error_message": internal_message(exc) if internal else exc.message,
        }
        if name is not None:
            body["model_name"] = name
            spec = self.ctx.predictions.spec(name)
            if spec is not None:
                body["lookback"] = spec.lookback
        return body

    async def predict_one(self, name: str, horizon: Any) -> tuple[bool, dict[str, Any]]:
        """(ok, body) for one model; errors become bodies, never exceptions."""
        started = self.ctx.clock()
        try:
            # A forecast cached for the current data is answered here; anything else goes to a worker.
            body = self.ctx.predictions.cached(name, horizon)
            if body is None:
                body = await self.ctx.run(self.ctx.predictions.predict, name, horizon)
            ok = True
        except Exception as exc:  # noqa: BLE001 - each item carries its own status
            body = self.prediction_error(exc, name)
            ok = False
            if body["status"] == "InternalError":
                self.log_exception(type(exc), exc, exc.__traceback__)
        seconds = self.ctx.clock() - started
        body["duration_ms"] = round(seconds * 1000, 3)
        self.ctx.metrics.prediction(name, body["status"], seconds)
        return ok, body


def parse_horizon(raw: str | None) -> int | None:
    """ASCII digits only: int() alone would also take '1_0', ' 2', '+2' and non-ASCII digits like '२'."""
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise InvalidInput(f"horizon must be a positive integer, got {raw[:40]!r}")
    return int(raw)


class PredictHandler(PredictBase):
    query_params = {"horizon": ONE, "series": ONE, "level": MANY}

    def error_envelope(self, exc: BaseException) -> tuple[int, dict[str, Any]]:
        """A refused query parameter gets the predict envelope, like a bad horizon."""
        if isinstance(exc, InvalidInput) and not isinstance(exc, BodyTooLarge) and self.path_args:
            return 400, self.prediction_error(exc, self.path_args[0])
        return super().error_envelope(exc)

    async def get(self, name: str) -> None:
        try:
            try:
                raw = self.get_query_argument("horizon", None)
            except tornado.web.HTTPError:  # not UTF-8
                raise InvalidInput("horizon must be a positive integer") from None
            horizon = parse_horizon(raw)
        except InvalidInput as exc:
            body = self.prediction_error(exc, name)
            body["duration_ms"] = self.elapsed_ms()
            self.write_json(body, status=400)
            return
        ok, body = await self.predict_one(name, horizon)
        status = 200 if ok else (500 if body["status"] == "InternalError" else 400)
        body["duration_ms"] = self.elapsed_ms()
        self.write_json(body, status=status)


class BatchPredictHandler(PredictBase):
    async def post(self) -> None:
        items = self._items(self.json_body())
        results = await asyncio.gather(*(self.predict_one(name, horizon) for name, horizon in items))
        self.write_json({"duration_ms": self.elapsed_ms(), "predictions": [body for _, body in results]})

    @staticmethod
    def _items(body: Any) -> list[tuple[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
            raise InvalidInput("body must be a JSON object with a 'predictions' list")
        if len(body["predictions"]) > MAX_BATCH_ITEMS:
            raise InvalidInput(f"at most {MAX_BATCH_ITEMS} predictions per request, got {len(body['predictions'])}")
        items = []
        for index, item in enumerate(body["predictions"]):
            if not isinstance(item, dict) or not isinstance(item.get("model_name"), str):
                raise InvalidInput(f"predictions[{index}] must be an object with a string 'model_name'")
            items.append((item["model_name"], item.get("horizon")))
        return items


class SqlHandler(BaseHandler):
    async def post(self) -> None:
        accept = self.request.headers.get("Accept")
        media = negotiate(accept, list(TABLE_ENCODINGS))
        if media is None:  # refused before the query runs
            raise tornado.web.HTTPError(
                406, f"cannot answer Accept: {accept[:200]}; this route serves {', '.join(TABLE_ENCODINGS)}"
            )
        try:
            sql = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the body must be one SQL query in UTF-8") from None
        if not sql.strip():
            raise InvalidInput("the body must be one SQL query")
        table = await self.ctx.run(self._query, sql)
        content_type, encode = TABLE_ENCODINGS[media]
        self.set_header("Content-Type", content_type)
        self.finish(await self.ctx.run(encode, table))

    def _query(self, sql: str) -> pa.Table:
        """Read the result batch by batch, refusing it past MAX_SQL_ROWS or MAX_SQL_BYTES instead of filling memory."""
        reader = self.ctx.data.reader(sql)
        batches, rows, size = [], 0, 0
        try:
            with typed_errors():
                for chunk in reader:
                    rows += chunk.data.num_rows
                    size += chunk.data.nbytes
                    if rows > MAX_SQL_ROWS:
                        raise LimitExceeded(
                            f"the result has more than {MAX_SQL_ROWS} rows; add a LIMIT or read it with Flight DoGet"
                        )
                    if size > MAX_SQL_BYTES:
                        raise LimitExceeded(f"the result is larger than {MAX_SQL_BYTES // 2**20} MiB; "
                                            "select less or read it with Flight DoGet")
                    batches.append(chunk.data)
                schema = reader.schema
        finally:
            reader.cancel()
        return pa.Table.from_batches(batches, schema=schema)
