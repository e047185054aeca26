"""Shared fixtures: real flightcast runtimes on free ports, HTTP/Flight helpers and data factories.

Every runtime is a real `python -m flightcast run` subprocess with its stderr in a log file. Fixtures
always shut the runtimes they started down, and a failing test gets the logs of the runtimes that were
alive during it appended to its report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0

HTTP_LINE = re.compile(r"flightcast: http listening on (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")
FLIGHT_LINE = re.compile(r"flightcast: flight listening on grpc://(?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+)")

# Runtimes started and not yet cleaned up; their logs go into the report of a failing test.
_LIVE: list[Runtime] = []


# --- HTTP ---------------------------------------------------------------------------------------------

@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def http_request(
    url: str, method: str = "GET", body: bytes | str | Mapping | list | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S,
) -> HttpResponse:
    """One HTTP request with urllib; non-2xx answers are returned, not raised."""
    data: bytes | None
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as err:
        with err:
            return HttpResponse(err.code, dict(err.headers.items()), err.read())


# --- Flight -------------------------------------------------------------------------------------------

class _HeaderMiddleware(flight.ClientMiddleware):
    def __init__(self, headers: Mapping[str, str]):
        self._headers = headers

    def sending_headers(self) -> dict[str, str]:
        return dict(self._headers)


class HeaderMiddlewareFactory(flight.ClientMiddlewareFactory):
    """Adds fixed headers (e.g. `authorization: Bearer KEY`) to every call of a client."""

    def __init__(self, headers: Mapping[str, str]):
        self._headers = dict(headers)

    def start_call(self, info: flight.CallInfo) -> _HeaderMiddleware:
        return _HeaderMiddleware(self._headers)


def bearer_options(key: str, timeout: float | None = 30.0) -> flight.FlightCallOptions:
    """Call options carrying `authorization: Bearer KEY`."""
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {key}".encode())], timeout=timeout)


def read_all(client: flight.FlightClient, ticket: str | bytes, options=None) -> pa.Table:
    """DoGet of an SQL ticket (or bare dataset name), read whole."""
    raw = ticket.encode() if isinstance(ticket, str) else ticket
    return client.do_get(flight.Ticket(raw), options=options).read_all()


def do_put(
    client: flight.FlightClient, name: str, data: pa.Table | list[pa.RecordBatch],
    options=None, schema: pa.Schema | None = None,
) -> dict | None:
    """One whole DoPut stream to dataset `name`; returns the PutResult app_metadata parsed as JSON.

    A server error is raised as the status the server sent (close() surfaces it, also when a
    write failed first because the server had already ended the call).
    """
    if isinstance(data, pa.Table):
        schema = data.schema
        batches = data.to_batches()
    else:
        batches = data
        schema = schema or batches[0].schema
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), schema, options=options)
    try:
        for batch in batches:
            writer.write_batch(batch)
        writer.done_writing()
        buf = reader.read()
    except Exception:
        writer.close()  # raises the server's error when there is one
        raise
    writer.close()
    if buf is None:
        return None
    return json.loads(buf.to_pybytes())


def sorted_table(table: pa.Table, column: str = "ts") -> pa.Table:
    return table.sort_by(column)


# --- the runtime --------------------------------------------------------------------------------------

class Runtime:
    """A `flightcast run` subprocess on free ports with its stderr captured to a log file."""

    def __init__(
        self, spicepod: Path, data_dir: Path, *, api_key: str | None = None,
        env: Mapping[str, str] | None = None, extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ):
        self.spicepod = Path(spicepod)
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.env_extra = dict(env or {})
        self.extra_args = list(extra_args or [])
        stem = f"flightcast-{int(time.time() * 1000) % 10**8}-{os.getpid()}-{id(self) % 10**6}"
        self.log_path = Path(log_path) if log_path else self.spicepod.parent / f"{stem}.log"
        self.stdout_path = self.log_path.with_suffix(".stdout")
        self.proc: subprocess.Popen | None = None
        self.http_port: int | None = None
        self.flight_port: int | None = None
        self._clients: list[flight.FlightClient] = []
        self.returncode: int | None = None

    # lifecycle

    @property
    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "flightcast", "run", "--spicepod", str(self.spicepod),
            "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--data-dir", str(self.data_dir),
        ]
        if self.api_key is not None:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT_S) -> Runtime:
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("FLIGHTCAST_"):
                del env[name]
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env_extra)
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=self.spicepod.parent, env=env,
            )
        _LIVE.append(self)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            http_match = HTTP_LINE.search(text)
            flight_match = FLIGHT_LINE.search(text)
            if http_match and flight_match:
                self.http_port = int(http_match["port"])
                self.flight_port = int(flight_match["port"])
                return self
            code = self.proc.poll()
            if code is not None:
                self.returncode = code
                self._forget()
                pytest.fail(f"flightcast exited with code {code} before listening; log:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"flightcast did not log its ports within {timeout:.0f} s; log:\n"
                            f"{self.log_text()}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S, expect_code: int | None = 0) -> int:
        """SIGTERM, wait for the exit, and check the exit code (0 by default)."""
        assert self.proc is not None, "runtime not started"
        self._close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._forget()
                pytest.fail(f"flightcast did not exit within {timeout:.0f} s of SIGTERM; log:\n"
                            f"{self.log_text()}")
        self.returncode = self.proc.returncode
        self._forget()
        if expect_code is not None:
            assert self.returncode == expect_code, (
                f"flightcast exited with {self.returncode}, expected {expect_code}; log:\n{self.log_text()}"
            )
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        self._close_clients()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
        self._forget()

    def cleanup(self) -> None:
        """Fixture teardown: SIGTERM, then SIGKILL if it does not go."""
        self._close_clients()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self._forget()

    def _forget(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)

    def _close_clients(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a client of a dead server may fail; irrelevant
                pass
        self._clients.clear()

    def log_text(self) -> str:
        """The runtime's stderr so far (its log)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # endpoints

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def flight_location(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def flight_client(self, api_key: str | None = None, headers: Mapping[str, str] | None = None,
                      ) -> flight.FlightClient:
        """A Flight client; with `api_key` every call carries `authorization: Bearer KEY`."""
        hdrs = dict(headers or {})
        if api_key is not None:
            hdrs["authorization"] = f"Bearer {api_key}"
        middleware = [HeaderMiddlewareFactory(hdrs)] if hdrs else None
        # no wait_for_available(): it probes with ListFlights, which an API key refuses; the server
        # logged its port only once it was listening
        client = flight.FlightClient(self.flight_location, middleware=middleware)
        self._clients.append(client)
        return client

    def _api_headers(self, headers: Mapping[str, str] | None, auth: bool) -> dict[str, str]:
        hdrs = dict(headers or {})
        if auth and self.api_key is not None:
            hdrs.setdefault("X-API-Key", self.api_key)
        return hdrs

    def get(self, path: str, headers: Mapping[str, str] | None = None, auth: bool = True,
            timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        """GET on the HTTP API; sends the runtime's API key unless auth=False or overridden."""
        return http_request(self.http_url + path, "GET", None, self._api_headers(headers, auth), timeout)

    def post(self, path: str, body: bytes | str | Mapping | list | None = None,
             headers: Mapping[str, str] | None = None, auth: bool = True,
             timeout: float = HTTP_TIMEOUT_S) -> HttpResponse:
        return http_request(self.http_url + path, "POST", body if body is not None else b"",
                            self._api_headers(headers, auth), timeout)

    def get_json(self, path: str, expect_status: int = 200, **kwargs: Any) -> Any:
        response = self.get(path, **kwargs)
        assert response.status == expect_status, (path, response.status, response.body[:2000])
        return response.json()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Runtime:
        """Poll GET /v1/ready until 200; fail with the log if the runtime dies or it takes too long."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.running:
                pytest.fail(f"flightcast exited ({self.proc.poll()}) while waiting for ready; log:\n"
                            f"{self.log_text()}")
            try:
                last = self.get("/v1/ready", timeout=5)
                if last.status == 200:
                    return self
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        pytest.fail(f"/v1/ready not 200 within {timeout:.0f} s (last: {last!r}); log:\n{self.log_text()}")


class RuntimeFactory:
    """Starts runtimes from spicepod text (or an existing file) under one folder; closes them all."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.runtimes: list[Runtime] = []
        self._count = 0

    def new_dir(self) -> Path:
        self._count += 1
        path = self.base / f"rt{self._count}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(
        self, spicepod_text: str | None = None, *, spicepod: Path | None = None,
        data_dir: Path | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None,
        extra_args: list[str] | None = None, ready: bool = True, timeout: float = START_TIMEOUT_S,
    ) -> Runtime:
        """Start a runtime. Restart on the same store with `spicepod=rt.spicepod, data_dir=rt.data_dir`."""
        if spicepod is None:
            assert spicepod_text is not None, "give spicepod text or a spicepod path"
            spicepod = write_spicepod(self.new_dir(), spicepod_text)
        if data_dir is None:
            data_dir = spicepod.parent / "store"
        runtime = Runtime(spicepod, data_dir, api_key=api_key, env=env, extra_args=extra_args)
        self.runtimes.append(runtime)
        runtime.start(timeout=timeout)
        if ready:
            runtime.wait_ready(timeout=timeout)
        return runtime

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.cleanup()


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Function-scoped: start runtimes with `runtime_factory(spicepod_text)`; all stopped afterwards."""
    factory = RuntimeFactory(tmp_path / "runtimes")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_runtime_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeFactory]:
    """Module-scoped variant, for one runtime shared by the tests of a module."""
    factory = RuntimeFactory(tmp_path_factory.mktemp("runtimes"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and _LIVE:
        for runtime in list(_LIVE):
            log = runtime.log_text()
            if len(log) > 20000:
                log = "...\n" + log[-20000:]
            report.sections.append((f"flightcast log ({runtime.log_path.name})", log))
    return report


# --- CLI ----------------------------------------------------------------------------------------------

def run_cli(args: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m flightcast ARGS` to completion, capturing stdout and stderr as text."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTCAST_")}
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "flightcast", *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


# --- spicepods and data factories -----------------------------------------------------------------------

def write_spicepod(folder: Path, text: str, name: str = "spicepod.yaml") -> Path:
    """Write (dedented) spicepod text into `folder` and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def copy_data(name: str, folder: Path) -> Path:
    """Copy a sample file from the repo's data/ into `folder` (writable) and return the copy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    target.write_bytes((DATA / name).read_bytes())
    return target


def series_table(n: int = 10, start: datetime = datetime(2024, 1, 1), step: timedelta = timedelta(hours=1),
                 values: list[float] | None = None, time_column: str = "ts",
                 value_column: str = "value") -> pa.Table:
    """A regular series: `ts` timestamp[us] from `start` every `step`, `value` float64 (0.5, 1.5, ...)."""
    if values is None:
        values = [i + 0.5 for i in range(n)]
    times = [start + i * step for i in range(len(values))]
    return pa.table({
        time_column: pa.array(times, pa.timestamp("us")),
        value_column: pa.array(values, pa.float64()),
    })


def write_table(path: Path, table: pa.Table) -> Path:
    """Write `table` as .csv, .parquet or .arrow/.feather/.ipc (Arrow IPC file) by the path's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        pacsv.write_csv(table, path)
    elif suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        feather.write_feather(table, path, compression="uncompressed")
    else:
        raise ValueError(f"no writer for {path.suffix}")
    return path


def write_csv_text(path: Path, text: str) -> Path:
    """Write raw CSV text (dedented) as is, for exact control of how values are spelled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def utc_instants(column: pa.ChunkedArray | pa.Array) -> list[datetime]:
    """Timestamps as aware UTC datetimes; a naive timestamp column is read as UTC."""
    assert pa.types.is_timestamp(column.type), f"not a timestamp column: {column.type}"
    out = []
    for value in column.to_pylist():
        if value is None:
            out.append(None)
        elif value.tzinfo is None:
            out.append(value.replace(tzinfo=timezone.utc))
        else:
            out.append(value.astimezone(timezone.utc))
    return out


def parse_instant(text: str) -> datetime:
    """An ISO 8601 timestamp from the HTTP API as an aware UTC datetime (naive is read as UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@pytest.fixture
def data_dir() -> Path:
    """The repo's sample data folder (read-only; copy files before changing them)."""
    return DATA


# --- the sealed SQL surface ------------------------------------------------------------------------------

def refused_statements(data: Path, out: Path) -> list[tuple[str, str, Path | None]]:
    """(id, SQL, a path that must not exist afterwards)."""
    return [
        ("insert", "INSERT INTO rw_guard VALUES (TIMESTAMP '2040-01-01', 9.0)", None),
        ("insert_select", "INSERT INTO rw_guard SELECT * FROM rw_guard", None),
        ("update", "UPDATE rw_guard SET value = 0", None),
        ("delete", "DELETE FROM rw_guard", None),
        ("delete_returning", "DELETE FROM rw_guard RETURNING *", None),
        ("truncate", "TRUNCATE rw_guard", None),
        ("create_table", "CREATE TABLE evil AS SELECT 1 AS x", None),
        ("create_temp_table", "CREATE TEMP TABLE evil AS SELECT 1 AS x", None),
        ("create_or_replace", "CREATE OR REPLACE TABLE rw_guard AS SELECT * FROM rw_guard LIMIT 0", None),
        ("create_view", "CREATE VIEW evil AS SELECT 1 AS x", None),
        ("create_macro", "CREATE MACRO evil(a) AS a + 1", None),
        ("alter", "ALTER TABLE rw_guard RENAME TO evil", None),
        ("drop", "DROP TABLE rw_guard", None),
        ("drop_read_dataset", "DROP TABLE metrics", None),
        ("copy_to", f"COPY rw_guard TO '{out / 'copy.csv'}'", out / "copy.csv"),
        ("copy_query_to", f"COPY (SELECT 1) TO '{out / 'copy2.parquet'}' (FORMAT parquet)",
         out / "copy2.parquet"),
        ("copy_from", f"COPY rw_guard FROM '{data / 'rw_guard.csv'}'", None),
        ("export", f"EXPORT DATABASE '{out / 'export'}'", out / "export"),
        ("attach", f"ATTACH '{out / 'other.duckdb'}' AS other", out / "other.duckdb"),
        ("install", "INSTALL httpfs", None),
        ("load", "LOAD httpfs", None),
        ("set", "SET threads = 1", None),
        ("set_external_access", "SET enable_external_access = true", None),
        ("reset", "RESET threads", None),
        ("pragma", "PRAGMA enable_profiling", None),
        ("read_csv_passwd", "SELECT * FROM read_csv('/etc/passwd')", None),
        ("read_csv_auto_passwd", "SELECT * FROM read_csv_auto('/etc/passwd')", None),
        ("replacement_scan_passwd", "SELECT * FROM '/etc/passwd'", None),
        ("read_text", "SELECT * FROM read_text('/etc/hostname')", None),
        ("read_blob", "SELECT * FROM read_blob('/etc/hostname')", None),
        ("glob", "SELECT * FROM glob('/etc/*')", None),
        ("read_parquet_host_file", f"SELECT * FROM read_parquet('{data / 'secret.parquet'}')", None),
        ("parquet_metadata", f"SELECT * FROM parquet_metadata('{data / 'secret.parquet'}')", None),
        ("read_json_host_file", f"SELECT * FROM read_json_auto('{data / 'secret.json'}')", None),
        ("read_source_file", f"SELECT * FROM read_csv('{data / 'metrics.csv'}')", None),
        ("relative_replacement_scan", "FROM 'data/metrics.csv'", None),
        ("attach_memory", "ATTACH ':memory:' AS scratch", None),
        ("detach_store", "DETACH DATABASE IF EXISTS store", None),
        ("explain_analyze_delete", "EXPLAIN ANALYZE DELETE FROM rw_guard", None),
        ("prepare_delete", "PREPARE wipe AS DELETE FROM rw_guard", None),
        ("begin", "BEGIN TRANSACTION", None),
        ("multi_statement", "SELECT 1; DROP TABLE rw_guard", None),
        ("multi_statement_delete", "SELECT * FROM rw_guard; DELETE FROM rw_guard", None),
        ("call_table_function", "CALL read_csv('/etc/passwd')", None),
        ("call_pragma", "CALL pragma_database_list()", None),
        ("checkpoint", "CHECKPOINT", None),
        ("vacuum", "VACUUM", None),
        ("use", "USE store", None),
        ("create_secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", None),
        ("import_database", f"IMPORT DATABASE '{out}'", None),
    ]
