"""Anomalies on arrival and drift (SPEC 15), through a real runtime: values that arrive far outside their
one-step-ahead interval are listed with the forecast they missed; a jump in the data makes a model drift."""

from __future__ import annotations

import io
import textwrap
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from conftest import do_put, wait_until, write_table

from pipelines.anomalies import Anomaly, AnomalyLog

START = datetime(2024, 1, 1)
DAYS = 120
WEEK = np.array([0.0, 0.2, 0.1, -0.1, 0.3, 1.0, 0.8])
LEVELS = {"store_a": (10.0, 1.0), "store_b": (1000.0, 50.0), "store_c": (50.0, 5.0)}
LOOKBACK = 14
COLUMNS = ["series", "ts", "value", "expected", "lower", "upper", "level", "score"]


def series_table(levels: dict, days: int = DAYS) -> pa.Table:
    rng = np.random.default_rng(3)
    ids, ts, values = [], [], []
    for sid, (level, scale) in levels.items():
        ids += [sid] * days
        ts += [START + timedelta(days=d) for d in range(days)]
        values += list(level + scale * (WEEK[np.arange(days) % 7] + rng.normal(0.0, 0.05, days)))
    return pa.table({"store": ids, "ts": pa.array(ts, pa.timestamp("us")), "value": pa.array(values, pa.float64())})


def pod(folder) -> str:
    write_table(folder / "panel.parquet", series_table(LEVELS))
    single = series_table({"x": (100.0, 10.0)}).drop_columns(["store"])
    write_table(folder / "single.parquet", single)
    write_table(folder / "jumpy.parquet", single)
    write_table(folder / "mixed.parquet", single)
    write_table(folder / "drifty.parquet", single)
    return textwrap.dedent(f"""\
        version: v1
        kind: Spicepod
        name: anomalies
        datasets:
          - {{from: file:{folder / 'panel.parquet'}, name: sales, series_column: store, mode: read_write}}
          - {{from: file:{folder / 'single.parquet'}, name: single, mode: read_write}}
          - {{from: file:{folder / 'jumpy.parquet'}, name: jumpy, mode: read_write}}
          - {{from: file:{folder / 'mixed.parquet'}, name: mixed, mode: read_write}}
          - {{from: file:{folder / 'drifty.parquet'}, name: drifty, mode: read_write}}
        models:
          - {{from: lightgbm, name: panel_m, datasets: [sales], params: {{lookback: {LOOKBACK}, horizon: 2,
              method: lightgbm}}}}
          - {{from: lightgbm, name: single_m, datasets: [single], params: {{lookback: {LOOKBACK}, horizon: 2,
              method: lightgbm, anomaly_level: 95}}}}
          - {{from: lightgbm, name: jumpy_m, datasets: [jumpy], params: {{lookback: {LOOKBACK}, horizon: 3,
              method: lightgbm, drift_window: 6, drift_ratio: 1.5}}}}
          - {{from: lightgbm, name: portfolio_m, datasets: [mixed], params: {{lookback: {LOOKBACK}, horizon: 2,
              backtest_windows: 2}}}}
          - {{from: lightgbm, name: drifty_m, datasets: [drifty], params: {{lookback: {LOOKBACK}, horizon: 3,
              method: lightgbm, drift_window: 6, retrain: {{on_drift: true, promote: always}}}}}}
        """)


@pytest.fixture(scope="module")
def rt(module_inprocess_factory):
    folder = module_inprocess_factory.new_dir()
    (folder / "spicepod.yaml").write_text(pod(folder))
    return module_inprocess_factory(spicepod=folder / "spicepod.yaml", timeout=120)


def models(rt) -> dict[str, dict]:
    return {m["name"]: m for m in rt.get_json("/v1/models")}


