"""The component schemas of the OpenAPI document (http_api.openapi): the bodies the API answers with."""

from __future__ import annotations

from typing import Any

from http_api.base import HTTP_STATUS_NAMES, status_name


def ref(name: str) -> dict[str, str]:
    """A reference to one of SCHEMAS."""
    return {"$ref": f"#/components/schemas/{name}"}


NUMBER_OR_NULL = {"type": ["number", "null"]}
STRING_OR_NULL = {"type": ["string", "null"]}
CONTRIBUTIONS = {
    "type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}},
    "description": "explain=true: per input group (level, lags, season, calendar, holidays, each covariate and "
                   "static attribute; a portfolio's local methods by name), its share of each step in the "
                   "prediction's units, from LightGBM's SHAP values; per step the groups sum to the prediction",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error body. Predict routes add model_name and lookback when known.",
        "required": ["status", "error_message", "duration_ms"],
        "properties": {
            "status": {
                "type": "string",
                "enum": sorted(set(HTTP_STATUS_NAMES.values())),
            },
            "error_message": {"type": "string"},
            "duration_ms": {"type": "number"},
            "model_name": {"type": "string"},
            "lookback": {"type": "integer"},
        },
    },
    "PredictSuccess": {
        "type": "object",
        "required": ["status", "model_name", "model_version", "lookback", "prediction", "duration_ms",
                     "horizon", "timestamps"],
        "properties": {
            "status": {"const": "Success"},
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "lookback": {"type": "integer"},
            "prediction": {"type": "array", "items": {"type": "number"}},
            "duration_ms": {"type": "number"},
            "horizon": {"type": "integer"},
            "timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}},
            "series": {"type": "string", "description": "the series forecast (panel models)"},
            "method": {"type": "string",
                       "description": "the method the series is forecast by; a combination joins names with '+'"},
            "contributions": CONTRIBUTIONS,
            "intervals": {
                "type": "object",
                "description": "per requested level, keyed as given (\"80\", \"97.5\"): conformal bounds, "
                               "each horizon long, lower <= prediction <= upper",
                "additionalProperties": {
                    "type": "object", "required": ["lower", "upper"],
                    "properties": {"lower": {"type": "array", "items": {"type": "number"}},
                                   "upper": {"type": "array", "items": {"type": "number"}}},
                },
            },
        },
    },
    "PredictError": {
        "type": "object",
        "required": ["status", "error_message", "model_name", "duration_ms"],
        "properties": {
            "status": {"enum": [status_name(400), status_name(500)]},
            "error_message": {"type": "string"},
            "model_name": {"type": "string"},
            "lookback": {"type": "integer", "description": "present when the model is known"},
            "duration_ms": {"type": "number"},
        },
    },
    "PredictResult": {"oneOf": [ref("PredictSuccess"), ref("PredictError")]},
    "BatchPredictRequest": {
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["model_name"],
                    "properties": {
                        "model_name": {"type": "string"},
                        "horizon": {"type": "integer", "minimum": 1,
                                    "description": "steps to predict (default: the model's horizon)"},
                        "series": {"type": "string", "description": "the series of a panel model"},
                        "level": {"type": "array", "maxItems": 5,
                                  "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                                  "description": "prediction interval levels in percent"},
                        "covariates": {
                            "type": "object", "required": ["timestamps"],
                            "description": "future values of the model's known-future covariates, one per "
                                           "timestamp; they win over stored rows for those periods",
                            "properties": {"timestamps": {"type": "array", "minItems": 1,
                                                          "items": {"type": "string", "format": "date-time"}}},
                            "additionalProperties": {"type": "array",
                                                     "items": {"type": ["number", "string", "boolean", "null"]}},
                        },
                        "explain": {"type": "boolean", "description": "add each input group's contributions"},
                    },
                },
                "description": "an item that is not an object with a string model_name fails the whole request "
                               "with 400; any other bad item (unknown model, bad horizon) gets its own "
                               "BadRequest result and the batch still answers 200",
            },
        },
    },
    "BatchPredictResponse": {
        "type": "object",
        "required": ["duration_ms", "predictions"],
        "properties": {
            "duration_ms": {"type": "number"},
            "predictions": {
                "type": "array", "items": ref("PredictResult"),
                "description": "one body per requested item, in request order",
            },
        },
    },
    "Dataset": {
        "type": "object",
        "required": ["name", "from", "mode", "time_column", "rows", "columns", "first_timestamp",
                     "last_timestamp"],
        "properties": {
            "name": {"type": "string"},
            "from": {"type": "string"},
            "mode": {"enum": ["read", "read_write"]},
            "time_column": {"type": "string"},
            "rows": {"type": "integer"},
            "columns": {
                "type": "array",
                "items": {
                    "type": "object", "required": ["name", "type"],
                    "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                },
            },
            "first_timestamp": STRING_OR_NULL,
            "last_timestamp": STRING_OR_NULL,
        },
    },
    "Model": {
        "type": "object",
        "required": ["name", "from", "datasets", "model_version", "status", "lookback", "horizon", "frequency",
                     "trained_at", "training_rows", "metrics"],
        "properties": {
            "name": {"type": "string"},
            "from": {"type": "string"},
            "datasets": {"type": "array", "items": {"type": "string"}},
            "model_version": STRING_OR_NULL,
            "status": {"enum": ["ready", "training", "failed"]},
            "error_message": {"type": "string", "description": "why the last training failed"},
            "lookback": {"type": "integer"},
            "horizon": {"type": "integer"},
            "strategy": {"enum": ["recursive", "direct", "auto"],
                         "description": "the strategy trained (auto before a version exists)"},
            "feature_importance": {"type": "object", "additionalProperties": {"type": "number"},
                                   "description": "each input group's share of the LightGBM model's total gain"},
            "methods": {"type": "object", "description": "each candidate method's backtest MASE and series served",
                        "additionalProperties": {"type": "object", "properties": {
                            "mase": {"type": ["number", "null"]}, "series": {"type": "integer"}}}},
            "strategy_mase": {"type": ["object", "null"],
                              "description": "strategy auto: each candidate's backtest MASE"},
            "frequency": STRING_OR_NULL,
            "trained_at": STRING_OR_NULL,
            "training_rows": {"type": ["integer", "null"], "description": "grid periods trained on"},
            "series_count": {"type": ["integer", "null"], "description": "series the model was trained on"},
            "metrics": {
                "type": "object", "required": ["mase", "smape"],
                "description": "backtest means over rolling origins (and over series for panels)",
                "properties": {"mase": NUMBER_OR_NULL, "smape": NUMBER_OR_NULL,
                               "backtest_windows": {"type": ["integer", "null"]}},
            },
            "intervals": {
                "type": "object",
                "properties": {"calibration_errors": {
                    "type": ["integer", "null"],
                    "description": "backtest errors behind the intervals (the fewest of any horizon step)"}},
            },
            "live_metrics": {
                "type": ["object", "null"],
                "description": "served forecasts scored against the actuals that arrived (null before any)",
                "properties": {
                    "mase": NUMBER_OR_NULL, "smape": NUMBER_OR_NULL, "coverage_80": NUMBER_OR_NULL,
                    "points": {"type": "integer"},
                    "drift": {"type": ["number", "null"],
                              "description": "live MASE over the latest drift_window points / backtest MASE"},
                },
            },
            "health": {"enum": ["ok", "drifting"],
                       "description": "drifting: drift above drift_ratio over a whole drift_window of points"},
            "candidate": {
                "type": "object", "required": ["version", "run", "mase", "serving_mase"],
                "description": "a retrained version kept without serving (retrain.promote if_better): its "
                               "backtest MASE did not beat the serving version's on the same origins",
                "properties": {"version": {"type": "string"}, "run": {"type": "integer"}, "mase": NUMBER_OR_NULL,
                               "serving_mase": NUMBER_OR_NULL, "trained_at": {"type": "string"}},
            },
            "challengers": {
                "type": "object", "description": "each challenger's live metrics on this model's scored points",
                "additionalProperties": {"type": "object"},
            },
        },
    },
    "Anomaly": {
        "type": "object",
        "required": ["series", "ts", "value", "expected", "lower", "upper", "level", "score"],
        "properties": {
            "series": STRING_OR_NULL,
            "ts": {"type": "string", "format": "date-time", "description": "the period the value is for"},
            "value": {"type": "number", "description": "the value that arrived"},
            "expected": {"type": "number", "description": "the one-step-ahead forecast from the data before it"},
            "lower": {"type": "number"},
            "upper": {"type": "number"},
            "level": {"type": "number", "description": "the interval's level (the model's anomaly_level)"},
            "score": {"type": "number", "description": "|value - expected| / the interval's half-width"},
        },
    },
    "Version": {
        "type": "object",
        "required": ["version", "run", "trained_at", "training_rows", "metrics", "serving", "candidate", "servable"],
        "properties": {
            "version": {"type": "string", "description": "the model_version (the tag, or the run number)"},
            "run": {"type": "integer", "description": "the run number, unique per model"},
            "trained_at": {"type": "string"},
            "training_rows": {"type": "integer"},
            "metrics": {"type": "object", "properties": {"mase": NUMBER_OR_NULL, "smape": NUMBER_OR_NULL}},
            "serving": {"type": "boolean"},
            "candidate": {"type": "boolean"},
            "servable": {"type": "boolean", "description": "trained from the current spec: rollback may serve it"},
        },
    },
    "Series": {
        "type": "object",
        "required": ["series", "rows", "first_timestamp", "last_timestamp", "status"],
        "properties": {
            "series": STRING_OR_NULL,
            "rows": {"type": "integer"},
            "first_timestamp": STRING_OR_NULL,
            "last_timestamp": STRING_OR_NULL,
            "status": {"enum": ["ready", "too_short"]},
        },
    },
    "History": {
        "type": "object",
        "required": ["series", "timestamps", "values"],
        "properties": {
            "series": STRING_OR_NULL,
            "timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}},
            "values": {"type": "array", "items": {"type": "number"}},
        },
    },
    "SqlRows": {
        "type": "array",
        "description": "one object per row, column name to value; timestamps as ISO 8601 text",
        "items": {"type": "object"},
    },
}
