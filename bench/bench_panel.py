"""Panels: one global model over many series, against mlforecast and statsforecast.

(a) Accuracy on data/tourism_quarterly.csv (427 quarterly series, the last 8 quarters of each held out):
    mean MASE over series (scale: in-sample seasonal naive, season 4, on each training part) of one global
    flightcast model against seasonal naive, statsforecast AutoETS and mlforecast's global LightGBM. The
    lookback is chosen among candidates by the rolling backtest on the training parts (model.metrics['mase']).
(b) A synthetic panel (10,000 series x 200 daily points, weekly season, trend, noise, fixed seed): training
    time and peak RSS of flightcast's train_model against mlforecast's fit, each in its own subprocess; the
    bulk forecast of every series x 14 steps through a real runtime's GET /forecasts (Arrow IPC), its first call
    (on the runtime that trained and on restarts of it, a median) and its first calls after DoPuts of every
    series' next day (drawn from the same process as its past), against mlforecast's in-process predict(14).
(c) Single-series GET predict on the panel model against a single-series model, warm (the same request again)
    and cold (right after a DoPut to the dataset), median ms.

Run: .venv/bin/python -m bench.bench_panel      (BENCH_TINY=1: tiny inputs, a few seconds)
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.common import (
    ROOT,
    TINY,
    Runtime,
    frame_to_matrix,
    header,
    latest_windows,
    long_frame,
    mase_rows,
    naive_scales,
    peak_rss_mb,
    ratio_line,
    read_panel,
    reset_peak_rss,
    seasonal_naive,
    split_panel,
    use_peers,
)
from pipelines.frequency import Frequency
from pipelines.series import SeriesSet
from pipelines.training import train_model

# (a) the tourism panel
HOLDOUT = 8
SEASON = 4
LOOKBACKS = (8, 12)
# LightGBM objectives tried with each lookback (a spicepod `lightgbm:` setting): flightcast's own default
# (Huber on MASE-weighted rows), and L1.
OBJECTIVES = ("default", "l1")
STRATEGY = "recursive"
MLFORECAST_LAGS = 8
ISSUE_ACCURACY = {"seasonal naive": 1.699, "AutoETS": 1.599, "mlforecast (levels)": 2.165,
                  "mlforecast (diff+scale)": 1.657}
# (b) the synthetic panel
SERIES = 10_000
POINTS = 200
SYNTH_LOOKBACK = 28
SYNTH_HORIZON = 14
SEED = 0
ROUNDS = 200  # boosting rounds of both flightcast and mlforecast
ISSUE_SCALE = {"fit_s": 10.4, "predict_s": 0.41, "peak_mb": 1.5 * 1024}
BULK_RUNS = 5
FIRST_RESTARTS = 4  # restarts of the runtime, each timing its first bulk call: a median, as mlforecast's predict is
# (c) single-series predict
PREDICT_RUNS = 360  # per model: with 40 the ratio of the medians moved 1.02-1.11 between runs of one commit, with
# 120 1.05-1.10 over four runs of one commit
IDLE_TIMEOUT_S = 120.0  # between (b) and (c): the upkeep of (b)'s new values ends first, within this
READY_TIMEOUT = 1800.0

TINY_SETTINGS = {
    "panel_series": 12, "lookbacks": (8,), "objectives": ("default",), "series": 12, "points": 60,
    "lookback": 14, "horizon": 7, "rounds": 20, "bulk_runs": 2, "predict_runs": 3, "first_restarts": 1,
}


def settings(tiny: bool) -> dict:
    if tiny:
        return dict(TINY_SETTINGS)
    return {"panel_series": None, "lookbacks": LOOKBACKS, "objectives": OBJECTIVES, "series": SERIES,
            "points": POINTS, "lookback": SYNTH_LOOKBACK, "horizon": SYNTH_HORIZON, "rounds": ROUNDS,
            "bulk_runs": BULK_RUNS, "predict_runs": PREDICT_RUNS, "first_restarts": FIRST_RESTARTS}


# ------------------------------------------------------------------------------------------ (a) accuracy


def accuracy(cfg: dict, have_peers: bool) -> None:
    print("\n(a) accuracy on tourism_quarterly.csv: one global model, last 8 quarters of each series held out")
    panel = read_panel(limit=cfg["panel_series"])
    train, held = split_panel(panel, HOLDOUT)
    actual = np.stack(held)
    scales = naive_scales(train.values, SEASON)
    print(f"{len(train)} series, training parts of {train.lengths().min()}-{train.lengths().max()} quarters, "
          f"{train.rows} training points")
    model, seconds, chosen = choose_model(train, cfg)

    forecasts: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {"flightcast": seconds}
    windows, last, ids = latest_windows(train, model.window_length)
    forecasts["flightcast"], _ = model.forecast_windows(windows, last, HOLDOUT, ids)
    forecasts["seasonal naive"] = np.stack([seasonal_naive(v, HOLDOUT, SEASON) for v in train.values])
    if have_peers:
        frame = long_frame(train)
        start = time.perf_counter()
        forecasts["AutoETS"] = autoets(frame, train.ids, HOLDOUT, levels=())[0]
        timings["AutoETS"] = time.perf_counter() - start
        for label, transforms in (("mlforecast (levels)", False), ("mlforecast (diff+scale)", True)):
            start = time.perf_counter()
            forecasts[label] = mlforecast_panel(frame, train.ids, HOLDOUT, transforms, cfg["rounds"])
            timings[label] = time.perf_counter() - start

    scores = {name: float(np.nanmean(mase_rows(actual, f, scales))) for name, f in forecasts.items()}
    print(f"\n  {'method':<26} {'mean MASE':>10} {'issue':>7} {'fit+forecast s':>15}")
    for name, score in scores.items():
        ref = ISSUE_ACCURACY.get(name)
        t = timings.get(name)
        print(f"  {name:<26} {score:>10.3f} {'' if ref is None else f'{ref:.3f}':>7} "
              f"{'' if t is None else f'{t:.1f}':>15}")
    print("  (flightcast's time is train_model: 3 rolling backtest fits, calibration and the final fit)")
    best_peer = min((s, n) for n, s in scores.items() if n != "flightcast")
    ratio_line("tourism mean MASE flightcast / seasonal naive", scores["flightcast"] / scores["seasonal naive"],
               "< 1", scores["flightcast"] < scores["seasonal naive"])
    if "AutoETS" in scores:
        ratio_line("tourism mean MASE flightcast / AutoETS (best peer in the issue)",
                   scores["flightcast"] / scores["AutoETS"], "< 1 (below 1.599)",
                   scores["flightcast"] < scores["AutoETS"])
    ratio_line(f"tourism mean MASE flightcast / best of this run ({best_peer[1]})", scores["flightcast"] / best_peer[0],
               "< 1", scores["flightcast"] < best_peer[0])


def choose_model(train: SeriesSet, cfg: dict):
    """One global model per candidate setting on the tourism training parts; the one with the lowest backtest
    MASE (model.metrics['mase']), its train_model seconds and its lookback. Prints every candidate."""
    params = {"num_boost_round": cfg["rounds"]} if cfg["rounds"] != ROUNDS else {}
    candidates = {}
    for objective in cfg["objectives"]:
        for lookback in cfg["lookbacks"]:
            start = time.perf_counter()
            chosen = params if objective == "default" else {**params, "objective": objective}
            model = train_model(train, freq=Frequency("q"), lookback=lookback, horizon=HOLDOUT, strategy=STRATEGY,
                                lightgbm_params=chosen, dataset="tourism_quarterly")
            seconds = time.perf_counter() - start
            candidates[(lookback, objective)] = (model, seconds)
            print(f"  lookback {lookback:>2}, objective {objective:<10}: backtest MASE {model.metrics['mase']:.3f} "
                  f"over {model.metrics['backtest_series']} series x {model.metrics['backtest_windows']} origins, "
                  f"{len(model.stats.ids)} series trained on, train_model {seconds:.1f} s", flush=True)
    best = min(candidates, key=lambda c: _or_inf(candidates[c][0].metrics["mase"]))
    model, seconds = candidates[best]
    print(f"  chosen: lookback {best[0]}, objective {best[1]} (the lowest backtest MASE on the training parts; "
          "held-out points unused)")
    return model, seconds, best[0]


def _or_inf(value: float) -> float:
    return math.inf if value is None or math.isnan(value) else value


def autoets(frame, ids, horizon: int, levels=(80, 95), season: int = SEASON, freq: str = "QS"):
    """statsforecast AutoETS forecasts (n, h) and, per level, (lower, upper) in `ids` order."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    sf = StatsForecast(models=[AutoETS(season_length=season)], freq=freq, n_jobs=1)
    out = sf.forecast(df=frame, h=horizon, level=list(levels)) if levels else sf.forecast(df=frame, h=horizon)
    point = frame_to_matrix(out, ids, "AutoETS", horizon)
    bounds = {lv: (frame_to_matrix(out, ids, f"AutoETS-lo-{lv}", horizon),
                   frame_to_matrix(out, ids, f"AutoETS-hi-{lv}", horizon)) for lv in levels}
    return point, bounds


