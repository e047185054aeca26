"""Helpers of the forecasting benchmarks (accuracy, panel, intervals): data, baselines, peers, output.

Kept apart from bench/common.py (the runtime launcher) so these benchmarks run in-process without it.
`FLIGHTCAST_BENCH_TINY=1` makes every forecasting benchmark run once on tiny inputs (what `make test` does).
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.series import SeriesSet

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PANEL = DATA / "tourism_quarterly.csv"
# Held-out steps per frequency unit (the usual M-competition horizons).
HORIZON = {"mo": 12, "q": 8, "y": 6}
TINY_ENV = "FLIGHTCAST_BENCH_TINY"


def tiny_mode(tiny: bool | None = None) -> bool:
    """True when asked for, or when FLIGHTCAST_BENCH_TINY=1 is set."""
    if tiny is not None:
        return tiny
    return os.environ.get(TINY_ENV, "").strip().lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------------------------ data


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


def peers() -> dict[str, str | None]:
    """Which peer libraries are importable: name -> version, or None (then their columns are skipped)."""
    found: dict[str, str | None] = {}
    for name in ("pandas", "mlforecast", "statsforecast"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", "?")
        except ImportError:
            found[name] = None
    return found


def report_peers(found: dict[str, str | None], needed: Sequence[str]) -> bool:
    """Print one line on the peers; True when all of `needed` are there."""
    missing = [n for n in needed if found.get(n) is None]
    if missing:
        print(f"peers: {', '.join(missing)} not installed: their columns are skipped "
              f"(install the bench extra: .venv/bin/pip install -c constraints.txt -e '.[test,bench]')")
        return False
    print("peers: " + ", ".join(f"{n} {found[n]}" for n in needed))
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


# ------------------------------------------------------------------------------------------ output


def header(module: str, title: str) -> None:
    print()
    print("=" * 100)
    print(f"$ .venv/bin/python -m {module}    # {title}")
    print("=" * 100, flush=True)


def ratio(label: str, value: float, target: str, met: bool | None) -> None:
    """One `ratio` line: value, the target, and whether this run met it (information, not a verdict)."""
    verdict = "" if met is None else ("  [met]" if met else "  [NOT met]")
    print(f"ratio  {label:<66} {value:8.3f}x   target {target}{verdict}", flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def flush() -> None:
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ runtime


class Runtime:
    """`python -m flightcast run` on free ports (parses its `listening on` lines); always stopped."""

    HTTP_LINE = re.compile(r"flightcast: http listening on (\S+):(\d+)")
    FLIGHT_LINE = re.compile(r"flightcast: flight listening on (grpc://\S+:\d+)")

    def __init__(self, spicepod: str, folder: Path):
        self.folder = Path(folder)
        self.spicepod = self.folder / "spicepod.yaml"
        self.spicepod.write_text(spicepod)
        self.log_path = self.folder / "runtime.log"
        self.proc: subprocess.Popen | None = None
        self.http = ""
        self.flight = ""

    def __enter__(self) -> Runtime:
        args = [sys.executable, "-m", "flightcast", "run", "--spicepod", str(self.spicepod),
                "--http", "127.0.0.1:0", "--flight", "127.0.0.1:0", "--data-dir", str(self.folder / "store")]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = self.log()
            http, fl = self.HTTP_LINE.search(text), self.FLIGHT_LINE.search(text)
            if http and fl:
                self.http, self.flight = f"http://127.0.0.1:{http.group(2)}", fl.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"flightcast did not start; log:\n{self.log()[-4000:]}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> float:
        """Seconds until /v1/ready answers 200 (models trained)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                with urllib.request.urlopen(self.http + "/v1/ready", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"flightcast died; log:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"flightcast not ready in {timeout:.0f} s; log:\n{self.log()[-4000:]}")

    def get(self, path: str, accept: str = "application/json") -> bytes:
        request = urllib.request.Request(self.http + path, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def do_put(self, dataset: str, table: Any) -> None:
        import pyarrow.flight as flight

        client = flight.FlightClient(self.flight)
        try:
            writer, meta = client.do_put(flight.FlightDescriptor.for_path(dataset), table.schema)
            writer.write_table(table)
            writer.done_writing()
            meta.read()
            writer.close()
        finally:
            client.close()