def one_step(rt, model: str, level: str, series: str | None = None) -> dict:
    """The model's forecast of the next period with its interval at `level`, as GET predict serves it."""
    query = f"level={level}" + (f"&series={series}" if series else "")
    body = rt.get_json(f"/v1/models/{model}/predict?{query}")
    lower, upper = body["intervals"][level]["lower"][0], body["intervals"][level]["upper"][0]
    return {"ts": body["timestamps"][0], "expected": body["prediction"][0], "lower": lower, "upper": upper,
            "half": (upper - lower) / 2}


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", ""))


def put_values(rt, dataset: str, rows: list[tuple[str | None, str, float]]) -> None:
    """One DoPut of (series, ISO period, value) rows; series None for a single-series dataset."""
    columns = {"ts": pa.array([stamp(ts) for _, ts, _ in rows], pa.timestamp("us")),
               "value": pa.array([v for _, _, v in rows], pa.float64())}
    if rows[0][0] is not None:
        columns = {"store": [sid for sid, _, _ in rows], **columns}
    with rt.flight_client() as client:
        do_put(client, dataset, pa.table(columns))


def anomalies(rt, model: str, query: str = "") -> list[dict]:
    return rt.get_json(f"/v1/models/{model}/anomalies{'?' + query if query else ''}")


def expected_row(series: str | None, step: dict, value: float, level: float) -> dict:
    return {"series": series, "ts": step["ts"], "value": value, "expected": step["expected"],
            "lower": step["lower"], "upper": step["upper"], "level": level,
            "score": abs(value - step["expected"]) / step["half"]}


def assert_row(row: dict, expected: dict) -> None:
    """Series and period exactly; the numbers to the last few bits (the same forecast, computed twice)."""
    assert list(row) == COLUMNS
    assert (row["series"], row["ts"]) == (expected["series"], expected["ts"])
    numbers = COLUMNS[2:]
    assert [row[k] for k in numbers] == pytest.approx([expected[k] for k in numbers], rel=1e-9)


def _checks_one_by_one(found, wanted, checked, trained, grid, length, min_periods):
    """The periods to check, series by series: what _periods_to_check gives in columns."""
    from pipelines.gridfill import fill_series
    from spicepod import InvalidInput

    rows, lasts, sids, periods, values, marks = [], [], [], [], [], {}
    for i in wanted:
        sid, times, observed = found.ids[i], found.times[i], found.values[i]
        stamps = times.astype(np.int64)
        if sid in checked or trained is not None:
            new = np.flatnonzero(stamps > checked.get(sid, trained))
        else:
            new = np.array([stamps.size - 1])
        if not new.size:
            continue
        marks[sid] = int(stamps[-1])
        try:
            grid_times, grid_values = fill_series(times, observed, grid.freq, grid.fill, grid.dataset, sid)
        except InvalidInput:
            continue
        for position, index in zip(np.searchsorted(grid_times, times[new]).tolist(), new.tolist(), strict=True):
            if position < min_periods:
                continue
            window = grid_values[max(0, position - length):position]
            rows.append(np.concatenate([np.full(length - window.size, np.nan), window]))
            lasts.append(grid_times[position - 1])
            sids.append(sid)
            periods.append(int(stamps[index]))
            values.append(float(observed[index]))
    return rows, lasts, sids, periods, values, marks


@pytest.mark.parametrize(("step", "fill", "trained_at"),
                         [("1d", "ffill", None), ("1d", "none", 20), ("1mo", "linear", None), ("1mo", "ffill", 12)])