def mlforecast_model(lags: int, transforms: bool, rounds: int, freq: str, date_features=()):
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.target_transforms import Differences, LocalStandardScaler

    return MLForecast(
        models={"lgb": lgb.LGBMRegressor(n_estimators=rounds, learning_rate=0.05, verbosity=-1)},
        freq=freq, lags=list(range(1, lags + 1)), date_features=list(date_features),
        target_transforms=[Differences([1]), LocalStandardScaler()] if transforms else None,
    )


def mlforecast_panel(frame, ids, horizon: int, transforms: bool, rounds: int) -> np.ndarray:
    mlf = mlforecast_model(MLFORECAST_LAGS, transforms, rounds, "QS")
    mlf.fit(frame)
    return frame_to_matrix(mlf.predict(horizon), ids, "lgb", horizon)


# ------------------------------------------------------------------------------------------ (b) scale


def synthetic_panel(series: int, points: int, seed: int = SEED) -> SeriesSet:
    """Daily series with their own level, weekly shape, trend and noise (a fixed seed)."""
    return synthetic_panel_ahead(series, points, 0, seed)[0]


def synthetic_panel_ahead(series: int, points: int, ahead: int, seed: int = SEED) -> tuple[SeriesSet, np.ndarray]:
    """`synthetic_panel`, and the `ahead` values (series, ahead) each series takes next from the same process
    (its level, trend, weekly shape and noise): the panel's points are the same whatever `ahead` is."""
    rng = np.random.default_rng(seed)
    t = np.arange(points + ahead, dtype=np.float64)
    level = rng.uniform(10.0, 1000.0, series)
    amplitude = rng.uniform(0.05, 0.3, series) * level
    trend = rng.normal(0.0, 0.002, series) * level
    phase = rng.integers(0, 7, series)
    weekly = np.sin(2 * np.pi * (t[None, :] + phase[:, None]) / 7.0)
    noise = rng.normal(0.0, 1.0, (series, points))
    spread = rng.uniform(0.02, 0.1, series) * level
    noise = np.concatenate([noise, rng.normal(0.0, 1.0, (series, ahead))], axis=1) * spread[:, None]
    values = level[:, None] + trend[:, None] * t[None, :] + amplitude[:, None] * weekly + noise
    times = np.datetime64("2024-01-01", "us") + np.arange(points) * np.timedelta64(1, "D").astype("m8[us]")
    return SeriesSet([f"s{i:05d}" for i in range(series)], [times] * series, list(values[:, :points])), \
        values[:, points:]


