"""Flight SQL through the ADBC driver against plain Flight on the same runtime: SELECT *, tiny queries, ingest.

Run: .venv/bin/python -m bench.bench_flight_sql          (BENCH_ROWS=N for another size)
     BENCH_TINY=1 .venv/bin/python -m bench.bench_flight_sql   (every case once on tiny inputs)
"""

from __future__ import annotations

import time

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2

from bench.common import (
    TINY,
    Runtime,
    TempDir,
    do_put,
    header,
    median,
    ms,
    ratio_line,
    series_table,
    size,
    table,
    write_parquet,
)
from flight_server import flightsql_pb2

# Every size in one place; the tiny mode runs each case once on small inputs, so the module cannot break
# unnoticed.
ROWS = size(10_000_000, 5_000, env="BENCH_ROWS")
SMALL_ROWS = size(10_000, 1_000)
RUNS = size(42, 1)  # whole-dataset reads per client, interleaved (a multiple of the 3 clients); 6 left the
# median of the ADBC client (its Go runtime collects garbage now and then) 0.06x apart from run to run, 12 still
# 0.04x (0.900 and 0.938 on code that serves it alike), 21 moved 0.83-0.95 over ten runs of two commits
TINY_QUERY_RUNS = size(300, 5)
PUT_RUNS = size(3, 1)
PUT_CHUNK = 1 << 19  # rows per batch sent, the same for DoPut and ADBC ingest

SPICEPOD = """
version: v1
kind: Spicepod
name: bench-flight-sql
datasets:
  - from: file:{big}
    name: big
  - from: file:{small}
    name: small
{ingest}
"""


def main() -> None:
    header("bench.bench_flight_sql", f"Flight SQL (ADBC driver) against plain Flight: SELECT * of {ROWS:,} rows, "
           f"tiny queries, ingest of {ROWS:,} rows")
    data = series_table(ROWS)
    print(f"dataset: {ROWS:,} rows x 3 columns (ts timestamp[us], value float64, id int64), "
          f"{data.nbytes / 1e6:.0f} MB in Arrow{'  [tiny mode]' if TINY else ''}")
    with TempDir("flightcast-bench-flight-sql-") as folder:
        big = write_parquet(folder / "big.parquet", data)
        small = write_parquet(folder / "small.parquet", series_table(SMALL_ROWS))
        ingest = "\n".join(f"  - from: flight\n    name: {kind}_{i}"
                           for kind in ("put", "adbc") for i in range(PUT_RUNS + 1))
        runtime = Runtime(SPICEPOD.format(big=big, small=small, ingest=ingest), folder / "runtime")
        try:
            started = time.perf_counter()
            runtime.start().wait_ready()
            print(f"flightcast ready in {time.perf_counter() - started:.1f} s")
            client = runtime.flight_client()
            with dbapi.connect(runtime.flight_location, autocommit=True) as conn:
                _select_all(client, conn)
                _tiny_queries(client, conn)
                _ingest(client, conn, data)
            client.close()
        finally:
            runtime.stop()


def _doget(client: flight.FlightClient, sql: str) -> pa.Table:
    return client.do_get(flight.Ticket(sql.encode())).read_all()


def _adbc(conn, sql: str, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def _flight_sql_by_pyarrow(client: flight.FlightClient, sql: str) -> pa.Table:
    """The server's Flight SQL path read by the pyarrow client: GetFlightInfo(CommandStatementQuery) + DoGet."""
    command = any_pb2.Any()
    command.Pack(flightsql_pb2.CommandStatementQuery(query=sql))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()))
    return client.do_get(info.endpoints[0].ticket).read_all()