def test_the_periods_to_check_are_taken_in_columns_as_series_by_series(step, fill, trained_at):
    """Regular series at once, the others (gaps, calendar periods) filled one by one: the same windows, the
    periods before them, ids, values and marks, in the same order, as a loop over the series gives. A series
    not checked yet has the periods after the training data's newest new, or (that unknown) its newest."""
    from pipelines.anomalies import _periods_to_check
    from pipelines.frequency import Frequency
    from pipelines.grid import GridQuery
    from pipelines.series import SeriesSet

    freq = Frequency.parse(step)
    grid = GridQuery("d", "ts", "value", "series", freq, np.datetime64(0, "us"), "mean", fill)
    rng = np.random.default_rng(5)
    start = np.datetime64("2024-01-01", "us")
    found, checked = SeriesSet(), {}
    for k in range(40):
        size = int(rng.integers(1, 30))
        steps = np.arange(size)
        if k % 4 == 1:  # a gap
            steps = np.delete(np.arange(size + 3), rng.integers(1, size + 2, 2))
        periods = np.asarray(freq.add(start, steps)).astype("datetime64[us]")
        found.ids.append(f"s{k:02d}")
        found.times.append(periods)
        found.values.append(rng.normal(size=periods.size).round(3))
        if k % 3:  # checked before: up to a period among its own, before the first, or after the last
            checked[f"s{k:02d}"] = int(periods.astype(np.int64)[int(rng.integers(-1, periods.size))]) - (k % 5 == 0)
    wanted = [i for i in range(40) if i % 7 != 3]
    trained = None if trained_at is None else int(np.asarray(freq.add(start, trained_at)).astype("datetime64[us]")
                                                  .astype(np.int64))
    got = _periods_to_check(found, wanted, checked, trained, grid, 8, 3)
    rows, lasts, sids, periods, values, marks = _checks_one_by_one(found, wanted, checked, trained, grid, 8, 3)
    unchecked = sum(1 for sid in sids if sid not in checked)
    if trained is None:  # the newest of each series not checked yet
        assert unchecked == len({sid for sid in sids if sid not in checked})
    else:  # some with more than one period after the training data
        assert unchecked > len({sid for sid in sids if sid not in checked})
    assert len(rows) > 20 and got.sids == sids
    np.testing.assert_array_equal(got.windows, np.stack(rows))
    np.testing.assert_array_equal(got.lasts, np.array(lasts, dtype="datetime64[us]"))
    assert got.periods.tolist() == periods and got.values.tolist() == values and got.marks == marks


def test_a_value_far_outside_its_interval_is_an_anomaly_and_a_normal_one_is_not(rt):
    assert anomalies(rt, "single_m") == []
    normal = one_step(rt, "single_m", "95")
    put_values(rt, "single", [(None, normal["ts"], normal["expected"])])
    far = one_step(rt, "single_m", "95")  # from the data before it: the normal value included
    assert stamp(far["ts"]) == stamp(normal["ts"]) + timedelta(days=1)
    value = far["expected"] + 12 * far["half"]
    put_values(rt, "single", [(None, far["ts"], value)])

    rows = wait_until(lambda: anomalies(rt, "single_m"), "the anomaly listed", timeout=10)
    assert len(rows) == 1  # the normal value before it is none
    assert_row(rows[0], expected_row(None, far, value, 95.0))
    assert rows[0]["score"] == pytest.approx(12.0, rel=1e-9)
    assert 'flightcast_anomalies_total{model="single_m"} 1.0' in rt.get("/metrics").text