def child(task: str, series: int, points: int, lookback: int, horizon: int, rounds: int) -> None:
    """One measurement in its own process; prints one JSON line."""
    reset_peak_rss()
    panel = synthetic_panel(series, points)
    out: dict = {}
    if task == "flightcast":
        params = {"num_boost_round": rounds} if rounds != ROUNDS else {}
        out["rss_data_mb"] = peak_rss_mb()
        start = time.perf_counter()
        model = train_model(panel, freq=Frequency("d"), lookback=lookback, horizon=horizon, lightgbm_params=params,
                            dataset="synthetic")
        out["fit_s"] = time.perf_counter() - start
        out["training_rows"] = model.training_rows
        out["backtest_mase"] = model.metrics["mase"]
        windows, last, ids = latest_windows(panel, model.window_length)
        with _lightgbm_time("Booster") as spent:
            out["predict_s"] = _median_time(lambda: model.forecast_windows(windows, last, horizon, ids), 3)
        out["lightgbm_s"] = spent[0] / 3
    else:
        frame = long_frame(panel)
        del panel
        out["rss_data_mb"] = peak_rss_mb()
        mlf = mlforecast_model(lookback, True, rounds, "D", date_features=["dayofweek"])
        start = time.perf_counter()
        mlf.fit(frame)
        out["fit_s"] = time.perf_counter() - start
        with _lightgbm_time("LGBMRegressor") as spent:
            out["predict_s"] = _median_time(lambda: mlf.predict(horizon), 3)
        out["lightgbm_s"] = spent[0] / 3
    out["peak_mb"] = peak_rss_mb()
    print(json.dumps(out), flush=True)


