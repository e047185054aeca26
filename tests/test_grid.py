"""GridQuery's window reads over a real Flight server and DuckDB (harness.flight_server): the bounded read
(by the newest data) gives exactly what the unbounded one gives, regular series and the ones that need a
fill alike, and series that ended before the bound or have too few points inside it are still found."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import do_put

from harness.flight import ServedFlight, flight_server
from pipelines.flight_client import FlightDataClient
from pipelines.frequency import Frequency
from pipelines.grid import GridQuery
from pipelines.gridfill import Columns, latest_windows
from spicepod import InvalidInput

DAY = np.timedelta64(1, "D").astype("m8[us]")
HALF_DAY = DAY // 2
START = np.datetime64("2024-01-01", "us")
LOOKBACK = 5
POINTS = 40  # days of the long series

SPICEPOD = """
version: v1
kind: Spicepod
name: grid
datasets:
  - from: file:panel.parquet
    name: panel
    mode: read_write
    series_column: series
  - from: file:single.parquet
    name: single
    mode: read_write
  - from: file:regular.parquet
    name: regular
    mode: read_write
    series_column: series
  - from: file:fine.parquet
    name: fine
    mode: read_write
    series_column: series
  - from: file:ended.parquet
    name: ended
    mode: read_write
    series_column: series
"""


def _rows(series: str, days: list[int], values: list[float | None]) -> dict[str, list]:
    return {"series": [series] * len(days), "ts": [START + d * DAY for d in days], "value": values}


def _panel() -> pa.Table:
    parts = [
        _rows("a", list(range(POINTS)), [float(d) for d in range(POINTS)]),  # regular
        # a missing day (37) and a null (35) inside the window: filled linearly
        _rows("b", [d for d in range(POINTS) if d != 37], [None if d == 35 else 2.0 * d for d in range(POINTS)
                                                          if d != 37]),
        _rows("c", list(range(10)), [float(d) for d in range(10)]),  # ended long before the others
        _rows("d", [POINTS - 3, POINTS - 2, POINTS - 1], [1.0, 2.0, 3.0]),  # too short for a window
        # two rows a day (their mean), the newest day half covered: that day is left out
        {"series": ["e"] * (2 * POINTS - 1), "ts": [START + i * HALF_DAY for i in range(2 * POINTS - 1)],
         "value": [10.0] * (2 * POINTS - 1)},
    ]
    columns = {k: sum((p[k] for p in parts), []) for k in ("series", "ts", "value")}
    return pa.table({"series": pa.array(columns["series"]), "ts": pa.array(columns["ts"], pa.timestamp("us")),
                     "value": pa.array(columns["value"], pa.float64())})


def _regular() -> pa.Table:
    """A panel on the grid's own step (one row a day), ids that sort differently by bytes and by case."""
    parts = [
        _rows("a", list(range(POINTS)), [float(d) for d in range(POINTS)]),
        # a NaN (36), a null (35) and a missing day (37) inside the window
        _rows("b", [d for d in range(POINTS) if d != 37], [None if d == 35 else math.nan if d == 36 else 2.0 * d
                                                          for d in range(POINTS) if d != 37]),
        _rows("c", list(range(10)), [float(d) for d in range(10)]),  # ended long before the others
        _rows("d", [POINTS - 3, POINTS - 2, POINTS - 1], [1.0, 2.0, 3.0]),  # too short for a window
        _rows("Z", list(range(POINTS - 1)), [100.0 + d for d in range(POINTS - 1)]),  # ends a day early
        _rows("\u00e9t\u00e9", list(range(POINTS)), [-1.0 * d for d in range(POINTS)]),
    ]
    columns = {k: sum((p[k] for p in parts), []) for k in ("series", "ts", "value")}
    return pa.table({"series": pa.array(columns["series"]), "ts": pa.array(columns["ts"], pa.timestamp("us")),
                     "value": pa.array(columns["value"], pa.float64())})


ENDED_NEWEST = START + 120 * DAY


