"""Anomaly detection on arrival: what it costs a DoPut, and how soon an anomaly is listed.

One runtime holds each dataset twice: `*_on` read by a model (every DoPut is checked for anomalies, and
scored for live accuracy, in the background) and `*_off` read by none (nothing follows its DoPuts). DoPuts
to the two alternate, so both see the same machine:
- 1-row DoPuts to a single-series dataset: latency p50 and p99;
- DoPuts of one row for each of the N series of a panel (10,000): rows per second;
- the time from a DoPut's return until GET /v1/models/{name}/anomalies lists the spike it brought (each
  DoPut a spike in a series not spiked before), p99 over 200 DoPuts.

Run: .venv/bin/python -m bench.bench_anomalies
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from bench.common import (
    Runtime,
    TempDir,
    do_put,
    header,
    median,
    ms,
    p99,
    ratio_line,
    size,
    table,
    write_parquet,
)

SERIES = size(10_000, 50, env="BENCH_SERIES")
PANEL_DAYS = size(40, 30)
SINGLE_DAYS = 200
SINGLE_PUTS = size(1000, 10)
PANEL_PUTS = size(30, 2)
SPIKES = size(200, 10)
LISTED_TIMEOUT_S = 30.0
DAY0 = datetime(2020, 1, 1)
WEEK = np.array([0.0, 0.2, 0.1, -0.1, 0.3, 1.0, 0.8])

SPICEPOD = """\
version: v1
kind: Spicepod
name: bench-anomalies
datasets:
  - {{from: file:{single}, name: single_on, mode: read_write}}
  - {{from: file:{single}, name: single_off, mode: read_write}}
  - {{from: file:{panel}, name: panel_on, series_column: store, mode: read_write}}
  - {{from: file:{panel}, name: panel_off, series_column: store, mode: read_write}}
models:
  - {{from: lightgbm, name: single_m, datasets: [single_on], params: {{lookback: 14, horizon: 1, method: lightgbm,
      backtest_windows: 1, lightgbm: {{num_boost_round: 30}}}}}}
  - {{from: lightgbm, name: panel_m, datasets: [panel_on], params: {{lookback: 7, horizon: 1, method: lightgbm,
      backtest_windows: 1, lightgbm: {{num_boost_round: 30}}}}}}
