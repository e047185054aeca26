"""GET /v1/models/{name}/anomalies: the values that arrived outside their one-step-ahead interval, newest
first, as JSON rows, CSV or Arrow (negotiated as the bulk forecasts are)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from http_api.base import ONE, BaseHandler
from http_api.params import parse_limit, parse_series, query_value
from pipelines.anomalies import MAX_KEPT, Anomaly
from spicepod import InvalidInput
from spicepod.timestamps import parse_iso

DEFAULT_LIMIT = 1000
FLOAT_COLUMNS = ("value", "expected", "lower", "upper", "level", "score")
SCHEMA = pa.schema([("series", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                    *((name, pa.float64()) for name in FLOAT_COLUMNS)])


def anomaly_table(anomalies: list[Anomaly]) -> pa.Table:
    """One row per anomaly: series, ts, value, expected, lower, upper, level, score."""
    stamps = np.array([a.ts for a in anomalies], dtype=np.int64).astype("datetime64[us]")
    columns = [pa.array([a.series for a in anomalies], pa.string()), pa.array(stamps, SCHEMA.field("ts").type)]
    columns += [pa.array([getattr(a, name) for a in anomalies], pa.float64()) for name in FLOAT_COLUMNS]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def parse_since(raw: str | None) -> np.datetime64 | None:
    """An ISO 8601 instant (a `Z` or an offset; none is UTC)."""
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise InvalidInput(f"since must be an ISO 8601 timestamp like 2024-01-31T00:00:00Z, got {raw[:40]!r}") from None


class AnomaliesHandler(BaseHandler):
    query_params = {"series": ONE, "since": ONE, "limit": ONE}

    async def get(self, name: str) -> None:
        media = self.table_media()
        series = parse_series(query_value(self, "series"))
        since = parse_since(query_value(self, "since"))
        limit = parse_limit(query_value(self, "limit"), MAX_KEPT, DEFAULT_LIMIT)
        table = await self.ctx.run(self._table, name, series, since, limit)
        await self.write_table(table, media)

    def _table(self, name: str, series: str | None, since: np.datetime64 | None, limit: int) -> pa.Table:
        return anomaly_table(self.ctx.predictions.anomalies(name, series, since, limit))
