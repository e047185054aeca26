"""The benchmarks' one kit: sizes (full or tiny), the runtime subprocess (harness.RuntimeProcess, the launcher
the tests use too), synthetic and sample data, forecasting baselines and scores, peers, timing statistics
and the output format.

Every figure a benchmark prints is compared with a baseline measured in the same run: the machine is
shared and noisy, so only ratios mean something.
"""

from __future__ import annotations

import csv
import json
import os
import resource
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
from pipelines.series import SeriesSet

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PANEL = DATA / "tourism_quarterly.csv"
# Held-out steps per frequency unit (the usual M-competition horizons).
HORIZON = {"mo": 12, "q": 8, "y": 6}
PYTHON = sys.executable
# BENCH_TINY=1 (`python -m bench --tiny`, and tests/test_bench_smoke.py): every benchmark runs its whole
# code path on tiny inputs in seconds; its figures then mean nothing, only that it still runs. The one switch.
TINY = os.environ.get("BENCH_TINY") == "1"
BENCH_EXTRA_HINT = "install the bench extra: .venv/bin/pip install -c constraints.txt -e '.[bench]' (make bench does)"


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



# ------------------------------------------------------------------------------------------ sample data


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps as datetime64[us], values as float64) of a ts,value CSV."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ts = np.array([r["ts"] for r in rows], dtype="datetime64[us]")
    values = np.array([float(r["value"]) for r in rows], dtype=np.float64)
    return ts, values


def sample_paths() -> list[Path]:
    """The single-series sample files (data/*.csv without the panel)."""
    return [p for p in sorted(DATA.glob("*.csv")) if p != PANEL]


