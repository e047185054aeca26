"""Training on a Dask cluster (runtime.training.engine: dask): a LocalCluster of two worker processes started
here, a real runtime training a single-series and a panel model on it, compared with the same spicepod
trained by the local engine; and an unreachable scheduler."""

from __future__ import annotations

import json
import socket
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import write_table

distributed = pytest.importorskip(
    "distributed", reason="dask is not installed: pip install -e '.[test]' (the test extra pulls in flightcast[dask])")

# The runtimes' fixture waits up to 300 s for both trainings (a cluster of two processes and two runtimes on a
# machine whose two cores also run the other test worker): pytest-timeout's 120 s would cut it short first.
pytestmark = pytest.mark.timeout(300)

START = datetime(2024, 1, 1)
DAYS = 140
SERIES = 24  # two chunks, one per worker
LOOKBACK, HORIZON = 14, 7
WEEK = np.array([0.0, 0.2, 0.1, -0.1, 0.3, 1.0, 0.8])
NOISE = 0.05  # of each series' scale
# Distributed LightGBM is not bit-identical to a local fit: each worker bins its own rows and the histograms
# are merged, so split thresholds (and a few splits) differ. Over a noisy series both fits land within the
# noise, so forecasts may differ by about the noise level; a fifth of the scale is 4x the noise sd and far
# below the weekly amplitude a wrong model would miss by.
PANEL_TOLERANCE = 0.2  # of each series' scale
# Each round of distributed LightGBM is a round trip between the workers, slow on a busy machine; what is
# compared here (the same fits on the cluster as in process) does not need the default 200.
ROUNDS = 50


def panel_table() -> pa.Table:
    """A weekly shape, a promotion flag that lifts sales, a temperature, and a region per store; the last
    HORIZON days carry the drivers only (the future rows a forecast reads them from)."""
    rng = np.random.default_rng(11)
    ids, ts, values, promo, temp, region = [], [], [], [], [], []
    for i in range(SERIES):
        level, scale = 10.0 * (1 + i), 1.0 + i % 5
        flags = (rng.random(DAYS + HORIZON) < 0.2).astype(np.int64)
        ids += [f"s{i:03d}"] * (DAYS + HORIZON)
        ts += [START + timedelta(days=d) for d in range(DAYS + HORIZON)]
        shape = WEEK[np.arange(DAYS + HORIZON) % 7] + 0.5 * flags + rng.normal(0.0, NOISE, DAYS + HORIZON)
        values += list(level + scale * shape[:DAYS]) + [None] * HORIZON
        promo += flags.tolist()
        temp += list(rng.normal(15.0, 5.0, DAYS + HORIZON))
        region += [f"r{i % 3}"] * (DAYS + HORIZON)
    return pa.table({"store": pa.array(ids), "ts": pa.array(ts, pa.timestamp("us")),
                     "value": pa.array(values, pa.float64()), "promo": pa.array(promo, pa.int64()),
                     "temp": pa.array(temp, pa.float64()), "region": pa.array(region)})


def single_table() -> pa.Table:
    rng = np.random.default_rng(3)
    values = 100.0 + 10.0 * (WEEK[np.arange(DAYS) % 7] + rng.normal(0.0, NOISE, DAYS))
    return pa.table({"ts": pa.array([START + timedelta(days=d) for d in range(DAYS)], pa.timestamp("us")),
                     "value": pa.array(values, pa.float64())})


def scale_of(sid: str) -> float:
    return 1.0 + int(sid[1:]) % 5


def pod(data: Path, training: str = "", panel: bool = True) -> str:
    """The panel model forecasts with drivers (covariates from stored future rows, a static region, a calendar
    field and holidays); the single-series model with its own past."""
    panel_model = textwrap.dedent(f"""\
        - {{from: lightgbm, name: panel_m, datasets: [sales], params: {{value_column: value,
            lookback: {LOOKBACK}, horizon: {HORIZON}, backtest_windows: 2,
            covariates: [{{column: temp, known: past}}, {{column: promo, type: categorical}}], static: [region],
            calendar: [day_of_week], holidays: {{country: US}}, lightgbm: {{num_boost_round: {ROUNDS}}}}}}}
        """) if panel else ""
    single_model = textwrap.dedent(f"""\
        - {{from: lightgbm, name: single_m, datasets: [single], params: {{lookback: {LOOKBACK}, horizon: {HORIZON},
            method: lightgbm, lightgbm: {{num_boost_round: {ROUNDS}}}}}}}
        """)
    return textwrap.dedent(f"""\
        version: v1
        kind: Spicepod
        name: dask
        datasets:
          - {{from: file:{data / 'panel.parquet'}, name: sales, series_column: store}}
          - {{from: file:{data / 'single.parquet'}, name: single}}
        models:
        """) + textwrap.indent(panel_model + single_model, "  ") + training


