"""Versions, rollback and safe retraining (SPEC 15): which stored version serves, through real runtimes."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import copy_data, do_put, wait_until

from harness import write_spicepod
from pipelines.frequency import Frequency
from pipelines.metrics import mase
from pipelines.series import SeriesSet
from pipelines.training import train_model
from pipelines.versions import mase_on_origins
from spicepod.constants import SERVING_ACTION, SERVINGS_ACTION

# Two copies of the Nile series a DoPut may extend. The same spec trains the same version to the bit (training
# is deterministic), so nile_m and nile_always serve identical forecasts while both serve version 1.
POD = """\
version: v1
kind: Spicepod
name: versions
datasets:
  - {from: file:nile.csv, name: nile, mode: read_write}
  - {from: file:nile2.csv, name: nile2, mode: read_write}
models:
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: &params
      lookback: 8
      horizon: 3
      backtest_windows: 2
      method: lightgbm
      lightgbm: {num_boost_round: 20}
      retrain: {after_rows: 8}
  - from: lightgbm
    name: nile_always
    datasets: [nile]
    params:
      <<: *params
      retrain: {after_rows: 8, promote: always}
  - from: lightgbm
    name: shift_m
    datasets: [nile2]
    params: *params
"""


def years(first: int, count: int) -> pa.Array:
    return pa.array([datetime(first + i, 1, 1) for i in range(count)], pa.timestamp("us"))


# Eight years after the data. A flat tail at 850: the version trained on it scores a backtest MASE of 0.87 on
# its last origins, where version 1 (trained before it) scores 0.42, so with if_better it stays a candidate.
FLAT_TAIL = pa.table({"ts": years(1971, 8), "value": [850.0] * 8})
# A level shift to 2000: the retrained version scores 0.98, version 1 scores 5.1 on the same origins.
SHIFT_TAIL = pa.table({"ts": years(1971, 8), "value": [2000.0 + 5 * i for i in range(8)]})


def entry(rt, name: str) -> dict:
    return next(m for m in rt.get_json("/v1/models") if m["name"] == name)


@pytest.fixture
def pod(inprocess_factory):
    folder = inprocess_factory.new_dir()
    copy_data("nile.csv", folder)
    (folder / "nile2.csv").write_bytes((folder / "nile.csv").read_bytes())
    return write_spicepod(folder, POD)


def test_versions_candidates_rollback_and_restart(inprocess_factory, pod):
    rt = inprocess_factory(spicepod=pod)
    [only] = rt.get_json("/v1/models/nile_m/versions")
    assert (only["version"], only["run"], only["serving"], only["candidate"], only["servable"]) == ("1", 1, True,
                                                                                                   False, True)
    assert only["training_rows"] == 100 and only["metrics"]["mase"] == entry(rt, "nile_m")["metrics"]["mase"]
    assert "candidate" not in entry(rt, "nile_m")

    # Eight new rows retrain both models in the background. The flat tail makes a worse version: nile_m keeps
    # serving version 1 with version 2 as a candidate; nile_always serves version 2 at once.
    with rt.flight_client() as client:
        do_put(client, "nile", FLAT_TAIL)
    candidate = wait_until(lambda: entry(rt, "nile_m").get("candidate"), "nile_m keeps a candidate", 60)
    wait_until(lambda: entry(rt, "nile_always")["model_version"] == "2", "nile_always serves version 2", 60)
    assert candidate["version"] == "2" and candidate["run"] == 2
    assert candidate["mase"] == pytest.approx(0.87, abs=0.01)
    assert candidate["serving_mase"] == pytest.approx(0.42, abs=0.01)
    assert candidate["mase"] > candidate["serving_mase"]
    assert entry(rt, "nile_m")["model_version"] == "1"
    kept = rt.get_json("/v1/models/nile_m/predict")
    assert kept["model_version"] == "1" and kept["timestamps"][0] == "1979-01-01T00:00:00Z"
    listed = rt.get_json("/v1/models/nile_m/versions")
    assert [(v["run"], v["serving"], v["candidate"]) for v in listed] == [(2, False, True), (1, True, False)]
    assert listed[0]["metrics"]["mase"] == candidate["mase"]

    # Rollback serves the version served before: nile_always then answers exactly what version 1 answers.
    second = rt.get_json("/v1/models/nile_always/predict")
    assert second["model_version"] == "2" and second["prediction"] != kept["prediction"]
    body = rt.post("/v1/models/nile_always/rollback").json()
    assert body["model_version"] == "1" and body["status"] == "ready"
    back = rt.get_json("/v1/models/nile_always/predict")
    assert (back["model_version"], back["prediction"], back["timestamps"]) == ("1", kept["prediction"],
                                                                               kept["timestamps"])
    # ...and back to version 2 by name; a candidate is served the same way.
    assert rt.post("/v1/models/nile_always/rollback?version=2").json()["model_version"] == "2"
    assert rt.get_json("/v1/models/nile_always/predict")["prediction"] == second["prediction"]
    assert rt.post("/v1/models/nile_always/rollback").json()["model_version"] == "1"
    promoted = rt.post("/v1/models/nile_m/rollback?version=2").json()
    assert promoted["model_version"] == "2" and "candidate" not in promoted
    assert rt.get_json("/v1/models/nile_m/predict")["prediction"] == second["prediction"]

    # The choice survives a restart: served as it was, not the newest run, and nothing trains again.
    rt.stop()
    again = inprocess_factory(spicepod=pod, data_dir=rt.data_dir)
    assert entry(again, "nile_always")["model_version"] == "1"
    assert entry(again, "nile_m")["model_version"] == "2"
    assert again.get_json("/v1/models/nile_always/predict")["prediction"] == kept["prediction"]
    assert again.get_json("/v1/models/nile_m/predict")["prediction"] == second["prediction"]
    assert "trained version" not in again.log_text()
    serving = [(v["run"], v["serving"]) for v in again.get_json("/v1/models/nile_always/versions")]
    assert serving == [(2, False), (1, True)]


def test_a_better_retrain_serves_at_once(inprocess_factory, pod):
    rt = inprocess_factory(spicepod=pod)
    with rt.flight_client() as client:
        do_put(client, "nile2", SHIFT_TAIL)
    wait_until(lambda: entry(rt, "shift_m")["model_version"] == "2", "shift_m serves version 2", 60)
    assert "candidate" not in entry(rt, "shift_m")
    assert entry(rt, "shift_m")["metrics"]["mase"] == pytest.approx(0.98, abs=0.01)
    assert rt.get_json("/v1/models/shift_m/predict")["model_version"] == "2"
    assert "version 2 (MASE 0.979) beats the serving version 1 (5.118 on the same origins)" in rt.log_text()


def test_rollback_refusals(inprocess_factory, pod):
    rt = inprocess_factory(spicepod=pod)
    cases = [
        ("/v1/models/nile_m/rollback", 400,
         "model 'nile_m' has no earlier version to roll back to; GET /v1/models/nile_m/versions lists the stored ones"),
        ("/v1/models/nile_m/rollback?version=7", 404,
         "model 'nile_m' has no stored version '7'; GET /v1/models/nile_m/versions lists them"),
        ("/v1/models/nile_m/rollback?version=", 400,
         "'version' must name a stored version (its run number or version); GET /v1/models/nile_m/versions "
         "lists them"),
        ("/v1/models/nope/rollback", 404, "model 'nope' not found"),
        ("/v1/models/nile_m/rollback?run=1", 400, "unknown query parameter 'run'; expected one of version"),
    ]
    for path, status, message in cases:
        response = rt.post(path)
        assert (response.status, response.json()["error_message"]) == (status, message), path
    response = rt.get("/v1/models/nope/versions")
    assert (response.status, response.json()["error_message"]) == (404, "model 'nope' not found")
    assert rt.get_json("/v1/models/nile_m/predict")["model_version"] == "1"


ROLES_POD = """\
version: v1
kind: Spicepod
name: roles
datasets:
  - {from: file:nile.csv, name: nile, mode: read_write}