def read_panel(path: Path = PANEL, limit: int | None = None) -> SeriesSet:
    """A series,ts,value CSV as a SeriesSet (series in file order of first appearance, each sorted by time)."""
    grouped: dict[str, list[tuple[str, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            grouped.setdefault(row["series"], []).append((row["ts"], float(row["value"])))
    out = SeriesSet()
    for sid, rows in grouped.items():
        if limit is not None and len(out) >= limit:
            break
        rows.sort()
        out.ids.append(sid)
        out.times.append(np.array([t for t, _ in rows], dtype="datetime64[us]"))
        out.values.append(np.array([v for _, v in rows], dtype=np.float64))
    return out


def split_panel(panel: SeriesSet, holdout: int) -> tuple[SeriesSet, list[np.ndarray]]:
    """The training part of every series (all but the last `holdout` points) and the held-out values."""
    train = SeriesSet(list(panel.ids), [t[:-holdout] for t in panel.times], [v[:-holdout] for v in panel.values])
    return train, [v[-holdout:] for v in panel.values]


# ------------------------------------------------------------------------------------------ baselines


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last season (the last value when season is 1)."""
    if season > 1 and history.size >= season:
        return np.resize(history[-season:], horizon)
    return np.full(horizon, history[-1])


def latest_windows(series: SeriesSet, lookback: int) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Each series' latest `lookback` values (a model's window_length), newest timestamps (n,) and ids."""
    windows = np.stack([v[-lookback:] for v in series.values])
    last = np.array([t[-1] for t in series.times], dtype="datetime64[us]")
    return windows, last, list(series.ids)


# ------------------------------------------------------------------------------------------ peers


PEERS = ("pandas", "mlforecast", "statsforecast")


def use_peers(needed: Sequence[str] = PEERS) -> bool:
    """Whether to run the peer libraries' columns: never in tiny mode; otherwise they must all be installed.

    A full run without them would print a benchmark with its comparison missing, so that is a failure.
    """
    if TINY:
        print("tiny mode: peers skipped")
        return False
    versions, missing = [], []
    for name in needed:
        try:
            versions.append(f"{name} {getattr(__import__(name), '__version__', '?')}")
        except ImportError:
            missing.append(name)
    if missing:
        raise RuntimeError(f"peers not installed: {', '.join(missing)}; {BENCH_EXTRA_HINT}")
    print("peers: " + ", ".join(versions))
    return True


def long_frame(series: SeriesSet) -> Any:
    """A pandas frame in the Nixtla layout (unique_id, ds, y) of every series."""
    import pandas as pd

    lengths = series.lengths()
    return pd.DataFrame({
        "unique_id": np.repeat(np.asarray([str(s) for s in series.ids], dtype=object), lengths),
        "ds": pd.to_datetime(np.concatenate(series.times)),
        "y": np.concatenate(series.values),
    })


def frame_to_matrix(frame: Any, ids: Sequence[Any], column: str, horizon: int) -> np.ndarray:
    """A peer's long forecast frame (unique_id, ds, column) as an array (len(ids), horizon) in `ids` order."""
    frame = frame.sort_values(["unique_id", "ds"])
    by_id = {uid: g[column].to_numpy(dtype=np.float64) for uid, g in frame.groupby("unique_id", sort=False)}
    return np.stack([by_id[str(s)][:horizon] for s in ids])


# ------------------------------------------------------------------------------------------ scoring


def naive_scales(histories: Sequence[np.ndarray], season: int) -> np.ndarray:
    """In-sample seasonal naive MAE of each history (the MASE and scaled-width denominator)."""
    from pipelines.metrics import naive_scale

    return np.array([naive_scale(h, season) for h in histories])


def mase_rows(actual: np.ndarray, forecast: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MASE of each row (n, h) with its scale; NaN where the scale is zero or undefined."""
    mae = np.mean(np.abs(actual - forecast), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scales > 0, mae / scales, np.nan)


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actual values inside [lower, upper], in percent."""
    return float(100.0 * np.mean((actual >= lower) & (actual <= upper)))


def scaled_width(lower: np.ndarray, upper: np.ndarray, scales: np.ndarray) -> float:
    """Mean interval width in units of each series' in-sample seasonal naive MAE (series with a zero scale
    are left out)."""
    ok = scales > 0
    return float(np.mean((upper[ok] - lower[ok]) / scales[ok, None]))


def reset_peak_rss() -> None:
    """Start this process's peak resident set size afresh (Linux): a child forked from a large parent
    otherwise reports the parent's size, which ru_maxrss keeps across exec."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB since reset_peak_rss (VmHWM; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0




# ------------------------------------------------------------------------------------------ runtime


class Runtime(RuntimeProcess):
    """The runtime subprocess (harness.RuntimeProcess) of spicepod text written into `folder`; its store in
    `folder/store` unless `data_dir` is given. Large datasets take long to load: it waits up to 10 minutes.

    As a context manager it is always stopped (it is started with `start()`).
    """

    start_timeout = 600.0

    def __init__(self, spicepod: str, folder: Path, api_key: str | None = None, *, data_dir: Path | None = None,
                 extra_args: list[str] | None = None):
        super().__init__(write_spicepod(Path(folder), spicepod), data_dir or Path(folder) / "store", api_key=api_key,
                         extra_args=extra_args)

    def ready_after(self, timeout: float) -> float:
        """Seconds until /v1/ready answers 200 (models trained)."""
        start = time.monotonic()
        self.wait_ready(timeout)
        return time.monotonic() - start

    def body(self, path: str, accept: str = "application/json") -> bytes:
        response = self.get(path, headers={"Accept": accept}, timeout=300)
        assert response.status == 200, (path, response.status, response.body[:300])
        return response.body

    def put(self, dataset: str, table: pa.Table) -> None:
        with self.flight_client() as client:
            do_put(client, dataset, table)


class TempDir:
    """A temp dir removed at exit (the datasets are large)."""

    def __init__(self, prefix: str):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMP")))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def spawn(code: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run `python -c code` from the repo root (a baseline server); returns the process and its first stdout line."""
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
