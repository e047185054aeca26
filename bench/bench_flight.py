"""Data plane: DoGet and DoPut of 10M rows against a bare pyarrow Flight server, and latest-window queries.

Run: .venv/bin/python -m bench.bench_flight
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from bench.common import (
    Runtime,
    TempDir,
    do_put,
    header,
    median,
    ms,
    p99,
    ratio_line,
    series_table,
    size,
    spawn,
    stop_process,
    table,
    time_calls,
    write_parquet,
)
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from pipelines.window import WindowQuery

ROWS = size(10_000_000, 20_000, env="BENCH_ROWS")
SMALL_ROWS = size(10_000, 1_000)
RUNS = size(5, 1)  # DoGet runs per server, interleaved
PUT_RUNS = size(3, 1)
WINDOW_RUNS = size(200, 5)
LOOKBACK = 30

# The baseline: the same in-memory table served by a FlightServerBase that does nothing else.
BARE_SERVER = """
import sys, pyarrow.flight as flight, pyarrow.parquet as pq
table = pq.read_table({path!r}).combine_chunks()
table = __import__('pyarrow').Table.from_batches(table.to_batches(max_chunksize=1 << 20))
class Bare(flight.FlightServerBase):
    def do_get(self, context, ticket):
        return flight.RecordBatchStream(table)
    def do_put(self, context, descriptor, reader, writer):
        rows = 0
        for chunk in reader:
            rows += chunk.data.num_rows