def _ended() -> pa.Table:
    """Series that ended long before the dataset's newest row (day 120): `long` (days 0-79, more rows than a
    window's read takes), `twice` (the same, with a second row on day 78), `holes` (ended at day 79 with every
    other day missing from day 70 on), `sparse` (days 0-60, then day 79 alone)."""
    parts = [
        _rows("long", list(range(80)), [float(d) for d in range(80)]),
        {"series": ["twice"] * 81, "ts": [START + d * DAY for d in range(80)] + [START + 78 * DAY + HALF_DAY],
         "value": [float(d) for d in range(80)] + [100.0]},
        _rows("holes", [d for d in range(80) if d < 70 or d % 2], [float(d) for d in range(80) if d < 70 or d % 2]),
        _rows("sparse", [*range(61), 79], [*map(float, range(61)), 79.0]),
        _rows("now", [120], [1.0]),
    ]
    columns = {k: sum((p[k] for p in parts), []) for k in ("series", "ts", "value")}
    return pa.table({"series": pa.array(columns["series"]), "ts": pa.array(columns["ts"], pa.timestamp("us")),
                     "value": pa.array(columns["value"], pa.float64())})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFlight]:
    folder = Path(tmp_path_factory.mktemp("grid"))
    pq.write_table(_panel(), folder / "panel.parquet")
    single = _panel().filter(pa.compute.equal(pa.compute.field("series"), "b")).drop_columns(["series"])
    pq.write_table(single, folder / "single.parquet")
    pq.write_table(_regular(), folder / "regular.parquet")
    minutes = np.arange(POINTS * 24 * 60)  # a row a minute, each day's values 0..1439 then the day's number
    pq.write_table(pa.table({"series": ["x"] * minutes.size,
                             "ts": pa.array(START + minutes * np.timedelta64(60_000_000, "us"), pa.timestamp("us")),
                             "value": (minutes % 1440 + minutes // 1440).astype(np.float64)}), folder / "fine.parquet")
    pq.write_table(_ended(), folder / "ended.parquet")
    with flight_server(folder, SPICEPOD) as running:
        yield running


def _query(dataset: str, series_column: str | None, fill: str = "linear") -> GridQuery:
    return GridQuery(dataset, "ts", "value", series_column, Frequency.parse("1d"), np.datetime64(0, "us"), "mean",
                     fill)


NEWEST = START + (POINTS - 1) * DAY


def test_panel_windows_bounded_and_unbounded_agree(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    query = _query("panel", "series")
    for newest in (None, NEWEST):
        windows = query.windows(client, LOOKBACK, newest=newest, min_points=3)
        assert windows.ids == ["a", "b", "c", "d", "e"]
        np.testing.assert_array_equal(windows.values, [
            [35.0, 36.0, 37.0, 38.0, 39.0],
            [70.0, 72.0, 74.0, 76.0, 78.0],  # 70 between 68 and 72, 74 between 72 and 76
            [5.0, 6.0, 7.0, 8.0, 9.0],
            [np.nan, np.nan, 1.0, 2.0, 3.0],
            [10.0] * 5,
        ])
        assert windows.last.tolist() == [NEWEST.item(), NEWEST.item(), (START + 9 * DAY).item(), NEWEST.item(),
                                         (NEWEST - DAY).item()]
        assert windows.short == {}


def test_panel_windows_name_short_series(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    windows = _query("panel", "series").windows(client, LOOKBACK, newest=NEWEST)
    assert windows.ids == ["a", "b", "c", "e"]
    assert windows.short == {"d": 3}
    named = _query("panel", "series").windows(client, LOOKBACK, newest=NEWEST, ids=["c", "x"])
    assert named.ids == ["c"] and named.values.tolist() == [[5.0, 6.0, 7.0, 8.0, 9.0]]


@pytest.mark.parametrize(("series", "values", "last"), [
    ("a", [35.0, 36.0, 37.0, 38.0, 39.0], NEWEST),  # one row a day: read as it is
    ("b", [70.0, 72.0, 74.0, 76.0, 78.0], NEWEST),  # and filled
    ("e", [10.0] * 5, NEWEST - DAY),  # two rows a day: aggregated by DuckDB, the half-covered day left out
])
def test_one_series_of_a_panel(served: ServedFlight, series: str, values: list[float], last: np.datetime64) -> None:
    client = FlightDataClient(served.location)
    windows = _query("panel", "series").windows(client, LOOKBACK, newest=NEWEST, ids=[series])
    assert windows.ids == [series] and windows.values.tolist() == [values] and windows.last.tolist() == [last.item()]


def test_a_series_that_ended_earlier_is_read_with_the_rows_of_its_window(served: ServedFlight) -> None:
    """Named, a series whose newest row is older than the bound of the dataset's newest is read again inside
    the bound of its own newest row: its window, and the rows it is made of (what its tail starts from)."""
    client = FlightDataClient(served.location)
    windows = _query("panel", "series").windows(client, LOOKBACK, newest=NEWEST, ids=["c"])
    assert windows.ids == ["c"] and windows.values.tolist() == [[5.0, 6.0, 7.0, 8.0, 9.0]]
    assert windows.last.tolist() == [(START + 9 * DAY).item()]
    assert windows.raw is not None and windows.raw.ids == ["c"]
    assert windows.raw.times.tolist() == [(START + d * DAY).item() for d in range(10)]
    assert windows.raw.values.tolist() == [float(d) for d in range(10)]
    # Up to date, the same series' window comes from the bounded read alone, with the same rows.
    again = _query("panel", "series").windows(client, LOOKBACK, newest=START + 9 * DAY, ids=["c"])
    assert again.values.tolist() == windows.values.tolist()
    assert again.raw.times.tolist() == windows.raw.times.tolist()


def test_a_long_series_that_ended_earlier_keeps_only_the_rows_inside_its_own_bound(served: ServedFlight) -> None:
    """More rows than one read takes: the newest are read, and those inside the bound of its newest row kept."""
    client = FlightDataClient(served.location)
    windows = _query("ended", "series").windows(client, LOOKBACK, newest=ENDED_NEWEST, ids=["long"])
    assert windows.values.tolist() == [[75.0, 76.0, 77.0, 78.0, 79.0]]
    bound = 79 - LOOKBACK - 8  # the window and its pad of periods before the newest
    assert windows.raw.times.tolist() == [(START + d * DAY).item() for d in range(bound, 80)]
    assert windows.raw.values.tolist() == [float(d) for d in range(bound, 80)]


@pytest.mark.parametrize(("series", "values", "kept"), [
    ("holes", [75.0, 76.0, 77.0, 78.0, 79.0], [66, 67, 68, 69, 71, 73, 75, 77, 79]),  # filled inside its bound
    ("twice", [75.0, 76.0, 77.0, 89.0, 79.0], None),  # day 78: the mean of its two rows, aggregated
    ("sparse", [75.0, 76.0, 77.0, 78.0, 79.0], None),  # too few periods inside its bound: read further back
])
def test_an_ended_series_is_the_window_the_read_without_bound_gives(served: ServedFlight, series: str,
                                                                    values: list[float], kept: list | None) -> None:
    """The rows kept (its tail) when they make its window alone; else the aggregated read, as before."""
    client = FlightDataClient(served.location)
    windows = _query("ended", "series").windows(client, LOOKBACK, newest=ENDED_NEWEST, ids=[series])
    unbounded = _query("ended", "series").windows(client, LOOKBACK, ids=[series])
    assert windows.values.tolist() == unbounded.values.tolist() == [values]
    if kept is None:
        assert windows.raw is None
    else:
        assert windows.raw.times.tolist() == [(START + d * DAY).item() for d in kept]


def test_single_series_window_and_refused_gap(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    windows = _query("single", None).windows(client, LOOKBACK, newest=NEWEST)
    assert windows.ids == [None] and windows.values.tolist() == [[70.0, 72.0, 74.0, 76.0, 78.0]]
    with pytest.raises(InvalidInput, match=r"dataset 'single': no value for the period starting "
                                           r"2024-02-05T00:00:00Z \(frequency 1d\)"):
        _query("single", None, fill="none").windows(client, LOOKBACK, newest=NEWEST)


def test_history_bounded_by_newest(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    found = _query("panel", "series").history(client, 3, ids=["a", "b"], observed=True, newest=NEWEST)
    assert found.ids == ["a", "b"]
    assert [v.tolist() for v in found.values] == [[37.0, 38.0, 39.0], [72.0, 76.0, 78.0]]  # day 35 null, 37 missing


def test_history_until_leaves_out_the_rows_after_it(served: ServedFlight) -> None:
    """Rows committed after a check looked up the newest timestamp wait for their own check."""
    client = FlightDataClient(served.location)
    until = np.datetime64(START + 38 * DAY, "us")
    found = _query("panel", "series").history(client, 3, ids=["a", "b"], observed=True, newest=until, until=until)
    assert [v.tolist() for v in found.values] == [[36.0, 37.0, 38.0], [68.0, 72.0, 76.0]]
    assert [t[-1] for t in found.times] == [until, until]


def test_every_series_read_as_rows_is_the_aggregated_read(served: ServedFlight) -> None:
    """Data one row a period: every window read from the rows as they are (sorted and checked in numpy), also
    after rows arrive out of order, is exactly what DuckDB's aggregation of the periods gives."""
    client = FlightDataClient(served.location)
    newest = NEWEST + DAY
    do_put(served.client, "regular", pa.table({  # appended after the rest: out of order in the table
        "series": ["a", "Z"], "ts": pa.array([newest, NEWEST], pa.timestamp("us")), "value": [40.0, 139.0]}))
    rows, grouped = _query("regular", "series"), _query("regular", "series")
    grouped._aggregates = True  # what a panel finer than its grid is read by
    for min_points in (None, 3):
        by_rows = rows.windows(client, LOOKBACK, newest=newest, min_points=min_points)
        by_periods = grouped.windows(client, LOOKBACK, newest=newest, min_points=min_points)
        assert not rows._aggregates
        assert by_rows.ids == by_periods.ids
        np.testing.assert_array_equal(by_rows.values, by_periods.values)
        assert by_rows.last.tolist() == by_periods.last.tolist()
        assert by_rows.short == by_periods.short
    assert by_rows.ids == ["Z", "a", "b", "c", "d", "\u00e9t\u00e9"]
    np.testing.assert_array_equal(by_rows.values, [
        [135.0, 136.0, 137.0, 138.0, 139.0],
        [36.0, 37.0, 38.0, 39.0, 40.0],
        [70.0, 72.0, 74.0, 76.0, 78.0],  # 72 and 74 between 70 and 76, 76 and 78 read
        [5.0, 6.0, 7.0, 8.0, 9.0],
        [np.nan, np.nan, 1.0, 2.0, 3.0],
        [-35.0, -36.0, -37.0, -38.0, -39.0],
    ])
    assert by_rows.last.tolist() == [NEWEST.item(), newest.item(), NEWEST.item(), (START + 9 * DAY).item(),
                                     NEWEST.item(), NEWEST.item()]


def test_a_panel_finer_than_its_grid_is_aggregated(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    query = _query("panel", "series")
    windows = query.windows(client, LOOKBACK, newest=NEWEST, min_points=3)
    assert query._aggregates  # series e has two rows a day: found in the rows, then grouped by DuckDB
    assert windows.ids == ["a", "b", "c", "d", "e"] and windows.values[4].tolist() == [10.0] * 5


@pytest.mark.parametrize("far", [0, 10**9])  # a few periods apart: counted into cells; a row far away: compared
def test_rows_are_ordered_by_series_then_period(far: int) -> None:
    from pipelines.gridfill import _by_cell

    codes = np.array([1, 0, 1, 0, 2, 1])
    periods = np.array([2, 1, 0, 0, 3 + far, 1])
    order = _by_cell(codes, periods)
    assert order.tolist() == [3, 1, 2, 5, 0, 4]
    assert _by_cell(np.append(codes, 1), np.append(periods, 2)) is None  # series 1 twice in period 2


@pytest.mark.parametrize(("freq", "fill", "far"), [
    ("1d", "linear", 0), ("1d", "previous", 0), ("1mo", "zero", 0), ("1d", "linear", 10**4)])
def test_windows_of_rows_on_a_table_of_cells_are_those_of_the_rows_sorted(freq: str, fill: str, far: int) -> None:
    """latest_of_rows (rows put in a table of cells, series by period) gives latest_windows of rows_by_series
    bit for bit: regular series, gaps, NaN (no row) and infinite values (filled), series shorter than the
    window, one row far from the others, rows in any order; and None for two rows in one cell."""
    from pipelines.gridfill import latest_of_rows, rows_by_series

    frequency = Frequency.parse(freq)
    rng = np.random.default_rng(7)
    sids, periods, values = [], [], []
    for k in range(40):
        span = int(rng.integers(1, 12))
        kept = np.sort(rng.choice(np.arange(30), size=span, replace=False)) if k % 3 else np.arange(30 - span, 30)
        sids += [f"s{k:02d}" if k % 5 else f"\u00e9{k}"] * kept.size
        periods += kept.tolist()
        values += rng.normal(size=kept.size).tolist()
    values[3], values[10], values[25] = math.nan, math.inf, -math.inf
    sids.append("far")
    periods.append(30 + far)
    values.append(1.0)
    order = rng.permutation(len(sids))
    ids = pa.array(np.asarray(sids, dtype=object)[order], pa.string())
    times = np.asarray(frequency.add(START, np.asarray(periods)[order])).astype("datetime64[us]")
    got = latest_of_rows(ids, times, np.asarray(values)[order], frequency, fill, "d", LOOKBACK)
    want = latest_windows(rows_by_series(ids, times, np.asarray(values)[order], frequency), frequency, fill, "d",
                          LOOKBACK)
    assert got.ids == want.ids and len(got.ids) == 41
    np.testing.assert_array_equal(got.rows, want.rows)
    assert got.last.tolist() == want.last.tolist()
    assert got.sizes.tolist() == want.sizes.tolist()
    assert got.regular.tolist() == want.regular.tolist() and 0 < got.regular.sum() < 41
    twice = pa.concat_arrays([ids, ids[:1]])
    assert latest_of_rows(twice, np.append(times, times[0]), np.append(values, 0.0), frequency, fill, "d",
                          LOOKBACK) is None


@pytest.mark.parametrize(("freq", "fill"), [("1d", "linear"), ("1h", "previous"), ("1mo", "zero"), ("1w", "linear")])
def test_series_found_regular_at_once_are_filled_and_observed_as_they_are_one_by_one(freq: str, fill: str) -> None:
    """filled_series (what a training reads) gives each series as complete_periods and fill_series give it one
    by one, observed_series (what the checks after a DoPut read) as complete_periods and dropping the periods
    without a value give it, and regular_series is the per-series rule: consecutive periods (unless no
    frequency is given), each with a value and as many rows as the others. Regular series, gaps, NaN and
    infinite values, periods of several rows with a partial one at either end, one-period series, a series
    right after another's last period."""
    from pipelines.gridfill import complete_periods, fill_series, filled_series, observed_series, regular_series

    frequency = Frequency.parse(freq)
    rng = np.random.default_rng(11)
    ids, starts, periods, values, counts = [], [], [], [], []
    for k in range(60):
        kind = k % 6
        size = 1 if k == 7 else int(rng.integers(2, 15))
        first = 0 if k == 1 else int(rng.integers(0, 10))
        steps = np.arange(first, first + size)
        if kind == 1 and size > 2:  # a gap
            steps[size // 2:] += int(rng.integers(1, 4))
        part = rng.normal(size=size)
        if kind == 2:
            part[int(rng.integers(0, size))] = [math.nan, math.inf, -math.inf][k % 3]
        rows = np.full(size, 1 if kind != 3 else 4, dtype=np.int64)
        if kind == 4:  # periods of several rows each, partial at the ends
            rows[:] = 3
            rows[0], rows[-1] = 1, 2
        ids.append(f"s{k:02d}")
        starts.append(len(periods))
        periods += steps.tolist()
        values += part.tolist()
        counts += rows.tolist()
    starts_a = np.asarray(starts)
    times = np.asarray(frequency.add(START, np.asarray(periods))).astype("datetime64[us]")
    c = Columns(ids, starts_a, np.append(starts_a[1:], len(periods)), times, np.asarray(values), np.asarray(counts))

    regular, gaps_allowed = regular_series(c, frequency), regular_series(c, None)
    for i, (s, e) in enumerate(zip(c.starts, c.ends, strict=True)):
        steps = frequency.steps_between(c.times[s], c.times[s:e])
        plain = bool(np.isfinite(c.values[s:e]).all() and (c.counts[s:e] == c.counts[s]).all())
        assert gaps_allowed[i] == plain, c.ids[i]
        assert regular[i] == (plain and bool((np.diff(steps) == 1).all())), c.ids[i]
    assert 0 < regular.sum() < gaps_allowed.sum() < len(ids)
    for (sid, times_got, values_got), s, e in zip(observed_series(c), c.starts, c.ends, strict=True):
        times_want, values_want = complete_periods(c.times[s:e], c.values[s:e], c.counts[s:e])
        known = np.isfinite(values_want)
        assert times_got.tolist() == times_want[known].tolist(), sid
        assert values_got.tobytes() == values_want[known].tobytes(), sid
    got = filled_series(c, frequency, fill, "d")
    assert [sid for sid, _, _ in got] == ids
    for (sid, times_got, values_got), s, e in zip(got, c.starts, c.ends, strict=True):
        kept = complete_periods(c.times[s:e], c.values[s:e], c.counts[s:e])
        times_want, values_want = fill_series(*kept, frequency, fill, "d", sid)
        assert times_got.tolist() == times_want.tolist(), sid
        assert values_got.tobytes() == values_want.tobytes(), sid


def test_a_panel_of_minutes_on_a_daily_grid_is_not_read_row_by_row(served: ServedFlight) -> None:
    client = FlightDataClient(served.location)
    query = _query("fine", "series")
    windows = query.windows(client, LOOKBACK, newest=NEWEST + DAY - np.timedelta64(60_000_000, "us"))
    assert query._aggregates  # more rows inside the bound than one a day: the read stopped, DuckDB grouped them
    assert windows.ids == ["x"] and windows.values.tolist() == [[719.5 + d for d in range(POINTS - 5, POINTS)]]


@pytest.mark.parametrize(("times", "values"), [
    (range(12), [float(v) for v in range(12)]),  # regular
    ([0, 1, 4, 5, 6, 7, 8, 9], [1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),  # a gap before the window
    ([0, 1, 2, 3, 4, 6, 7, 8], [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]),  # a gap inside it: filled
    (range(8), [1.0, 2.0, 3.0, 4.0, math.nan, 6.0, 7.0, 8.0]),  # a NaN inside it: filled
])
def test_a_tails_window_is_the_filled_grids(times: range | list[int], values: list[float]) -> None:
    """A window made from kept rows, taken as it is when its newest periods are consecutive and valued, is
    the window filling the rows on the grid gives."""
    query = GridQuery("single", "ts", "value", None, Frequency.parse("1d"), START, "mean", "linear")
    stamps = START + np.asarray(times, dtype=np.int64) * DAY
    rows = Columns([None], np.zeros(1, np.int64), np.array([stamps.size]), stamps, np.asarray(values),
                   np.ones(stamps.size, np.int64))
    window = query.tail_windows(rows, LOOKBACK)
    filled = latest_windows(rows, query.freq, "linear", "single", LOOKBACK)
    assert window.ids == filled.ids == [None] and window.short == {}
    assert window.values.tobytes() == filled.rows.tobytes() and window.last.tolist() == filled.last.tolist()


@pytest.mark.parametrize(("points", "complete"), [(3, ["holes", "long", "sparse"]),
                                                  (12, ["holes", "long", "twice"])])
def test_a_read_further_back_is_the_read_without_a_bound_for_every_series_it_finds_complete(
        served: ServedFlight, points: int, complete: list[str]) -> None:
    """What the anomaly check reads for series with too few periods inside a window's bound (gaps, or ended
    earlier): inside a bound `span` periods back, a series with `points` observed periods there has exactly the
    periods the read with no bound gives; the others are read again without one."""
    client = FlightDataClient(served.location)
    query = _query("ended", "series")
    ids = ["holes", "long", "now", "sparse", "twice"]
    unbounded = query.history(client, points, ids=ids, observed=True, until=ENDED_NEWEST)
    wide = query.history(client, points, ids=ids, observed=True, newest=ENDED_NEWEST, until=ENDED_NEWEST, span=60)
    assert [sid for sid, times in zip(wide.ids, wide.times, strict=True) if times.size >= points] == complete
    assert "now" in unbounded.ids and "sparse" in wide.ids  # found by both reads, short in the bounded one
    full = {sid: (times.tolist(), values.tolist())
            for sid, times, values in zip(unbounded.ids, unbounded.times, unbounded.values, strict=True)}
    for sid, times, values in zip(wide.ids, wide.times, wide.values, strict=True):
        if sid in complete:
            assert (times.tolist(), values.tolist()) == full[sid], sid
            assert times.size == points
