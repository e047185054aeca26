"""Serving while training: GET predict latency on a runtime while it retrains a panel model of 1,000 series in
the background (the runtime reads the series, its fit runs in a child process), against the same requests
with no training; and the panel's training time with one core kept busy by another process, against a
quiet machine.

Warm requests repeat a cached forecast; cold ones follow a DoPut of one row (the window query and the
forecast run). Requests go one at a time over one keep-alive connection, from this process.

Run: .venv/bin/python -m bench.bench_serving
"""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_panel import synthetic_panel
from bench.common import (
    Runtime,
    TempDir,
    do_put,
    header,
    median,
    ms,
    next_rows,
    p99,
    ratio_line,
    series_table,
    size,
    spawn,
    stop_process,
    table,
    write_parquet,
)

SERIES = size(1_000, 30)
POINTS = size(120, 120)
ROUNDS = size(50, 20)  # LightGBM rounds of the panel model
SINGLE_ROWS = size(50_000, 2_000)
QUIET_REQUESTS = size(1_000, 10)  # of each kind, with no training: about as many as one training's (a p99 of each)
MIN_REQUESTS = size(100, 4)  # of each kind while training: the panel is trained again until there are this many
TRAIN_TIMEOUT_S = 1800.0

SPICEPOD = """
version: v1
kind: Spicepod
name: bench-serving
datasets:
  - from: file:single.parquet
    name: single
    mode: read_write
  - from: file:panel.parquet
    name: panel
    mode: read_write
    series_column: series
models:
  - from: lightgbm
    name: single_m
    datasets: [single]
    params: {{value_column: value, lookback: 24, horizon: 12, frequency: 1min, method: lightgbm,
              lightgbm: {{num_boost_round: 50}}}}
  - from: lightgbm
    name: panel_m
    datasets: [panel]
    params: {{lookback: 28, horizon: 14, frequency: 1d, method: lightgbm{rounds}}}
"""
PREDICT = "/v1/models/single_m/predict"


class KeepAlive:
    """GETs over one HTTP/1.1 keep-alive connection (urllib opens one per request)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def get(self, path: str) -> bytes:
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        return body

    def close(self) -> None:
        self._connection.close()


class Requests:
    """Warm and cold GET predict latencies of the single-series model, one request at a time. Each DoPut adds
    the minute after the newest row (`after`: the Requests whose rows these follow), as a stream does."""

    def __init__(self, runtime: Runtime, single: pa.Table, after: Requests | None = None):
        self._http = KeepAlive(runtime.http_url)
        self._flight = runtime.flight_client()
        if after is None:
            self._last, self._next_id = single.column("ts").to_numpy()[-1], single.num_rows
        else:
            self._last, self._next_id = after._last, after._next_id
        self.warm: list[float] = []
        self.cold: list[float] = []

    def one_of_each(self) -> None:
        self._http.get(PREDICT)  # cached from here on
        start = time.perf_counter()
        self._http.get(PREDICT)
        self.warm.append(time.perf_counter() - start)
        rows = next_rows(self._last, 1, self._next_id)  # untimed: the new data
        do_put(self._flight, "single", rows)
        self._last, self._next_id = rows.column("ts").to_numpy()[-1], self._next_id + 1
        start = time.perf_counter()
        self._http.get(PREDICT)
        self.cold.append(time.perf_counter() - start)

    def close(self) -> None:
        self._http.close()
        self._flight.close()


def _train(runtime: Runtime) -> float:
    """Seconds of one retraining of the panel model (POST .../train answers when it is served)."""
    start = time.perf_counter()
    response = runtime.post("/v1/models/panel_m/train", timeout=TRAIN_TIMEOUT_S)
    seconds = time.perf_counter() - start
    model = response.json() if response.status == 200 else {}
    if model.get("status") != "ready":
        raise RuntimeError(f"training failed: {response.status} {response.body[:500]!r}")
    return seconds


def _while_training(runtime: Runtime, requests: Requests) -> list[float]:
    """Requests, one after another, while the panel model trains again and again, until MIN_REQUESTS of each
    kind were answered during training; the training times."""
    seconds: list[float] = []
    with ThreadPoolExecutor(1, thread_name_prefix="bench-train") as pool:
        while len(requests.cold) < MIN_REQUESTS:
            training = pool.submit(_train, runtime)
            while not training.done():
                requests.one_of_each()
            seconds.append(training.result())
    return seconds


def main() -> None:
    header("bench.bench_serving", f"GET predict while the runtime trains a {SERIES:,}-series panel; "
           "training time with one core busy")
    panel = synthetic_panel(SERIES, POINTS)
    single = series_table(SINGLE_ROWS)
    rounds = f", lightgbm: {{num_boost_round: {ROUNDS}}}"
    with TempDir("flightcast-bench-serving-") as folder:
        write_parquet(folder / "single.parquet", single)
        _write_panel(folder / "panel.parquet", panel)
        with Runtime(SPICEPOD.format(rounds=rounds), folder) as runtime:
            runtime.start().wait_ready(TRAIN_TIMEOUT_S)
            _measure(runtime, single)


def _measure(runtime: Runtime, single: pa.Table) -> None:
    quiet = Requests(runtime, single)
    for _ in range(QUIET_REQUESTS):
        quiet.one_of_each()
    quiet_train = _train(runtime)
    busy, _ = spawn("print('busy', flush=True)\nwhile True: pass")
    try:
        busy_train = _train(runtime)
    finally:
        stop_process(busy)
    training = Requests(runtime, single, after=quiet)
    training_seconds = _while_training(runtime, training)
    quiet.close()
    training.close()

    print(f"\nGET {PREDICT} (a 24/12 model of {SINGLE_ROWS:,} rows), one request at a time")
    rows = [
        ["warm, no training", quiet.warm], ["warm, panel training", training.warm],
        ["cold (after a DoPut), no training", quiet.cold], ["cold (after a DoPut), panel training", training.cold],
    ]
    table(["case", "requests", "median ms", "p99 ms"],
          [[name, len(s), ms(median(s)), ms(p99(s))] for name, s in rows])
    print(f"\npanel_m retrained ({SERIES:,} series x {POINTS} days, {ROUNDS} rounds, POST /v1/models/panel_m/train)")
    table(["case", "seconds"], [["quiet", quiet_train], ["one core busy (another process)", busy_train],
                                ["while answering the requests above (median)", float(np.median(training_seconds))]])
    for kind in ("warm", "cold"):
        ratio = p99(getattr(training, kind)) / p99(getattr(quiet, kind))
        ratio_line(f"GET predict {kind} p99: panel training / no training", ratio, "<= 2x", ratio <= 2)
        ratio_line(f"GET predict {kind} median: panel training / no training",
                   median(getattr(training, kind)) / median(getattr(quiet, kind)), "(info)", None)
    ratio = busy_train / quiet_train
    ratio_line("panel training time: one core busy / quiet", ratio, "<= 2.5x", ratio <= 2.5)


def _write_panel(path: Path, panel) -> None:
    lengths = panel.lengths()
    pq.write_table(pa.table({
        "series": pa.array(np.repeat(np.asarray(panel.ids, dtype=object), lengths), pa.string()),
        "ts": pa.array(np.concatenate(panel.times), pa.timestamp("us")),
        "value": np.concatenate(panel.values),
    }), path)


if __name__ == "__main__":
    main()
