"""The OpenAPI 3.1 document of the HTTP API (served at GET /v1/openapi.json).

Written by hand, route by route; tests/test_openapi.py keeps it equal to the app's route table, and
keeps each operation's statuses equal to those its route answers.
"""

from __future__ import annotations

import copy
from typing import Any

from http_api.base import OPEN_PATHS
from http_api.formats import ARROW_STREAM, CSV, JSON, PARQUET, PARQUET_LEGACY, PROMETHEUS, TABLE_ENCODINGS, TEXT
from http_api.openapi_schemas import SCHEMAS, ref
from spicepod.constants import MAX_SERIES_ID_BYTES


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _text(description: str, example: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}, "example": example}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


DATA_NODE_DOWN = _error("the data node (Flight server) cannot be reached")
UNKNOWN_MODEL = _error("unknown model, or an empty name (no route for the path)")

BINARY = {"schema": {"type": "string", "contentEncoding": "binary"}}
# A table answer (SQL results, bulk forecasts) in each format http_api.formats.TABLE_ENCODINGS serves.
TABLE_CONTENT = {
    JSON: {"schema": ref("SqlRows")},
    CSV: {"schema": {"type": "string"}},
    ARROW_STREAM: BINARY,
    PARQUET: BINARY,
    PARQUET_LEGACY: BINARY,
}

MODEL_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "a model name from the spicepod"}
HORIZON = {"name": "horizon", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
           "description": "steps to predict (default: the model's horizon); at most the runtime's "
                          "limits.max_horizon (default 1000), and at most the model's horizon for the "
                          "direct strategy: a larger one gets 400"}
SERIES = {"name": "series", "in": "query", "required": False,
          "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SERIES_ID_BYTES},
          "description": "the series of a panel model (required for panel models, refused for others)"}
