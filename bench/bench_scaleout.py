"""Training a panel model on a Dask cluster against the local engine: wall time and the serve node's peak
memory, for a local fit and for Dask with 1 and with 2 workers (LocalCluster processes of one thread).

A data node (a runtime subprocess) serves the panel over Flight. Each training runs in its own subprocess,
as the serve node would run it (engine.load, then engine.train), against a warm cluster (its workers have
imported the pipelines); its peak RSS during load + train is read from /proc (VmHWM, reset after imports
and connecting, so it is the training's own peak). With Dask the serve node must not hold the training
rows: the workers read their series from the data node themselves.

Run: .venv/bin/python -m bench.bench_scaleout   (BENCH_TINY=1: a small panel, quick)
"""

from __future__ import annotations

import importlib
import json
import subprocess
import textwrap
from datetime import datetime

import numpy as np
import pyarrow as pa

from bench.common import (
    BENCH_EXTRA_HINT,
    PYTHON,
    ROOT,
    TINY,
    Runtime,
    TempDir,
    header,
    ratio_line,
    table,
    write_parquet,
)

SERIES = 40 if TINY else 2000
POINTS = 120 if TINY else 200  # daily points per series
LOOKBACK, HORIZON = 14, 7
ROUNDS = 10 if TINY else 50
BACKTEST_WINDOWS = 1  # one backtest fit and the final fit: two global fits per training
WORKERS = (1,) if TINY else (1, 2)  # the tiny run: one cluster, the whole code path
START = datetime(2020, 1, 1)

SPICEPOD = """
version: v1
kind: Spicepod
name: bench-scaleout
datasets:
  - {{from: file:{path}, name: panel, series_column: series}}
"""

# The serve node's training, in its own process: args are JSON on argv, the result one JSON line.
TRAIN = textwrap.dedent("""
    import json, resource, sys, time
    args = json.loads(sys.argv[1])
    from pipelines.engines import LocalEngine
    from pipelines.flight_client import FlightDataClient
    from pipelines.frequency import Frequency
    from pipelines.grid import GridQuery
    from pipelines.grid_setup import phase_origin, raw_timestamps
    from pipelines.training import train_model
    client = FlightDataClient(args["location"])
    freq = Frequency.parse("1d")
    raw = raw_timestamps(client, "panel", "ts", "series")
    grid = GridQuery("panel", "ts", "value", "series", freq, phase_origin(raw, freq), "mean", "linear")
    if args["scheduler"]:
        from pipelines.dask_engine import DaskEngine
        engine = DaskEngine(args["scheduler"], client)
        engine._client()  # connect (and import dask) before the peak is reset
    else:
        engine = LocalEngine(client)
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    before = hwm()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak to the current RSS
        reset = True
    except OSError:
        reset = False
    base = hwm()
    t0 = time.perf_counter()
    loaded = engine.load(grid, 20000)
    # The local engine fits in a child process of the serve node, on the same machine: the fit runs here, so
    # this peak is the machine's, the one a Dask cluster takes off the serve node.
    fit = engine.train if args["scheduler"] else (lambda loaded, **kw: train_model(loaded.series, **kw))
    model = fit(loaded, freq=freq, lookback=args["lookback"], horizon=args["horizon"],
                backtest_windows=args["windows"], lightgbm_params={"num_boost_round": args["rounds"]},
                dataset="panel")
    seconds = time.perf_counter() - t0
    engine.close()
    print(json.dumps({"seconds": seconds, "peak": hwm(), "base": base, "reset": reset, "before": before,
                      "rows": model.training_rows, "width": model.layout.width, "mase": model.metrics["mase"]}))
""")


def panel_table() -> pa.Table:
    rng = np.random.default_rng(5)
    days = np.arange(POINTS)
    week = np.array([0.0, 0.2, 0.1, -0.1, 0.3, 1.0, 0.8])
    level = rng.uniform(10, 1000, SERIES)[:, None]
    scale = rng.uniform(1, 50, SERIES)[:, None]
    trend = rng.normal(0, 0.01, SERIES)[:, None] * days[None, :]
    values = level + scale * (week[days % 7][None, :] + trend + rng.normal(0, 0.1, (SERIES, POINTS)))
    ts = np.datetime64(START, "us") + days.astype("timedelta64[D]").astype("timedelta64[us]")
    return pa.table({
        "series": pa.array(np.repeat([f"s{i:05d}" for i in range(SERIES)], POINTS)),
        "ts": pa.array(np.tile(ts, SERIES), pa.timestamp("us")),
        "value": values.ravel(),
    })


def train_in_subprocess(location: str, scheduler: str | None) -> dict:
    args = {"location": location, "scheduler": scheduler, "lookback": LOOKBACK, "horizon": HORIZON,
            "windows": BACKTEST_WINDOWS, "rounds": ROUNDS}
    done = subprocess.run([PYTHON, "-c", TRAIN, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"training subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    header("bench.bench_scaleout", f"training a {SERIES:,}-series panel ({POINTS} daily points each, {ROUNDS} rounds, "
                                   f"{BACKTEST_WINDOWS + 1} global fits): local engine against Dask"
                                   + ("  [tiny mode]" if TINY else ""))
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError(f"dask is not installed; {BENCH_EXTRA_HINT}") from None
    results: dict[str, dict] = {}
    with TempDir("flightcast-bench-scaleout-") as folder:
        path = write_parquet(folder / "panel.parquet", panel_table())
        with Runtime(SPICEPOD.format(path=path), folder / "data-node") as node:
            node.start().wait_ready()
            results["local"] = train_in_subprocess(node.flight_location, None)
            for n in WORKERS:
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0")
                try:
                    # A long-lived cluster's workers have imported the pipelines already: warm these up too.
                    with Client(cluster.scheduler_address, set_as_default=False) as client:
                        client.run(importlib.import_module, "pipelines.dask_engine")
                    results[f"dask, {n} worker{'s' if n > 1 else ''}"] = train_in_subprocess(
                        node.flight_location, cluster.scheduler_address)
                finally:
                    cluster.close()
    local = results["local"]
    rows_mb = local["rows"] * (local["width"] + 2) * 4 / 1e6  # x, y and w as float32, one fit's
    table(["engine", "wall s", "serve peak MB", "peak over start MB", "backtest MASE"],
          [[name, r["seconds"], r["peak"] / 1e6, (r["peak"] - r["base"]) / 1e6, r["mase"]]
           for name, r in results.items()])
    print(f"training rows of one fit: {local['rows']:,} x {local['width']} features, {rows_mb:.0f} MB as float32"
          + ("" if local["reset"] else "  (peak not reset after imports: /proc/self/clear_refs refused)"))
    for name, r in results.items():
        if name == "local":
            continue
        ratio_line(f"wall time, {name} / local", r["seconds"] / local["seconds"], "information (2 shared cores)",
                   None)
        grown, local_grown = r["peak"] - r["base"], local["peak"] - local["base"]
        ratio_line(f"serve node peak growth in training, {name} / local", grown / max(local_grown, 1),
                   "< 1 (rows stay on the workers)", grown < local_grown)


if __name__ == "__main__":
    main()
