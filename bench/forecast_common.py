"""Helpers of the forecasting benchmarks (accuracy, panel, intervals): data, baselines, peers, output.

The runtime they start is harness.RuntimeProcess, the launcher tests and the other benchmarks use.
`BENCH_TINY=1` (bench.common.TINY) makes every forecasting benchmark run once on tiny inputs (what `make test` does).
"""

from __future__ import annotations

import csv
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import TINY, do_put
from harness import RuntimeProcess, write_spicepod
from pipelines.series import SeriesSet

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PANEL = DATA / "tourism_quarterly.csv"
# Held-out steps per frequency unit (the usual M-competition horizons).
HORIZON = {"mo": 12, "q": 8, "y": 6}


def tiny_mode(tiny: bool | None = None) -> bool:
    """True when asked for, or in the benchmarks' tiny mode (BENCH_TINY=1, bench.common.TINY)."""
    return TINY if tiny is None else tiny


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


def flush() -> None:
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ runtime


class Runtime(RuntimeProcess):
    """The runtime subprocess (harness.RuntimeProcess, the one launcher) of spicepod text written into
    `folder`, as a context manager; always stopped."""

    start_timeout = 300.0

    def __init__(self, spicepod: str, folder: Path):
        super().__init__(write_spicepod(Path(folder), spicepod), Path(folder) / "store")

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def ready_after(self, timeout: float) -> float:
        """Seconds until /v1/ready answers 200 (models trained)."""
        start = time.monotonic()
        self.wait_ready(timeout)
        return time.monotonic() - start

    def body(self, path: str, accept: str = "application/json") -> bytes:
        response = self.get(path, headers={"Accept": accept}, timeout=300)
        assert response.status == 200, (path, response.status, response.body[:300])
        return response.body

    def put(self, dataset: str, table: Any) -> None:
        with self.flight_client() as client:
            do_put(client, dataset, table)
