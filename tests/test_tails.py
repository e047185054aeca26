"""Windows moved on by the rows commit notices carry (pipelines/tails.py): after a small DoPut that continues a
series, its window is made without a read, and it is always the window a read gives; anything else (late or
corrected rows, several rows a period, a large commit) is read again."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from conftest import do_put, wait_until

from flight_server.ingest import NOTICE_ROWS
from harness.flight import flight_server
from pipelines import forecaster
from pipelines.flight_client import FlightDataClient
from pipelines.forecast_cache import ForecastCache
from pipelines.frequency import Frequency
from pipelines.gridfill import Windows, moved_on, rows_by_series
from pipelines.service import PredictionService
from pipelines.state import DataVersions
from spicepod import InvalidInput, load_spicepod
from spicepod.timestamps import parse_iso

START = datetime(2024, 1, 1)
HOURS = 240

POD = """\
version: v1
kind: Spicepod
name: tails
datasets:
  - {from: flight, name: solo}
  - {from: flight, name: shops, series_column: shop}
models:
  - {from: lightgbm, name: solo_m, datasets: [solo],
     params: {lookback: 6, horizon: 3, method: lightgbm, lightgbm: {num_boost_round: 10}}}
  - {from: lightgbm, name: shops_m, datasets: [shops],
     params: {lookback: 6, horizon: 3, method: lightgbm, lightgbm: {num_boost_round: 10}}}
"""


def hourly(hours: range, value=lambda h: 10.0 + (h % 24) + 0.1 * h, shop: str | None = None) -> pa.Table:
    columns = {"ts": pa.array([START + timedelta(hours=h) for h in hours], pa.timestamp("us")),
               "value": pa.array([value(h) for h in hours], pa.float64())}
    if shop is not None:
        columns = {"shop": pa.array([shop] * len(hours)), **columns}
    return pa.table(columns)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both datasets filled and both models trained, in a PredictionService hearing the store's notices."""
    folder = tmp_path_factory.mktemp("tails")
    with flight_server(folder, POD) as data:
        do_put(data.client, "solo", hourly(range(HOURS)))
        do_put(data.client, "shops", pa.concat_tables([hourly(range(HOURS), shop=s) for s in ("a", "b")]))
        pod = load_spicepod(folder / "spicepod.yaml")
        service = PredictionService(pod.models, {d.name: d for d in pod.datasets}, FlightDataClient(data.location),
                                    folder / "service")
        data.store.subscribe(service.on_data_changed)
        service.start()
        try:
            wait_until(lambda: service.ready() and all(m.status == "ready" for m in service.models()),
                       "both models trained", timeout=120)
            yield service, data
        finally:
            service.stop()


class Stream:
    """One series' next hours, and what its window is after each DoPut: kept (from the tail) or read."""

    def __init__(self, service: PredictionService, data, dataset: str, model: str, series: str | None = None):
        self.service, self.data, self.dataset, self.model, self.series = service, data, dataset, model, series

    @property
    def state(self):
        return self.service.states[self.model].current

    def put(self, table: pa.Table) -> None:
        do_put(self.data.client, self.dataset, table)

    def rows(self, hours: list[int], values=None) -> pa.Table:
        values = values or [float(h % 7) for h in hours]
        columns = {"ts": pa.array([START + timedelta(hours=h) for h in hours], pa.timestamp("us")),
                   "value": pa.array(values, pa.float64())}
        if self.series is not None:
            columns = {"shop": pa.array([self.series] * len(hours), pa.string()), **columns}
        return pa.table(columns)

    def kept(self):
        return self.service.cache.tail_windows(self.state, self.series)

    def read(self):
        """The window as a read gives it, from nothing kept."""
        served = self.state
        _, newest = self.service.cache.data(self.dataset)
        return served.grid.windows(self.service.client, served.model.window_length, newest=newest,
                                   ids=None if self.series is None else [self.series],
                                   min_points=served.model.min_periods)

    def predict(self):
        return self.service.predict(self.model, series=self.series)

    def assert_kept_equals_read(self) -> None:
        kept = self.kept()
        assert kept is not None, "the window should come from the tail"
        read = self.read()
        assert kept.ids == read.ids
        np.testing.assert_array_equal(kept.values, read.values)
        np.testing.assert_array_equal(kept.last, read.last)