@contextmanager
def _lightgbm_time(cls: str):
    """Seconds spent inside LightGBM's `cls.predict` meanwhile (a list of one, filled as calls return): what
    each side's predict leaves to LightGBM itself."""
    import lightgbm as lgb

    spent = [0.0]
    owner = getattr(lgb, cls)
    original = owner.predict

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    owner.predict = timed
    try:
        yield spent
    finally:
        owner.predict = original


def _median_time(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_child(task: str, cfg: dict) -> dict:
    args = [sys.executable, "-m", "bench.bench_panel", "child", task, str(cfg["series"]), str(cfg["points"]),
            str(cfg["lookback"]), str(cfg["horizon"]), str(cfg["rounds"])]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} measurement failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale(cfg: dict, have_peers: bool) -> tuple[dict, dict | None]:
    n, points = cfg["series"], cfg["points"]
    print(f"\n(b) synthetic panel: {n} series x {points} daily points (weekly season, trend, noise, seed {SEED}); "
          f"lookback/lags {cfg['lookback']}, {cfg['rounds']} rounds; each fit in its own process")
    ours = run_child("flightcast", cfg)
    theirs = run_child("mlforecast", cfg) if have_peers else None
    print(f"  {'':<30} {'fit s':>8} {'peak RSS MB':>12} {'RSS with data MB':>17} {'in-process predict s':>21} "
          f"{'of it in LightGBM s':>20}")
    print(f"  {'flightcast train_model':<30} {ours['fit_s']:>8.2f} {ours['peak_mb']:>12.0f} "
          f"{ours['rss_data_mb']:>17.0f} {ours['predict_s']:>21.3f} {ours['lightgbm_s']:>20.3f}")
    if theirs:
        print(f"  {'mlforecast fit (diff+scale)':<30} {theirs['fit_s']:>8.2f} {theirs['peak_mb']:>12.0f} "
              f"{theirs['rss_data_mb']:>17.0f} {theirs['predict_s']:>21.3f} {theirs['lightgbm_s']:>20.3f}")
    print(f"  issue's mlforecast figures: {ISSUE_SCALE['fit_s']} s fit, {ISSUE_SCALE['predict_s']} s predict(14), "
          "1.5 GB peak RSS")
    print(f"  flightcast: {ours['training_rows']} feature rows in the final fit, backtest MASE "
          f"{ours['backtest_mase']:.3f}; its time includes 3 backtest fits and calibration, mlforecast's one fit")
    if theirs:
        ratio_line("training time flightcast / mlforecast", ours["fit_s"] / theirs["fit_s"], "<= 1",
                   ours["fit_s"] <= theirs["fit_s"])
        ratio_line("training peak RSS flightcast / mlforecast", ours["peak_mb"] / theirs["peak_mb"], "<= 0.5",
                   ours["peak_mb"] <= 0.5 * theirs["peak_mb"])
    return ours, theirs


