"""HTTP fuzzing from the live `/v1/openapi.json` with schemathesis (SPEC sections 4, 6, 7).

Two real runtimes over small copies of data/*.csv: one open, one with `--api-key` (fuzzed with the key on
most cases and without it, or with a wrong one, on the rest). Every documented operation gets generated
positive and negative cases; each response must pass schemathesis' not_a_server_error,
status_code_conformance, content_type_conformance and response_schema_conformance checks plus our own:
every error body is the JSON envelope (`status`, `error_message`). Afterwards both runtimes are still
alive and answer /health, and no dataset changed (row counts and contents).

Bounded in `make test` (a few hundred cases); `FLIGHTCAST_FUZZ=full` (`make fuzz`) runs >= 2,000.
Failures are collected (one example per operation and kind) and reported together at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from conftest import Runtime, RuntimeFactory, copy_data, write_spicepod
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from http_api.base import OPEN_PATHS

pytestmark = pytest.mark.fuzz

FULL = os.environ.get("FLIGHTCAST_FUZZ") == "full"
API_KEY = "fuzz-secret-key-0123456789"
REQUEST_TIMEOUT_S = 30.0

# Examples per (operation, generation mode) for each runtime; hypothesis stops early on operations whose
# input space is small (no parameters), so the totals are counted, not assumed.
EXAMPLES = 400 if FULL else 20
# Operations without parameters or body vary only in the key sent.
PLAIN_EXAMPLES = 40 if FULL else 4
# POST /v1/models/{name}/train retrains for real when the name is a model: a few cases only.
TRAIN_EXAMPLES = 40 if FULL else 6
MIN_CASES = 2000 if FULL else 120  # per runtime

SPICEPOD = """
version: v1
kind: Spicepod
name: http-fuzz
runtime:
  limits:
    max_horizon: 200
    max_request_bytes: 65536
datasets:
  - from: file:austres.csv
    name: austres
  - from: file:nile.csv
    name: nile
  - from: file:us_realgdp.csv
    name: gdp
    mode: read_write
models:
  - from: lightgbm
    name: austres_m
    datasets: [austres]
    params: {lookback: 6, horizon: 3, lightgbm: {num_boost_round: 5, num_leaves: 4}}
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {lookback: 6, horizon: 2, lightgbm: {num_boost_round: 5, num_leaves: 4}}
  - from: lightgbm
    name: gdp_m
    datasets: [gdp]
    params: {lookback: 6, horizon: 4, lightgbm: {num_boost_round: 5, num_leaves: 4}}
"""
FILES = ["austres.csv", "nile.csv", "us_realgdp.csv"]
DATASETS = ["austres", "nile", "gdp"]
MODELS = ["austres_m", "nile_m", "gdp_m"]

# Statements a client could send to POST /v1/sql to change data or reach the host: each must be refused
# (4xx, the envelope) and change nothing.
WRITE_ATTEMPTS = [
    "DELETE FROM gdp",
    "DELETE FROM gdp WHERE true; SELECT 1",
    "SELECT 1; DELETE FROM gdp",
    "INSERT INTO gdp SELECT * FROM gdp",
    "UPDATE gdp SET value = 0",
    "DROP TABLE gdp",
    "DROP VIEW gdp",
    "TRUNCATE gdp",
    "ALTER TABLE gdp RENAME TO gdp2",
    "CREATE TABLE fuzz_t AS SELECT * FROM gdp",
    "CREATE OR REPLACE VIEW gdp AS SELECT 1 AS x",
    "WITH d AS (DELETE FROM gdp RETURNING *) SELECT * FROM d",
    "COPY gdp TO '/tmp/flightcast-fuzz-copy.csv'",
    "ATTACH ':memory:' AS fuzz_db",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET memory_limit = '1KB'",
    "PRAGMA memory_limit = '1KB'",
    "CHECKPOINT",
    "VACUUM",
]


def check_error_envelope(ctx: Any, response: Any, case: Any) -> None:
    """SPEC: every error is a JSON object carrying `status` and `error_message`."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:300]!r}") from None
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert isinstance(body.get("status"), str) and body["status"], f"no status in {body!r}"
    assert isinstance(body.get("error_message"), str) and body["error_message"], f"no error_message in {body!r}"
    assert "Traceback" not in body["error_message"], f"a traceback reached the client: {body!r}"
    assert API_KEY not in response.text, "the API key appears in a response"
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          check_error_envelope]


