"""Durability of the store across kill -9, SIGTERM and restarts (SPEC sections 1, 2, 5 and 7)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import (
    RuntimeFactory,
    do_put,
    open_server_connections,
    read_all,
    server_read_everything,
    wait_until,
    write_csv_text,
    write_spicepod,
)

pytestmark = pytest.mark.slow

OPTS = flight.FlightCallOptions(timeout=30)
SEED = "ts,value\n2024-01-01 00:00:00,1.0\n2024-01-02 00:00:00,2.0\n2024-01-03 00:00:00,3.0\n"
RO = "ts,value\n2024-01-01 00:00:00,10.0\n2024-01-02 00:00:00,20.0\n2024-01-03 00:00:00,30.0\n"
POD = """\
version: v1
kind: Spicepod
name: durability
datasets:
  - from: file:data/seed.csv
    name: rw
    mode: read_write
  - from: flight
    name: sink
  - from: file:data/ro.csv
    name: ro
"""
SINK = pa.table({
    "ts": pa.array([datetime(2024, 6, 1), datetime(2024, 6, 2)], pa.timestamp("us")),
    "value": pa.array([0.5, 1.5], pa.float64()),
    "tag": pa.array(["a", None], pa.string()),
})


@pytest.fixture
def pod(runtime_factory: RuntimeFactory):
    folder = runtime_factory.new_dir()
    write_csv_text(folder / "data" / "seed.csv", SEED)
    write_csv_text(folder / "data" / "ro.csv", RO)
    return write_spicepod(folder, POD)


def start(factory: RuntimeFactory, pod):
    return factory(spicepod=pod, data_dir=pod.parent / "store")


def rw_rows(table: pa.Table) -> list[tuple[datetime, float]]:
    rows = table.sort_by("ts").to_pydict()
    return [(t.replace(tzinfo=None), v) for t, v in zip(rows["ts"], rows["value"], strict=True)]


def rw_new(client, days: list[int], base: datetime = datetime(2030, 1, 1)) -> pa.Table:
    """Rows for `rw` in its own schema, at base + day offsets, value = offset + 0.25."""
    schema = client.get_schema(flight.FlightDescriptor.for_path("rw"), OPTS).schema
    return pa.table({
        "ts": pa.array([base + timedelta(days=d) for d in days], schema.field("ts").type),
        "value": pa.array([d + 0.25 for d in days], schema.field("value").type),
    }, schema=schema)


SEED_ROWS = [(datetime(2024, 1, d), float(d)) for d in (1, 2, 3)]


def test_kill9_after_do_put_returned_keeps_rows(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    client = rt.flight_client()
    new = rw_new(client, [0, 1, 2])
    assert do_put(client, "rw", new, OPTS) == {"dataset": "rw", "rows": 3}
    assert do_put(client, "sink", SINK, OPTS) == {"dataset": "sink", "rows": 2}
    rt.kill()
    assert rt.returncode == -signal.SIGKILL

    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(new)
    got = read_all(client, "SELECT * FROM sink ORDER BY ts", OPTS)
    assert got.equals(SINK), (got.schema, got.to_pydict())


def _abandon(writer) -> None:
    with contextlib.suppress(pa.ArrowException):
        writer.close()


def test_kill9_during_do_put_stream_leaves_nothing(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    client = rt.flight_client()
    acked = rw_new(client, [0, 1])
    assert do_put(client, "rw", acked, OPTS) == {"dataset": "rw", "rows": 2}
    assert do_put(client, "sink", SINK, OPTS) == {"dataset": "sink", "rows": 2}

    # two streams left open: several batches each, never finished
    big = rw_new(client, list(range(20_000)), base=datetime(2050, 1, 1))
    rw_writer, _ = client.do_put(flight.FlightDescriptor.for_path("rw"), big.schema, options=OPTS)
    sink_more = pa.table({
        "ts": pa.array([datetime(2051, 1, 1) + timedelta(minutes=i) for i in range(20_000)], pa.timestamp("us")),
        "value": pa.array([float(i) for i in range(20_000)]), "tag": pa.array(["x"] * 20_000),
    })
    sink_writer, _ = client.do_put(flight.FlightDescriptor.for_path("sink"), SINK.schema, options=OPTS)
    try:
        for batch in big.to_batches(max_chunksize=5_000):
            rw_writer.write_batch(batch)
        for batch in sink_more.to_batches(max_chunksize=5_000):
            sink_writer.write_batch(batch)
        wait_until(lambda: server_read_everything(rt.flight_port), "the server read both open streams")
        rt.kill()
    finally:
        _abandon(rw_writer)
        _abandon(sink_writer)

    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(acked)
    got = read_all(client, "SELECT * FROM sink ORDER BY ts", OPTS)
    assert got.equals(SINK), got.num_rows
    # and the store still takes writes
    assert do_put(client, "rw", rw_new(client, [5]), OPTS) == {"dataset": "rw", "rows": 1}


def test_sigterm_exits_zero_and_data_survives(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    client = rt.flight_client()
    new = rw_new(client, [3, 4])
    do_put(client, "rw", new, OPTS)
    do_put(client, "sink", SINK, OPTS)
    rt.stop()  # asserts exit code 0

    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(new)
    assert read_all(client, "SELECT * FROM sink ORDER BY ts", OPTS).equals(SINK)
    rt2.stop()


def test_sigterm_with_an_open_do_put_stream(runtime_factory, pod) -> None:
    """SIGTERM while a client holds an unfinished DoPut stream: exit 0 once the grace period is over (not
    before: the call might still finish), the stream rolled back."""
    rt = runtime_factory(spicepod=pod, data_dir=pod.parent / "store", extra_args=["--shutdown-grace", "1.5"])
    client = rt.flight_client()
    acked = rw_new(client, [0])
    do_put(client, "rw", acked, OPTS)
    pending = rw_new(client, list(range(100)), base=datetime(2060, 1, 1))
    # no deadline: the server, not the client's timeout, has to end the call
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("rw"), pending.schema)
    try:
        writer.write_table(pending)
        wait_until(lambda: server_read_everything(rt.flight_port), "the server read the open stream")
        signalled = time.monotonic()
        rt.proc.send_signal(signal.SIGTERM)
        try:
            code = rt.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("flightcast did not exit within 20 s of SIGTERM while a DoPut stream was open")
        assert code == 0, rt.log_text()
        assert time.monotonic() - signalled >= 1.5
        assert "flight calls still open after 1.5 s; exiting without them" in rt.log_text()
    finally:
        _abandon(writer)

    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(acked)


CLIENT_DIES = """
import os, sys, time
from datetime import datetime, timedelta
import pyarrow as pa, pyarrow.flight as flight
client = flight.FlightClient(sys.argv[1])
schema = client.get_schema(flight.FlightDescriptor.for_path("rw")).schema
table = pa.table({
    "ts": pa.array([datetime(2070, 1, 1) + timedelta(hours=i) for i in range(30_000)], schema.field("ts").type),
    "value": pa.array([float(i) for i in range(30_000)], schema.field("value").type),
}, schema=schema)
writer, _ = client.do_put(flight.FlightDescriptor.for_path("rw"), schema)
for batch in table.to_batches(max_chunksize=10_000):
    writer.write_batch(batch)
