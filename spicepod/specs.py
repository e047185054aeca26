"""What a spicepod declares, as frozen dataclasses; each field that is a key says how it is written.

The fields made by `key(...)` and `nested(...)` are the spicepod's keys, declared once: their check,
default and help are read from here by the loader (spicepod/schema.py) and by `--help-spicepod`.
Fields without one are derived by the loader (a source's kind, a file's resolved path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from spicepod import checks
from spicepod.checks import TIME_FORMATS
from spicepod.keys import key, nested

DATASET_FORMATS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
DATASET_MODES = ("read", "read_write")
ON_DUPLICATE = ("replace", "keep")
STRATEGIES = ("recursive", "direct")  # what a trained model is
STRATEGY_CHOICES = (*STRATEGIES, "auto")  # what a spicepod may ask for: auto picks by backtest
FILLS = ("linear", "previous", "zero", "none")
LOCAL_METHODS = ("naive", "seasonal_naive", "ets", "theta", "mstl", "croston")  # fit per series
METHODS = ("auto", "ensemble", "lightgbm", *LOCAL_METHODS)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
AGGREGATES = ("mean", "sum", "last", "min", "max")
TRAINING_ENGINES = ("local", "dask")
RETRAIN_PROMOTE = ("if_better", "always")  # does a retrained version serve at once, or only when it is better
CHALLENGER_PROMOTE = ("manual", "if_better")
MAX_BACKTEST_WINDOWS = 20
MAX_DRIFT_WINDOW = 10_000  # the latest scaled errors live accuracy keeps per model


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Guards that keep one request from taking the box down."""

    query_timeout_s: float = key(checks.positive_number, 30.0, "longest a client SQL may run",
                                 name="query_timeout_seconds")
    memory_limit: str = key(checks.size, "4GB", "DuckDB memory limit, e.g. 4GB")
    max_request_bytes: int = key(checks.positive_int, 16 * 1024 * 1024, "largest HTTP request body")
    max_horizon: int = key(checks.positive_int, 1000, "largest horizon a prediction may ask for")
    max_put_rows: int = key(checks.positive_int, 50_000_000, "most rows one DoPut stream may carry")
    max_batch_rows: int = key(checks.positive_int, 4_000_000, "most rows one DoPut record batch may carry")


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """Where model fits run: in this process, or on a Dask cluster."""

    engine: str = key(checks.one_of(*TRAINING_ENGINES), "local", "local (in this process) or dask (on a cluster)")
    scheduler: str | None = key(checks.scheduler, help="the Dask scheduler, tcp://HOST:PORT (engine dask)")


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    SECTIONS: ClassVar[dict[str, str]] = {"auth": "authentication"}

    http: str = key(checks.host_port, "127.0.0.1:3000", "HTTP listen address HOST:PORT (port 0: any free port)")
    flight: str = key(checks.host_port, "127.0.0.1:50051", "Flight listen address HOST:PORT")
    data_dir: Path = key(checks.string, Path(".flightcast"), "where stored datasets and models live")
    api_key: str | None = key(
        checks.secret, help="API key for HTTP /v1/* and Flight; ${env:NAME} reads the environment", section="auth",
    )
    limits: Limits = nested(Limits, "request and query limits")
    training: TrainingSpec = nested(TrainingSpec, "where model fits run")


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    source: str = key(checks.string, help="file:PATH (.csv .parquet .arrow .feather) or flight", name="from",
                      required=True)
    name: str = key(checks.identifier, help="SQL identifier of the dataset", required=True)
    kind: str  # "file" | "flight"
    path: Path | None  # absolute path of a file source
    format: str | None  # "csv" | "parquet" | "arrow" for file sources
    mode: str = key(checks.one_of(*DATASET_MODES), "read", "read, or read_write to accept Flight DoPut")
    time_column: str = key(checks.identifier, "ts", "the column holding each row's timestamp")
    time_format: str = key(
        checks.time_format, "timestamp",
        f"how the time column is written: {', '.join(TIME_FORMATS)}, or a strptime pattern like '%d/%m/%Y'",
    )
    series_column: str | None = key(
        checks.identifier, help="the column naming the series: the dataset then holds many",
    )
    on_duplicate: str = key(
        checks.one_of(*ON_DUPLICATE), "replace",
        "replace: one row per (series, time), the last write wins; keep: store every row",
    )
    description: str | None = key(checks.string, help="free text")

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns that identify a row: (series, time), or time alone."""
        if self.series_column:
            return (self.series_column, self.time_column)
        return (self.time_column,)


@dataclass(frozen=True, kw_only=True)
class RetrainSpec:
    """When a model trains again by itself, and whether the new version then serves."""

    after_rows: int = key(checks.non_negative_int, 0, "retrain after this many new rows (0: never by itself)")
    on_drift: bool = key(checks.boolean, False, "retrain when live accuracy drifts from the backtest")
    promote: str = key(
        checks.one_of(*RETRAIN_PROMOTE), "if_better",
        "if_better: a retrained version serves only when its backtest MASE beats the serving version's on the "
        "same origins (otherwise it is kept as a candidate); always: it serves at once",
    )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    SECTIONS: ClassVar[dict[str, str]] = {"params": "forecasting parameters"}

    source: str = key(checks.string, help="lightgbm[:TAG] to train in product, file:PATH for a saved model",
                      name="from", required=True)
    name: str = key(checks.identifier, help="the model's name", required=True)
    kind: str  # "lightgbm" | "file"
    tag: str | None  # the tag after `lightgbm:`
    path: Path | None  # absolute path of a `file:` model
    datasets: tuple[str, ...] = key(
        checks.string_list, help="datasets the model reads; the first is its data", required=True,
    )
    value_column: str | None = key(
        checks.identifier, help="the forecast column (default: the only numeric one)", section="params",
    )
    lookback: int = key(checks.positive_int, 30, "values in the lookback window", section="params")
    horizon: int = key(checks.positive_int, 1, "values predicted", section="params")
    frequency: str | None = key(checks.frequency, help="the series' step (inferred when absent)", section="params")
    strategy: str = key(
        checks.one_of(*STRATEGY_CHOICES), "recursive",
        "recursive or direct multi-step forecasting; auto keeps the better one in the backtest", section="params",
    )
    method: str = key(
        checks.one_of(*METHODS), "auto",
        "auto: each series by its best method or combination in the backtest; ensemble: always a combination; "
        "or one method for every series", section="params",
    )
    bounds: Any = key(
        checks.bounds, "auto", "auto (non-negative data gives non-negative forecasts), none, or [low, high]",
        section="params",
    )
    week_start: str | None = key(
        checks.one_of(*WEEKDAYS), help="the weekday weekly periods start on (default: Monday for finer data, "
        "the data's own weekday for weekly data)", section="params",
    )
    fill: str = key(
        checks.one_of(*FILLS), "linear", "missing periods and null values: linear, previous, zero or none",
        section="params",
    )
    aggregate: str = key(
        checks.one_of(*AGGREGATES), "mean", "several rows in one period: mean, sum, last, min or max",
        section="params",
    )
    backtest_windows: int = key(
        checks.int_range(1, MAX_BACKTEST_WINDOWS), 3, "rolling forecast origins scored before the final fit",
        section="params",
    )
    retrain_after_rows: int = key(
        checks.non_negative_int, 0, "short for retrain: {after_rows: N}", section="params",
    )
    retrain: RetrainSpec = nested(RetrainSpec, "retraining in the background, and promotion", section="params")
    challengers: tuple[str, ...] = key(
        checks.string_list, help="models on the same dataset forecast and scored live beside this one, never "
        "served under its name", section="params", factory=tuple,
    )
    promote: str = key(
        checks.one_of(*CHALLENGER_PROMOTE), "manual",
        "challengers: manual, or if_better (a challenger with a lower live MASE over at least drift_window "
        "common points serves this model's forecasts)", section="params",
    )
    covariates: tuple[Mapping[str, str], ...] = key(
        checks.covariates, help="driver columns of the dataset: a name, or {column, type: numeric|categorical, "
        "known: future|past}; future values come from rows after the newest value, or from a request",
        section="params", factory=tuple,
    )
    static: tuple[str, ...] = key(
        checks.identifier_list, help="panel columns constant within each series (categorical attributes)",
        section="params", factory=tuple,
    )
    calendar: tuple[str, ...] = key(
        checks.calendar_fields, help=f"calendar fields of each period as features: {', '.join(checks.CALENDAR_FIELDS)}",
        section="params", factory=tuple,
    )
    holidays: Mapping[str, str | None] | None = key(
        checks.holidays, help="public holidays as features: {country: US, subdivision: CA} (the holidays package)",
        section="params",
    )
    anomaly_level: float = key(
        checks.open_range(0, 100), 99.0,
        "an arriving value outside its one-step-ahead forecast's interval at this level (%) is an anomaly",
        section="params",
    )
    drift_window: int = key(
        checks.int_range(1, MAX_DRIFT_WINDOW), 50, "the latest scored points whose live MASE drift compares",
        section="params",
    )
    drift_ratio: float = key(
        checks.positive_number, 1.5, "drifting: live MASE over the drift window above this many times the backtest's",
        section="params",
    )
    lightgbm: Mapping[str, Any] = key(
        checks.scalar_mapping, help="parameters handed to LightGBM (num_boost_round included)", section="params",
        factory=dict,
    )
    description: str | None = key(checks.string, help="free text")

    @property
    def dataset(self) -> str:
        """The model's data: the first of its datasets."""
        return self.datasets[0]


@dataclass(frozen=True, kw_only=True)
class Spicepod:
    path: Path  # absolute path of the spicepod file
    version: str = key(checks.one_of("v1", "v1beta1"), help="spicepod format version", required=True)
    kind: str = key(checks.one_of("Spicepod"), help="always Spicepod", required=True)
    name: str = key(checks.string, help="the spicepod's name", required=True)
    runtime: RuntimeSpec = nested(RuntimeSpec, "listen addresses, data dir, auth, limits", apart=True)
    datasets: tuple[DatasetSpec, ...] = nested(DatasetSpec, "the datasets the Flight server holds", many=True,
                                               apart=True)
    models: tuple[ModelSpec, ...] = nested(ModelSpec, "the forecasting models", many=True, apart=True)