def forecast_from_read(stream: Stream) -> list[float]:
    served, read = stream.state, stream.read()
    predicted, _ = served.model.forecast_windows(read.values, read.last, served.model.horizon, read.ids, None)
    return predicted[0].tolist()


@pytest.mark.parametrize("model", ["solo_m", "shops_m"])
def test_rows_that_continue_a_series_move_its_window_on_without_a_read(served, model):
    service, data = served
    stream = Stream(service, data, "solo" if model == "solo_m" else "shops", model, None if model == "solo_m" else "a")
    stream.predict()  # reads the window and keeps its rows
    last = int((stream.read().last[0] - np.datetime64(START, "us")) // np.timedelta64(1, "h"))
    # One row, the next hour; three rows at once; a row two hours on (a gap, filled linearly); a row
    # whose value is null (no observation: the window stays).
    for hours, values in ([last + 1], None), ([last + 2, last + 3, last + 4], None), ([last + 6], [99.0]), \
            ([last + 7], [None]):
        stream.put(stream.rows(hours, values))
        stream.assert_kept_equals_read()
        forecast = stream.predict()
        assert forecast.values == forecast_from_read(stream)
    # The null row is no observation: the forecast starts after the row of 99, the gap before it interpolated.
    assert forecast.timestamps[0] == (START + timedelta(hours=last + 7)).isoformat() + "Z"
    window = stream.kept().values[0]
    assert window[-1] == 99.0 and window[-2] == pytest.approx((99.0 + window[-3]) / 2)
    # A NaN value is a value the grid fills; the row after it continues the series.
    for hours, values in ([last + 8], [float("nan")]), ([last + 9], [40.0]):
        stream.put(stream.rows(hours, values))
        stream.assert_kept_equals_read()
        assert stream.predict().values == forecast_from_read(stream)
    window = stream.kept().values[0]
    # Hours 7 (null) and 8 (NaN) both filled on the line from 99 (hour 6) to 40 (hour 9).
    assert window[-1] == 40.0 and window[-2] == pytest.approx(99.0 + (40.0 - 99.0) * 2 / 3)
    assert window[-3] == pytest.approx(99.0 + (40.0 - 99.0) / 3) and window[-4] == 99.0


def test_rows_of_another_series_leave_a_panel_series_window_kept(served):
    service, data = served
    a = Stream(service, data, "shops", "shops_m", "a")
    b = Stream(service, data, "shops", "shops_m", "b")
    a.predict()
    b.predict()
    before = a.kept()
    assert before is not None
    last_b = int((b.read().last[0] - np.datetime64(START, "us")) // np.timedelta64(1, "h"))
    b.put(b.rows([last_b + 1]))
    after = a.kept()
    assert after is not None
    np.testing.assert_array_equal(after.values, before.values)
    b.assert_kept_equals_read()


def test_at_hand_forecasts_from_a_kept_window_alone_and_only_while_they_are_short(served, monkeypatch):
    service, data = served
    monkeypatch.setattr(forecaster, "AT_HAND_SECONDS", 60.0)  # however slow the machine, until the bound's check
    stream = Stream(service, data, "solo", "solo_m")
    stream.predict()  # reads the window and keeps its rows
    last = int((stream.read().last[0] - np.datetime64(START, "us")) // np.timedelta64(1, "h"))
    stream.put(stream.rows([last + 1]))
    assert stream.kept() is not None
    stream.predict()  # from the kept window: how long that takes is now known
    stream.put(stream.rows([last + 2]))
    forecast = service.at_hand("solo_m")
    assert forecast is not None and forecast.values == forecast_from_read(stream)
    assert forecast.timestamps[0] == (START + timedelta(hours=last + 3)).isoformat() + "Z"
    assert service.predict("solo_m") == forecast  # kept for the data it was made from
    # Timed per horizon: a horizon not yet forecast from a kept window (here one too long) is left to predict.
    assert service.at_hand("solo_m", horizon=10**6) is None
    with pytest.raises(InvalidInput, match="horizon must be an integer from 1 to"):
        service.predict("solo_m", horizon=10**6)
    assert service.at_hand("solo_m", horizon=2) is None
    assert len(service.predict("solo_m", horizon=2).values) == 2  # from the kept window: now timed
    stream.put(stream.rows([last + 3]))
    assert service.at_hand("solo_m", horizon=2).timestamps[0] == (START + timedelta(hours=last + 4)).isoformat() + "Z"
    with service.live._lock:  # the live scorer held by another thread (upkeep scoring): not waited on
        assert service.at_hand("solo_m") is None
    # A late row: the window must be read again, which at_hand leaves to predict.
    stream.put(stream.rows([last - 3], [1234.0]))
    assert stream.kept() is None and service.at_hand("solo_m") is None
    assert stream.predict().values == forecast_from_read(stream)
    # Kept again, but a model whose forecasts from a kept window take longer than the bound is left to predict.
    stream.put(stream.rows([last + 5]))
    assert stream.kept() is not None
    monkeypatch.setattr(forecaster, "AT_HAND_SECONDS", 0.0)
    assert service.at_hand("solo_m") is None
    monkeypatch.setattr(forecaster, "AT_HAND_SECONDS", 60.0)
    assert service.at_hand("solo_m").values == forecast_from_read(stream)
    assert service.at_hand("no_such_model") is None  # predict names what is wrong


# "two in one period" last: from then on the model's windows are aggregated, and no tail is kept.
@pytest.mark.parametrize("case", ["late", "same period", "correction", "large", "two in one period"])
def test_rows_that_do_not_continue_a_series_are_read_again(served, case):
    service, data = served
    stream = Stream(service, data, "solo", "solo_m")
    stream.predict()
    assert stream.kept() is not None
    last = int((stream.read().last[0] - np.datetime64(START, "us")) // np.timedelta64(1, "h"))
    rows = {
        "late": stream.rows([last - 3], [1234.0]),
        "same period": stream.rows([last], [77.0]),
        "correction": stream.rows([last - 1, last + 1], [5.0, 6.0]),
        "two in one period": pa.table({
            "ts": pa.array([START + timedelta(hours=last + 1), START + timedelta(hours=last + 1, minutes=30)],
                           pa.timestamp("us")),
            "value": pa.array([1.0, 2.0])}),
        "large": stream.rows(list(range(last + 1, last + 2 + NOTICE_ROWS))),
    }[case]
    stream.put(rows)
    assert stream.kept() is None  # forgotten: the next forecast reads
    assert stream.predict().values == forecast_from_read(stream)
    if case != "two in one period":  # periods of several rows are aggregated from now on: nothing to keep
        stream.assert_kept_equals_read()


def test_a_serve_node_moves_windows_on_from_the_rows_its_notices_carry(served, tmp_path):
    _, data = served
    pod = load_spicepod(data.spicepod)
    remote = PredictionService(pod.models, {d.name: d for d in pod.datasets}, FlightDataClient(data.location),
                               tmp_path / "serve", remote=True)
    remote.start()
    try:
        wait_until(lambda: remote.ready() and all(m.status == "ready" for m in remote.models()),
                   "the serve node ready", timeout=120)
        stream = Stream(remote, data, "shops", "shops_m", "b")
        stream.predict()
        last = int((stream.read().last[0] - np.datetime64(START, "us")) // np.timedelta64(1, "h"))
        stream.put(stream.rows([last + 1]))  # returns once the serve node acknowledged the notice
        stream.assert_kept_equals_read()
        assert stream.predict().values == forecast_from_read(stream)
    finally:
        remote.stop()


def test_a_notice_that_arrives_after_a_newer_one_still_marks_its_series_changed():
    versions = DataVersions()
    assert versions.record("shops", 3, None, frozenset({"a"}))
    assert not versions.record("shops", 2, None, frozenset({"b"}))  # its listener ran last
    assert versions.latest("shops") == (3, None)
    assert (versions.of_series("shops", "a"), versions.of_series("shops", "b")) == (3, 2)
    assert not versions.record("shops", 1, None, None)  # a late notice of a commit that touched every series
    assert (versions.of_series("shops", "a"), versions.of_series("shops", "c")) == (3, 1)



class CountingClient(FlightDataClient):
    """The real client, counting the queries it sends: a window read is at least one."""

    def __init__(self, location: str):
        super().__init__(location)
        self.queries = 0

    def reader(self, sql: str):
        self.queries += 1
        return super().reader(sql)


def test_a_panel_commit_of_the_next_period_of_its_series_moves_every_window_on_without_a_read(served):
    service, data = served
    served_model = service.states["shops_m"].current
    client = CountingClient(data.location)
    cache = ForecastCache(client, notices_live=True)
    data.store.subscribe(lambda dataset, version, last, series, rows: cache.notice(
        dataset, version, parse_iso(last) if last else None, series, rows))

    def fresh():
        """Every series' window as a read gives it, from nothing kept."""
        _, newest = cache.data("shops")
        return served_model.grid.windows(FlightDataClient(data.location), served_model.model.window_length,
                                         newest=newest, min_points=served_model.model.min_periods)

    def assert_windows_equal(windows, read) -> None:
        assert windows.ids == read.ids == ["a", "b"]
        np.testing.assert_array_equal(windows.values, read.values)
        np.testing.assert_array_equal(windows.last, read.last)

    a, b = (Stream(service, data, "shops", "shops_m", s) for s in ("a", "b"))
    # Whole days of both series first: the gaps and NaNs other tests left in their windows are left behind.
    hours = (fresh().last - np.datetime64(START, "us")) // np.timedelta64(1, "h")
    do_put(data.client, "shops", pa.concat_tables([s.rows(list(range(int(h) + 1, int(h) + 49)))
                                                   for s, h in zip((a, b), hours, strict=True)]))
    kept, _ = cache.windows(served_model, "shops")  # read, and kept
    hours = (kept.last - np.datetime64(START, "us")) // np.timedelta64(1, "h")
    # One commit of the next hour of both series, then one of the two hours after that of `a` alone.
    for rows in (pa.concat_tables([a.rows([int(hours[0]) + 1]), b.rows([int(hours[1]) + 1])]),
                 a.rows([int(hours[0]) + 2, int(hours[0]) + 3], [55.0, 66.0])):
        do_put(data.client, "shops", rows)
        before = client.queries
        windows, _ = cache.windows(served_model, "shops")
        assert client.queries == before, "the windows should move on without a read"
        assert_windows_equal(windows, fresh())
    assert windows.values[0, -2:].tolist() == [55.0, 66.0]
    # A row that does not continue its series (an hour after a gap, filled by the read) is read, by name.
    do_put(data.client, "shops", b.rows([int(hours[1]) + 3], [12.5]))
    before = client.queries
    windows, _ = cache.windows(served_model, "shops")
    assert client.queries > before
    assert_windows_equal(windows, fresh())
    assert windows.values[1, -1] == 12.5


def test_moved_on_continues_regular_windows_and_leaves_the_rest_to_a_read():
    day = np.timedelta64(1, "D").astype("m8[us]")
    start = np.datetime64("2024-01-10", "us")
    freq = Frequency.parse("1d")
    windows = Windows(["a", "b", "c", "d"], np.arange(12.0).reshape(4, 3), np.full(4, start), {"e": 1},
                      regular=np.array([True, True, True, False]))
    # a: the next day; b: the next two days; c: a day with a gap before it; d: not its rows as read; e: too
    # short so far; f: a series new to the windows.
    sids = ["a", "b", "b", "c", "d", "e", "f"]
    steps = np.array([1, 1, 2, 2, 1, 1, 1])
    rows = rows_by_series(pa.array(sids), start + steps * day, np.arange(100.0, 107.0), freq)
    moved, rest = moved_on(windows, rows, freq)
    assert rest == {"c", "d", "e", "f"}
    assert moved.values.tolist() == [[1.0, 2.0, 100.0], [5.0, 101.0, 102.0], [6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]
    assert (moved.last == start + np.array([1, 2, 0, 0]) * day).all()
    assert windows.values[0].tolist() == [0.0, 1.0, 2.0]  # the windows moved on are new ones