@dataclass
class Tally:
    """Cases sent and distinct failures (first example of each operation x failure title)."""

    cases: Counter = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    @property
    def generated(self) -> int:
        return sum(n for key, n in self.cases.items() if not key.startswith("probe "))

    def per_operation(self) -> Counter:
        out: Counter = Counter()
        for key, count in self.cases.items():
            if not key.startswith("probe "):
                out[key.split(" ", 1)[1]] += count
        return out

    def summary(self, what: str, seconds: float) -> str:
        operations = self.per_operation()
        return (f"http fuzz [{what}]: {self.total} cases ({self.generated} schemathesis cases, "
                f"{self.total - self.generated} probes) over {len(operations)} operations in {seconds:.1f} s; "
                + ", ".join(f"{label}={n}" for label, n in sorted(operations.items()))
                + f"; statuses {dict(sorted(self.statuses.items()))}")

    def fail(self, label: str, title: str, detail: str) -> None:
        key = (label, title)
        self.counts[key] += 1
        self.failures.setdefault(key, detail[:4000])

    def report(self) -> str:
        lines = [f"{len(self.failures)} distinct failure(s):"]
        for (label, title), detail in self.failures.items():
            lines.append(f"--- {label}: {title} (x{self.counts[(label, title)]})\n{detail}")
        return "\n".join(lines)


def run_case(case: Any, base_url: str, headers: dict[str, str], tally: Tally, tag: str) -> Any:
    """Send one case and validate it; failures are recorded, not raised, so the run goes on."""
    label = case.operation.label
    tally.cases[f"{tag} {label}"] += 1
    try:
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as exc:  # a hang, a dropped connection or a dead process
        tally.fail(label, f"transport error {type(exc).__name__}",
                   f"{exc}\n{case.as_curl_command(headers=headers, base_url=base_url)}")
        return None
    tally.statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        for failure in group.exceptions:
            tally.fail(label, failure.title, str(group))
    return response


@dataclass
class Target:
    runtime: Runtime
    schema: Any
    api_key: str | None

    @property
    def base_url(self) -> str:
        return self.runtime.http_url


def fuzz_operation(target: Target, operation: Any, mode: GenerationMode, examples: int, tally: Tally,
                   tag: str, fix: Callable[[Any, st.DataObject], None] | None = None) -> None:
    """`examples` generated cases of one operation in one mode, with or without the key."""
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not FULL,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=strategy, data=st.data())
    def body(case: Any, data: st.DataObject) -> None:
        headers: dict[str, str] = {}
        if target.api_key is not None:
            auth = data.draw(st.sampled_from(["key", "key", "key", "none", "wrong"]), label="auth")
            if case.headers:
                case.headers.pop("X-API-Key", None)
            if auth == "key":
                headers["X-API-Key"] = target.api_key
            elif auth == "wrong":
                headers["X-API-Key"] = data.draw(st.from_regex(r"[!-~]([ -~]{0,38}[!-~])?", fullmatch=True).filter(
                    lambda s: s != target.api_key), label="wrong key")
        if fix is not None:
            fix(case, data)
        run_case(case, target.base_url, headers, tally, tag)

    try:
        body()
    except Unsatisfiable:
        pass  # nothing to negate on an operation without inputs


def real_names(case: Any, data: st.DataObject) -> None:
    """Half the time, point a generated case at a real model so predictions and training really run."""
    if data.draw(st.booleans(), label="real model"):
        name = data.draw(st.sampled_from(MODELS), label="model")
        if case.path_parameters is not None and "name" in case.path_parameters:
            case.path_parameters["name"] = name
            if case.operation.path.endswith("/predict") and data.draw(st.booleans(), label="small horizon"):
                case.query = {**(case.query or {}), "horizon": data.draw(st.integers(1, 250), label="horizon")}
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("predictions"), list):
            for item in body["predictions"]:
                if isinstance(item, dict) and isinstance(item.get("model_name"), str):
                    item["model_name"] = data.draw(st.sampled_from(MODELS), label="item model")


def fuzz_schema(target: Target, tally: Tally) -> None:
    for result in target.schema.get_all_operations():
        operation = result.ok()
        raw = target.schema.raw_schema["paths"][operation.path][operation.method.lower()]
        if operation.path.endswith("/train"):
            examples = TRAIN_EXAMPLES
        elif not raw.get("parameters") and "requestBody" not in raw:
            examples = PLAIN_EXAMPLES
        else:
            examples = EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fix = real_names if "{name}" in operation.path or operation.path == "/v1/predict" else None
            fuzz_operation(target, operation, mode, examples, tally, mode.value, fix)
        if operation.path == "/v1/sql":
            for sql in WRITE_ATTEMPTS:
                response = run_case(operation.Case(body=sql, media_type="text/plain"), target.base_url,
                                    {"X-API-Key": target.api_key} if target.api_key else {}, tally, "write")
                if response is not None and not 400 <= response.status_code < 500:
                    tally.fail(operation.label, "write statement not refused",
                               f"{sql!r} -> {response.status_code} {response.content[:300]!r}")


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNKNOWN_PATHS = ["/index.html", "/v1", "/v1/", "/v1/nope", "/v1//models", "/v1/models/x", "/v1/models/nile_m/predict/x",
                 "/health/", "/metrics/x", "/v2/models", "/%2e%2e/%2e%2e/etc/passwd", "/v1/sql%00"]
# horizon spellings that int() would take but are not an integer in a URL
ODD_HORIZONS = ["1_0", "%2B2", "%E0%A5%A8", "%EF%BC%92", "0x10", "1e2", "9" * 400]


