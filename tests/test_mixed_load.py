"""Mixed load: predictions and anomaly reads while a writer appends (SPEC sections 3, 5, 7, 8 and 15).

One runtime, one 12-step model on a read_write hourly series. 16 client threads call
GET /v1/models/{m}/predict over HTTP (two of them GET /v1/models/{m}/anomalies instead: always 200, rows
newest first) while one writer thread DoPuts one new row at a time (the next hour
each time) together with corrections of the three hours before it, an overwriting stream, for a bounded
time (~8 s; ~60 s with FLIGHTCAST_FUZZ=full). Pass: zero errors (every response 200 Success with 12
values and 12 hourly timestamps), every prediction's first timestamp is after every row acknowledged
before its request was sent (the writer's last acknowledged timestamp is read just before each request
goes out; the forecast must start after it: SPEC 3, never a prediction from older data once a DoPut has
returned), and at the end one row per hour holding the last value sent for it. Half-way, the model is rolled
back from version 2 to version 1 (SPEC 15): every request sent after the rollback returned is answered by
version 1.
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import do_put, http_request, parse_instant, read_all, write_csv_text, write_spicepod

pytestmark = pytest.mark.fuzz

FULL = os.environ.get("FLIGHTCAST_FUZZ", "") == "full"
DURATION_S = 60.0 if FULL else 8.0
CLIENTS = 16
ANOMALY_READERS = 2  # of the clients
ANOMALY_COLUMNS = ["series", "ts", "value", "expected", "lower", "upper", "level", "score"]
HORIZON = 12
MODEL = "load_12h"
H = timedelta(hours=1)
T0 = datetime(2024, 1, 1)
SEED_ROWS = 240
RESENT = 3  # each DoPut also re-sends the hours before the new one, corrected (on_duplicate: replace)

POD = f"""\
version: v1
kind: Spicepod
name: mixed_load
datasets:
  - from: file:data/load.csv
    name: load
    mode: read_write
models:
  - from: lightgbm
    name: {MODEL}
    datasets: [load]
    params:
      lookback: 24
      horizon: {HORIZON}
      frequency: 1h
      method: lightgbm
      lightgbm: {{num_leaves: 8, learning_rate: 0.1, num_boost_round: 15}}