models:
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {lookback: 8, horizon: 3, backtest_windows: 2, method: lightgbm, lightgbm: {num_boost_round: 20}}
"""


@pytest.mark.slow
def test_a_rollback_reaches_every_serve_node(runtime_factory):
    folder = runtime_factory.new_dir()
    copy_data("nile.csv", folder)
    spicepod = write_spicepod(folder, ROLES_POD)
    data = runtime_factory(spicepod=spicepod, data_dir=folder / "data", extra_args=["--role", "data"], ready=False)

    def serve_node(name: str):
        return runtime_factory(spicepod=spicepod, data_dir=folder / name, timeout=90,
                               extra_args=["--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"])

    first, second = serve_node("serve1"), serve_node("serve2")
    one = first.get_json("/v1/models/nile_m/predict")
    # Each node trains version 2 on the same data: the same bits on both.
    with data.flight_client() as client:
        do_put(client, "nile", SHIFT_TAIL)
    for node in (first, second):
        assert node.post("/v1/models/nile_m/train").json()["model_version"] == "2"
    two = first.get_json("/v1/models/nile_m/predict")
    assert second.get_json("/v1/models/nile_m/predict")["prediction"] == two["prediction"]

    # A rollback on one node has reached the other when it returns: neither answers version 2 from then on.
    assert first.post("/v1/models/nile_m/rollback").json()["model_version"] == "1"
    for node in (first, second):
        body = node.get_json("/v1/models/nile_m/predict")
        assert body["model_version"] == "1" and body["timestamps"] == two["timestamps"]
        assert body["prediction"] != two["prediction"]
        assert [(v["run"], v["serving"]) for v in node.get_json("/v1/models/nile_m/versions")] == [(2, False),
                                                                                                  (1, True)]
    assert one["model_version"] == "1"

    # The data node records the choice; a malformed one is refused, naming the shape it takes.
    with data.flight_client() as client:
        [result] = client.do_action(flight.Action(SERVINGS_ACTION, b""))
        choice = json.loads(result.body.to_pybytes())["nile_m"]
        assert (choice["run"], choice["challenger"], choice["seq"]) == (1, None, 1)
        with pytest.raises(pa.ArrowInvalid, match='the body must be JSON {"model": NAME, "run": N, '):
            list(client.do_action(flight.Action(SERVING_ACTION, b'{"model": "nile_m"}')))

    # A node that was away when another rolled back serves the choice once it hears the data node again.
    second.stop()
    assert first.post("/v1/models/nile_m/rollback?version=2").json()["model_version"] == "2"
    again = runtime_factory(spicepod=spicepod, data_dir=folder / "serve2", timeout=90,
                            extra_args=["--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"])
    wait_until(lambda: again.get_json("/v1/models/nile_m/predict")["model_version"] == "2",
               "the restarted serve node serves version 2", 30)
    assert again.get_json("/v1/models/nile_m/predict")["prediction"] == two["prediction"]


# A challenger is promoted once it beats the model over drift_window common points: a few, each a year's DoPut.
POINTS = 12
CHALLENGER_POD = f"""\
version: v1
kind: Spicepod
name: challengers
datasets:
  - {{from: file:nile.csv, name: nile, mode: read_write}}
