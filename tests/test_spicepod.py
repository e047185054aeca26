"""The spicepod loader: every invalid spicepod stops with one exact message; valid ones parse as specified."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import DATA, run_cli, write_csv_text, write_spicepod, write_table

from flight_server.store import DatasetStore
from pipelines.frequency import Frequency
from spicepod import (
    InvalidInput,
    Limits,
    RetrainSpec,
    RuntimeSpec,
    SpicepodError,
    TrainingSpec,
    describe_keys,
    load_spicepod,
    parse_spicepod,
)
from spicepod.timestamps import iso_utc, parse_iso

AUSTRES = DATA / "austres.csv"
HEAD = "version: v1\nkind: Spicepod\nname: t\n"


def pod(*, ds_from: str = f"file:{AUSTRES}", ds_name: str = "co2", ds_extra: str = "", more_ds: str = "",
        model_from: str = "lightgbm", model_ds: str = "[co2]", model_extra: str = "", params: str = "",
        more_models: str = "") -> str:
    """A spicepod with one dataset `co2` and two models, co2_a and co2_b (whose params get `params`)."""
    return (
        HEAD
        + "datasets:\n"
        + f"  - from: {ds_from}\n    name: {ds_name}\n{ds_extra}{more_ds}"
        + "models:\n"
        + f"  - from: {model_from}\n    name: co2_a\n    datasets: {model_ds}\n{model_extra}"
        + f"  - from: lightgbm\n    name: co2_b\n    datasets: [{ds_name}]\n    params:\n      horizon: 3\n"
        + params
        + more_models
    )


PARAM_KEYS = ("aggregate, anomaly_level, backtest_windows, bounds, calendar, challengers, covariates, drift_ratio, "
              "drift_window, fill, frequency, holidays, horizon, lightgbm, lookback, method, promote, retrain, "
              "retrain_after_rows, static, strategy, value_column, week_start")


def named(entries) -> dict:
    """Datasets or models of a parsed spicepod by name."""
    return {entry.name: entry for entry in entries}


SQL_ID = "must be an SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
FREQ = ("must be a step like 15min, 1h, 1d, 1w, 1mo, 1q or 1y (units s, min, h, d, w, mo, q, y)")

INVALID = [
    # unknown keys, at every level
    ("unknown_top_key", HEAD + "foo: 1\n",
     "unknown key 'foo'; expected one of datasets, kind, models, name, runtime, version"),
    ("unknown_runtime_key", HEAD + "runtime:\n  htp: 127.0.0.1:1\n",
     "runtime: unknown key 'htp'; expected one of auth, data_dir, flight, http, limits, training"),
    ("unknown_auth_key", HEAD + "runtime:\n  auth:\n    key: x\n",
     "runtime: unknown key 'key'; expected one of api_key"),
    ("unknown_limits_key", HEAD + "runtime:\n  limits:\n    timeout: 1\n",
     "runtime: unknown key 'timeout'; expected one of max_batch_rows, max_horizon, max_put_rows, max_request_bytes, "
     "memory_limit, query_timeout_seconds"),
    ("unknown_dataset_key", pod(ds_extra="    time_colum: t\n"),
     "datasets[0] (co2): unknown key 'time_colum'; expected one of description, from, mode, name, on_duplicate, "
     "series_column, time_column, time_format"),
    ("unknown_model_key", pod(model_extra="    param: {}\n"),
     "models[0] (co2_a): unknown key 'param'; expected one of datasets, description, from, name, params"),
    ("unknown_params_key", pod(params="      lookbak: 24\n"),
     f"models[1] (co2_b): unknown key 'lookbak'; expected one of {PARAM_KEYS}"),
    # wrong types and values
    ("unknown_method", pod(params="      method: prophet\n"),
     "models[1] (co2_b): 'method' must be one of auto, ensemble, lightgbm, naive, seasonal_naive, ets, theta, mstl, "
     "croston, got 'prophet'"),
    ("bounds_reversed", pod(params="      bounds: [10, 0]\n"),
     "models[1] (co2_b): 'bounds' must be auto, none or [low, high] (either may be null, low below high), "
     "got [10, 0]"),
    ("bounds_word", pod(params="      bounds: positive\n"),
     "models[1] (co2_b): 'bounds' must be auto, none or [low, high] (either may be null, low below high), "
     "got 'positive'"),
    ("week_start_abbreviated", pod(params="      week_start: mon\n"),
     "models[1] (co2_b): 'week_start' must be one of monday, tuesday, wednesday, thursday, friday, saturday, "
     "sunday, got 'mon'"),
    ("name_not_string", "version: v1\nkind: Spicepod\nname: 123\n",
     "'name' must be a non-empty string, got 123"),
    ("bad_version", "version: v2\nkind: Spicepod\nname: t\n",
     "'version' must be one of v1, v1beta1, got 'v2'"),
    ("missing_kind", "version: v1\nname: t\n", "missing required key 'kind'"),
    ("runtime_not_mapping", HEAD + "runtime: [1]\n", "runtime: 'runtime' must be a mapping, got [1]"),
    ("runtime_http_no_port", HEAD + "runtime:\n  http: localhost\n",
     "runtime: 'http' must be HOST:PORT with a port from 0 to 65535, got 'localhost'"),
    ("runtime_flight_port_too_big", HEAD + "runtime:\n  flight: 127.0.0.1:70000\n",
     "runtime: 'flight' must be HOST:PORT with a port from 0 to 65535, got '127.0.0.1:70000'"),
    ("datasets_not_list", HEAD + "datasets: {a: 1}\n", "'datasets' must be a list, got {'a': 1}"),
    ("dataset_not_mapping", HEAD + "datasets: [5]\n", "datasets[0]: 'dataset' must be a mapping, got 5"),
    ("dataset_missing_name", HEAD + f"datasets:\n  - from: file:{AUSTRES}\n",
     "datasets[0]: missing required key 'name'"),
    ("bad_mode", pod(ds_extra="    mode: write\n"),
     "datasets[0] (co2): 'mode' must be one of read, read_write, got 'write'"),
    ("bad_time_format", pod(ds_extra="    time_format: epoch\n"),
     "datasets[0] (co2): 'time_format' must be one of timestamp, timestamptz, unix_seconds, unix_millis, "
     "ISO8601 or a strptime pattern with a % (e.g. '%Y', '%d/%m/%Y %H:%M'), got 'epoch'"),
    ("bad_time_column", pod(ds_extra="    time_column: 1ts\n"),
     f"datasets[0] (co2): 'time_column' {SQL_ID}, got '1ts'"),
    ("anomaly_level_100", pod(params="      anomaly_level: 100\n"),
     "models[1] (co2_b): 'anomaly_level' must be a number between 0 and 100 (exclusive), got 100"),
    ("anomaly_level_zero", pod(params="      anomaly_level: 0\n"),
     "models[1] (co2_b): 'anomaly_level' must be a number between 0 and 100 (exclusive), got 0"),
    ("anomaly_level_string", pod(params="      anomaly_level: '99'\n"),
     "models[1] (co2_b): 'anomaly_level' must be a number between 0 and 100 (exclusive), got '99'"),
    ("drift_window_zero", pod(params="      drift_window: 0\n"),
     "models[1] (co2_b): 'drift_window' must be an integer from 1 to 10000, got 0"),
    ("drift_window_large", pod(params="      drift_window: 10001\n"),
     "models[1] (co2_b): 'drift_window' must be an integer from 1 to 10000, got 10001"),
    ("drift_ratio_negative", pod(params="      drift_ratio: -1\n"),
     "models[1] (co2_b): 'drift_ratio' must be a positive number, got -1"),
    ("drift_ratio_bool", pod(params="      drift_ratio: true\n"),
     "models[1] (co2_b): 'drift_ratio' must be a positive number, got True"),
    ("lookback_zero", pod(params="      lookback: 0\n"),
     "models[1] (co2_b): 'lookback' must be a positive integer, got 0"),
    ("lookback_negative", pod(params="      lookback: -3\n"),
     "models[1] (co2_b): 'lookback' must be a positive integer, got -3"),
    ("lookback_float", pod(params="      lookback: 2.5\n"),
     "models[1] (co2_b): 'lookback' must be a positive integer, got 2.5"),
    ("lookback_string", pod(params="      lookback: '24'\n"),
     "models[1] (co2_b): 'lookback' must be a positive integer, got '24'"),
    ("lookback_bool", pod(params="      lookback: true\n"),
     "models[1] (co2_b): 'lookback' must be a positive integer, got True"),
    ("horizon_zero", pod().replace("      horizon: 3\n", "      horizon: 0\n"),
     "models[1] (co2_b): 'horizon' must be a positive integer, got 0"),
    ("bad_strategy", pod(params="      strategy: both\n"),
     "models[1] (co2_b): 'strategy' must be one of recursive, direct, auto, got 'both'"),
    ("bad_frequency_unit", pod(params="      frequency: 5x\n"),
     f"models[1] (co2_b): 'frequency' {FREQ}, got '5x'"),
    ("zero_frequency", pod(params="      frequency: 0h\n"),
     f"models[1] (co2_b): 'frequency' {FREQ}, got '0h'"),
    ("lightgbm_not_mapping", pod(params="      lightgbm: [1]\n"),
     "models[1] (co2_b): 'lightgbm' must be a mapping, got [1]"),
    ("lightgbm_nested_value", pod(params="      lightgbm: {a: {b: 1}}\n"),
     "models[1] (co2_b): 'lightgbm.a' must be a string, number or boolean, got {'b': 1}"),
    ("bad_value_column", pod(params="      value_column: my-col\n"),
     f"models[1] (co2_b): 'value_column' {SQL_ID}, got 'my-col'"),
    ("params_not_mapping", pod(model_extra="    params: [1]\n"),
     "models[0] (co2_a): 'params' must be a mapping, got [1]"),
    ("model_datasets_not_list", pod(model_ds="5"),
     "models[0] (co2_a): 'datasets' must be a non-empty list of names, got 5"),
    ("model_datasets_empty", pod(model_ds="[]"),
     "models[0] (co2_a): 'datasets' must be a non-empty list of names, got []"),
    ("model_missing_name", pod().replace("    name: co2_b\n", ""), "models[1]: missing required key 'name'"),
    ("model_missing_from", pod().replace("  - from: lightgbm\n    name: co2_b", "  - name: co2_b"),
     "models[1] (co2_b): missing required key 'from'"),
    # retraining, promotion and challengers
    ("retrain_both_forms", pod(params="      retrain_after_rows: 5\n      retrain: {after_rows: 5}\n"),
     "models[1] (co2_b): give 'retrain_after_rows' or 'retrain: {after_rows: N}', not both"),
    ("retrain_unknown_key", pod(params="      retrain: {rows: 5}\n"),
     "models[1] (co2_b): unknown key 'rows'; expected one of after_rows, on_drift, promote"),
    ("retrain_promote_word", pod(params="      retrain: {promote: never}\n"),
     "models[1] (co2_b): 'promote' must be one of if_better, always, got 'never'"),
    ("retrain_on_drift_not_bool", pod(params="      retrain: {on_drift: 'yes'}\n"),
     "models[1] (co2_b): 'on_drift' must be true or false, got 'yes'"),
    ("retrain_after_rows_negative", pod(params="      retrain: {after_rows: -1}\n"),
     "models[1] (co2_b): 'after_rows' must be an integer >= 0, got -1"),
    ("challenger_promote_word", pod(params="      promote: always\n"),
     "models[1] (co2_b): 'promote' must be one of manual, if_better, got 'always'"),
    ("challenger_unknown", pod(params="      challengers: [co2_c]\n"),
     "models[1] (co2_b): 'challengers' names 'co2_c', which is not a declared model"),
    ("challenger_itself", pod(params="      challengers: [co2_b]\n"),
     "models[1] (co2_b): 'challengers' names the model itself"),
    ("challenger_other_dataset",
     pod(params="      challengers: [nile_m]\n", more_ds=f"  - from: file:{DATA / 'nile.csv'}\n    name: nile\n",
         more_models="  - from: lightgbm\n    name: nile_m\n    datasets: [nile]\n"),
     "models[1] (co2_b): challenger 'nile_m' forecasts dataset 'nile', not 'co2'"),
    # duplicates and references
    ("duplicate_dataset", pod(more_ds=f"  - from: file:{AUSTRES}\n    name: co2\n"),
     "datasets[1] (co2): duplicate dataset name 'co2'"),
    ("duplicate_model", pod(more_models="  - from: lightgbm\n    name: co2_a\n    datasets: [co2]\n"),
     "models[2] (co2_a): duplicate model name 'co2_a'"),
    ("undeclared_dataset", pod(model_ds="[co2, nope]"),
     "models[0] (co2_a): 'datasets' names 'nope', which is not a declared dataset"),
    # sources
    ("dataset_from_unknown_scheme", pod(ds_from="s3://bucket/x.csv"),
     "datasets[0] (co2): 'from' must be file:PATH or flight, got 's3://bucket/x.csv'"),
    ("dataset_from_bad_suffix", pod(ds_from=f"file:{DATA / 'README.md'}"),
     f"datasets[0] (co2): 'from' file must end in .arrow, .csv, .feather, .ipc, .parquet, "
     f"got 'file:{DATA / 'README.md'}'"),
    ("dataset_from_empty_path", pod(ds_from="'file:'"),
     "datasets[0] (co2): 'from' needs a path after file:, got 'file:'"),
    ("flight_dataset_mode_read", pod(ds_from="flight", ds_extra="    mode: read\n"),
     "datasets[0] (co2): 'mode' of a `from: flight` dataset must be read_write (Flight DoPut fills it)"),
    ("missing_file", pod(ds_from="file:/nonexistent/x.csv"),
     "datasets[0] (co2): 'from' file '/nonexistent/x.csv' does not exist"),
    ("model_from_unknown", pod(model_from="xgboost"),
     "models[0] (co2_a): 'from' must be lightgbm[:TAG] or file:PATH, got 'xgboost'"),
    ("model_from_empty_tag", pod(model_from="'lightgbm:'"),
     "models[0] (co2_a): 'from' tag after lightgbm: is empty in 'lightgbm:'"),
    ("model_file_missing", pod(model_from="file:/nonexistent/model.txt"),
     "models[0] (co2_a): 'from' model file '/nonexistent/model.txt' does not exist"),
    # names
    ("dataset_name_dash", pod(ds_name="co2-a"), f"datasets[0] (co2-a): 'name' {SQL_ID}, got 'co2-a'"),
    ("dataset_name_digit", pod(ds_name="1abc"), f"datasets[0] (1abc): 'name' {SQL_ID}, got '1abc'"),
    ("model_name_space", pod().replace("name: co2_b", "name: co2 b"),
     f"models[1] (co2 b): 'name' {SQL_ID}, got 'co2 b'"),
    # environment and document shape
    ("unset_env", HEAD + "runtime:\n  auth:\n    api_key: ${env:FC_MISSING}\n",
     "runtime.auth.api_key: environment variable FC_MISSING is not set"),
    ("empty_api_key", HEAD + "runtime:\n  auth:\n    api_key: ${env:FC_EMPTY}\n",
     "runtime: 'api_key' must be a non-empty string, got ''"),
    ("top_level_list", "- a\n- b\n", "the top level must be a mapping with version, kind and name"),
    ("top_level_scalar", "hello\n", "the top level must be a mapping with version, kind and name"),
    ("empty_file", "", "the top level must be a mapping with version, kind and name"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_spicepod_message(text: str, message: str) -> None:
    with pytest.raises(SpicepodError) as info:
        parse_spicepod(text, "spicepod.yaml", env={"FC_EMPTY": ""})
    assert str(info.value) == f"spicepod.yaml: {message}"
    assert "\n" not in str(info.value)


def test_invalid_yaml_is_one_line_naming_file_and_position() -> None:
    with pytest.raises(SpicepodError) as info:
        parse_spicepod("version: v1\nkind: [Spicepod\n", "spicepod.yaml", env={})
    message = str(info.value)
    assert message.startswith("spicepod.yaml: not valid YAML: ")
    assert "line 2, column 7" in message
    assert "\n" not in message


def test_yaml_is_read_safely() -> None:
    text = HEAD + "datasets: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(SpicepodError) as info:
        parse_spicepod(text, "spicepod.yaml", env={})
    assert str(info.value).startswith("spicepod.yaml: not valid YAML: ")


def test_message_names_the_file_as_given(tmp_path: Path) -> None:
    path = write_spicepod(tmp_path, pod(params="      lookbak: 24\n"))
    with pytest.raises(SpicepodError) as info:
        load_spicepod(path, env={})
    expected = f"{path}: models[1] (co2_b): unknown key 'lookbak'; expected one of {PARAM_KEYS}"
    assert str(info.value) == expected


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpicepodError) as info:
        load_spicepod(missing, env={})
    assert str(info.value).startswith(f"{missing}: cannot read the spicepod")


def test_dataset_names_differing_only_in_case_are_duplicates() -> None:
    # SQL identifiers are case-insensitive in DuckDB: co2 and CO2 would be the same table.
    text = pod(more_ds=f"  - from: file:{AUSTRES}\n    name: CO2\n")
    with pytest.raises(SpicepodError) as info:
        parse_spicepod(text, "spicepod.yaml", env={})
    assert str(info.value) == "spicepod.yaml: datasets[1] (CO2): duplicate dataset name 'CO2'"


def test_wrongly_typed_api_key_is_not_echoed() -> None:
    # A key never appears in an error message (SPEC 6), even when it is mistyped as a number.
    with pytest.raises(SpicepodError) as info:
        parse_spicepod(HEAD + "runtime:\n  auth:\n    api_key: 987654321987\n", "spicepod.yaml", env={})
    message = str(info.value)
    assert message.startswith("spicepod.yaml: runtime: 'api_key' must be a non-empty string")
    assert "987654321987" not in message


# --- valid spicepods -------------------------------------------------------------------------------------

def test_defaults(tmp_path: Path) -> None:
    text = HEAD + f"datasets:\n  - from: file:{AUSTRES}\n    name: co2\n" \
        "models:\n  - from: lightgbm\n    name: m\n    datasets: [co2]\n"
    spec = parse_spicepod(text, tmp_path / "spicepod.yaml", env={})
    assert spec.name == "t" and spec.version == "v1"
    assert spec.path == (tmp_path / "spicepod.yaml").resolve()
    runtime = spec.runtime
    assert (runtime.http, runtime.flight, runtime.api_key) == ("127.0.0.1:3000", "127.0.0.1:50051", None)
    assert runtime.data_dir == (tmp_path / ".flightcast").resolve()
    assert runtime.limits.query_timeout_s == 30.0 and runtime.limits.max_horizon == 1000
    (dataset,) = spec.datasets
    assert (dataset.name, dataset.kind, dataset.format, dataset.mode) == ("co2", "file", "csv", "read")
    assert (dataset.time_column, dataset.time_format, dataset.path) == ("ts", "timestamp", AUSTRES.resolve())
    (model,) = spec.models
    assert (model.kind, model.tag, model.datasets, model.dataset) == ("lightgbm", None, ("co2",), "co2")
    assert (model.lookback, model.horizon, model.strategy) == (30, 1, "recursive")
    assert (model.value_column, model.frequency, dict(model.lightgbm)) == (None, None, {})


def test_full_spicepod_values(tmp_path: Path) -> None:
    text = """\
        version: v1beta1
        kind: Spicepod
        name: full
        runtime:
          http: 0.0.0.0:8080
          flight: 127.0.0.1:0
          data_dir: /var/tmp/fc
        datasets:
          - from: flight
            name: sink
            time_column: at
            time_format: unix_millis
        models:
          - from: lightgbm:1.0
            name: m
            datasets: sink
            params:
              value_column: v
              lookback: 24
              horizon: 12
              frequency: 1mo
              strategy: direct
              lightgbm: {num_leaves: 31, learning_rate: 0.05, num_boost_round: 200}
    """
    spec = parse_spicepod(textwrap.dedent(text), tmp_path / "spicepod.yaml", env={})
    assert spec.version == "v1beta1"
    assert (spec.runtime.http, spec.runtime.flight, spec.runtime.data_dir) == (
        "0.0.0.0:8080", "127.0.0.1:0", Path("/var/tmp/fc"))
    model = named(spec.models)["m"]
    assert (model.tag, model.datasets, model.value_column, model.lookback, model.horizon) == (
        "1.0", ("sink",), "v", 24, 12)
    assert (model.frequency, model.strategy) == ("1mo", "direct")
    assert dict(model.lightgbm) == {"num_leaves": 31, "learning_rate": 0.05, "num_boost_round": 200}
    sink = named(spec.datasets)["sink"]
    assert (sink.time_column, sink.time_format) == ("at", "unix_millis")


def test_relative_paths_resolve_against_the_spicepod_folder(tmp_path: Path, monkeypatch) -> None:
    pod_dir = tmp_path / "pod"
    (pod_dir / "data").mkdir(parents=True)
    (pod_dir / "data" / "x.csv").write_text("ts,value\n2024-01-01,1\n")
    (pod_dir / "data" / "y.parquet").write_bytes(b"")
    (pod_dir / "model.txt").write_text("tree\n")
    path = write_spicepod(pod_dir, HEAD + f"""\