"""


def value_at(i: int) -> float:
    return round(10 + 3 * math.sin(2 * math.pi * i / 24) + 0.01 * i, 6)


def corrected(i: int) -> float:
    return value_at(i) + 0.25


@pytest.fixture
def runtime(runtime_factory):
    folder = runtime_factory.new_dir()
    write_csv_text(folder / "data" / "load.csv", "ts,value\n" + "".join(
        f"{T0 + i * H:%Y-%m-%d %H:%M:%S},{value_at(i)}\n" for i in range(SEED_ROWS)))
    return runtime_factory(spicepod=write_spicepod(folder, POD))


@pytest.mark.timeout(180 if FULL else 120)
def test_predictions_while_appending(runtime) -> None:
    url = f"{runtime.http_url}/v1/models/{MODEL}/predict"
    first = http_request(url)
    assert first.status == 200, first.body[:500]
    assert parse_instant(first.json()["timestamps"][0]) == (T0 + SEED_ROWS * H).replace(tzinfo=timezone.utc)
    assert runtime.post(f"/v1/models/{MODEL}/train").json()["model_version"] == "2"  # what the rollback leaves

    lock = threading.Lock()
    acked_last = [(T0 + (SEED_ROWS - 1) * H).replace(tzinfo=timezone.utc)]  # newest acknowledged row
    writes = [0]
    requests = [0]
    rolled_back = [False]  # set once POST rollback has returned
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        client = flight.FlightClient(runtime.flight_location)
        schema = pa.schema([("ts", pa.timestamp("us")), ("value", pa.float64())])
        i = SEED_ROWS
        try:
            while not stop.is_set():
                ts = T0 + i * H
                hours = list(range(i - RESENT, i + 1))
                table = pa.table({"ts": pa.array([T0 + j * H for j in hours], pa.timestamp("us")),
                                  "value": [corrected(j) for j in hours[:-1]] + [value_at(i)]}, schema=schema)
                result = do_put(client, "load", table, flight.FlightCallOptions(timeout=30))
                if result != {"dataset": "load", "rows": RESENT + 1}:
                    errors.append(f"DoPut of {ts}: PutResult {result}")
                    return
                with lock:  # acknowledged: the DoPut returned its PutResult
                    acked_last[0] = ts.replace(tzinfo=timezone.utc)
                    writes[0] += 1
                i += 1
        except BaseException as exc:  # reported by the test thread
            errors.append(f"writer: {exc!r}")
        finally:
            client.close()

    def predictor(n: int) -> None:
        try:
            while not stop.is_set():
                with lock:
                    before = acked_last[0]  # every row acknowledged before this request is sent
                    after_rollback = rolled_back[0]
                started = time.monotonic()
                response = http_request(url, timeout=30)
                elapsed = time.monotonic() - started
                with lock:
                    requests[0] += 1
                if response.status != 200:
                    errors.append(f"client {n}: HTTP {response.status} {response.body[:300]!r}")
                    continue
                body = response.json()
                stamps = [parse_instant(t) for t in body.get("timestamps", [])]
                if body.get("status") != "Success" or len(body.get("prediction", [])) != HORIZON \
                        or len(stamps) != HORIZON:
                    errors.append(f"client {n}: bad body {str(body)[:300]}")
                    continue
                if any(b - a != H for a, b in zip(stamps, stamps[1:], strict=False)):
                    errors.append(f"client {n}: timestamps not hourly: {body['timestamps']}")
                if after_rollback and body.get("model_version") != "1":
                    errors.append(f"client {n}: version {body.get('model_version')} answered after the rollback "
                                  "to version 1 returned")
                if not stamps[0] > before:
                    errors.append(f"client {n}: stale prediction: starts {stamps[0].isoformat()} but row "
                                  f"{before.isoformat()} was acknowledged before the request was sent "
                                  f"(model_version {body.get('model_version')}, {elapsed * 1000:.0f} ms)")
        except BaseException as exc:  # reported by the test thread
            errors.append(f"client {n}: {exc!r}")

    def anomaly_reader(n: int) -> None:
        try:
            while not stop.is_set():
                response = http_request(f"{runtime.http_url}/v1/models/{MODEL}/anomalies", timeout=30)
                with lock:
                    requests[0] += 1
                rows = response.json() if response.status == 200 else None
                if not isinstance(rows, list) or any(list(row) != ANOMALY_COLUMNS for row in rows):
                    errors.append(f"anomalies {n}: HTTP {response.status} {response.body[:300]!r}")
                    continue
                stamps = [parse_instant(row["ts"]) for row in rows]
                if stamps != sorted(stamps, reverse=True):
                    errors.append(f"anomalies {n}: not newest first: {[row['ts'] for row in rows][:10]}")
        except BaseException as exc:  # reported by the test thread
            errors.append(f"anomalies {n}: {exc!r}")

    threads = [threading.Thread(target=writer, daemon=True)]
    threads += [threading.Thread(target=predictor, args=(n,), daemon=True) for n in range(CLIENTS - ANOMALY_READERS)]
    threads += [threading.Thread(target=anomaly_reader, args=(n,), daemon=True) for n in range(ANOMALY_READERS)]
    for thread in threads:
        thread.start()
    time.sleep(DURATION_S / 2)
    rollback = runtime.post(f"/v1/models/{MODEL}/rollback")
    with lock:
        rolled_back[0] = True
    assert (rollback.status, rollback.json()["model_version"]) == (200, "1"), rollback.body[:300]
    time.sleep(DURATION_S / 2)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a client or the writer hung"
    print(f"\nmixed load: {DURATION_S:.0f} s, {CLIENTS} clients, {requests[0]} predictions, {writes[0]} DoPuts, "
          f"{len(errors)} errors")
    assert not errors, f"{len(errors)} errors in {requests[0]} requests / {writes[0]} writes; first ones:\n" + \
        "\n".join(errors[:10])
    assert writes[0] >= 5 and requests[0] >= CLIENTS, (writes[0], requests[0])

    # after the load: the data and the prediction agree with the last acknowledged row
    final = http_request(url)
    assert final.status == 200
    assert parse_instant(final.json()["timestamps"][0]) == acked_last[0] + H
    entry = {d["name"]: d for d in runtime.get_json("/v1/datasets")}["load"]
    assert entry["rows"] == SEED_ROWS + writes[0]  # one row per hour: the corrections replaced rows
    client = runtime.flight_client()
    stored = read_all(client, "SELECT ts, value FROM load ORDER BY ts")
    last = SEED_ROWS + writes[0] - 1
    assert stored.column("ts").to_pylist() == [T0 + j * H for j in range(last + 1)]
    assert stored.column("value").to_pylist() == (
        [value_at(j) for j in range(SEED_ROWS - RESENT)]
        + [corrected(j) for j in range(SEED_ROWS - RESENT, last)] + [value_at(last)])
    assert parse_instant(entry["last_timestamp"]) == acked_last[0]
    assert runtime.get("/health").status == 200
