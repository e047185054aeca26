"""The spicepod.yaml schema: every key declared once, with its type, default and a line of help.

`load_spicepod(path)` reads the file with `yaml.safe_load`, substitutes `${env:NAME}`, validates every
entry strictly and returns frozen dataclasses. Any problem raises `SpicepodError` whose message names
the file, the entry and the key, e.g.
`spicepod.yaml: models[1] (co2_b): unknown key 'lookbak'; expected one of frequency, horizon, ...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spicepod.addresses import parse_host_port
from spicepod.errors import SpicepodError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FREQUENCY = re.compile(r"^(\d*)(s|min|h|d|w|mo|q|y)$")
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)

DATASET_FORMATS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
TIME_FORMATS = ("timestamp", "timestamptz", "unix_seconds", "unix_millis", "ISO8601")
DATASET_MODES = ("read", "read_write")
ON_DUPLICATE = ("replace", "keep")
STRATEGIES = ("recursive", "direct")  # what a trained model is
STRATEGY_CHOICES = (*STRATEGIES, "auto")  # what a spicepod may ask for: auto picks by backtest
FILLS = ("linear", "previous", "zero", "none")
AGGREGATES = ("mean", "sum", "last", "min", "max")
TRAINING_ENGINES = ("local", "dask")
MAX_BACKTEST_WINDOWS = 20


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for DuckDB (names are validated, and quoted anyway)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Limits:
    """Guards that keep one request from taking the box down."""

    query_timeout_s: float = 30.0
    memory_limit: str = "4GB"
    max_request_bytes: int = 16 * 1024 * 1024
    max_horizon: int = 1000
    max_put_rows: int = 50_000_000
    max_batch_rows: int = 4_000_000


@dataclass(frozen=True)
class TrainingSpec:
    """Where model fits run: in this process, or on a Dask cluster."""

    engine: str = "local"
    scheduler: str | None = None  # tcp://HOST:PORT of the Dask scheduler (engine dask)


@dataclass(frozen=True)
class RuntimeSpec:
    http: str = "127.0.0.1:3000"
    flight: str = "127.0.0.1:50051"
    data_dir: Path = Path(".flightcast")
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    training: TrainingSpec = field(default_factory=lambda: TrainingSpec())


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    source: str  # the `from` value as written
    kind: str  # "file" | "flight"
    path: Path | None  # absolute path of a file source
    format: str | None  # "csv" | "parquet" | "arrow" for file sources
    mode: str = "read"
    time_column: str = "ts"
    time_format: str = "timestamp"
    series_column: str | None = None  # set: the dataset holds many series in long form
    on_duplicate: str = "replace"  # replace: one row per (series, time), the last write wins | keep
    description: str | None = None

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns that identify a row: (series, time), or time alone."""
        if self.series_column:
            return (self.series_column, self.time_column)
        return (self.time_column,)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # the `from` value as written
    kind: str  # "lightgbm" | "file"
    tag: str | None  # the tag after `lightgbm:`
    path: Path | None  # absolute path of a `file:` model
    datasets: tuple[str, ...]
    value_column: str | None = None
    lookback: int = 30
    horizon: int = 1
    frequency: str | None = None
    strategy: str = "recursive"
    fill: str = "linear"
    aggregate: str = "mean"
    backtest_windows: int = 3
    retrain_after_rows: int = 0
    lightgbm: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None

    @property
    def dataset(self) -> str:
        """The model's data: the first of its datasets."""
        return self.datasets[0]


@dataclass(frozen=True)
class Spicepod:
    path: Path  # absolute path of the spicepod file
    name: str
    version: str
    runtime: RuntimeSpec
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]


# --- the declared keys -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    """One spicepod key: its check, its default and a line of help."""

    check: Callable[[Any, str], Any]
    default: Any = None
    required: bool = False
    help: str = ""


class _Invalid(Exception):
    """Raised by checks; turned into a SpicepodError with the file and entry prefixed."""


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _identifier(value: Any, key: str) -> str:
    value = _string(value, key)
    if not IDENTIFIER.match(value):
        raise _Invalid(f"'{key}' must be an SQL identifier ([A-Za-z_][A-Za-z0-9_]*), got {value!r}")
    return value