runtime:
  data_dir: store/here
datasets:
  - from: file:data/x.csv
    name: x
  - from: file://data/y.parquet
    name: y
  - from: file://{AUSTRES}
    name: z
models:
  - from: file:model.txt
    name: m
    datasets: [x]
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spicepod(path, env={})
    assert spec.runtime.data_dir == (pod_dir / "store" / "here").resolve()
    datasets, model = named(spec.datasets), named(spec.models)["m"]
    assert datasets["x"].path == (pod_dir / "data" / "x.csv").resolve()
    assert datasets["y"].path == (pod_dir / "data" / "y.parquet").resolve()
    assert datasets["y"].format == "parquet"
    assert datasets["z"].path == AUSTRES.resolve()
    assert model.kind == "file" and model.path == (pod_dir / "model.txt").resolve()


@pytest.mark.parametrize(("suffix", "fmt"), [(".csv", "csv"), (".parquet", "parquet"), (".arrow", "arrow"),
                                             (".feather", "arrow"), (".ipc", "arrow"), (".CSV", "csv")])
def test_file_formats_by_suffix(tmp_path: Path, suffix: str, fmt: str) -> None:
    (tmp_path / f"d{suffix}").write_bytes(b"")
    text = HEAD + f"datasets:\n  - from: file:d{suffix}\n    name: d\n"
    spec = parse_spicepod(text, tmp_path / "s.yaml", env={})
    assert named(spec.datasets)["d"].format == fmt