def dask_runtime(address: str) -> str:
    return f"runtime:\n  training: {{engine: dask, scheduler: '{address}'}}\n"


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, on loopback; closed however the module ends."""
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=":0")
    client = None
    try:
        client = distributed.Client(local.scheduler_address, set_as_default=False)
        client.get_task_stream()  # installs the scheduler's task log, read by the tests
        yield local, client
    finally:
        if client is not None:
            client.close()
        local.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_table(folder / "panel.parquet", panel_table())
    write_table(folder / "single.parquet", single_table())
    return folder


@pytest.fixture(scope="module")
def runtimes(module_runtime_factory, module_inprocess_factory, cluster, data):
    """(local engine, dask engine) runtimes on the same spicepod and data, and the seconds the dask one began.
    The local one runs in this process: it is only the reference the dask one is compared with."""
    local = module_inprocess_factory(pod(data), ready=False, timeout=300)
    began = time.time()
    remote = module_runtime_factory(pod(data, dask_runtime(cluster[0].scheduler_address)), ready=False, timeout=300)
    return local.wait_ready(300), remote.wait_ready(300), began  # both train at once


def models(rt) -> dict[str, dict]:
    return {m["name"]: m for m in rt.get_json("/v1/models")}


def forecast(rt, model: str, series: str | None = None) -> np.ndarray:
    query = f"?series={series}" if series else ""
    body = rt.get_json(f"/v1/models/{model}/predict{query}")
    assert body["horizon"] == HORIZON
    return np.array(body["prediction"])


def task_names(client, since: float) -> list[str]:
    return [record["key"].rsplit("-", 5)[0] if isinstance(record["key"], str) else str(record["key"][0])
            for record in client.get_task_stream(start=since)]


@pytest.mark.slow
def test_both_models_train_on_the_cluster(runtimes, cluster):
    local, remote, began = runtimes
    entries = models(remote)
    for name in ("panel_m", "single_m"):
        assert entries[name]["status"] == "ready", entries[name]
    assert entries["panel_m"]["series_count"] == SERIES
    names = task_names(cluster[1], began)
    # Each chunk read on a worker over Flight: one for the single series, one per worker for the panel.
    assert names.count("read_chunk") == 3, sorted(set(names))
    # The single series fits as one task each (3 backtest origins + the final fit); the panel's fits (2
    # backtest origins + the final fit) run data-parallel through lightgbm.dask, a _train_part task on each
    # worker holding a chunk.
    assert names.count("fit_one") == 4, sorted(set(names))
    assert names.count("_train_part") == 6, sorted(set(names))
    # Both workers took part.
    workers = {record["worker"] for record in cluster[1].get_task_stream(start=began)}
    assert len(workers) == 2


@pytest.mark.slow
def test_forecasts_match_the_local_engine(runtimes):
    local, remote, _ = runtimes
    # One chunk: the same rows and the same lightgbm.train on a worker as in-process, so the same forecast.
    np.testing.assert_allclose(forecast(remote, "single_m"), forecast(local, "single_m"), rtol=1e-9)
    worst = 0.0
    for i in range(0, SERIES, 3):
        sid = f"s{i:03d}"
        diff = np.max(np.abs(forecast(remote, "panel_m", sid) - forecast(local, "panel_m", sid))) / scale_of(sid)
        worst = max(worst, diff)
    assert worst < PANEL_TOLERANCE, worst
    # Backtest metrics of the two fits agree too.
    a, b = models(local)["panel_m"]["metrics"]["mase"], models(remote)["panel_m"]["metrics"]["mase"]
    assert abs(a - b) < 0.15 * a, (a, b)
    # Both versions keep the newest period they were trained on (the drivers' future rows are not periods).
    last = int((START + timedelta(days=DAYS - 1) - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    for rt in (local, remote):
        for name in ("panel_m", "single_m"):
            [meta] = (rt.data_dir / "models" / name / "runs").glob("*/meta.json")
            assert json.loads(meta.read_text())["newest_period"] == last, (rt, name)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_unreachable_scheduler_fails_the_models_naming_it(inprocess_factory, data):
    address = f"tcp://127.0.0.1:{closed_port()}"
    # The single-series model only: each model waits out the connect timeout (5 s) before failing.
    rt = inprocess_factory(pod(data, panel=False) + dask_runtime(address), timeout=120)
    for name, entry in models(rt).items():
        assert entry["status"] == "failed", (name, entry)
        assert address in entry["error_message"], entry["error_message"]
        assert "cannot be reached" in entry["error_message"], entry["error_message"]
    response = rt.get("/v1/models/single_m/predict")
    assert response.status >= 400