def test_a_doput_of_several_periods_checks_each_from_the_data_before_it(rt):
    served = rt.get_json("/v1/models/single_m/predict")  # 2 steps: recursive, the first fed to the second
    first, second = served["prediction"]
    spike = second + 1000.0
    third = (stamp(served["timestamps"][1]) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = len(anomalies(rt, "single_m"))
    put_values(rt, "single", [(None, served["timestamps"][0], first), (None, served["timestamps"][1], spike),
                              (None, third, spike)])
    rows = wait_until(lambda: (found := anomalies(rt, "single_m")) and found[0]["ts"] >= served["timestamps"][1]
                      and found, "the spike listed", timeout=10)
    new = rows[:len(rows) - before]  # newest first
    assert served["timestamps"][0] not in [row["ts"] for row in new]  # the value that was forecast exactly
    spiked = next(row for row in new if row["ts"] == served["timestamps"][1])
    # Its forecast is from the data up to the first new period, whose value was the forecast's own.
    assert spiked["value"] == spike and spiked["expected"] == pytest.approx(second, rel=1e-9)
    half = (spiked["upper"] - spiked["lower"]) / 2
    assert spiked["score"] == pytest.approx((spike - second) / half, rel=1e-9) and spiked["level"] == 95.0


def test_a_portfolio_model_compares_with_the_forecast_of_the_method_it_serves(rt):
    step = one_step(rt, "portfolio_m", "99")
    value = step["expected"] + 9 * step["half"]
    put_values(rt, "mixed", [(None, step["ts"], value)])
    rows = wait_until(lambda: anomalies(rt, "portfolio_m"), "the anomaly listed", timeout=10)
    assert len(rows) == 1
    assert_row(rows[0], expected_row(None, step, value, 99.0))


def test_every_touched_series_of_a_panel_is_checked_in_one_batch(rt):
    steps = {sid: one_step(rt, "panel_m", "99", sid) for sid in LEVELS}
    low = steps["store_b"]["expected"] - 20 * steps["store_b"]["half"]
    high = steps["store_c"]["expected"] + 5 * steps["store_c"]["half"]
    put_values(rt, "sales", [("store_a", steps["store_a"]["ts"], steps["store_a"]["expected"]),
                             ("store_b", steps["store_b"]["ts"], low),
                             ("store_c", steps["store_c"]["ts"], high)])
    rows = wait_until(lambda: len(anomalies(rt, "panel_m")) == 2 and anomalies(rt, "panel_m"), "two anomalies",
                      timeout=10)
    by_series = {row["series"]: row for row in rows}
    assert_row(by_series["store_b"], expected_row("store_b", steps["store_b"], low, 99.0))
    assert_row(by_series["store_c"], expected_row("store_c", steps["store_c"], high, 99.0))

    # The next day: one more anomaly, listed first (newest first); the filters.
    later = one_step(rt, "panel_m", "99", "store_a")
    put_values(rt, "sales", [("store_a", later["ts"], later["expected"] + 30 * later["half"])])
    rows = wait_until(lambda: len(anomalies(rt, "panel_m")) == 3 and anomalies(rt, "panel_m"), "the third",
                      timeout=10)
    assert [(r["series"], r["ts"]) for r in rows][0] == ("store_a", later["ts"])
    assert [r["series"] for r in anomalies(rt, "panel_m", "series=store_b")] == ["store_b"]
    assert anomalies(rt, "panel_m", "series=store_a") == [rows[0]]
    assert anomalies(rt, "panel_m", "limit=1") == [rows[0]]
    assert anomalies(rt, "panel_m", f"since={later['ts']}") == [rows[0]]
    assert anomalies(rt, "panel_m", "since=2024-01-01T00:00:00%2B01:00") == rows
    assert anomalies(rt, "panel_m", "series=nobody") == []


def test_formats_are_negotiated_as_the_bulk_forecasts_are(rt):
    rows = wait_until(lambda: anomalies(rt, "panel_m"), "anomalies of the panel", timeout=10)
    response = rt.get("/v1/models/panel_m/anomalies", headers={"Accept": "text/csv"})
    assert response.status == 200 and response.content_type.startswith("text/csv")
    table = pacsv.read_csv(io.BytesIO(response.body))
    assert table.column_names == COLUMNS
    assert table.column("series").to_pylist() == [r["series"] for r in rows]
    assert table.column("score").to_pylist() == pytest.approx([r["score"] for r in rows], rel=1e-12)
    response = rt.get("/v1/models/panel_m/anomalies", headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert response.status == 200
    arrow = pa.ipc.open_stream(response.body).read_all()
    assert arrow.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert arrow.column_names == COLUMNS
    assert arrow.column("expected").to_pylist() == [r["expected"] for r in rows]
    assert [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in arrow.column("ts").to_pylist()] == [r["ts"] for r in rows]
    empty = rt.get("/v1/models/jumpy_m/anomalies", headers={"Accept": "text/csv"})
    assert empty.status == 200 and empty.text == ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize(("query", "status", "message"), [
    ("panel_m/anomalies?limit=0", 400, "limit must be an integer from 1 to 10000, got '0'"),
    ("panel_m/anomalies?limit=10001", 400, "limit must be an integer from 1 to 10000, got '10001'"),
    ("panel_m/anomalies?limit=ten", 400, "limit must be an integer from 1 to 10000, got 'ten'"),
    ("panel_m/anomalies?since=yesterday", 400,
     "since must be an ISO 8601 timestamp like 2024-01-31T00:00:00Z, got 'yesterday'"),
    ("panel_m/anomalies?series=", 400, "series must be a non-empty series id"),
    ("panel_m/anomalies?level=99", 400, "unknown query parameter 'level'; expected one of limit, series, since"),
    ("panel_m/anomalies?limit=1&limit=2", 400, "query parameter 'limit' given 2 times; it takes one value"),
    ("single_m/anomalies?series=x", 400,
     "model 'single_m' forecasts a single series; 'series' is only for panel models"),
    ("nope/anomalies", 404, "model 'nope' not found"),
])
def test_bad_requests_are_refused_naming_the_problem(rt, query, status, message):
    response = rt.get(f"/v1/models/{query}")
    assert response.status == status
    body = response.json()
    assert (body["status"], body["error_message"]) == ({400: "BadRequest", 404: "NotFound"}[status], message)


def test_a_jump_in_the_data_makes_the_model_drift(rt):
    entry = models(rt)["jumpy_m"]
    assert entry["health"] == "ok" and entry["live_metrics"] is None
    backtest = entry["metrics"]["mase"]
    for points in (3, 6):
        served = rt.get_json("/v1/models/jumpy_m/predict")
        put_values(rt, "jumpy", [(None, ts, value + 500.0)
                                 for ts, value in zip(served["timestamps"], served["prediction"], strict=True)])
        entry = wait_until(lambda n=points: (e := models(rt)["jumpy_m"])["live_metrics"]
                           and e["live_metrics"]["points"] == n and e, f"{points} points scored", timeout=10)
        live = entry["live_metrics"]
        # Every point is in the drift window (6): drift is the live MASE over the backtest's.
        assert live["drift"] == pytest.approx(live["mase"] / backtest, rel=1e-9)
        assert live["drift"] > 1.5
        assert entry["health"] == ("drifting" if points == 6 else "ok")  # a whole window first
    metrics = rt.get("/metrics").text
    line = next(line for line in metrics.splitlines() if line.startswith('flightcast_drift{model="jumpy_m"}'))
    assert float(line.split()[-1]) == pytest.approx(live["drift"], rel=1e-9)
    assert models(rt)["single_m"]["health"] == "ok"


def test_a_drifting_model_with_on_drift_retrains(rt):
    assert models(rt)["drifty_m"]["model_version"] == "1"
    for points in (3, 6):
        served = rt.get_json("/v1/models/drifty_m/predict")
        put_values(rt, "drifty", [(None, ts, value + 500.0)
                                  for ts, value in zip(served["timestamps"], served["prediction"], strict=True)])
        wait_until(lambda n=points: (e := models(rt)["drifty_m"])["live_metrics"]
                   and e["live_metrics"]["points"] >= n, f"{points} points scored", timeout=10)
    # Six new rows and a whole drift window above drift_ratio: retrained in the background, and served.
    wait_until(lambda: models(rt)["drifty_m"]["model_version"] == "2", "the drift retrain served", timeout=60)


def test_anomalies_and_drift_survive_a_restart(rt, module_inprocess_factory):
    before = {m: anomalies(rt, m) for m in ("single_m", "panel_m")}
    assert before["single_m"] and before["panel_m"]
    points = models(rt)["jumpy_m"]["live_metrics"]["points"]
    rt.stop()
    again = module_inprocess_factory(spicepod=rt.spicepod, data_dir=rt.data_dir, timeout=120)
    assert {m: anomalies(again, m) for m in ("single_m", "panel_m")} == before
    # The data changed, so the models were trained again at start: drift compares with the new backtest.
    entry = models(again)["jumpy_m"]
    live = entry["live_metrics"]
    assert live["points"] == points
    assert live["drift"] == pytest.approx(live["mase"] / entry["metrics"]["mase"], rel=1e-9)
    metrics = again.get("/metrics").text
    assert 'flightcast_anomalies_total{model="panel_m"} 3.0' in metrics


def single_pod(folder) -> str:
    """The single-series dataset and model of `pod` alone."""
    write_table(folder / "single.parquet", series_table({"x": (100.0, 10.0)}).drop_columns(["store"]))
    return textwrap.dedent(f"""\
        version: v1
        kind: Spicepod
        name: anomalies
        datasets:
          - {{from: file:{folder / 'single.parquet'}, name: single, mode: read_write}}
        models:
          - {{from: lightgbm, name: single_m, datasets: [single], params: {{lookback: {LOOKBACK}, horizon: 2,
              method: lightgbm, anomaly_level: 95}}}}
        """)


def test_a_serve_node_finds_the_anomalies_of_its_data_nodes_writes(runtime_factory, tmp_path):
    """Commit notices reach a serve node over Flight: it checks the new values as an all-in-one node does."""
    spicepod = tmp_path / "roles" / "spicepod.yaml"
    spicepod.parent.mkdir()
    spicepod.write_text(single_pod(spicepod.parent))
    data = runtime_factory(spicepod=spicepod, data_dir=spicepod.parent / "data", extra_args=["--role", "data"],
                           ready=False)
    serve = runtime_factory(spicepod=spicepod, data_dir=spicepod.parent / "serve", timeout=120,
                            extra_args=["--role", "serve", "--data", f"grpc://127.0.0.1:{data.flight_port}"])
    step = one_step(serve, "single_m", "95")
    value = step["expected"] - 7 * step["half"]
    put_values(data, "single", [(None, step["ts"], value)])
    rows = wait_until(lambda: anomalies(serve, "single_m"), "the anomaly listed on the serve node", timeout=10)
    assert len(rows) == 1
    assert_row(rows[0], expected_row(None, step, value, 95.0))


def test_the_log_keeps_the_newest_anomalies_and_counts_every_one(tmp_path):
    def anomaly(day: int, series: str = "a") -> Anomaly:
        return Anomaly(series, day * 86_400_000_000, 10.0 + day, 1.0, 0.5, 1.5, 99.0, 18.0 + 2 * day)

    log = AnomalyLog(tmp_path, max_kept=3)
    assert log.add("m", [anomaly(1), anomaly(2)], {"a": 2 * 86_400_000_000}) == 2
    assert log.add("m", [anomaly(4, "b"), anomaly(3)], {"a": 3 * 86_400_000_000, "b": 4 * 86_400_000_000}) == 2
    assert log.add("m", [anomaly(3)], {}) == 0  # the same period checked again (after a restart): counted once
    assert log.list("m") == [anomaly(4, "b"), anomaly(3), anomaly(2)]
    assert log.list("m", series="a", limit=1) == [anomaly(3)]
    assert log.list("m", since=np.datetime64(3 * 86_400_000_000, "us")) == [anomaly(4, "b"), anomaly(3)]
    assert log.total("m") == 4

    again = AnomalyLog(tmp_path, max_kept=3)
    again.load(["m"])
    assert again.list("m") == log.list("m") and again.total("m") == 4
    assert again.checked("m") == {"a": 3 * 86_400_000_000, "b": 4 * 86_400_000_000}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temp file left behind
