"""Shared fixtures: real flightcast runtimes on free ports, HTTP/Flight helpers and data factories.

The runtimes come from `harness/` (shared with the benchmarks): a `python -m flightcast run` subprocess
with its stderr in a log file, or the same runtime in this process for tests that need no process of
their own. Fixtures always stop the runtimes they started, and a failing test gets the logs of the
runtime subprocesses that were alive during it appended to its report (in-process runtimes log into
pytest's captured log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from harness import (  # noqa: F401 - re-exported for the test modules
    LIVE,
    HttpResponse,
    InProcessRuntime,
    RuntimeProcess,
    http_request,
    write_spicepod,
)
from harness.browser import BrowserMissing, browser_paths
from harness.client import START_TIMEOUT_S
from pipelines.fit_process import preload_library

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

# The in-process runtimes of a test worker share its one fork server, whichever spicepod trains first.
preload_library()


# --- Flight -------------------------------------------------------------------------------------------

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


# --- the runtime --------------------------------------------------------------------------------------

Runtime = RuntimeProcess  # the name the test modules use for a runtime subprocess


class RuntimeFactory:
    """Starts runtimes from spicepod text (or an existing file) under one folder; stops them all.

    `in_process=True` runs them in this process (harness.InProcessRuntime): the same composition root
    without a new interpreter, for tests that do not need a process of their own (no signals, crash,
    environment or CLI flags).
    """

    def __init__(self, base: Path, in_process: bool = False):
        self.base = Path(base)
        self.in_process = in_process
        self.runtimes: list[RuntimeProcess | InProcessRuntime] = []
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
    ) -> Any:
        """Start a runtime. Restart on the same store with `spicepod=rt.spicepod, data_dir=rt.data_dir`."""
        if spicepod is None:
            assert spicepod_text is not None, "give spicepod text or a spicepod path"
            spicepod = write_spicepod(self.new_dir(), spicepod_text)
        if data_dir is None:
            data_dir = spicepod.parent / "store"
        runtime: RuntimeProcess | InProcessRuntime
        if self.in_process:
            assert not env and not extra_args, "environment and CLI flags need a runtime subprocess"
            runtime = InProcessRuntime(spicepod, data_dir, api_key=api_key)
        else:
            runtime = RuntimeProcess(spicepod, data_dir, api_key=api_key, env=env, extra_args=extra_args)
        self.runtimes.append(runtime)
        runtime.start(timeout=timeout)
        if ready:
            runtime.wait_ready(timeout=timeout)
        return runtime

    def close(self) -> None:
        """Stop every runtime; the first failure to stop is raised once all were tried."""
        failures = []
        for runtime in self.runtimes:
            try:
                runtime.cleanup()
            except Exception as exc:  # stop the others first
                failures.append(exc)
        if failures:
            raise failures[0]


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Function-scoped: start runtime subprocesses with `runtime_factory(spicepod_text)`; all stopped afterwards."""
    factory = RuntimeFactory(tmp_path / "runtimes")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_runtime_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeFactory]:
    """Module-scoped variant, for one runtime subprocess shared by the tests of a module."""
    factory = RuntimeFactory(tmp_path_factory.mktemp("runtimes"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def inprocess_factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Function-scoped: runtimes in this process (harness.InProcessRuntime); all stopped afterwards."""
    factory = RuntimeFactory(tmp_path / "runtimes", in_process=True)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_inprocess_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeFactory]:
    """Module-scoped: one in-process runtime shared by the tests of a module."""
    factory = RuntimeFactory(tmp_path_factory.mktemp("runtimes"), in_process=True)
    try:
        yield factory
    finally:
        factory.close()


# --- the order files run in -------------------------------------------------------------------------------

# `make test` runs whole files on two workers (--dist loadfile, --no-loadscope-reorder): a long file begun last
# keeps one core busy after the other has run out of work. So the longest files go first, longest first (wall
# times on 2 cores); every other file follows in name order. A new slow file belongs in this list. test_dask.py is
# the exception, placed after the long ones: each round of its distributed training waits for both Dask workers to
# be scheduled, and beside test_bench_smoke's benchmark runs its set-up took 32-39 s, against 8 s beside short files.
LONGEST_FIRST = (
    "test_bench_smoke.py", "test_crash.py", "test_fuzz_http.py", "test_http.py", "test_page.py", "test_versions.py",
    "test_portfolio.py", "test_durability.py", "test_flight_fuzz.py", "test_panels.py", "test_anomalies.py",
    "test_fit_process.py", "test_mixed_load.py", "test_limits.py", "test_forecasting.py", "test_pipelines.py",
    "test_flight_sql.py", "test_store.py", "test_roles.py", "test_drivers.py", "test_driver_features.py",
    "test_http_warm.py", "test_cli.py", "test_dask.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and LIVE:
        for runtime in list(LIVE):
            log = runtime.log_text()
            if len(log) > 20000:
                log = "...\n" + log[-20000:]
            report.sections.append((f"flightcast log ({runtime.log_path.name})", log))
    return report


# --- waiting on observable state -------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll `predicate` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.01)
    return value


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str  # the kernel's hex code: 01 established, 08 close-wait (the peer closed, this side has not)
    tx_queue: int  # bytes sent but not yet acknowledged by the peer
    rx_queue: int  # bytes received but not yet read by the process that owns the socket


def tcp_sockets(port: int) -> list[TcpSocket]:
    """The IPv4 TCP connections of this machine to or from `port` (Linux /proc/net/tcp): what a server
    process has read from its clients, and which connections it still holds, as the kernel sees them."""
    sockets = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16), \
            fields[3], fields[4].split(":")
        if port in (local, remote) and state != "0A":  # 0A: a listening socket, no connection
            sockets.append(TcpSocket(local, remote, state, int(queues[0], 16), int(queues[1], 16)))
    return sockets


def server_read_everything(port: int) -> bool:
    """Every byte clients sent to the server on `port` has been read by the server process."""
    return all(s.rx_queue == 0 for s in tcp_sockets(port) if s.local_port == port) and \
        all(s.tx_queue == 0 for s in tcp_sockets(port) if s.remote_port == port)


def open_server_connections(port: int) -> set[int]:
    """Client ports of the connections the server on `port` still holds (established, or closed by the client
    and not yet by the server)."""
    return {s.remote_port for s in tcp_sockets(port) if s.local_port == port and s.state in ("01", "08")}


# --- the browser -------------------------------------------------------------------------------------

def require_browser() -> None:
    """Skip the calling test without headless Chromium (install hint in the reason); fail instead under CI=true,
    which installs the browser (.ci/run), so a missing browser never passes as green there."""
    try:
        browser_paths()
    except BrowserMissing as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {missing}")
        pytest.skip(str(missing))


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


def nile_spicepod(name: str) -> str:
    """A small spicepod: the Nile series and one quick model on it, `nile_m` (lookback 8, horizon 3)."""
    return f"""
version: v1
kind: Spicepod
name: {name}
datasets:
  - from: file:nile.csv
    name: nile
models:
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {{lookback: 8, horizon: 3, backtest_windows: 1, lightgbm: {{num_boost_round: 10}}}}
"""

def copy_data(name: str, folder: Path) -> Path:
    """Copy a sample file from the repo's data/ into `folder` (writable) and return the copy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    target.write_bytes((DATA / name).read_bytes())
    return target


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