# ------------------------------------------------------------------------------------------ runtime


SPICEPOD = """\
version: v1
kind: Spicepod
name: bench-panel
datasets:
  - from: file:panel.parquet
    name: panel
    mode: read_write
    series_column: series
  - from: file:single.parquet
    name: single
    mode: read_write
models:
  - from: lightgbm
    name: panel_m
    datasets: [panel]
    params: {{lookback: {lookback}, horizon: {horizon}, frequency: 1d, method: lightgbm{lgb}}}
  - from: lightgbm
    name: single_m
    datasets: [single]
    params: {{lookback: {lookback}, horizon: {horizon}, frequency: 1d, method: lightgbm{lgb}}}
"""


def write_files(folder: Path, panel: SeriesSet) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lengths = panel.lengths()
    table = pa.table({
        "series": pa.array(np.repeat(np.asarray(panel.ids, dtype=object), lengths), pa.string()),
        "ts": pa.array(np.concatenate(panel.times), pa.timestamp("us")),
        "value": np.concatenate(panel.values),
    })
    pq.write_table(table, folder / "panel.parquet")
    pq.write_table(pa.table({"ts": pa.array(panel.times[0], pa.timestamp("us")), "value": panel.values[0]}),
                   folder / "single.parquet")


def served(cfg: dict, theirs: dict | None) -> None:
    n, horizon, lookback, runs = cfg["series"], cfg["horizon"], cfg["lookback"], cfg["bulk_runs"]
    panel, ahead = synthetic_panel_ahead(n, cfg["points"], runs)
    lgb = f", lightgbm: {{num_boost_round: {cfg['rounds']}}}" if cfg["rounds"] != ROUNDS else ""
    pod = SPICEPOD.format(lookback=lookback, horizon=horizon, lgb=lgb)
    path = f"/v1/models/panel_m/forecasts?horizon={horizon}"
    arrow = "application/vnd.apache.arrow.stream"
    with tempfile.TemporaryDirectory(prefix="bench-panel-") as tmp:
        folder = Path(tmp)
        write_files(folder, panel)
        with Runtime(pod, folder) as rt:
            rt.start()
            ready = rt.ready_after(READY_TIMEOUT)
            print(f"\n(b) bulk forecast of {n} series x {horizon} steps: GET /v1/models/panel_m/forecasts (Arrow IPC) "
                  f"on a runtime (ready after {ready:.1f} s: load + training of both models)")
            wait_idle(rt, IDLE_TIMEOUT_S)
            firsts = [first_call(rt, path, n * horizon)]
        # A runtime makes one first call: it is timed again on restarts on the same store (the models loaded, not
        # trained), before any new data, so that every first call forecasts from the data mlforecast's predict does.
        for _ in range(cfg["first_restarts"] - 1):
            with restarted(pod, folder) as rt:
                firsts.append(first_call(rt, path, n * horizon))
        with restarted(pod, folder) as rt:  # the last restart goes on with the rest of (b), and (c)
            firsts.append(first_call(rt, path, n * horizon))
            first = statistics.median(firsts)
            warm = _median_time(lambda: rt.body(path, arrow), runs)
            size = len(rt.body(path, arrow))
            after, last = after_new_data(rt, panel, ahead, path)
            # The runtime's upkeep of the new values (anomaly checks of every series, scores of the bulk
            # forecasts) waited for the bulk calls and runs now; (c) measures predictions, not that.
            idle = wait_idle(rt, IDLE_TIMEOUT_S)
            print(f"  flightcast first call (reads every window through Flight): median {first:.3f} s over "
                  f"{len(firsts)} runtimes, the one that trained and restarts on its store "
                  f"({', '.join(f'{t:.3f}' for t in firsts)} s); then median {warm:.3f} s over {runs} calls; "
                  f"{n * horizon} rows, {size / 1e6:.1f} MB")
            print(f"  flightcast first call after a DoPut of the next day of every series (the windows moved on by the "
                  f"rows of its commit notice): median {after:.3f} s over {runs} DoPuts")
            if theirs:
                print(f"  mlforecast in-process predict({horizon}): median {theirs['predict_s']:.3f} s")
                ratio_line("bulk forecast flightcast GET /forecasts (warm) / mlforecast predict",
                           warm / theirs["predict_s"], "<= 1", warm <= theirs["predict_s"])
                ratio_line("bulk forecast flightcast GET /forecasts (first) / mlforecast predict",
                           first / theirs["predict_s"], "<= 1", first <= theirs["predict_s"])
                ratio_line("bulk forecast flightcast GET /forecasts (first after new data) / mlforecast predict",
                           after / theirs["predict_s"], "<= 1", after <= theirs["predict_s"])
            print(f"  the runtime's upkeep of the new values ended {idle:.2f} s after the last bulk call")
            single_predict(rt, panel, cfg, last, ahead[:, -1])


