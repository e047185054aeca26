"""Route handlers: parse, call the service off the IOLoop, write."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow as pa

from http_api.base import ONE, BaseHandler
from pipelines.flight_client import typed_errors
from pipelines.forecasts import ModelInfo, VersionInfo
from spicepod import InvalidInput, LimitExceeded

MAX_SQL_ROWS = 1_000_000  # rows one POST /v1/sql may return; use Flight DoGet for more
MAX_SQL_BYTES = 256 * 1024 * 1024  # Arrow bytes of that result: a few huge strings must not fill memory either


def model_json(info: ModelInfo) -> dict[str, Any]:
    """A model's entry in GET /v1/models (and the answer of a training)."""
    entry: dict[str, Any] = {
        "name": info.name,
        "from": info.source,
        "datasets": info.datasets,
        "model_version": info.model_version,
        "status": info.status,
        "lookback": info.lookback,
        "horizon": info.horizon,
        "strategy": info.strategy,
        "frequency": info.frequency,
        "trained_at": info.trained_at,
        "training_rows": info.training_rows,
        "series_count": info.series_count,
        "metrics": {"mase": info.mase, "smape": info.smape, "backtest_windows": info.backtest_windows},
        "intervals": {"calibration_errors": info.calibration_errors},
        "live_metrics": info.live_metrics,
        "health": info.health,
    }
    if info.strategy_chosen:
        entry["strategy_mase"] = info.strategy_mase
    if info.methods is not None:
        entry["methods"] = info.methods
    if info.feature_importance is not None:
        entry["feature_importance"] = info.feature_importance
    if info.candidate is not None:
        entry["candidate"] = {"version": info.candidate.version, "run": info.candidate.run,
                              "mase": info.candidate.mase, "serving_mase": info.candidate.serving_mase,
                              "trained_at": info.candidate.trained_at}
    if info.challengers is not None:
        entry["challengers"] = info.challengers
    if info.error_message:
        entry["error_message"] = info.error_message
    return entry


def version_json(info: VersionInfo) -> dict[str, Any]:
    """One entry of GET /v1/models/{name}/versions."""
    return asdict(info)


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
        self.ctx.metrics.observe_models([model_json(info) for info in self.ctx.predictions.models()])
        self.ctx.metrics.observe_anomalies(self.ctx.predictions.anomaly_totals())
        self.ctx.metrics.upkeep_backlog.set(self.ctx.predictions.upkeep_backlog())
        self.set_header("Content-Type", self.ctx.metrics.content_type)
        self.finish(self.ctx.metrics.exposition())


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(self.ctx.openapi)


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        self.write_json([model_json(info) for info in self.ctx.predictions.models()])


class TrainHandler(BaseHandler):
    async def post(self, name: str) -> None:
        self.write_json(model_json(await self.ctx.run(self.ctx.predictions.train, name, pool="training")))


class VersionsHandler(BaseHandler):
    async def get(self, name: str) -> None:
        self.write_json([version_json(v) for v in await self.ctx.run(self.ctx.predictions.versions, name)])


class RollbackHandler(BaseHandler):
    query_params = {"version": ONE}

    async def post(self, name: str) -> None:
        version = self.get_query_argument("version", None)
        if version is not None and not version.strip():
            raise InvalidInput("'version' must name a stored version (its run number or version); "
                               f"GET /v1/models/{name}/versions lists them")
        self.write_json(model_json(await self.ctx.run(self.ctx.predictions.rollback, name, version)))


class SqlHandler(BaseHandler):
    async def post(self) -> None:
        media = self.table_media()  # refused before the query runs
        try:
            sql = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the body must be one SQL query in UTF-8") from None
        if not sql.strip():
            raise InvalidInput("the body must be one SQL query")
        await self.write_table(await self.ctx.run(self._query, sql), media)

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