server = Bare('grpc://127.0.0.1:0')
print(server.port, flush=True)
server.serve()
"""

SPICEPOD = """
version: v1
kind: Spicepod
name: bench-flight
datasets:
  - from: file:{big}
    name: big
    mode: read_write
  - from: file:{big}
    name: big_read
  - from: file:{small}
    name: small
    mode: read_write
{ingest}
"""


def doget_seconds(client: flight.FlightClient, ticket: str, rows: int) -> float:
    t0 = time.perf_counter()
    result = client.do_get(flight.Ticket(ticket.encode())).read_all()
    elapsed = time.perf_counter() - t0
    assert result.num_rows == rows, (ticket, result.num_rows)
    return elapsed


def main() -> None:
    header("bench.bench_flight", f"Flight DoGet / DoPut of {ROWS:,} rows, latest-{LOOKBACK} window queries")
    data = series_table(ROWS)
    small = series_table(SMALL_ROWS)
    nbytes = data.nbytes
    print(f"dataset: {ROWS:,} rows x 3 columns (ts timestamp[us] 1-min steps, value float64, id int64), "
          f"{nbytes / 1e6:.0f} MB in Arrow")
    with TempDir("flightcast-bench-flight-") as folder:
        big_path = write_parquet(folder / "big.parquet", data)
        small_path = write_parquet(folder / "small.parquet", small)
        ingest = "\n".join(f"  - from: flight\n    name: ingest_{i}" for i in range(PUT_RUNS + 1))
        pod = SPICEPOD.format(big=big_path, small=small_path, ingest=ingest)
        runtime = Runtime(pod, folder / "runtime")
        bare, port = spawn(BARE_SERVER.format(path=str(big_path)))
        try:
            started = time.perf_counter()
            runtime.start().wait_ready()
            print(f"flightcast ready in {time.perf_counter() - started:.1f} s ({ROWS:,} rows loaded twice: "
                  "read_write seeded into the durable store, and read)")
            bare_client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
            fc_client = runtime.flight_client()
            _doget(bare_client, fc_client, nbytes, data)
            _doput(bare_client, fc_client, data, folder)
            _windows(runtime)
        finally:
            runtime.stop()
            stop_process(bare)


def _doget(bare_client: flight.FlightClient, fc_client: flight.FlightClient, nbytes: int, data: pa.Table) -> None:
    cases = {
        "bare pyarrow.flight (in-memory table)": (bare_client, "any"),
        "flightcast ticket=big (read_write, durable)": (fc_client, "big"),
        "flightcast ticket=SELECT * FROM big": (fc_client, "SELECT * FROM big"),
        "flightcast ticket=big_read (read, in memory)": (fc_client, "big_read"),
    }
    duck_name = "diagnostic: DuckDB alone, SELECT * -> Arrow batches, in-process"
    times: dict[str, list[float]] = {name: [] for name in [*cases, duck_name]}
    duck = _duck_scan(data)
    for client, ticket in cases.values():  # warm-up: first touches, connection set-up
        doget_seconds(client, ticket, ROWS)
    for _ in range(RUNS):  # interleaved, so noise from the other users of the box hits every case alike
        for name, (client, ticket) in cases.items():
            times[name].append(doget_seconds(client, ticket, ROWS))
        times[duck_name].append(duck())
    base = nbytes / median(times["bare pyarrow.flight (in-memory table)"]) / 1e9
    print(f"\nDoGet of the whole dataset, read_all() on the client, median of {RUNS} interleaved runs")
    rows = []
    for name, samples in times.items():
        gbps = nbytes / median(samples) / 1e9
        rows.append([name, ms(median(samples)), ms(min(samples)), ms(max(samples)), gbps, gbps / base])
    table(["server / ticket", "median ms", "min ms", "max ms", "GB/s", "vs bare"], rows)
    for name, *_ in rows[1:len(cases)]:
        ratio = (nbytes / median(times[name]) / 1e9) / base
        ratio_line(f"DoGet GB/s {name.removeprefix('flightcast ')} / bare", ratio, ">= 0.8x", ratio >= 0.8)


def _duck_scan(data: pa.Table):
    """What producing the Arrow batches costs DuckDB alone (a copy out of DuckDB's own storage)."""
    import duckdb

    db = duckdb.connect(":memory:")
    db.register("source", data)
    db.execute("CREATE TABLE t AS SELECT * FROM source ORDER BY ts")
    db.unregister("source")

    def scan() -> float:
        t0 = time.perf_counter()
        rows = sum(b.num_rows for b in db.cursor().sql("SELECT * FROM t").to_arrow_reader(1 << 20))
        assert rows == ROWS
        return time.perf_counter() - t0

    scan()
    return scan


def _doput(bare_client: flight.FlightClient, fc_client: flight.FlightClient, data: pa.Table, folder) -> None:
    bare_times, fc_times, duck_times = [], [], []
    do_put(bare_client, "x", data)
    do_put(fc_client, "ingest_0", data)  # warm-up into its own dataset
    duck = _DuckFloor(folder)
    for i in range(1, PUT_RUNS + 1):
        duck_times.append(duck.insert(data, i))
        t0 = time.perf_counter()
        do_put(bare_client, "x", data)
        bare_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = do_put(fc_client, f"ingest_{i}", data)
        fc_times.append(time.perf_counter() - t0)
        assert result.get("rows") == ROWS, result
    nbytes = data.nbytes
    print(f"\nDoPut of {ROWS:,} rows in 1M-row batches, median of {PUT_RUNS} interleaved runs "
          "(flightcast: into an empty `from: flight` dataset, committed and durable when DoPut returns)")
    rows = []
    for name, samples in (("bare (do_put only reads the batches)", bare_times),
                          ("flightcast (DuckDB transaction, durable)", fc_times),
                          ("diagnostic: DuckDB alone, same batches INSERTed + COMMIT into a file, in-process",
                           duck_times)):
        rows.append([name, ms(median(samples)), ms(min(samples)), nbytes / median(samples) / 1e9,
                     ROWS / median(samples) / 1e6])
    table(["server", "median ms", "min ms", "GB/s", "Mrows/s"], rows)
    ratio = median(bare_times) / median(fc_times)
    ratio_line("DoPut throughput flightcast / bare", ratio, ">= 0.5x", ratio >= 0.5)
    ratio = median(bare_times) / median(duck_times)
    ratio_line("DoPut throughput DuckDB-alone floor / bare (the best a DuckDB store can do)", ratio, "(info)", None)
    duck.close()


class _DuckFloor:
    """What a durable DuckDB append costs with no Flight around it: the same batches, one transaction."""

    def __init__(self, folder):
        import duckdb

        self.db = duckdb.connect(":memory:")
        self.db.execute(f"ATTACH '{folder / 'floor.duckdb'}' AS store")

    def insert(self, data: pa.Table, i: int) -> float:
        cur = self.db.cursor()
        cur.register("schema_source", data.slice(0, 0))
        cur.execute(f"CREATE TABLE store.main.t{i} AS SELECT * FROM schema_source")
        t0 = time.perf_counter()
        cur.begin()
        for batch in data.to_batches(max_chunksize=1 << 20):
            cur.register("incoming", batch)
            cur.execute(f"INSERT INTO store.main.t{i} BY NAME SELECT * FROM incoming")
            cur.unregister("incoming")
        cur.commit()
        elapsed = time.perf_counter() - t0
        cur.close()
        return elapsed

    def close(self) -> None:
        self.db.close()


def _windows(runtime: Runtime) -> None:
    client = FlightDataClient(runtime.flight_location)
    freq = Frequency.parse("1min")
    results: dict[tuple[str, str], list[float]] = {}
    for dataset in ("big", "big_read", "small"):
        info = client.dataset_info(dataset)
        last = np.datetime64(info["last_timestamp"].rstrip("Z"), "us")
        query = WindowQuery(dataset, "ts", "value")

        def latest(query=query, last=last) -> None:
            times, _ = query.latest(client, LOOKBACK, freq, last)
            assert times.size == LOOKBACK and times[-1] == last

        plain = f"SELECT ts, value FROM {dataset} ORDER BY ts DESC LIMIT {LOOKBACK}"
        results[(dataset, "WindowQuery.latest (ts >= bound ORDER BY ts)")] = time_calls(
            latest, WINDOW_RUNS, warmup=10)
        results[(dataset, "plain ORDER BY ts DESC LIMIT 30")] = time_calls(
            lambda plain=plain: client.query(plain), WINDOW_RUNS, warmup=10)
    sizes = {"big": f"{ROWS:,} rw", "big_read": f"{ROWS:,} read", "small": f"{SMALL_ROWS:,} rw"}
    print(f"\nLatest-{LOOKBACK}-rows window over Flight DoGet (FlightDataClient.query), {WINDOW_RUNS} calls each")
    table(["dataset", "rows", "query", "median ms", "p99 ms"],
          [[d, sizes[d], q, ms(median(s)), ms(p99(s))] for (d, q), s in results.items()])
    for q in ("WindowQuery.latest (ts >= bound ORDER BY ts)", "plain ORDER BY ts DESC LIMIT 30"):
        for big in ("big", "big_read"):
            ratio = median(results[(big, q)]) / median(results[("small", q)])
            ratio_line(f"window median {big} (10M) / small (10K), {q.split(' (')[0]}", ratio, "~1x (flat)",
                       None)


if __name__ == "__main__":
    main()
