"""The spicepod.yaml loader: `load_spicepod(path)` reads the file with `yaml.safe_load`, substitutes
`${env:NAME}`, validates every entry strictly against the keys declared in spicepod/specs.py and returns
frozen dataclasses. Any problem raises `SpicepodError` whose message names the file, the entry and the
key, e.g. `spicepod.yaml: models[1] (co2_b): unknown key 'lookbak'; expected one of frequency, horizon, ...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spicepod.checks import Invalid
from spicepod.errors import SpicepodError
from spicepod.keys import build, describe, table, validate
from spicepod.specs import DATASET_FORMATS, DatasetSpec, ModelSpec, RetrainSpec, RuntimeSpec, Spicepod

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def quote_ident(name: str) -> str:
    """Quote an SQL identifier for DuckDB (names are validated, and quoted anyway)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quote a string literal for DuckDB: text that is data, never spliced in raw."""
    return "'" + text.replace("'", "''") + "'"


def describe_keys() -> str:
    """Every spicepod key with its default and help, as `flightcast run --help-spicepod` prints it."""
    return "\n".join(describe(Spicepod, "top level")) + "\n"


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
                raise Invalid(f"{trail}: environment variable {match[1]} is not set")
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
        raise Invalid(f"'{section}' must be a list, got {entries!r}")
    return entries


def _entry_label(section: str, index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{section}[{index}] ({name})" if isinstance(name, str) else f"{section}[{index}]"


def _file_source(source: str, base: Path) -> Path:
    """The path of a `file:PATH` or `file://PATH` source; relative paths are relative to the spicepod."""
    rest = source[len("file://"):] if source.startswith("file://") else source[len("file:"):]
    if not rest:
        raise Invalid(f"'from' needs a path after file:, got {source!r}")
    return Path(rest) if Path(rest).is_absolute() else base / rest


def _parse_dataset(raw: dict[str, Any], base: Path) -> DatasetSpec:
    values = validate(raw, table(DatasetSpec), "dataset")
    source = values["from"]
    if source == "flight":
        if "mode" in raw and values["mode"] != "read_write":
            raise Invalid("'mode' of a `from: flight` dataset must be read_write (Flight DoPut fills it)")
        kind, path, fmt, mode = "flight", None, None, "read_write"
    elif source.startswith("file:"):
        path = _file_source(source, base)
        fmt = DATASET_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise Invalid(f"'from' file must end in {', '.join(sorted(DATASET_FORMATS))}, got {source!r}")
        if values["mode"] == "read" and not path.is_file():
            raise Invalid(f"'from' file {str(path)!r} does not exist")
        kind, mode = "file", values["mode"]
    else:
        raise Invalid(f"'from' must be file:PATH or flight, got {source!r}")
    if values["series_column"] is not None and values["series_column"] == values["time_column"]:
        raise Invalid(f"'series_column' must differ from 'time_column' ({values['time_column']!r})")
    return build(DatasetSpec, values, kind=kind, path=path.resolve() if path is not None else None, format=fmt,
                 mode=mode)


def _parse_model(raw: dict[str, Any], base: Path, dataset_names: set[str]) -> ModelSpec:
    values = validate(raw, table(ModelSpec), "model")
    source = values["from"]
    tag = path = None
    if source == "lightgbm" or source.startswith("lightgbm:"):
        kind = "lightgbm"
        tag = source.partition(":")[2] or None
        if source.endswith(":"):
            raise Invalid(f"'from' tag after lightgbm: is empty in {source!r}")
    elif source.startswith("file:"):
        kind = "file"
        path = _file_source(source, base).resolve()
        if not path.is_file():
            raise Invalid(f"'from' model file {str(path)!r} does not exist")
    else:
        raise Invalid(f"'from' must be lightgbm[:TAG] or file:PATH, got {source!r}")
    for dataset in values["datasets"]:
        if dataset not in dataset_names:
            raise Invalid(f"'datasets' names '{dataset}', which is not a declared dataset")
    params = values["params"]
    if params is not None:
        _retrain_short_form(params, raw["params"])
    return build(ModelSpec, values, kind=kind, tag=tag, path=path)


def _check_drivers(model: ModelSpec, dataset: DatasetSpec) -> None:
    """Driver columns that cannot be drivers of this model's data (what needs the data's columns is checked
    when the model first reads them)."""
    drivers = [c["column"] for c in model.covariates] + list(model.static)
    if model.kind == "file" and (drivers or model.calendar or model.holidays):
        raise Invalid("a `file:` model takes its lags only; covariates, static, calendar and holidays need "
                      "`from: lightgbm`")
    if model.static and not dataset.series_column:
        raise Invalid(f"'static' needs a panel: dataset '{dataset.name}' has no series_column")
    roles = {dataset.time_column: "the time column", dataset.series_column: "the series column",
             model.value_column: "the value column"}
    for column in drivers:
        if column in roles:
            raise Invalid(f"column '{column}' is {roles[column]}, it cannot also be a driver")
    both = set(model.static) & {c["column"] for c in model.covariates}
    if both:
        raise Invalid(f"column '{sorted(both)[0]}' is both a covariate and static")
def _retrain_short_form(params: dict[str, Any], written: dict[str, Any]) -> None:
    """`retrain_after_rows: N` is `retrain: {after_rows: N}`; the two read the same value afterwards."""
    if written.get("retrain_after_rows") is not None and written.get("retrain") is not None:
        raise Invalid("give 'retrain_after_rows' or 'retrain: {after_rows: N}', not both")
    retrain = params["retrain"] or {k: e.default for k, e in table(RetrainSpec).items()}
    if params["retrain_after_rows"]:
        retrain = {**retrain, "after_rows": params["retrain_after_rows"]}
    params["retrain"], params["retrain_after_rows"] = retrain, retrain["after_rows"]


def _check_challengers(models: list[ModelSpec]) -> None:
    """Each challenger is another declared model on the same dataset."""
    by_name = {m.name: m for m in models}
    for model in models:
        for name in model.challengers:
            other = by_name.get(name)
            where = f"models[{models.index(model)}] ({model.name})"
            if other is None:
                raise Invalid(f"{where}: 'challengers' names '{name}', which is not a declared model")
            if other is model:
                raise Invalid(f"{where}: 'challengers' names the model itself")
            if other.dataset != model.dataset:
                raise Invalid(f"{where}: challenger '{name}' forecasts dataset '{other.dataset}', "
                              f"not '{model.dataset}'")


def _parse_runtime(raw: Any, base: Path) -> RuntimeSpec:
    values = validate(raw if raw is not None else {}, table(RuntimeSpec), "runtime")
    data_dir = Path(values["data_dir"])
    runtime = build(RuntimeSpec, values, data_dir=(data_dir if data_dir.is_absolute() else base / data_dir).resolve())
    if runtime.training.engine == "dask" and not runtime.training.scheduler:
        raise Invalid("'training.scheduler' is required with engine dask (tcp://HOST:PORT)")
    return runtime


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

    def fail(where: str, exc: Invalid) -> SpicepodError:
        prefix = f"{label}: {where}: " if where else f"{label}: "
        return SpicepodError(prefix + str(exc))

    try:
        doc = _substitute_env(doc, env, "")
        top = validate(doc, table(Spicepod), "spicepod")
    except Invalid as exc:
        raise fail("", exc) from None
    try:
        runtime = _parse_runtime(top["runtime"], base)
    except Invalid as exc:
        raise fail("runtime", exc) from None

    datasets: list[DatasetSpec] = []
    try:
        raw_datasets = _entries(doc, "datasets")
        raw_models = _entries(doc, "models")
    except Invalid as exc:
        raise fail("", exc) from None
    for index, raw in enumerate(raw_datasets):
        where = _entry_label("datasets", index, raw)
        try:
            dataset = _parse_dataset(raw, base)
            if any(d.name.lower() == dataset.name.lower() for d in datasets):  # SQL names ignore case
                raise Invalid(f"duplicate dataset name '{dataset.name}'")
        except Invalid as exc:
            raise fail(where, exc) from None
        datasets.append(dataset)

    models: list[ModelSpec] = []
    names = {d.name for d in datasets}
    for index, raw in enumerate(raw_models):
        where = _entry_label("models", index, raw)
        try:
            model = _parse_model(raw, base, names)
            _check_drivers(model, next(d for d in datasets if d.name == model.dataset))
            if any(m.name.lower() == model.name.lower() for m in models):
                raise Invalid(f"duplicate model name '{model.name}'")
        except Invalid as exc:
            raise fail(where, exc) from None
        models.append(model)
    try:
        _check_challengers(models)
    except Invalid as exc:
        raise fail("", exc) from None

    return build(Spicepod, top, path=path, runtime=runtime, datasets=tuple(datasets), models=tuple(models))


def load_spicepod(path: Path | str, env: Mapping[str, str] | None = None) -> Spicepod:
    """Read and validate a spicepod file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpicepodError(f"{path}: cannot read the spicepod: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpicepodError(f"{path}: the spicepod is not UTF-8 text") from None
    return parse_spicepod(text, path, env)