time.sleep(0.5)
print("wrote", flush=True)
os._exit(1)
"""


def test_client_dying_mid_stream_leaves_nothing(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    before = open_server_connections(rt.flight_port)
    result = subprocess.run([sys.executable, "-c", CLIENT_DIES, rt.flight_location], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "wrote", result.stderr
    wait_until(lambda: not open_server_connections(rt.flight_port) - before, "the server dropped the dead client")
    client = rt.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS
    rt.kill()
    rt2 = start(runtime_factory, pod)
    assert rw_rows(read_all(rt2.flight_client(), "rw", OPTS)) == SEED_ROWS


def test_client_deadline_mid_stream_leaves_nothing(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    before = open_server_connections(rt.flight_port)
    client = rt.flight_client()
    pending = rw_new(client, list(range(50)), base=datetime(2080, 1, 1))
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("rw"), pending.schema,
                                   options=flight.FlightCallOptions(timeout=1.0))
    try:
        writer.write_table(pending)
        started = time.monotonic()
        assert reader.read() is None  # no answer: it returns when the call ends, at its deadline
        assert time.monotonic() - started > 0.5
        with pytest.raises(flight.FlightTimedOutError):  # the stream was never finished
            writer.close()
    finally:
        _abandon(writer)
    client.close()  # and the server, which saw the call end, sees its client go
    wait_until(lambda: not open_server_connections(rt.flight_port) - before, "the server dropped the client")
    assert rw_rows(read_all(rt.flight_client(), "rw", OPTS)) == SEED_ROWS


def test_read_reloads_from_file_read_write_store_wins(runtime_factory, pod) -> None:
    data = pod.parent / "data"
    rt = start(runtime_factory, pod)
    client = rt.flight_client()
    assert rw_rows(read_all(client, "ro", OPTS)) == [(datetime(2024, 1, d), d * 10.0) for d in (1, 2, 3)]
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS
    new = rw_new(client, [7])
    do_put(client, "rw", new, OPTS)
    rt.stop()

    write_csv_text(data / "ro.csv", "ts,value\n2025-01-01 00:00:00,-1.0\n2025-01-02 00:00:00,-2.0\n"
                   "2025-01-03 00:00:00,-3.0\n2025-01-04 00:00:00,-4.0\n")
    write_csv_text(data / "seed.csv", "ts,value\n2099-01-01 00:00:00,99.0\n")

    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "ro", OPTS)) == [(datetime(2025, 1, d), -float(d)) for d in (1, 2, 3, 4)]
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(new)
    rt2.kill()

    # a crash right after start neither re-seeds nor loses anything
    rt3 = start(runtime_factory, pod)
    client = rt3.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS + rw_rows(new)
    entry = {d["name"]: d for d in rt3.get_json("/v1/datasets")}
    assert entry["rw"]["rows"] == 4 and entry["ro"]["rows"] == 4


def test_seed_once_even_after_a_crash_before_any_put(runtime_factory, pod) -> None:
    rt = start(runtime_factory, pod)
    rt.kill()
    rt2 = start(runtime_factory, pod)
    client = rt2.flight_client()
    assert rw_rows(read_all(client, "rw", OPTS)) == SEED_ROWS
    rt2.kill()
    rt3 = start(runtime_factory, pod)
    assert rw_rows(read_all(rt3.flight_client(), "rw", OPTS)) == SEED_ROWS