def probe(target: Target, tally: Tally) -> None:
    """What the document cannot make schemathesis send: undocumented methods and paths, lax horizons, too-big
    bodies. Each gets its status and the JSON envelope, with and without the key."""
    key = {"X-API-Key": target.api_key} if target.api_key else {}
    keyless = target.api_key is not None
    doc = target.schema.raw_schema["paths"]
    attempts: list[tuple[str, str, bytes | None, dict[str, str], set[int]]] = []
    for path, operations in doc.items():
        url_path = path.replace("{name}", "nile_m")
        for method in METHODS:
            if method.lower() not in operations:
                attempts.append((method, url_path, None, key, {405}))
                if keyless and path not in OPEN_PATHS:
                    attempts.append((method, url_path, None, {}, {401}))
    for path in UNKNOWN_PATHS:
        attempts.append(("GET", path, None, key, {404}))
        if keyless and path.startswith("/v1"):
            attempts.append(("GET", path, None, {"X-API-Key": "nope"}, {401}))
    for horizon in ODD_HORIZONS:
        attempts.append(("GET", f"/v1/models/nile_m/predict?horizon={horizon}", None, key, {400}))
    big = b"x" * 70_000
    for path in ("/v1/sql", "/v1/predict"):
        attempts.append(("POST", path, big, {**key, "Expect": "100-continue"}, {413}))
    for method, path, body, headers, expected in attempts:
        label = f"{method} {path}"
        tally.cases[f"probe {label}"] += 1
        try:
            response = requests.request(method, target.base_url + path, data=body, headers=headers,
                                        timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            tally.fail(label, f"transport error {type(exc).__name__}", str(exc))
            continue
        tally.statuses[response.status_code] += 1
        if response.status_code not in expected:
            tally.fail(label, f"expected {sorted(expected)}",
                       f"headers {sorted(headers)} -> {response.status_code} {response.content[:300]!r}")
        elif method != "HEAD":
            try:
                check_error_envelope(None, response, None)
            except AssertionError as exc:
                tally.fail(label, "not the error envelope", str(exc))
            if response.status_code == 405 and not response.headers.get("Allow"):
                tally.fail(label, "405 without Allow", str(dict(response.headers)))


def snapshot(runtime: Runtime) -> dict[str, tuple[int, str]]:
    """Row count (from /v1/datasets) and a digest of the ordered contents (from /v1/sql) per dataset."""
    listed = {d["name"]: d["rows"] for d in runtime.get_json("/v1/datasets")}
    out = {}
    for name in DATASETS:
        response = runtime.post("/v1/sql", f'SELECT * FROM "{name}" ORDER BY ts', headers={"Accept": "text/csv"})
        assert response.status == 200, (name, response.status, response.body[:500])
        out[name] = (listed[name], hashlib.sha256(response.body).hexdigest())
    return out


def start_runtime(factory: RuntimeFactory, api_key: str | None) -> Runtime:
    folder = factory.new_dir()
    for name in FILES:
        copy_data(name, folder)
    return factory(spicepod=write_spicepod(folder, SPICEPOD), api_key=api_key)


def load_schema(runtime: Runtime, api_key: str | None) -> Any:
    headers = {"X-API-Key": api_key} if api_key else {}
    # from the live document as a dict: from_url would leave out the document's own operation
    live = requests.get(f"{runtime.http_url}/v1/openapi.json", headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert live.status_code == 200, live.text
    schema = schemathesis.openapi.from_dict(live.json())
    assert ("securitySchemes" in schema.raw_schema.get("components", {})) == bool(api_key)
    return schema


@pytest.mark.parametrize("api_key", [None, API_KEY], ids=["open", "api-key"])
def test_fuzz_http_api(runtime_factory: RuntimeFactory, api_key: str | None) -> None:
    started = time.perf_counter()
    runtime = start_runtime(runtime_factory, api_key)
    target = Target(runtime, load_schema(runtime, api_key), api_key)
    operations = {result.ok().label for result in target.schema.get_all_operations()}
    before = snapshot(runtime)

    tally = Tally()
    fuzz_schema(target, tally)
    probe(target, tally)
    summary = tally.summary(f"{'full' if FULL else 'bounded'}, {'api key' if api_key else 'open'}",
                            time.perf_counter() - started)
    print(summary)

    assert runtime.running, f"{summary}\nthe runtime died during fuzzing; log:\n{runtime.log_text()[-5000:]}"
    health = runtime.get("/health", auth=False)
    assert (health.status, health.text) == (200, "ok"), summary
    assert runtime.get("/v1/ready").status == 200, summary
    after = snapshot(runtime)

    assert set(tally.per_operation()) == operations, f"never fuzzed: {operations - set(tally.per_operation())}"
    assert tally.generated >= MIN_CASES, summary
    assert not tally.failures, f"{summary}\n{tally.report()}"
    assert before == after, f"fuzzing changed the data: {before} -> {after}"
    assert "Traceback" not in runtime.log_text(), f"the runtime logged a traceback:\n{runtime.log_text()[-5000:]}"