@contextmanager
def restarted(pod: str, folder: Path) -> Iterator[Runtime]:
    """The runtime started again on `folder`'s store, ready and with no upkeep left to do; stopped after."""
    with Runtime(pod, folder) as rt:
        rt.start()
        rt.wait_ready(READY_TIMEOUT)
        wait_idle(rt, IDLE_TIMEOUT_S)
        yield rt


def first_call(rt: Runtime, path: str, rows: int) -> float:
    """Seconds of a runtime's first bulk call, its rows checked."""
    import pyarrow as pa

    start = time.perf_counter()
    body = rt.body(path, "application/vnd.apache.arrow.stream")
    seconds = time.perf_counter() - start
    table = pa.ipc.open_stream(body).read_all()
    if table.num_rows != rows:
        raise RuntimeError(f"/forecasts returned {table.num_rows} rows, expected {rows}")
    return seconds


def wait_idle(rt: Runtime, timeout: float) -> float:
    """Seconds until /metrics shows no new data awaiting the runtime's upkeep (flightcast_upkeep_backlog 0)."""
    start = time.monotonic()
    while True:
        text = rt.get("/metrics").text
        backlog = [line for line in text.splitlines() if line.startswith("flightcast_upkeep_backlog ")]
        if not backlog:
            raise RuntimeError("/metrics has no flightcast_upkeep_backlog")
        if float(backlog[0].split()[1]) == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the runtime's upkeep still had new data to see to after {timeout:.0f} s")
        time.sleep(0.05)  # between scrapes: each one costs the runtime a listing of datasets and models


def after_new_data(rt: Runtime, panel: SeriesSet, ahead: np.ndarray, path: str) -> tuple[float, np.datetime64]:
    """Median seconds of the first bulk call after each DoPut of every series' next day (`ahead`: the values the
    series take next, one column per DoPut), and the newest day then."""
    import pyarrow as pa

    day = np.timedelta64(1, "D").astype("m8[us]")
    last = panel.times[0][-1]
    samples = []
    for values in ahead.T:
        last = last + day
        rt.put("panel", pa.table({"series": pa.array(panel.ids, pa.string()),
                                  "ts": pa.array(np.full(len(panel), last), pa.timestamp("us")), "value": values}))
        start = time.perf_counter()
        body = rt.body(path, "application/vnd.apache.arrow.stream")
        samples.append(time.perf_counter() - start)
        first = pa.ipc.open_stream(body).read_all().column("ts")[0].as_py().replace(tzinfo=None)
        if np.datetime64(first, "us") != last + day:
            raise RuntimeError(f"/forecasts after new data starts at {first}, expected {last + day}")
    return statistics.median(samples), last


