"""Shared benchmark helpers: a runtime subprocess on free ports, synthetic series, timing statistics.

Every figure a benchmark prints is compared with a baseline measured in the same run: the machine is
shared and noisy, so only ratios mean something.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HTTP_LINE = re.compile(r"flightcast: http listening on (\S+):(\d+)")
FLIGHT_LINE = re.compile(r"flightcast: flight listening on (grpc://\S+:\d+)")
START = datetime(2000, 1, 1)
STEP = timedelta(minutes=1)


# ------------------------------------------------------------------------------------------ data


def series_table(rows: int, start: datetime = START, step: timedelta = STEP, seed: int = 0) -> pa.Table:
    """ts (timestamp[us], regular steps), value (float64: daily cycle + noise), id (int64)."""
    step_us = int(step / timedelta(microseconds=1))
    ts = np.datetime64(start, "us") + np.arange(rows, dtype=np.int64) * np.timedelta64(step_us, "us")
    rng = np.random.default_rng(seed)
    minutes = np.arange(rows, dtype=np.float64)
    value = 100.0 + 10.0 * np.sin(2 * np.pi * minutes / 1440.0) + rng.normal(0.0, 1.0, rows)
    ids = np.arange(rows, dtype=np.int64)
    return pa.table({"ts": pa.array(ts, pa.timestamp("us")), "value": value, "id": ids})


def write_parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path, row_group_size=1 << 20, compression="snappy")
    return path


def next_rows(last_ts: np.datetime64, count: int = 1, first_id: int = 0) -> pa.Table:
    """`count` rows right after `last_ts`, one step apart (so the series stays regular)."""
    ts = np.datetime64(last_ts, "us") + (np.arange(1, count + 1) * np.timedelta64(60, "s")).astype("m8[us]")
    return pa.table({
        "ts": pa.array(ts, pa.timestamp("us")),
        "value": np.full(count, 100.0),
        "id": np.arange(first_id, first_id + count, dtype=np.int64),
    })


def do_put(client: flight.FlightClient, name: str, table: pa.Table, chunk: int = 1 << 20) -> dict:
    """DoPut `table` to dataset `name`; returns the server's `{"dataset", "rows"}`."""
    writer, meta = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
    for batch in table.to_batches(max_chunksize=chunk):
        writer.write_batch(batch)
    writer.done_writing()
    result = meta.read()
    writer.close()
    return json.loads(result.to_pybytes()) if result is not None else {}


# ------------------------------------------------------------------------------------------ stats


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) if len(samples) else float("nan")


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 1,
               before: Callable[[], Any] | None = None) -> list[float]:
    """Seconds per call of `fn` over `runs` calls (after `warmup`); `before` runs untimed before each."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    out = []
    for _ in range(runs):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(seconds: float) -> float:
    return seconds * 1000.0


# ------------------------------------------------------------------------------------------ output


def header(module: str, title: str) -> None:
    print()
    print("=" * 100)
    print(f"$ .venv/bin/python -m {module}    # {title}")
    print("=" * 100, flush=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a small fixed-width table; floats with 3 significant decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    sys.stdout.flush()


def ratio_line(label: str, value: float, target: str, met: bool | None) -> None:
    """One `ratio` line: value, the target, and whether this run met it (information, not a verdict)."""
    verdict = "" if met is None else ("  [met]" if met else "  [NOT met]")
    print(f"ratio  {label:<66} {value:8.3f}x   target {target}{verdict}", flush=True)


# ------------------------------------------------------------------------------------------ runtime


class Runtime:
    """`python -m flightcast run` on free ports with a spicepod in a temp dir; always stopped."""

    def __init__(self, spicepod: str, folder: Path, api_key: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spicepod = self.folder / "spicepod.yaml"
        self.spicepod.write_text(textwrap.dedent(spicepod))
        self.data_dir = self.folder / "data"
        self.log_path = self.folder / "runtime.log"
        self.api_key = api_key
        self.proc: subprocess.Popen | None = None
        self.http_port = 0
        self.flight_location = ""

    def start(self, timeout: float = 600.0) -> Runtime:
        args = [PYTHON, "-m", "flightcast", "run", "--spicepod", str(self.spicepod),
                "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        if self.api_key:
            args += ["--api-key", self.api_key]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            http, fl = HTTP_LINE.search(text), FLIGHT_LINE.search(text)
            if http and fl:
                self.http_port, self.flight_location = int(http.group(2)), fl.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"flightcast exited with {self.proc.returncode}; log:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"flightcast did not start in {timeout:.0f} s; log:\n{self.log_text()}")

    def wait_ready(self, timeout: float = 600.0) -> Runtime:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url("/v1/ready"), timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except urllib.error.HTTPError:
                pass
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"flightcast died; log:\n{self.log_text()}")
            time.sleep(0.1)
        raise RuntimeError(f"flightcast not ready in {timeout:.0f} s; log:\n{self.log_text()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def flight_client(self) -> flight.FlightClient:
        return flight.FlightClient(self.flight_location)

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=60) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class TempDir:
    """A temp dir removed at exit (the datasets are large)."""

    def __init__(self, prefix: str):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMP")))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def spawn(code: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run `python -c code` from the repo root; returns the process and its first stdout line."""
    import selectors

    proc = subprocess.Popen([PYTHON, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline().strip() if sel.select(timeout) else ""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"baseline server did not start in {timeout:.0f} s: {code[:80]}")
    return proc, line


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