def test_env_substitution() -> None:
    text = HEAD + "runtime:\n  auth:\n    api_key: ${env:FC_KEY}\n" \
        "datasets:\n  - from: flight\n    name: sink\n    description: pre-${env:FC_WORD}-post\n"
    spec = parse_spicepod(text, "spicepod.yaml", env={"FC_KEY": "s3cret-key", "FC_WORD": "mid"})
    assert spec.runtime.api_key == "s3cret-key"
    assert named(spec.datasets)["sink"].description == "pre-mid-post"


def test_env_substitution_reads_the_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("FC_TEST_SPICEPOD_KEY", "from-environ")
    text = HEAD + "runtime:\n  auth:\n    api_key: ${env:FC_TEST_SPICEPOD_KEY}\n"
    spec = parse_spicepod(text, "spicepod.yaml")
    assert spec.runtime.api_key == "from-environ"


def test_flight_dataset_is_read_write() -> None:
    text = HEAD + "datasets:\n  - from: flight\n    name: sink\n  - from: flight\n    name: sink2\n" \
        "    mode: read_write\n"
    spec = parse_spicepod(text, "spicepod.yaml", env={})
    for name in ("sink", "sink2"):
        dataset = named(spec.datasets)[name]
        assert (dataset.kind, dataset.mode) == ("flight", "read_write")
        assert (dataset.path, dataset.format) == (None, None)