def _select_all(client: flight.FlightClient, conn) -> None:
    sql = "SELECT * FROM big"
    diagnostic = "diagnostic: Flight SQL CommandStatementQuery read by the pyarrow.flight client"
    cases = {
        "plain DoGet, ticket = SQL (pyarrow.flight read_all)": lambda: _doget(client, sql),
        "Flight SQL, ADBC cursor.execute + fetch_arrow_table": lambda: _adbc(conn, sql),
        diagnostic: lambda: _flight_sql_by_pyarrow(client, sql),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        assert fn().num_rows == ROWS
    names = list(cases)
    for run in range(RUNS):
        # Interleaved, so noise from other users of the machine hits every client alike, and each client goes
        # first in turn. Each result is released before the next timing starts: freeing a 10M-row table is a
        # cost of whoever made it, not of the next client's read.
        for name in names[run % len(names):] + names[:run % len(names)]:
            t0 = time.perf_counter()
            result = cases[name]()
            times[name].append(time.perf_counter() - t0)
            assert result.num_rows == ROWS
            del result
    print(f"\n{sql} ({ROWS:,} rows), median of {RUNS} interleaved runs, each client first in turn")
    plain, adbc, server_only = (median(t) for t in times.values())
    table(["client", "median ms", "min ms", "Mrows/s"],
          [[name, ms(median(t)), ms(min(t)), ROWS / median(t) / 1e6] for name, t in times.items()])
    ratio_line("SELECT * throughput ADBC Flight SQL / plain DoGet", plain / adbc, ">= 0.9x", plain / adbc >= 0.9)
    # Same client, same bytes: what the server's Flight SQL path costs, apart from the driver's own.
    ratio_line("SELECT * throughput Flight SQL via pyarrow client / plain DoGet", plain / server_only, "(info)", None)


def _tiny_queries(client: flight.FlightClient, conn) -> None:
    template = "SELECT ts, value FROM small WHERE id = {}"
    ids = [i % SMALL_ROWS for i in range(TINY_QUERY_RUNS)]
    results: dict[str, list[float]] = {}

    def timed(name: str, fn) -> None:
        fn(0)  # warm-up
        samples = []
        for i in ids:
            t0 = time.perf_counter()
            table_ = fn(i)
            samples.append(time.perf_counter() - t0)
            assert table_.num_rows == 1
        results[name] = samples

    with conn.cursor() as reused:
        def prepared(i: int) -> pa.Table:
            reused.execute("SELECT ts, value FROM small WHERE id = ?", (i,))
            return reused.fetch_arrow_table()

        timed("ADBC, one prepared statement reused (parameter bound by DoPut)", prepared)
    with conn.cursor() as cur:
        def new_sql(i: int) -> pa.Table:
            cur.execute(template.format(i))  # new text each time: prepare, and close the previous one
            return cur.fetch_arrow_table()

        timed("ADBC, new SQL text each time", new_sql)
    timed("plain DoGet, ticket = SQL", lambda i: _doget(client, template.format(i)))
    print(f"\nTiny query (one row of {SMALL_ROWS:,}), {TINY_QUERY_RUNS} calls each, one after another")
    table(["client", "median ms", "min ms"], [[n, ms(median(s)), ms(min(s))] for n, s in results.items()])
    base = median(results["plain DoGet, ticket = SQL"])
    for name in list(results)[:2]:
        ratio_line(f"tiny query median {name.split(',')[1].strip()} / plain DoGet", median(results[name]) / base,
                   "(info)", None)


def _ingest(client: flight.FlightClient, conn, data: pa.Table) -> None:
    batches = data.to_batches(max_chunksize=PUT_CHUNK)
    put_times, adbc_times = [], []

    def put(i: int) -> float:
        t0 = time.perf_counter()
        result = do_put(client, f"put_{i}", data, chunk=PUT_CHUNK)
        elapsed = time.perf_counter() - t0
        assert result["rows"] == ROWS, result
        return elapsed

    def adbc(i: int) -> float:
        reader = pa.RecordBatchReader.from_batches(data.schema, batches)
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            rows = cur.adbc_ingest(f"adbc_{i}", reader, mode="append")
        elapsed = time.perf_counter() - t0
        assert rows == ROWS, rows
        return elapsed

    put(0)  # warm-up, each into its own dataset
    adbc(0)
    for i in range(1, PUT_RUNS + 1):
        put_times.append(put(i))
        adbc_times.append(adbc(i))
    print(f"\nIngest of {ROWS:,} rows in {PUT_CHUNK:,}-row batches into empty `from: flight` datasets "
          f"(committed and durable when the call returns), median of {PUT_RUNS} interleaved runs")
    table(["client", "median ms", "min ms", "Mrows/s"],
          [[name, ms(median(t)), ms(min(t)), ROWS / median(t) / 1e6]
           for name, t in (("plain DoPut (pyarrow.flight)", put_times),
                           ("Flight SQL CommandStatementIngest (ADBC adbc_ingest append)", adbc_times))])
    ratio = median(put_times) / median(adbc_times)
    ratio_line("ingest throughput ADBC Flight SQL / plain DoPut", ratio, ">= 0.9x", ratio >= 0.9)


if __name__ == "__main__":
    main()