def _one_of(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if value not in choices:
            raise _Invalid(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid(f"'{key}' must be a positive integer, got {value!r}")
    return value


def _int_range(low: int, high: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(f"'{key}' must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _non_negative_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"'{key}' must be an integer >= 0, got {value!r}")
    return value


def _time_format(value: Any, key: str) -> str:
    """A named format, or a strptime pattern (anything with a %)."""
    if value in TIME_FORMATS:
        return value
    if isinstance(value, str) and "%" in value:
        return value
    raise _Invalid(
        f"'{key}' must be one of {', '.join(TIME_FORMATS)} or a strptime pattern with a % "
        f"(e.g. '%Y', '%d/%m/%Y %H:%M'), got {value!r}"
    )


def _scheduler(value: Any, key: str) -> str:
    value = _string(value, key)
    try:
        if not value.startswith("tcp://"):
            raise ValueError(value)
        parse_host_port(value[len("tcp://"):])
    except ValueError:
        raise _Invalid(f"'{key}' must be tcp://HOST:PORT, got {value!r}") from None
    return value


def _positive_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _Invalid(f"'{key}' must be a positive number, got {value!r}")
    return float(value)


def _host_port(value: Any, key: str) -> str:
    value = _string(value, key)
    try:
        parse_host_port(value)
    except ValueError:
        raise _Invalid(f"'{key}' must be HOST:PORT with a port from 0 to 65535, got {value!r}") from None
    return value


def _frequency(value: Any, key: str) -> str:
    value = _string(value, key)
    match = FREQUENCY.match(value)
    if not match or (match[1] and int(match[1]) == 0):
        raise _Invalid(
            f"'{key}' must be a step like 15min, 1h, 1d, 1w, 1mo, 1q or 1y "
            f"(units s, min, h, d, w, mo, q, y), got {value!r}"
        )
    return value


def _size(value: Any, key: str) -> str:
    value = _string(value, key)
    if not SIZE.match(value):
        raise _Invalid(f"'{key}' must be a size like 512MB or 4GB, got {value!r}")
    return value


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _Invalid(f"'{key}' must be a non-empty list of names, got {value!r}")
    return tuple(value)


def _scalar_mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"'{key}' must be a mapping, got {value!r}")
    for name, item in value.items():
        if not isinstance(name, str) or not (item is None or isinstance(item, (str, int, float, bool))):
            raise _Invalid(f"'{key}.{name}' must be a string, number or boolean, got {item!r}")
    return dict(value)


def _section(keys: dict[str, Key]) -> Callable[[Any, str], dict[str, Any]]:
    def check(value: Any, key: str) -> dict[str, Any]:
        if value is None:
            value = {}
        return _validate(value, keys, key)

    return check


TOP_KEYS: dict[str, Key] = {
    "version": Key(_one_of("v1", "v1beta1"), required=True, help="spicepod format version"),
    "kind": Key(_one_of("Spicepod"), required=True, help="always Spicepod"),
    "name": Key(_string, required=True, help="the spicepod's name"),
    "runtime": Key(lambda v, k: v, default=None, help="listen addresses, data dir, auth, limits"),
    "datasets": Key(lambda v, k: v, default=None, help="the datasets the Flight server holds"),
    "models": Key(lambda v, k: v, default=None, help="the forecasting models"),
}

def _secret(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        shown = "''" if value == "" else f"a {type(value).__name__} (quote the key in YAML)"  # never the value
        raise _Invalid(f"'{key}' must be a non-empty string, got {shown}")
    return value


AUTH_KEYS: dict[str, Key] = {
    "api_key": Key(_secret, help="API key for HTTP /v1/* and Flight; ${env:NAME} reads the environment"),
}

LIMIT_KEYS: dict[str, Key] = {
    "query_timeout_seconds": Key(_positive_number, Limits.query_timeout_s, help="longest a client SQL may run"),
    "memory_limit": Key(_size, Limits.memory_limit, help="DuckDB memory limit, e.g. 4GB"),
    "max_request_bytes": Key(_positive_int, Limits.max_request_bytes, help="largest HTTP request body"),
    "max_horizon": Key(_positive_int, Limits.max_horizon, help="largest horizon a prediction may ask for"),
    "max_put_rows": Key(_positive_int, Limits.max_put_rows, help="most rows one DoPut stream may carry"),
    "max_batch_rows": Key(_positive_int, Limits.max_batch_rows, help="most rows one DoPut record batch may carry"),
}

TRAINING_KEYS: dict[str, Key] = {
    "engine": Key(_one_of(*TRAINING_ENGINES), "local", help="local (in this process) or dask (on a cluster)"),
    "scheduler": Key(_scheduler, help="the Dask scheduler, tcp://HOST:PORT (engine dask)"),
}

RUNTIME_KEYS: dict[str, Key] = {
    "http": Key(_host_port, RuntimeSpec.http, help="HTTP listen address HOST:PORT (port 0: any free port)"),
    "flight": Key(_host_port, RuntimeSpec.flight, help="Flight listen address HOST:PORT"),
    "data_dir": Key(_string, str(RuntimeSpec.data_dir), help="where stored datasets and models live"),
    "auth": Key(_section(AUTH_KEYS), help="authentication"),
    "limits": Key(_section(LIMIT_KEYS), help="request and query limits"),
    "training": Key(_section(TRAINING_KEYS), help="where model fits run"),
}

DATASET_KEYS: dict[str, Key] = {
    "from": Key(_string, required=True, help="file:PATH (.csv .parquet .arrow .feather) or flight"),
    "name": Key(_identifier, required=True, help="SQL identifier of the dataset"),
    "mode": Key(_one_of(*DATASET_MODES), "read", help="read, or read_write to accept Flight DoPut"),
    "time_column": Key(_identifier, "ts", help="the column holding each row's timestamp"),
    "time_format": Key(
        _time_format, "timestamp",
        help=f"how the time column is written: {', '.join(TIME_FORMATS)}, or a strptime pattern like '%d/%m/%Y'",
    ),
    "series_column": Key(_identifier, help="the column naming the series: the dataset then holds many"),
    "on_duplicate": Key(
        _one_of(*ON_DUPLICATE), "replace",
        help="replace: one row per (series, time), the last write wins; keep: store every row",
    ),
    "description": Key(_string, help="free text"),
}

PARAM_KEYS: dict[str, Key] = {
    "value_column": Key(_identifier, help="the forecast column (default: the only numeric one)"),
    "lookback": Key(_positive_int, 30, help="values in the lookback window"),
    "horizon": Key(_positive_int, 1, help="values predicted"),
    "frequency": Key(_frequency, help="the series' step (inferred when absent)"),
    "strategy": Key(
        _one_of(*STRATEGY_CHOICES), "recursive",
        help="recursive or direct multi-step forecasting; auto keeps the better one in the backtest",
    ),
    "fill": Key(_one_of(*FILLS), "linear", help="missing periods and null values: linear, previous, zero or none"),
    "aggregate": Key(_one_of(*AGGREGATES), "mean", help="several rows in one period: mean, sum, last, min or max"),
    "backtest_windows": Key(
        _int_range(1, MAX_BACKTEST_WINDOWS), 3, help="rolling forecast origins scored before the final fit",
    ),
    "retrain_after_rows": Key(
        _non_negative_int, 0, help="retrain in the background after this many new rows (0: never by itself)",
    ),
    "lightgbm": Key(_scalar_mapping, help="parameters handed to LightGBM (num_boost_round included)"),
}

MODEL_KEYS: dict[str, Key] = {
    "from": Key(_string, required=True, help="lightgbm[:TAG] to train in product, file:PATH for a saved model"),
    "name": Key(_identifier, required=True, help="the model's name"),
    "datasets": Key(_string_list, required=True, help="datasets the model reads; the first is its data"),
    "params": Key(_section(PARAM_KEYS), help="forecasting parameters"),
    "description": Key(_string, help="free text"),
}


def _validate(value: Any, keys: dict[str, Key], where: str) -> dict[str, Any]:
    """Check a mapping against declared keys; return it with defaults filled in."""
    if not isinstance(value, dict):
        # A string is not echoed: a misplaced value may be a key (`auth: <key>` instead of `auth: {api_key: ...}`).
        shown = "a string" if isinstance(value, str) else repr(value)
        raise _Invalid(f"'{where}' must be a mapping, got {shown}")
    for name in value:
        if name not in keys:
            raise _Invalid(f"unknown key '{name}'; expected one of {', '.join(sorted(keys))}")
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name in value and value[name] is not None:
            out[name] = key.check(value[name], name)
        elif key.required:
            raise _Invalid(f"missing required key '{name}'")
        else:
            out[name] = key.default
    return out


def describe_keys() -> str:
    """Every spicepod key with its default and help, as `flightcast run --help-spicepod` prints it."""
    lines: list[str] = []

    def section(title: str, keys: dict[str, Key], indent: str) -> None:
        lines.append(f"{indent}{title}:")
        for name, key in keys.items():
            default = "" if key.default is None else f" (default {key.default})"
            required = " (required)" if key.required else ""
            lines.append(f"{indent}  {name}{required}{default}: {key.help}")

    section("top level", TOP_KEYS, "")
    section("runtime", RUNTIME_KEYS, "")
    section("runtime.auth", AUTH_KEYS, "")
    section("runtime.limits", LIMIT_KEYS, "")
    section("runtime.training", TRAINING_KEYS, "")
    section("datasets[]", DATASET_KEYS, "")
    section("models[]", MODEL_KEYS, "")
    section("models[].params", PARAM_KEYS, "")
    return "\n".join(lines) + "\n"


# --- loading -----------------------------------------------------------------------------------------

class _FromEnv(str):
    """A value read from the environment: messages show where it came from, never the value (it may be a key)."""

    def __new__(cls, value: str, written: str) -> _FromEnv:
        obj = super().__new__(cls, value)
        obj.written = written
        return obj

    def __repr__(self) -> str:
        return repr(self.written)


def _substitute_env(node: Any, env: Mapping[str, str], trail: str) -> Any:
    if isinstance(node, str):
        def repl(match: re.Match[str]) -> str:
            if match[1] not in env:
                raise _Invalid(f"{trail}: environment variable {match[1]} is not set")
            return env[match[1]]

        substituted = ENV_REF.sub(repl, node)
        return substituted if substituted == node else _FromEnv(substituted, node)
    if isinstance(node, list):
        return [_substitute_env(item, env, f"{trail}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, dict):
        return {k: _substitute_env(v, env, f"{trail}.{k}" if trail else str(k)) for k, v in node.items()}
    return node


def _entries(doc: dict[str, Any], section: str) -> list[Any]:
    entries = doc.get(section)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _Invalid(f"'{section}' must be a list, got {entries!r}")
    return entries


def _entry_label(section: str, index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{section}[{index}] ({name})" if isinstance(name, str) else f"{section}[{index}]"


def _file_source(source: str, base: Path) -> Path:
    """The path of a `file:PATH` or `file://PATH` source; relative paths are relative to the spicepod."""
    rest = source[len("file://"):] if source.startswith("file://") else source[len("file:"):]
    if not rest:
        raise _Invalid(f"'from' needs a path after file:, got {source!r}")
    return Path(rest) if Path(rest).is_absolute() else base / rest


def _parse_dataset(raw: dict[str, Any], base: Path) -> DatasetSpec:
    values = _validate(raw, DATASET_KEYS, "dataset")
    source = values["from"]
    if source == "flight":
        if "mode" in raw and values["mode"] != "read_write":
            raise _Invalid("'mode' of a `from: flight` dataset must be read_write (Flight DoPut fills it)")
        kind, path, fmt, mode = "flight", None, None, "read_write"
    elif source.startswith("file:"):
        path = _file_source(source, base)
        fmt = DATASET_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise _Invalid(
                f"'from' file must end in {', '.join(sorted(DATASET_FORMATS))}, got {source!r}"
            )
        if values["mode"] == "read" and not path.is_file():
            raise _Invalid(f"'from' file {str(path)!r} does not exist")
        kind, mode = "file", values["mode"]
    else:
        raise _Invalid(f"'from' must be file:PATH or flight, got {source!r}")
    if values["series_column"] is not None and values["series_column"] == values["time_column"]:
        raise _Invalid(f"'series_column' must differ from 'time_column' ({values['time_column']!r})")
    return DatasetSpec(
        name=values["name"],
        source=source,
        kind=kind,
        path=path.resolve() if path is not None else None,
        format=fmt,
        mode=mode,
        time_column=values["time_column"],
        time_format=values["time_format"],
        series_column=values["series_column"],
        on_duplicate=values["on_duplicate"],
        description=values["description"],
    )


def _parse_model(raw: dict[str, Any], base: Path, dataset_names: set[str]) -> ModelSpec:
    values = _validate(raw, MODEL_KEYS, "model")
    source = values["from"]
    tag = path = None
    if source == "lightgbm" or source.startswith("lightgbm:"):
        kind = "lightgbm"
        tag = source.partition(":")[2] or None
        if source.endswith(":"):
            raise _Invalid(f"'from' tag after lightgbm: is empty in {source!r}")
    elif source.startswith("file:"):
        kind = "file"
        path = _file_source(source, base).resolve()
        if not path.is_file():
            raise _Invalid(f"'from' model file {str(path)!r} does not exist")
    else:
        raise _Invalid(f"'from' must be lightgbm[:TAG] or file:PATH, got {source!r}")
    for dataset in values["datasets"]:
        if dataset not in dataset_names:
            raise _Invalid(f"'datasets' names '{dataset}', which is not a declared dataset")
    params = values["params"] or _validate({}, PARAM_KEYS, "params")
    return ModelSpec(
        name=values["name"],
        source=source,
        kind=kind,
        tag=tag,
        path=path,
        datasets=values["datasets"],
        value_column=params["value_column"],
        lookback=params["lookback"],
        horizon=params["horizon"],
        frequency=params["frequency"],
        strategy=params["strategy"],
        fill=params["fill"],
        aggregate=params["aggregate"],
        backtest_windows=params["backtest_windows"],
        retrain_after_rows=params["retrain_after_rows"],
        lightgbm=params["lightgbm"] or {},
        description=values["description"],
    )


def _parse_runtime(raw: Any, base: Path) -> RuntimeSpec:
    values = _validate(raw if raw is not None else {}, RUNTIME_KEYS, "runtime")
    auth = values["auth"] or {}
    limits = values["limits"] or _validate({}, LIMIT_KEYS, "limits")
    training = values["training"] or _validate({}, TRAINING_KEYS, "training")
    if training["engine"] == "dask" and not training["scheduler"]:
        raise _Invalid("'training.scheduler' is required with engine dask (tcp://HOST:PORT)")
    data_dir = Path(values["data_dir"])
    return RuntimeSpec(
        http=values["http"],
        flight=values["flight"],
        data_dir=(data_dir if data_dir.is_absolute() else base / data_dir).resolve(),
        api_key=auth.get("api_key"),
        limits=Limits(
            query_timeout_s=limits["query_timeout_seconds"],
            memory_limit=limits["memory_limit"],
            max_request_bytes=limits["max_request_bytes"],
            max_horizon=limits["max_horizon"],
            max_put_rows=limits["max_put_rows"],
            max_batch_rows=limits["max_batch_rows"],
        ),
        training=TrainingSpec(engine=training["engine"], scheduler=training["scheduler"]),
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without quoting the line (it may hold a key)."""
    def at(mark: Any) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = (getattr(exc, "problem", None) or "cannot parse") + at(getattr(exc, "problem_mark", None))
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}{at(getattr(exc, 'context_mark', None))}: {problem}"
    return problem


def parse_spicepod(
    text: str, path: Path | str = "spicepod.yaml", env: Mapping[str, str] | None = None
) -> Spicepod:
    """Validate spicepod text; `path` names the file in messages and anchors relative paths."""
    label = str(path)
    path = Path(path).resolve()
    base = path.parent
    env = os.environ if env is None else env
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpicepodError(f"{label}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(doc, dict):
        raise SpicepodError(f"{label}: the top level must be a mapping with version, kind and name")

    def fail(where: str, exc: _Invalid) -> SpicepodError:
        prefix = f"{label}: {where}: " if where else f"{label}: "
        return SpicepodError(prefix + str(exc))

    try:
        doc = _substitute_env(doc, env, "")
        top = _validate(doc, TOP_KEYS, "spicepod")
    except _Invalid as exc:
        raise fail("", exc) from None
    try:
        runtime = _parse_runtime(top["runtime"], base)
    except _Invalid as exc:
        raise fail("runtime", exc) from None

    datasets: list[DatasetSpec] = []
    try:
        raw_datasets = _entries(doc, "datasets")
        raw_models = _entries(doc, "models")
    except _Invalid as exc:
        raise fail("", exc) from None
    for index, raw in enumerate(raw_datasets):
        where = _entry_label("datasets", index, raw)
        try:
            dataset = _parse_dataset(raw, base)
            if any(d.name.lower() == dataset.name.lower() for d in datasets):  # SQL names ignore case
                raise _Invalid(f"duplicate dataset name '{dataset.name}'")
        except _Invalid as exc:
            raise fail(where, exc) from None
        datasets.append(dataset)

    models: list[ModelSpec] = []
    names = {d.name for d in datasets}
    for index, raw in enumerate(raw_models):
        where = _entry_label("models", index, raw)
        try:
            model = _parse_model(raw, base, names)
            if any(m.name.lower() == model.name.lower() for m in models):
                raise _Invalid(f"duplicate model name '{model.name}'")
        except _Invalid as exc:
            raise fail(where, exc) from None
        models.append(model)

    return Spicepod(
        path=path,
        name=top["name"],
        version=top["version"],
        runtime=runtime,
        datasets=tuple(datasets),
        models=tuple(models),
    )


def load_spicepod(path: Path | str, env: Mapping[str, str] | None = None) -> Spicepod:
    """Read and validate a spicepod file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpicepodError(f"{path}: cannot read the spicepod: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpicepodError(f"{path}: the spicepod is not UTF-8 text") from None
    return parse_spicepod(text, path, env)
