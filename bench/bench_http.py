"""HTTP predict throughput and latency against a hello-world Tornado process, and a 4-model batch POST
against 4 sequential GETs.

The load generator is raw asyncio HTTP/1.1 keep-alive in its own process (multiprocessing), so it never
shares a GIL with what it measures. Each run is bounded by a duration and a request cap.

Run: .venv/bin/python -m bench.bench_http       (BENCH_HTTP_SECONDS=5 for shorter runs)
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
    spawn,
    stop_process,
    table,
    write_parquet,
)

ROWS = size(10_000_000, 5_000, env="BENCH_ROWS")
SECONDS = size(10.0, 0.3, env="BENCH_HTTP_SECONDS")
WARMUP_SECONDS = size(1.0, 0.0)  # 0: no warm-up run
REQUEST_CAP = size(200_000, 2_000)
CONCURRENCY = size((1, 16), (4,))
# Each case's SECONDS in this many runs, the cases taking turns. In one 10 s run per case, one after another,
# the warm GET's p50 against hello-world's moved 0.94-1.36x between runs of one commit: a slow spell of the
# machine fell on one case only.
LOAD_ROUNDS = size(5, 1)
BATCH_RUNS = size(240, 3)  # with 30 the ratio of the medians moved 0.50-0.55 between runs of one commit, with
# 120 0.47-0.53
ROUNDS = size(50, 5)  # LightGBM rounds of each model
MODELS = ["m0", "m1", "m2", "m3"]  # m0 is the model of the GET runs; each on its own 10M-row dataset

HELLO_SERVER = """
import asyncio, tornado.web, tornado.httpserver, tornado.netutil
class Hello(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish('{"status": "Success", "message": "hello, world"}')
class HelloPool(tornado.web.RequestHandler):
    async def get(self):  # the same, plus one hop through a thread pool, as the predict handler makes
        await asyncio.get_running_loop().run_in_executor(POOL, str, "x")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish('{"status": "Success", "message": "hello, world"}')
POOL = __import__("concurrent.futures").futures.ThreadPoolExecutor(8)
async def main():
    app = tornado.web.Application([(r"/hello", Hello), (r"/hello_pool", HelloPool)])
    server = tornado.httpserver.HTTPServer(app)
    sockets = tornado.netutil.bind_sockets(0, address="127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

SPICEPOD_HEAD = """
version: v1
kind: Spicepod
name: bench-http
datasets:
{datasets}
models:
{models}
"""

DATASET = """  - from: file:{path}
    name: {name}
    mode: read_write
"""

MODEL = """  - from: lightgbm:bench
    name: {name}
    datasets: [{dataset}]
    params:
      value_column: value
      lookback: 24
      horizon: 12
      frequency: 1min
      method: lightgbm
      lightgbm: {{num_boost_round: {rounds}}}
"""


# ------------------------------------------------------------------------------- the load generator


class Appender:
    """DoPut one new row after the dataset's newest timestamp, so the next prediction is cold."""

    def __init__(self, flight_location: str):
        import pyarrow.flight as flight

        from pipelines.flight_client import FlightDataClient

        self.client = flight.FlightClient(flight_location)
        self.data = FlightDataClient(flight_location)
        self.last: dict[str, np.datetime64] = {}
        self.next_id = 1 << 40

    def append(self, dataset: str) -> None:
        last = self.last.get(dataset)
        if last is None:
            last = np.datetime64(self.data.dataset_info(dataset)["last_timestamp"].rstrip("Z"), "us")
        rows = next_rows(last, 1, self.next_id)
        do_put(self.client, dataset, rows)
        self.last[dataset] = rows.column("ts").to_numpy()[-1]
        self.next_id += 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _load(port: int, path: str, concurrency: int, seconds: float, cap: int,
                flight_location: str | None, dataset: str | None) -> dict[str, Any]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[str] = []
    appender = Appender(flight_location) if flight_location else None
    put_lock = asyncio.Lock()  # DoPuts one at a time, so timestamps arrive in order and the series stays regular
    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    deadline = started + seconds
    issued = 0

    async def worker() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and issued < cap:
                issued += 1
                if appender is not None:
                    async with put_lock:
                        await loop.run_in_executor(pool, appender.append, dataset)
                t0 = time.perf_counter()
                writer.write(request)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200 and len(errors) < 5:
                    errors.append(f"{status} {body[:200]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pool.shutdown()
    return {"latencies": latencies, "elapsed": elapsed, "errors": errors}


def _load_process(args: tuple, queue: multiprocessing.Queue) -> None:
    queue.put(asyncio.run(_load(*args)))


def run_load(port: int, path: str, concurrency: int, seconds: float = SECONDS, cap: int = REQUEST_CAP,
             flight_location: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Run the load generator in its own process; returns latencies (s), elapsed (s) and errors."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_process,
                       args=((port, path, concurrency, seconds, cap, flight_location, dataset), queue))
    proc.start()
    try:
        result = queue.get(timeout=seconds + 120)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return result


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    header("bench.bench_http", f"HTTP predict vs hello-world Tornado, {SECONDS:.0f} s per run; batch POST vs GETs")
    data = series_table(ROWS)
    with TempDir("flightcast-bench-http-") as folder:
        path = write_parquet(folder / "big.parquet", data)
        datasets = "".join(DATASET.format(path=path, name=f"d{i}") for i in range(len(MODELS)))
        models = "".join(MODEL.format(name=m, dataset=f"d{i}", rounds=ROUNDS) for i, m in enumerate(MODELS))
        pod = SPICEPOD_HEAD.format(datasets=datasets, models=models)
        runtime = Runtime(pod, folder / "runtime")
        hello, hello_port = spawn(HELLO_SERVER)
        try:
            runtime.start().wait_ready()
            _loads(runtime, int(hello_port))
            _batch(runtime)
        finally:
            runtime.stop()
            stop_process(hello)


def _loads(runtime: Runtime, hello_port: int) -> None:
    predict = f"/v1/models/{MODELS[0]}/predict"
    cases = [
        ("hello-world Tornado (separate process)", hello_port, "/hello", None),
        ("diagnostic: hello-world + one thread-pool hop", hello_port, "/hello_pool", None),
        (f"warm GET {predict}", runtime.http_port, predict, None),
        (f"cold GET {predict} (DoPut before each)", runtime.http_port, predict, "d0"),
    ]
    for _, port, path, dataset in cases:
        if WARMUP_SECONDS:  # warm-up: imports, connections, first forecast
            run_load(port, path, 1, seconds=WARMUP_SECONDS,
                     flight_location=runtime.flight_location if dataset else None, dataset=dataset)
    runs = [(case, c) for case in cases for c in CONCURRENCY]
    results: dict[tuple[str, int], dict[str, Any]] = {
        (case[0], c): {"latencies": [], "elapsed": 0.0, "errors": []} for case, c in runs}
    for r in range(LOAD_ROUNDS):
        # Each case's time is cut into rounds, the cases taking turns in an order turned by one each round: a slow
        # spell of the machine then falls on every case alike rather than on whichever ran through it.
        for (name, port, path, dataset), c in runs[r % len(runs):] + runs[:r % len(runs)]:
            part = run_load(port, path, c, seconds=SECONDS / LOAD_ROUNDS, cap=REQUEST_CAP // LOAD_ROUNDS,
                            flight_location=runtime.flight_location if dataset else None, dataset=dataset)
            merged = results[(name, c)]
            merged["latencies"] += part["latencies"]
            merged["elapsed"] += part["elapsed"]
            merged["errors"] += part["errors"][:5 - len(merged["errors"])]
    print(f"\nasyncio keep-alive load generator in its own process, {SECONDS:.0f} s per case in {LOAD_ROUNDS} "
          f"runs, the cases taking turns (cap {REQUEST_CAP:,} requests); cold runs: a DoPut of 1 row before each "
          "request, untimed in latency but inside req/s")
    rows = []
    for (name, c), r in results.items():
        lat = r["latencies"]
        rows.append([name, c, len(lat), len(lat) / r["elapsed"], ms(median(lat)), ms(p99(lat)),
                     "; ".join(r["errors"]) or "0"])
    table(["case", "conc", "requests", "req/s", "p50 ms", "p99 ms", "errors"], rows)
    hello_name, pool_name, warm_name, cold_name = (c[0] for c in cases)
    for c in CONCURRENCY:
        base = results[(hello_name, c)]
        for name, short in ((pool_name, "hello+pool hop"), (warm_name, "warm GET predict"),
                            (cold_name, "cold GET predict")):
            r = results[(name, c)]
            p50_ratio = median(r["latencies"]) / median(base["latencies"])
            tput_ratio = (len(r["latencies"]) / r["elapsed"]) / (len(base["latencies"]) / base["elapsed"])
            warm = short.startswith("warm")
            ratio_line(f"{short} p50 / hello-world p50, c={c}", p50_ratio,
                       "<= 1.3x" if warm else "(info)", p50_ratio <= 1.3 if warm else None)
            ratio_line(f"{short} req/s / hello-world req/s, c={c}", tput_ratio,
                       ">= 0.75x" if warm else "(info)", tput_ratio >= 0.75 if warm else None)


def _batch(runtime: Runtime) -> None:
    appender = Appender(runtime.flight_location)
    conn = http.client.HTTPConnection("127.0.0.1", runtime.http_port, timeout=60)
    body = json.dumps({"predictions": [{"model_name": m} for m in MODELS]})

    def request(method: str, path: str, payload: str | None = None) -> dict:
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, (resp.status, data[:300])
        return json.loads(data)

    def cold_all() -> None:
        for i in range(len(MODELS)):
            appender.append(f"d{i}")

    post_times, get_times, warm_post = [], [], []
    post_server, get_server, item_server = [], [], []  # the runtime's own duration_ms of each (ms)
    for i in range(BATCH_RUNS + 2):
        cold_all()
        t0 = time.perf_counter()
        out = request("POST", "/v1/predict", body)
        post = time.perf_counter() - t0
        assert all(p["status"] == "Success" for p in out["predictions"]), out
        cold_all()
        t0 = time.perf_counter()
        gets_server = [request("GET", f"/v1/models/{m}/predict")["duration_ms"] for m in MODELS]
        gets = time.perf_counter() - t0
        t0 = time.perf_counter()
        request("POST", "/v1/predict", body)
        warm = time.perf_counter() - t0
        if i >= 2:  # the first two are warm-up
            post_times.append(post)
            get_times.append(gets)
            warm_post.append(warm)
            post_server.append(out["duration_ms"] / 1000)
            item_server.append(sum(p["duration_ms"] for p in out["predictions"]) / 1000)
            get_server.append(sum(gets_server) / 1000)
    conn.close()
    print(f"\n{len(MODELS)}-model batch, cold (a DoPut to each model's dataset before each measurement), "
          f"{BATCH_RUNS} runs, one keep-alive connection")
    table(["case", "median ms", "p99 ms"], [
        [f"POST /v1/predict with {len(MODELS)} models", ms(median(post_times)), ms(p99(post_times))],
        [f"{len(MODELS)} sequential GET predict", ms(median(get_times)), ms(p99(get_times))],
        [f"POST /v1/predict with {len(MODELS)} models, warm (info)", ms(median(warm_post)), ms(p99(warm_post))],
        ["  the cold POST's duration_ms in the runtime (info)", ms(median(post_server)), ms(p99(post_server))],
        ["  its items' duration_ms, summed: the forecasts (info)", ms(median(item_server)), ms(p99(item_server))],
        [f"  the {len(MODELS)} GETs' duration_ms, summed (info)", ms(median(get_server)), ms(p99(get_server))],
    ])
    ratio = median(post_times) / median(get_times)
    ratio_line(f"cold POST {len(MODELS)} models / {len(MODELS)} sequential GETs (median)", ratio, "<= 0.5x",
               ratio <= 0.5)


if __name__ == "__main__":
    main()