def single_predict(rt: Runtime, panel: SeriesSet, cfg: dict, last: np.datetime64, latest: np.ndarray) -> None:
    """(c); `last` is the panel dataset's newest day and `latest` each panel series' value on it (the
    single-series dataset is the panel's first series as it was first loaded).
    The two models take turns, each first every other time, so that both meet the same moments of a noisy machine
    (and the upkeep of each other's DoPuts alike)."""
    import pyarrow as pa

    runs = cfg["predict_runs"]
    print(f"\n(c) single-series GET predict (level=80), median ms over {runs} requests: panel model "
          f"({len(panel)} series) against a single-series model (same lookback, horizon, data of one series), "
          "taking turns")
    day = np.timedelta64(1, "D").astype("m8[us]")
    single_last = panel.times[0][-1]
    newest = dict.fromkeys(panel.ids, last)  # of each panel series
    times: dict[str, tuple[list[float], ...]] = {"panel": ([], [], []), "single": ([], [], [])}  # warm, cold, DoPut
    picked = [(i * 7919) % len(panel) for i in range(runs)]
    # Each series' forecast is asked for once before: its window is read then, as a single-series model's is
    # at its first forecast. What follows is a served series' next value and forecast, for both models.
    for k in picked:
        rt.get_json(f"/v1/models/panel_m/predict?level=80&series={panel.ids[k]}")
    for i, k in enumerate(picked):
        sid = panel.ids[k]
        # Each DoPut adds the next day of the series it touches, with the series' own last value again (a
        # value far from its level would be an anomaly, and (c) would measure its logging too).
        newest[sid] += day
        panel_row = pa.table({"series": pa.array([sid]), "ts": pa.array([newest[sid]], pa.timestamp("us")),
                              "value": pa.array([float(latest[k])])})
        single_row = pa.table({"ts": pa.array([single_last + day * (i + 1)], pa.timestamp("us")),
                               "value": pa.array([float(panel.values[0][-1])])})
        turns = [(f"/v1/models/panel_m/predict?level=80&series={sid}", "panel", panel_row),
                 ("/v1/models/single_m/predict?level=80", "single", single_row)]
        for path, label, row in turns if i % 2 == 0 else turns[::-1]:  # each goes first every other time
            _warm_and_cold(rt, path, label, row, times[label])
    results = {label: tuple(1000 * statistics.median(samples) for samples in kinds) for label, kinds in times.items()}
    print(f"  {'model':<8} {'warm ms':>9} {'cold ms (after a DoPut)':>24} {'the 1-row DoPut before, ms':>27}")
    for label, (w, c, p) in results.items():
        print(f"  {label:<8} {w:>9.2f} {c:>24.2f} {p:>27.2f}")
    ratio_line("GET predict warm: panel / single-series model", results["panel"][0] / results["single"][0], "<= 1.2",
               results["panel"][0] <= 1.2 * results["single"][0])
    ratio_line("GET predict cold: panel / single-series model", results["panel"][1] / results["single"][1], "<= 1.1",
               results["panel"][1] <= 1.1 * results["single"][1])


def _warm_and_cold(rt: Runtime, path: str, dataset: str, row, into: tuple[list[float], ...]) -> None:
    """A GET (the forecast for the current data), a timed DoPut of `row`, a timed cold GET, then a timed warm
    GET (the same forecast again: for both models it follows the computing of one)."""
    rt.get_json(path)
    start = time.perf_counter()
    rt.put(dataset, row)
    into[2].append(time.perf_counter() - start)
    for timed in (into[1], into[0]):
        start = time.perf_counter()
        answer = rt.get_json(path)
        timed.append(time.perf_counter() - start)
        if answer.get("status") != "Success":
            raise RuntimeError(f"{path}: {answer}")


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    header("bench.bench_panel", "panels: tourism accuracy, 10,000-series training and bulk forecasts, predict")
    cfg = settings(TINY)
    have_peers = use_peers()
    if TINY:
        print("tiny mode: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    accuracy(cfg, have_peers)
    _, theirs = scale(cfg, have_peers)
    served(cfg, theirs)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        task, *numbers = sys.argv[2:]
        child(task, *(int(v) for v in numbers))
    else:
        main()
