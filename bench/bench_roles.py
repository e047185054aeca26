"""A serve node (`--role serve`) against its data node (`--role data`), compared with one `--role all`
process on the same data: warm and cold GET predict over HTTP, and what the commit-notice
acknowledgements add to a DoPut.

Run: .venv/bin/python -m bench.bench_roles
"""

from __future__ import annotations

import http.client
import json

import numpy as np

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
    table,
    time_calls,
    write_parquet,
)

ROWS = size(200_000, 2_000, env="BENCH_ROWS")
WARM_RUNS = size(2000, 20)
COLD_RUNS = size(100, 5)
PUT_RUNS = size(100, 5)
MODEL = "minutes"

SPICEPOD = """\
version: v1
kind: Spicepod
name: bench-roles
datasets:
  - {{from: file:{path}, name: big, mode: read_write}}
models:
  - {{from: lightgbm, name: {model}, datasets: [big], params: {{value_column: value, lookback: 30, horizon: 12,
      frequency: 1min, backtest_windows: 1, method: lightgbm, lightgbm: {{num_boost_round: {rounds}}}}}}}
"""


class Http:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def predict(self) -> dict:
        self.conn.request("GET", f"/v1/models/{MODEL}/predict")
        response = self.conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return body


def _measure(name: str, node: Runtime, writer: Runtime) -> dict[str, list[float]]:
    client = Http(node.http_port)
    flight = writer.flight_client()
    last = [np.datetime64(client.predict()["timestamps"][0].rstrip("Z"), "us") - np.timedelta64(60, "s")]
    warm = time_calls(client.predict, WARM_RUNS, warmup=size(50, 2))

    def change() -> None:
        rows = next_rows(last[0], 1)
        do_put(flight, "big", rows)
        last[0] = rows.column("ts").to_numpy()[-1]

    def cold() -> None:
        body = client.predict()
        assert body["timestamps"][0] == str(np.datetime64(last[0] + np.timedelta64(60, "s"), "s")) + "Z", body

    cold_times = time_calls(cold, COLD_RUNS, warmup=1, before=change)

    def put() -> None:
        rows = next_rows(last[0], 1)
        do_put(flight, "big", rows)
        last[0] = rows.column("ts").to_numpy()[-1]

    puts = time_calls(put, PUT_RUNS, warmup=1)
    return {"warm": warm, "cold": cold_times, "put": puts}


def main() -> None:
    header("bench.bench_roles", "a serve node against its data node vs one --role all process")
    with TempDir("flightcast-bench-roles-") as folder:
        path = write_parquet(folder / "big.parquet", series_table(ROWS))
        text = SPICEPOD.format(path=path, model=MODEL, rounds=size(50, 5))
        results = {}
        single = Runtime(text, folder / "all")
        try:
            single.start().wait_ready()
            results["all"] = _measure("all", single, single)
        finally:
            single.cleanup()
        data = Runtime(text, folder / "split", data_dir=folder / "split" / "data", extra_args=["--role", "data"])
        serve = None
        try:
            data.start()
            serve = Runtime(text, folder / "split", data_dir=folder / "split" / "serve",
                            extra_args=["--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"])
            serve.start().wait_ready()
            results["serve"] = _measure("serve", serve, data)
        finally:
            if serve is not None:
                serve.cleanup()
            data.cleanup()
    print(f"\nGET /v1/models/{MODEL}/predict over one keep-alive connection ({ROWS:,} rows; cold = after a "
          "1-row DoPut); DoPut of 1 row (with a serve node subscribed, it waits for its acknowledgement)")
    table(["role", "warm median ms", "warm p99 ms", "cold median ms", "cold p99 ms", "DoPut median ms"],
          [[role, ms(median(r["warm"])), ms(p99(r["warm"])), ms(median(r["cold"])), ms(p99(r["cold"])),
            ms(median(r["put"]))] for role, r in results.items()])
    warm = median(results["serve"]["warm"]) / median(results["all"]["warm"])
    ratio_line("warm GET predict median, serve node / --role all", warm, "<= 1.3x", warm <= 1.3)
    cold = median(results["serve"]["cold"]) / median(results["all"]["cold"])
    ratio_line("cold GET predict median, serve node / --role all", cold, "(info)", None)
    put = median(results["serve"]["put"]) / median(results["all"]["put"])
    ratio_line("DoPut of 1 row median, with 1 serve node subscribed / none", put, "(info)", None)


if __name__ == "__main__":
    main()