def test_read_write_dataset_seeded_from_file() -> None:
    spec = parse_spicepod(pod(ds_extra="    mode: read_write\n"), "spicepod.yaml", env={})
    co2 = named(spec.datasets)["co2"]
    assert co2.mode == "read_write" and co2.kind == "file"


# --- the CLI on an invalid spicepod --------------------------------------------------------------------

def test_cli_exits_2_with_one_message(tmp_path: Path) -> None:
    path = write_spicepod(tmp_path, pod(params="      lookbak: 24\n"))
    result = run_cli(["run", "--spicepod", str(path), "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0",
                      "--data-dir", str(tmp_path / "store")], cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    expected = f"{path}: models[1] (co2_b): unknown key 'lookbak'; expected one of {PARAM_KEYS}"
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(expected), result.stderr
    assert "listening" not in result.stderr


def test_cli_missing_spicepod_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    result = run_cli(["run", "--spicepod", str(missing), "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0",
                      "--data-dir", str(tmp_path / "store")], cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(missing) in lines[0], result.stderr


@pytest.mark.parametrize(("text", "env"), [
    (HEAD + "runtime:\n  auth: ${env:KEY}\n", {"KEY": "sup3r-s3cret"}),
    (HEAD + "runtime:\n  auth: sup3r-s3cret\n", {}),
    (HEAD + "runtime:\n  http: ${env:KEY}\n", {"KEY": "sup3r-s3cret"}),
    (HEAD + 'runtime:\n  auth:\n    api_key: "sup3r-s3cret\n', {}),
], ids=["misplaced_env_key", "misplaced_literal_key", "env_value_in_wrong_key", "unterminated_quote"])
def test_a_misplaced_key_is_never_echoed(text: str, env: dict) -> None:
    with pytest.raises(SpicepodError) as info:
        parse_spicepod(text, "spicepod.yaml", env=env)
    assert "sup3r-s3cret" not in str(info.value)
    assert str(info.value).startswith("spicepod.yaml: ")


# --- keys declared once ------------------------------------------------------------------------------------

def test_help_lists_every_section_and_key_in_order() -> None:
    sections: dict[str, list[str]] = {}
    keys: list[str] = []
    for line in describe_keys().splitlines():
        if line.startswith("  "):
            keys.append(line.split(":")[0].split(" (")[0].strip())
        else:
            keys = sections.setdefault(line.rstrip(":"), [])
    assert sections == {
        "top level": ["version", "kind", "name", "runtime", "datasets", "models"],
        "runtime": ["http", "flight", "data_dir", "auth", "limits", "training"],
        "runtime.auth": ["api_key"],
        "runtime.limits": ["query_timeout_seconds", "memory_limit", "max_request_bytes", "max_horizon",
                           "max_put_rows", "max_batch_rows"],
        "runtime.training": ["engine", "scheduler"],
        "datasets[]": ["from", "name", "mode", "time_column", "time_format", "series_column", "on_duplicate",
                       "description"],
        "models[]": ["from", "name", "datasets", "params", "description"],
        "models[].params": ["value_column", "lookback", "horizon", "frequency", "strategy", "method", "bounds",
                            "week_start", "fill", "aggregate", "backtest_windows", "retrain_after_rows", "retrain",
                            "challengers", "promote", "covariates", "static", "calendar", "holidays", "anomaly_level",
                            "drift_window", "drift_ratio", "lightgbm"],
        "models[].params.retrain": ["after_rows", "on_drift", "promote"],
    }
    lines = describe_keys().splitlines()
    for line in ("  version (required): spicepod format version",
                 "  data_dir (default .flightcast): where stored datasets and models live",
                 "  query_timeout_seconds (default 30.0): longest a client SQL may run",
                 "  max_request_bytes (default 16777216): largest HTTP request body",
                 "  auth: authentication",
                 "  params: forecasting parameters",
                 "  lightgbm: parameters handed to LightGBM (num_boost_round included)",
                 "  backtest_windows (default 3): rolling forecast origins scored before the final fit",
                 "  drift_window (default 50): the latest scored points whose live MASE drift compares"):
        assert line in lines


def test_the_defaults_a_spicepod_gets_are_the_dataclass_defaults() -> None:
    spec = parse_spicepod(pod(), "/somewhere/spicepod.yaml", env={})
    assert spec.runtime == RuntimeSpec(data_dir=Path("/somewhere/.flightcast"))
    assert spec.runtime.limits == Limits() and spec.runtime.training == TrainingSpec()
    a = named(spec.models)["co2_a"]
    assert (a.lookback, a.horizon, a.strategy, a.fill, a.aggregate, a.backtest_windows, a.retrain_after_rows,
            a.frequency, a.value_column, dict(a.lightgbm)) == (30, 1, "recursive", "linear", "mean", 3, 0, None,
                                                               None, {})
    assert (a.anomaly_level, a.drift_window, a.drift_ratio) == (99.0, 50, 1.5)
    assert (a.retrain, a.challengers, a.promote) == (RetrainSpec(), (), "manual")


def test_retrain_short_and_long_forms_read_the_same() -> None:
    short = named(parse_spicepod(pod(params="      retrain_after_rows: 7\n"), env={}).models)["co2_b"]
    long = named(parse_spicepod(pod(params="      retrain: {after_rows: 7}\n"), env={}).models)["co2_b"]
    assert short.retrain == long.retrain == RetrainSpec(after_rows=7, on_drift=False, promote="if_better")
    assert short.retrain_after_rows == long.retrain_after_rows == 7
    spec = parse_spicepod(pod(params="      challengers: [co2_a]\n      promote: if_better\n"), env={})
    assert (named(spec.models)["co2_b"].challengers, named(spec.models)["co2_b"].promote) == (("co2_a",), "if_better")


@pytest.mark.parametrize("text", ["15min", "1h", "h", "1mo", "2q", "1y", "30s", "1w", "0h", "1H", " 1h", "1 h",
                                  "1month", "1.5h", "-1d", "m"])
def test_the_spicepod_and_the_forecaster_read_one_frequency_grammar(text: str) -> None:
    def forecaster_reads() -> bool:
        try:
            Frequency.parse(text)
        except InvalidInput:
            return False
        return True

    try:
        parse_spicepod(pod(params=f"      frequency: '{text}'\n"), env={})
        spicepod_reads = True
    except SpicepodError as exc:
        assert "'frequency' must be a step like" in str(exc)
        spicepod_reads = False
    assert spicepod_reads == forecaster_reads()


def test_iso_text_reads_back_to_the_instant_it_was_written_from() -> None:
    stamp = np.datetime64("2024-02-29T13:45:07.250000", "us")
    assert parse_iso(iso_utc(stamp)) == stamp
    assert parse_iso("2024-02-29T13:45:07Z") == np.datetime64("2024-02-29T13:45:07", "us")
    assert parse_iso("2024-02-29T14:45:07+01:00") == np.datetime64("2024-02-29T13:45:07", "us")
    assert parse_iso("2024-02-29") == np.datetime64("2024-02-29T00:00:00", "us")
    assert parse_iso(None) is None
    with pytest.raises(ValueError):
        parse_iso("29/02/2024")


# --- time values a dataset's time_format cannot read (a real DatasetStore opening real files) ----------------

OPTIONS = ("set time_format to how the file writes its times: timestamp, timestamptz, unix_seconds, unix_millis, "
           "ISO8601, or a strptime pattern like '%d/%m/%Y %H:%M'")


def _open_store(tmp_path: Path, file: str, time_format: str | None) -> str:
    """The message of opening a store over one dataset `d` read from data/`file`."""
    extra = f"    time_format: {time_format}\n" if time_format else ""
    text = HEAD + f"datasets:\n  - from: file:data/{file}\n    name: d\n{extra}"
    spec = parse_spicepod(text, tmp_path / "spicepod.yaml", env={})
    store = DatasetStore(list(spec.datasets), tmp_path / "store", Limits())
    try:
        with pytest.raises(SpicepodError) as failure:
            store.open()
    finally:
        store.close()
    return str(failure.value)


@pytest.mark.parametrize(("csv", "time_format", "row", "value", "expected"), [
    ("ts,value\n2020-01-01,1\n2020-01-02,2\n31/12/2020,3\n", None, 3, "31/12/2020",
     "a date or date-time like 2024-01-31 or 2024-01-31 12:00:00 (time_format 'timestamp')"),
    ("ts,value\n2020-01-01T00:00:00Z,1\n31/12/2020 10:00,2\n", "ISO8601", 2, "31/12/2020 10:00",
     "ISO 8601 text like 2024-01-31T12:00:00Z (time_format 'ISO8601')"),
    ("ts,value\n2020-01-01 00:00:00+01:00,1\nyesterday,2\n", "timestamptz", 2, "yesterday",
     "a date-time with a UTC offset like 2024-01-31 12:00:00+01:00 (time_format 'timestamptz')"),
    ("ts,value\n1577836800,1\n1577836860s,2\n", "unix_seconds", 2, "1577836860s",
     "a number of seconds since 1970-01-01 within the range of a timestamp (time_format 'unix_seconds')"),
    ("ts,value\n1577836800000,1\n1e30,2\n", "unix_millis", 2, "1e30",
     "a number of milliseconds since 1970-01-01 within the range of a timestamp (time_format 'unix_millis')"),
], ids=["timestamp_default", "iso8601", "timestamptz", "unix_seconds", "unix_millis_out_of_range"])
def test_a_time_value_the_format_cannot_read_names_dataset_row_value_and_options(
    tmp_path: Path, csv: str, time_format: str | None, row: int, value: str, expected: str,
) -> None:
    write_csv_text(tmp_path / "data" / "d.csv", csv)
    message = _open_store(tmp_path, "d.csv", time_format)
    path = (tmp_path / "data" / "d.csv").resolve()
    assert message == (f"dataset 'd': row {row} of {path}: time value '{value}' in column 'ts' is not {expected}; "
                       f"{OPTIONS}")


def test_a_typed_time_column_the_format_cannot_read_names_the_value(tmp_path: Path) -> None:
    write_table(tmp_path / "data" / "years.parquet", pa.table({"ts": [1990, 1991], "value": [1.0, 2.0]}))
    message = _open_store(tmp_path, "years.parquet", None)
    path = (tmp_path / "data" / "years.parquet").resolve()
    assert message == (f"dataset 'd': row 1 of {path}: time value '1990' in column 'ts' is not a date or date-time "
                       f"like 2024-01-31 or 2024-01-31 12:00:00 (time_format 'timestamp'); {OPTIONS}")


def test_a_file_duckdb_cannot_read_is_reported_without_sql(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.parquet").write_bytes(b"not parquet at all")
    message = _open_store(tmp_path, "broken.parquet", None)
    assert message.startswith(f"dataset 'd': cannot load {(tmp_path / 'data' / 'broken.parquet').resolve()}: ")
    assert "LINE 1" not in message and "SELECT" not in message and "__flightcast" not in message
    assert "\n\n" not in message