LEVELS = {"name": "level", "in": "query", "required": False, "style": "form", "explode": True,
          "schema": {"type": "array", "maxItems": 5,
                     "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100}},
          "description": "prediction interval levels in percent, repeatable: ?level=80&level=95"}
EXPLAIN = {"name": "explain", "in": "query", "required": False,
           "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
           "description": "true: add each input group's contributions to every step (LightGBM SHAP values)"}

# path -> method -> operation: the statuses particular to the route. build_openapi adds those every route
# may answer (COMMON_RESPONSES).
PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/health": {
        "get": {
            "operationId": "health", "summary": "Liveness: the process answers",
            "responses": {"200": _text("alive", "ok")},
        },
    },
    "/metrics": {
        "get": {
            "operationId": "metrics", "summary": "Prometheus metrics in the text exposition format",
            "responses": {"200": {"description": "metrics",
                                  "content": {PROMETHEUS: {"schema": {"type": "string"}}}},
                          "503": DATA_NODE_DOWN},
        },
    },
    "/v1/openapi.json": {
        "get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
        },
    },
    "/v1/ready": {
        "get": {
            "operationId": "ready",
            "summary": "Readiness: every dataset loaded and every model trained or failed with a reason",
            "responses": {"200": _text("ready", "ready"), "503": _text("still loading or training", "not ready")},
        },
    },
    "/v1/datasets": {
        "get": {
            "operationId": "listDatasets", "summary": "The datasets with their schema, row count and time range",
            "responses": {"200": _json({"type": "array", "items": ref("Dataset")}, "the datasets"),
                          "503": DATA_NODE_DOWN},
        },
    },
    "/v1/models": {
        "get": {
            "operationId": "listModels", "summary": "The models with their version, status and scores",
            "responses": {"200": _json({"type": "array", "items": ref("Model")}, "the models")},
        },
    },
    "/v1/models/{name}/predict": {
        "get": {
            "operationId": "predict", "summary": "Forecast the steps after the newest timestamp of the model's data",
            "parameters": [MODEL_NAME, HORIZON, SERIES, LEVELS, EXPLAIN],
            "responses": {
                "200": _json(ref("PredictSuccess"), "the forecast"),
                "400": _json(ref("PredictError"),
                             "unknown model, model not trained or failed, not enough data, bad horizon, an "
                             "unknown query parameter or horizon given twice"),
                "404": _error("an empty model name: no route for the path (an unknown model is a 400)"),
                "500": _json(ref("PredictError"), "unexpected failure (details in the server log)"),
            },
        },
    },
    "/v1/models/{name}/train": {
        "post": {
            "operationId": "train", "summary": "Train the model again on the current data and wait for it",
            "parameters": [MODEL_NAME],
            "responses": {
                "200": _json(ref("Model"), "the model's entry after training"),
                "400": _error("the model's dataset has no values yet, or a query parameter"),
                "404": UNKNOWN_MODEL,
                "503": _error("the data node or the training cluster cannot be reached"),
            },
        },
    },
    "/v1/models/{name}/versions": {
        "get": {
            "operationId": "listVersions",
            "summary": "The model's stored versions, newest first: metrics, which one serves, which is a candidate",
            "parameters": [MODEL_NAME],
            "responses": {
                "200": _json({"type": "array", "items": ref("Version")}, "the stored versions"),
                "400": _error("a query parameter"),
                "404": UNKNOWN_MODEL,
            },
        },
    },
    "/v1/models/{name}/rollback": {
        "post": {
            "operationId": "rollback",
            "summary": "Serve a stored version again (default: the one served before the current); persisted, "
                       "the same on every serve node, and no forecast of the replaced version after it returns",
            "parameters": [MODEL_NAME, {
                "name": "version", "in": "query", "required": False, "schema": {"type": "string", "minLength": 1},
                "description": "a run number or version from GET /v1/models/{name}/versions"}],
            "responses": {
                "200": _json(ref("Model"), "the model's entry, serving the version asked for"),
                "400": _error("no earlier version to go back to, a version trained from another spec, a model "
                              "not trained yet, or a query parameter"),
                "404": _error("unknown model or stored version, or an empty name (no route for the path)"),
                "503": DATA_NODE_DOWN,
            },
        },
    },
    "/v1/models/{name}/series": {
        "get": {
            "operationId": "listSeries", "summary": "The series of a model's dataset, by id (searchable)",
            "parameters": [
                MODEL_NAME,
                {"name": "q", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "keep the series whose id contains this text, ignoring case"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000000},
                 "description": "at most this many entries, the first by id (default: all)"},
            ],
            "responses": {
                "200": {
                    **_json({"type": "array", "items": ref("Series")}, "one entry per (matching) series, by id"),
                    "headers": {"X-Total-Count": {
                        "schema": {"type": "integer"},
                        "description": "how many series matched q, before limit",
                    }},
                },
                "400": _error("the model is not trained yet or failed, bad limit, or a query parameter"),
                "404": UNKNOWN_MODEL,
                "503": DATA_NODE_DOWN,
            },
        },
    },
    "/v1/models/{name}/forecasts": {
        "get": {
            "operationId": "bulkForecasts",
            "summary": "Forecasts of every ready series (or the named ones) in long form: series, ts, value, "
                       "lower_L and upper_L per level",
            "parameters": [
                MODEL_NAME, HORIZON,
                {"name": "series", "in": "query", "required": False, "style": "form", "explode": True,
                 "schema": {"type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": MAX_SERIES_ID_BYTES}},
                 "description": "series to forecast, repeatable (default: every ready series)"},
                LEVELS,
                {"name": "Accept", "in": "header", "required": False,
                 "schema": {"type": "string", "examples": list(TABLE_ENCODINGS)},
                 "description": "JSON rows by default; CSV, Arrow IPC stream or Parquet on request"},
            ],
            "responses": {
                "200": {
                    "description": "one row per series and step",
                    "content": TABLE_CONTENT,
                },
                "400": _error("unknown series, model not ready, bad horizon or level, or a query parameter"),
                "404": UNKNOWN_MODEL,
                "406": _error("the Accept header accepts none of the formats this route serves"),
                "503": DATA_NODE_DOWN,
            },
        },
    },
    "/v1/models/{name}/history": {
        "get": {
            "operationId": "history",
            "summary": "The latest points of a series exactly as the model sees it (on its grid, filled)",
            "parameters": [
                MODEL_NAME, SERIES,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100000},
                 "description": "points (default 200)"},
            ],
            "responses": {
                "200": _json(ref("History"), "the series' latest points"),
                "400": _error("unknown series, model not ready, bad limit, or a query parameter"),
                "404": UNKNOWN_MODEL,
                "503": DATA_NODE_DOWN,
            },
        },
    },
    "/v1/models/{name}/anomalies": {
        "get": {
            "operationId": "anomalies",
            "summary": "Values that arrived outside the interval of their one-step-ahead forecast, newest first",
            "parameters": [
                MODEL_NAME,
                {**SERIES, "description": "only this series of a panel model (refused for others)"},
                {"name": "since", "in": "query", "required": False, "schema": {"type": "string", "format": "date-time"},
                 "description": "only periods from this instant on (ISO 8601; without an offset, UTC)"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                 "description": "rows (default 1000)"},
                {"name": "Accept", "in": "header", "required": False,
                 "schema": {"type": "string", "examples": list(TABLE_ENCODINGS)},
                 "description": "JSON rows by default; CSV, Arrow IPC stream or Parquet on request"},
            ],
            "responses": {
                "200": {
                    "description": "one row per anomaly: series, ts, value, expected, lower, upper, level, score",
                    "content": {**TABLE_CONTENT, JSON: {"schema": {"type": "array", "items": ref("Anomaly")}}},
                },
                "400": _error("series of a single-series model, bad since or limit, or a query parameter"),
                "404": UNKNOWN_MODEL,
                "406": _error("the Accept header accepts none of the formats this route serves"),
            },
        },
    },
    "/v1/predict": {
        "post": {
            "operationId": "batchPredict", "summary": "Forecast several models at once, concurrently",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("BatchPredictRequest")}}},
            "responses": {
                "200": _json(ref("BatchPredictResponse"), "one result per item, each with its own status"),
                "400": _error("body not JSON, no 'predictions' list, an item without a string 'model_name', or a "
                              "query parameter"),
            },
        },
    },
    "/v1/sql": {
        "post": {
            "operationId": "sql", "summary": "Run one read-only SQL query over the datasets",
            "requestBody": {"required": True, "content": {TEXT: {
                "schema": {"type": "string", "minLength": 1, "pattern": "\\S",
                           "description": "one SQL query in UTF-8; an empty or blank body gets 400"},
                "example": "SELECT * FROM nile LIMIT 3"}}},
            "parameters": [
                {"name": "Accept", "in": "header", "required": False,
                 "schema": {"type": "string", "examples": list(TABLE_ENCODINGS)},
                 "description": f"the result format, negotiated as HTTP says (q values, wildcards): JSON rows "
                                f"(the default, also without the header), {CSV}, {ARROW_STREAM} or Parquet "
                                f"({PARQUET} or {PARQUET_LEGACY}); timestamps are UTC (Arrow and Parquet: "
                                "timestamp[us, tz=UTC]). A header that accepts none of them gets 406"},
            ],
            "responses": {
                "200": {
                    "description": "the result",
                    "content": TABLE_CONTENT,
                },
                "406": _error("the Accept header accepts none of the formats this route serves"),
                "400": _error("empty body, bad SQL, a write statement, a result over the row or size limit, or a "
                              "query parameter"),
                "503": DATA_NODE_DOWN,
            },
        },
    },
}