models:
  - from: lightgbm
    name: nile_m
    datasets: [nile]
    params: {{lookback: 8, horizon: 3, backtest_windows: 2, method: lightgbm, lightgbm: {{num_boost_round: 20}},
             challengers: [nile_naive], promote: if_better, drift_window: {POINTS}}}
  - {{from: lightgbm, name: nile_naive, datasets: [nile], params: {{lookback: 8, horizon: 3, method: naive}}}}
"""


def test_a_challenger_scored_on_the_same_points_is_promoted_when_better(inprocess_factory):
    folder = inprocess_factory.new_dir()
    copy_data("nile.csv", folder)
    rt = inprocess_factory(spicepod=write_spicepod(folder, CHALLENGER_POD))
    assert entry(rt, "nile_m")["challengers"] == {
        "nile_naive": {"live_metrics": None, "model_live_metrics": None, "serving": False}}
    # A flat river from 1971 on: the naive forecast is exact from the second year, LightGBM is not. Each year the
    # model's forecast is served (the challenger's made beside it), then the year's value arrives and scores both.
    with rt.flight_client() as client:
        for i in range(POINTS):
            served = rt.get_json("/v1/models/nile_m/predict")
            assert served["model_version"] == "1"
            do_put(client, "nile", pa.table({"ts": years(1971 + i, 1), "value": [850.0]}))
            wait_until(lambda scored=i + 1: (entry(rt, "nile_m")["live_metrics"] or {}).get("points") == scored,
                       f"year {1971 + i} scored", 10)
    challenger = wait_until(lambda: entry(rt, "nile_m")["challengers"]["nile_naive"] if entry(rt, "nile_m")[
        "model_version"] != "1" else None, "the challenger promoted", 10)
    assert challenger["serving"] is True
    assert challenger["live_metrics"]["points"] == challenger["model_live_metrics"]["points"] == POINTS
    assert challenger["live_metrics"]["mase"] < challenger["model_live_metrics"]["mase"]
    assert entry(rt, "nile_m")["live_metrics"]["points"] == POINTS  # the model's own points are the same ones

    # The model's name now answers with the challenger's forecast, marked as such; the challenger's own is unchanged.
    promoted, naive = rt.get_json("/v1/models/nile_m/predict"), rt.get_json("/v1/models/nile_naive/predict")
    assert (promoted["model_name"], promoted["model_version"]) == ("nile_m", "nile_naive/1")
    assert (promoted["prediction"], promoted["timestamps"]) == (naive["prediction"], naive["timestamps"])
    assert naive["model_version"] == "1" and promoted["prediction"] == [850.0] * 3
    assert [v["serving"] for v in rt.get_json("/v1/models/nile_m/versions")] == [False]  # its own does not serve

    # The challenger retrained: its new version answers for the model too.
    assert rt.post("/v1/models/nile_naive/train").json()["model_version"] == "2"
    assert rt.get_json("/v1/models/nile_m/predict")["model_version"] == "nile_naive/2"

    # It survives a restart; a rollback serves the model's own version again.
    rt.stop()
    rt = inprocess_factory(spicepod=rt.spicepod, data_dir=rt.data_dir)
    assert rt.get_json("/v1/models/nile_m/predict")["model_version"] == "nile_naive/2"
    body = rt.post("/v1/models/nile_m/rollback").json()
    assert body["model_version"] == "1" and body["challengers"]["nile_naive"]["serving"] is False
    own = rt.get_json("/v1/models/nile_m/predict")
    assert own["model_version"] == "1" and own["prediction"] != [850.0] * 3


@pytest.mark.slow
def test_a_challenger_promoted_on_one_serve_node_serves_on_every_one(runtime_factory):
    folder = runtime_factory.new_dir()
    copy_data("nile.csv", folder)
    spicepod = write_spicepod(folder, CHALLENGER_POD)
    data = runtime_factory(spicepod=spicepod, data_dir=folder / "data", extra_args=["--role", "data"], ready=False)
    first, second = (runtime_factory(spicepod=spicepod, data_dir=folder / name, timeout=90, extra_args=[
        "--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"]) for name in ("serve1", "serve2"))
    # Only the first node serves forecasts, so only it scores them live: it decides, the other follows.
    with data.flight_client() as client:
        for i in range(POINTS):
            assert first.get_json("/v1/models/nile_m/predict")["model_version"] == "1"
            do_put(client, "nile", pa.table({"ts": years(1971 + i, 1), "value": [850.0]}))
            wait_until(lambda scored=i + 1: (entry(first, "nile_m")["live_metrics"] or {}).get("points") == scored,
                       f"year {1971 + i} scored", 10)
    for node in (first, second):
        wait_until(lambda node=node: entry(node, "nile_m")["model_version"] == "nile_naive/1",
                   "the challenger serves", 10)
        assert node.get_json("/v1/models/nile_m/predict")["prediction"] == [850.0] * 3
    assert entry(second, "nile_m")["live_metrics"] is None


def test_the_serving_version_is_scored_on_the_latest_origins_of_each_series() -> None:
    """mase_on_origins on its own: a naive model of a two-series panel, scored against the same sums by hand."""
    rng = np.random.default_rng(3)
    times = np.arange(np.datetime64("2024-01-01", "us"), np.datetime64("2024-03-01", "us"), np.timedelta64(1, "D"))
    series = SeriesSet(["a", "b"], [times, times], [100 + rng.normal(0, 3, times.size).cumsum(),
                                                    50 + rng.normal(0, 1, times.size).cumsum()])
    model = train_model(series, method="naive", freq=Frequency.parse("1d"), lookback=7, horizon=3,
                        strategy="recursive", backtest_windows=2, lightgbm_params={}, dataset="d")
    season = model.freq.season
    expected = []
    for values in series.values:
        cuts = [values.size - 3, values.size - 6]  # origins spaced one horizon apart, the latest first
        expected.append(np.mean([mase(values[c:c + 3], np.full(3, values[c - 1]), values[:c], season) for c in cuts]))
    assert mase_on_origins(model, series, horizon=3, windows=2) == pytest.approx(np.mean(expected), rel=1e-12)
    assert math.isnan(mase_on_origins(model, series.truncated(np.array([5, 5])), horizon=3, windows=2))


def test_a_candidate_survives_a_restart_and_a_changed_spec_serves_its_own_versions_only(inprocess_factory, pod):
    rt = inprocess_factory(spicepod=pod)
    with rt.flight_client() as client:
        do_put(client, "nile", FLAT_TAIL)
    candidate = wait_until(lambda: entry(rt, "nile_m").get("candidate"), "nile_m keeps a candidate", 60)
    rt.stop()
    rt = inprocess_factory(spicepod=pod, data_dir=rt.data_dir)
    assert entry(rt, "nile_m")["model_version"] == "1" and entry(rt, "nile_m")["candidate"] == candidate

    # Another lookback is another spec: its first version serves at once, and the older ones cannot serve.
    rt.stop()
    pod.write_text(pod.read_text().replace("lookback: 8", "lookback: 6"))
    rt = inprocess_factory(spicepod=pod, data_dir=rt.data_dir)
    assert entry(rt, "nile_m")["model_version"] == "3" and "candidate" not in entry(rt, "nile_m")
    listed = rt.get_json("/v1/models/nile_m/versions")
    assert [(v["run"], v["serving"], v["servable"]) for v in listed] == [(3, True, True), (2, False, False),
                                                                          (1, False, False)]
    response = rt.post("/v1/models/nile_m/rollback?version=1")
    assert (response.status, response.json()["error_message"]) == (
        400, "version '1' of model 'nile_m' was trained from another spec (its params or data set-up changed "
             "since); it cannot serve")
    response = rt.post("/v1/models/nile_m/rollback")
    assert (response.status, response.json()["error_message"]) == (
        400, "model 'nile_m' has no earlier version to roll back to; GET /v1/models/nile_m/versions lists the "
             "stored ones")
