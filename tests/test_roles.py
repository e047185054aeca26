"""Scale-out roles: a data node and serve nodes against it, as separate processes on loopback."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from conftest import copy_data, do_put

pytestmark = pytest.mark.slow

POD = """\
version: v1
kind: Spicepod
name: roles
datasets:
  - {{from: file:{folder}/austres.csv, name: aus, mode: read_write}}
models:
  - {{from: lightgbm, name: aus_m, datasets: [aus], params: {{lookback: 8, horizon: 4, method: lightgbm,
      lightgbm: {{num_boost_round: 20}}}}}}
"""


def serve_node(factory, data, spicepod, name: str):
    return factory(spicepod=spicepod, data_dir=spicepod.parent / name,
                   extra_args=["--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"], timeout=90)


def ready(rt) -> int:
    return rt.get("/v1/ready").status


def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_serve_nodes_against_one_data_node(runtime_factory):
    folder = runtime_factory.new_dir()
    copy_data("austres.csv", folder)
    spicepod = folder / "spicepod.yaml"
    spicepod.write_text(POD.format(folder=folder))
    data = runtime_factory(spicepod=spicepod, data_dir=folder / "data", extra_args=["--role", "data"], ready=False)
    assert "http listening" not in data.log_text()
    first = serve_node(runtime_factory, data, spicepod, "serve1")
    second = serve_node(runtime_factory, data, spicepod, "serve2")

    # Training is deterministic: two nodes trained apart answer the same forecast, to the bit.
    a, b = first.get_json("/v1/models/aus_m/predict"), second.get_json("/v1/models/aus_m/predict")
    assert a["prediction"] == b["prediction"] and a["timestamps"] == b["timestamps"]
    assert first.get_json("/v1/models")[0]["model_version"] == "1"

    # A DoPut to the data node, then at once a prediction on each serve node: never from older data.
    with data.flight_client() as client:
        for i in range(5):
            ts = (datetime(1993, 7, 1) + timedelta(days=92 * i)).replace(day=1)  # the next quarters
            do_put(client, "aus", pa.table({"ts": pa.array([ts], pa.timestamp("us")), "value": [17700.0 + i]}))
            for node in (first, second):
                body = node.get_json("/v1/models/aus_m/predict")
                assert body["timestamps"][0] > ts.strftime("%Y-%m-%dT%H:%M:%SZ"), (i, body["timestamps"])

    # One serve node killed: the other goes on.
    first.kill()
    assert second.get("/v1/models/aus_m/predict").status == 200

    # The data node restarts: the serve node says it is not ready meanwhile, answers errors (not stale
    # forecasts) and recovers by itself, on the same port.
    port = data.flight_port
    data.stop()
    wait_until(lambda: ready(second) == 503)
    response = second.get("/v1/models/aus_m/predict")
    assert response.status == 500 and "data node" in response.json()["error_message"]
    data = runtime_factory(spicepod=spicepod, data_dir=folder / "data", ready=False,
                           extra_args=["--role", "data", "--flight", f"127.0.0.1:{port}"])
    wait_until(lambda: ready(second) == 200)
    body = second.get_json("/v1/models/aus_m/predict")
    assert body["timestamps"][0] == "1994-10-01T00:00:00Z"  # after the 5 rows written above