# What any route may answer: the checks of BaseHandler.prepare (query parameters, the size of a body, of any
# method) and tornado's method check; and a failure nobody expected.
COMMON_RESPONSES: dict[str, dict[str, Any]] = {
    "400": _error("an unknown query parameter, or a single-valued one given twice"),
    "405": _error("method not allowed on this path"),
    "413": _error("body larger than the runtime's max_request_bytes"),
    "500": _error("unexpected failure (details in the server log)"),
}


def build_openapi(*, api_key: bool, version: str = "0.1.0") -> dict[str, Any]:
    """The document; with `api_key`, protected operations declare the X-API-Key scheme and a 401."""
    paths = copy.deepcopy(PATHS)
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            for status, response in COMMON_RESPONSES.items():
                responses.setdefault(status, copy.deepcopy(response))
            if api_key and path not in OPEN_PATHS:
                # /metrics also takes the key as a bearer token, the way Prometheus scrapers send it.
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}] if path == "/metrics" else [{"ApiKey": []}]
                responses["401"] = _error("missing or wrong X-API-Key header")
            operation["responses"] = dict(sorted(responses.items()))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "flightcast",
            "version": version,
            "description": "Time-series forecasting runtime: predictions, models, datasets and SQL over HTTP.",
        },
        "paths": paths,
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }
    if api_key:
        doc["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer", "description": "the API key; accepted on /metrics only"},
        }
    return doc
