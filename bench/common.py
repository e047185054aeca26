"""Shared benchmark helpers: sizes (full or tiny), a runtime subprocess on free ports, synthetic series,
timing statistics and the output format.

Every figure a benchmark prints is compared with a baseline measured in the same run: the machine is
shared and noisy, so only ratios mean something.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from harness import RuntimeProcess, write_spicepod

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# BENCH_TINY=1 (`python -m bench --tiny`, and tests/test_bench_smoke.py): every benchmark runs its whole
# code path on tiny inputs in seconds; its figures then mean nothing, only that it still runs.
TINY = os.environ.get("BENCH_TINY") == "1"


def size(full: Any, tiny: Any, env: str | None = None) -> Any:
    """`full`, or `tiny` under BENCH_TINY=1; a number in the environment variable `env`, when set, wins."""
    if env and os.environ.get(env):
        return type(full)(os.environ[env])
    return tiny if TINY else full


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


class Runtime(RuntimeProcess):
    """The runtime subprocess (harness.RuntimeProcess) of spicepod text written into `folder`.

    Large datasets take long to load: start() and wait_ready() wait up to 10 minutes.
    """

    start_timeout = 600.0

    def __init__(self, spicepod: str, folder: Path, api_key: str | None = None):
        super().__init__(write_spicepod(folder, spicepod), Path(folder) / "data", api_key=api_key)


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
