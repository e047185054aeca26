"""Route handlers: parse, call the service off the IOLoop, write."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import pyarrow as pa

from http_api.base import BaseHandler, internal_message
from spicepod import FlightcastError, InvalidInput


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


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(self.ctx.predictions.models())


class TrainHandler(BaseHandler):
    async def post(self, name: str) -> None:
        self.write_json(await self.ctx.run(self.ctx.predictions.train, name, pool="training"))


class PredictBase(BaseHandler):
    """Predict bodies follow the Spice envelope: every error is BadRequest or InternalError."""

    def prediction_error(self, exc: BaseException, name: str | None) -> dict[str, Any]:
        internal = not isinstance(exc, FlightcastError) or exc.kind == FlightcastError.kind
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
            body = await self.ctx.run(self.ctx.predictions.predict, name, horizon)
            ok = True
        except Exception as exc:  # noqa: BLE001 - each item carries its own status
            body = self.prediction_error(exc, name)
            ok = False
            if body["status"] == "InternalError":
                self.log_exception(type(exc), exc, exc.__traceback__)
        body["duration_ms"] = round((self.ctx.clock() - started) * 1000, 3)
        self.ctx.metrics.prediction(name, body["status"])
        return ok, body


def parse_horizon(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"horizon must be a positive integer, got {raw!r}") from None


class PredictHandler(PredictBase):
    async def get(self, name: str) -> None:
        try:
            horizon = parse_horizon(self.get_query_argument("horizon", None))
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
        items = []
        for index, item in enumerate(body["predictions"]):
            if not isinstance(item, dict) or not isinstance(item.get("model_name"), str):
                raise InvalidInput(f"predictions[{index}] must be an object with a string 'model_name'")
            items.append((item["model_name"], item.get("horizon")))
        return items

    def error_envelope(self, exc: BaseException) -> tuple[int, dict[str, Any]]:
        status, body = super().error_envelope(exc)
        if status == 400:
            body["status"] = "BadRequest"
        return status, body


ARROW_STREAM = "application/vnd.apache.arrow.stream"


class SqlHandler(BaseHandler):
    async def post(self) -> None:
        sql = self.request.body.decode("utf-8", errors="strict") if self.request.body else ""
        if not sql.strip():
            raise InvalidInput("the body must be one SQL query")
        table = await self.ctx.run(self.ctx.data.query, sql)
        accept = self.request.headers.get("Accept", "")
        if ARROW_STREAM in accept:
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            self.set_header("Content-Type", ARROW_STREAM)
            self.finish(sink.getvalue())
        elif "text/csv" in accept:
            out = io.StringIO()
            rows = csv.writer(out)
            rows.writerow(table.column_names)
            rows.writerows(zip(*(_jsonable(c.to_pylist()) for c in table.columns)))
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            self.finish(out.getvalue())
        else:
            columns = [_jsonable(c.to_pylist()) for c in table.columns]
            rows = [dict(zip(table.column_names, values)) for values in zip(*columns)]
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps(rows))


def _jsonable(values: list[Any]) -> list[Any]:
    """Timestamps and other non-JSON values as ISO text; NaN as null."""
    out = []
    for value in values:
        if isinstance(value, float) and value != value:
            value = None
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, (bytes, bytearray)):
            value = value.hex()
        elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out.append(value)
    return out