"""


def level(day: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """A weekly cycle around 100 (times each series' scale)."""
    return 100.0 * scale + 10.0 * scale * WEEK[day % 7]


def single_rows(first: int, count: int) -> pa.Table:
    days = np.arange(first, first + count)
    return pa.table({"ts": pa.array([DAY0 + timedelta(days=int(d)) for d in days], pa.timestamp("us")),
                     "value": level(days)})


def panel_rows(day: int, ids: list[str], scales: np.ndarray, spike: float = 0.0) -> pa.Table:
    """One row per series for `day` (`spike` times the series' scale added)."""
    values = level(np.full(len(ids), day), scales) + spike * scales
    return pa.table({"store": ids, "ts": pa.array([DAY0 + timedelta(days=day)] * len(ids), pa.timestamp("us")),
                     "value": values})


def timed_put(client, dataset: str, rows: pa.Table) -> float:
    t0 = time.perf_counter()
    do_put(client, dataset, rows)
    return time.perf_counter() - t0


def single_latency(rt: Runtime) -> dict[str, list[float]]:
    """1-row DoPuts, alternating between the watched and the unwatched copy."""
    out: dict[str, list[float]] = {"on": [], "off": []}
    with rt.flight_client() as client:
        for k in range(SINGLE_PUTS + 2):  # the first two warm up
            rows = single_rows(SINGLE_DAYS + k, 1)
            for side in ("on", "off") if k % 2 else ("off", "on"):
                seconds = timed_put(client, f"single_{side}", rows)
                if k >= 2:
                    out[side].append(seconds)
    return out


def panel_throughput(rt: Runtime, ids: list[str], scales: np.ndarray) -> dict[str, float]:
    """Rows per second of DoPuts of one row per series, alternating watched and unwatched."""
    seconds = {"on": 0.0, "off": 0.0}
    with rt.flight_client() as client:
        for k in range(PANEL_PUTS):
            rows = panel_rows(PANEL_DAYS + k, ids, scales)
            for side in ("on", "off") if k % 2 else ("off", "on"):
                seconds[side] += timed_put(client, f"panel_{side}", rows)
    return {side: PANEL_PUTS * len(ids) / s for side, s in seconds.items()}


def time_to_listed(rt: Runtime, ids: list[str], scales: np.ndarray) -> list[float]:
    """Seconds from each spike's DoPut returning until the anomalies route lists it."""
    day = PANEL_DAYS + PANEL_PUTS
    stamp = (DAY0 + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    with rt.flight_client() as client:
        for sid in ids[:SPIKES]:
            rows = panel_rows(day, [sid], scales[ids.index(sid):ids.index(sid) + 1], spike=50.0)
            do_put(client, "panel_on", rows)
            returned = time.perf_counter()
            deadline = returned + LISTED_TIMEOUT_S
            while True:
                listed = rt.get_json(f"/v1/models/panel_m/anomalies?series={sid}&limit=1")
                if listed and listed[0]["ts"] == stamp:
                    out.append(time.perf_counter() - returned)
                    break
                if time.perf_counter() > deadline:
                    raise AssertionError(f"the spike of {sid} was not listed within {LISTED_TIMEOUT_S:.0f} s")
                time.sleep(0.002)
    return out


def main() -> None:
    header("bench.bench_anomalies", "DoPut with anomaly detection on vs off; time until an anomaly is listed")
    ids = [f"s{i:05d}" for i in range(SERIES)]
    scales = np.random.default_rng(0).uniform(0.5, 20.0, SERIES)
    with TempDir("flightcast-bench-anomalies-") as folder:
        single = write_parquet(folder / "single.parquet", single_rows(0, SINGLE_DAYS))
        days = np.arange(PANEL_DAYS)
        rng = np.random.default_rng(1)
        panel = pa.table({
            "store": np.repeat(ids, PANEL_DAYS),
            "ts": pa.array(np.tile([DAY0 + timedelta(days=int(d)) for d in days], SERIES), pa.timestamp("us")),
            "value": (level(np.tile(days, SERIES), np.repeat(scales, PANEL_DAYS))
                      + rng.normal(0.0, 0.5, SERIES * PANEL_DAYS) * np.repeat(scales, PANEL_DAYS)),
        })
        panel_path = write_parquet(folder / "panel.parquet", panel)
        with Runtime(SPICEPOD.format(single=single, panel=panel_path), folder) as rt:
            ready = rt.start().ready_after(Runtime.start_timeout)
            print(f"ready after {ready:.1f} s ({SERIES:,} series of {PANEL_DAYS} days trained)")
            latency = single_latency(rt)
            throughput = panel_throughput(rt, ids, scales)
            listed = time_to_listed(rt, ids, scales)
            found = rt.get_json("/v1/models/panel_m/anomalies?limit=10000")
            assert len({row["series"] for row in found} & set(ids[:SPIKES])) == SPIKES
    print(f"\n1-row DoPuts to a single-series dataset ({SINGLE_PUTS} each), DoPuts of {SERIES:,} rows (one per "
          f"series of a panel, {PANEL_PUTS} each); on: a model reads the dataset, off: none does")
    table(["detection", "1-row p50 ms", "1-row p99 ms", f"{SERIES:,}-row rows/s"],
          [[side, ms(median(latency[side])), ms(p99(latency[side])), throughput[side]] for side in ("off", "on")])
    print(f"\ntime from a spike's DoPut returning until it is listed ({SPIKES} DoPuts): "
          f"p50 {ms(median(listed)):.1f} ms, p99 {ms(p99(listed)):.1f} ms, max {ms(max(listed)):.1f} ms")
    p50_ratio = median(latency["on"]) / median(latency["off"])
    ratio_line("1-row DoPut p50, detection on / off", p50_ratio, "<= 1.1x", p50_ratio <= 1.1)
    p99_ratio = p99(latency["on"]) / p99(latency["off"])
    ratio_line("1-row DoPut p99, detection on / off", p99_ratio, "<= 1.1x", p99_ratio <= 1.1)
    rows_ratio = throughput["off"] / throughput["on"]
    ratio_line(f"{SERIES:,}-series DoPut time per row, detection on / off", rows_ratio, "<= 1.1x", rows_ratio <= 1.1)
    seconds = p99(listed)
    ratio_line("p99 seconds from DoPut return to the anomaly listed, over 1 s", seconds, "< 1x", seconds < 1.0)


if __name__ == "__main__":
    main()
