"""The store's series census (action `series_census`): a panel's series count and the series whose newest row
is older than a time, kept as rows commit, always what a GROUP BY over the table answers.

In-process tier: a DatasetStore and its FlightService on port 0 in this process, a real Flight client.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import do_put, read_all, write_csv_text

import flight_server.ingest as ingest
from flight_server.census import SeriesCensus
from harness.flight import flight_server

OPTS = flight.FlightCallOptions(timeout=30)
D = timedelta(days=1)
T0 = datetime(2024, 1, 1)
BOUNDS = [T0 - D, T0, T0 + D, T0 + 2 * D, T0 + 5 * D, T0 + 30 * D]

# a and b up to day 2, c only on day 0, "É" (sorts after every ASCII letter) on day 1
CSV = "store,ts,value\na,2024-01-01,1\nb,2024-01-01,2\nc,2024-01-01,3\na,2024-01-03,4\nb,2024-01-02,5\nÉ,2024-01-02,6\n"
SPICEPOD = """version: v1
kind: Spicepod
name: census
datasets:
  - from: file:data/sales.csv
    name: sales
    mode: read_write
    series_column: store
  - from: file:data/sales.csv
    name: sales_keep
    mode: read_write
    series_column: store
    on_duplicate: keep
  - from: flight
    name: ticks
    series_column: sensor
  - from: flight
    name: solo
"""


@pytest.fixture
def served(tmp_path: Path):
    write_csv_text(tmp_path / "data" / "sales.csv", CSV)
    with flight_server(tmp_path, SPICEPOD) as fs:
        yield fs


def census(client: flight.FlightClient, name: str, before: datetime) -> tuple[int, list[str]]:
    body = json.dumps({"dataset": name, "before": before.isoformat()}).encode()
    answer = json.loads(next(client.do_action(flight.Action("series_census", body), OPTS)).body.to_pybytes())
    return answer["series"], answer["ended"]


def counted(client: flight.FlightClient, name: str, series: str, before: datetime) -> tuple[int, list[str]]:
    """The same census by a pass over the whole table."""
    table = read_all(client, f"SELECT count(*) AS n, list(sid ORDER BY sid) FILTER (WHERE newest < TIMESTAMP "
                             f"'{before.isoformat()}') AS ended FROM (SELECT CAST({series} AS VARCHAR) AS sid, "
                             f"max(ts) AS newest FROM {name} GROUP BY ALL)", OPTS)
    return table.column("n")[0].as_py(), table.column("ended")[0].as_py() or []


def rows(column: str, items: list[tuple[str, datetime, float]], tz: str | None = None) -> pa.Table:
    return pa.table({column: pa.array([i[0] for i in items], pa.string()),
                     "ts": pa.array([i[1] for i in items], pa.timestamp("us", tz=tz)),
                     "value": pa.array([i[2] for i in items], pa.float64())})


def agrees(client: flight.FlightClient, name: str, series: str = "store") -> None:
    for before in BOUNDS:
        assert census(client, name, before) == counted(client, name, series, before), before


def test_a_loaded_panel_is_counted_with_its_ended_series_sorted(served) -> None:
    assert census(served.client, "sales", T0 + 2 * D) == (4, ["b", "c", "É"])
    assert census(served.client, "sales", T0 + D) == (4, ["c"])
    assert census(served.client, "sales", T0) == (4, [])
    agrees(served.client, "sales")
    agrees(served.client, "sales_keep")


@pytest.mark.parametrize("name", ["sales", "sales_keep"])
def test_commits_move_the_census_on(served, name: str) -> None:
    client = served.client
    do_put(client, name, rows("store", [("c", T0 + 4 * D, 1.0), ("new", T0 + 3 * D, 2.0)]))  # a later row, a new series
    assert census(client, name, T0 + 2 * D) == (5, ["b", "É"])
    do_put(client, name, rows("store", [("old", T0 - 9 * D, 1.0), ("a", T0 - 3 * D, 5.0)]))  # older rows change nothing
    assert census(client, name, T0 + 2 * D) == (6, ["b", "old", "É"])
    do_put(client, name, rows("store", [("b", T0 + D, 7.0)]))  # a correction of a stored row
    agrees(client, name)


def test_a_commit_too_large_for_its_notice_is_counted_by_a_read(served, monkeypatch) -> None:
    monkeypatch.setattr(ingest, "PANEL_NOTICE_ROWS", 1)
    client = served.client
    do_put(client, "sales", rows("store", [("c", T0 + 4 * D, 1.0), ("d", T0 + 4 * D, 2.0)]))
    assert census(client, "sales", T0 + 2 * D) == (5, ["b", "É"])
    monkeypatch.undo()
    do_put(client, "sales", rows("store", [("b", T0 + 6 * D, 1.0)]))  # moved on again from what was read
    assert census(client, "sales", T0 + 5 * D) == (5, ["a", "c", "d", "É"])
    agrees(client, "sales")


def test_timezone_aware_rows_are_counted_at_their_instant(served) -> None:
    client = served.client
    do_put(client, "sales", rows("store", [("c", datetime(2024, 1, 5, 1, tzinfo=timezone(timedelta(hours=2))), 1.0)],
                                 tz="+02:00"))
    assert census(client, "sales", datetime(2024, 1, 4, 23)) == (4, ["a", "b", "É"])
    assert census(client, "sales", datetime(2024, 1, 4, 23, 1)) == (4, ["a", "b", "c", "É"])
    agrees(client, "sales")


def test_a_flight_panel_is_counted_from_its_first_commit(served) -> None:
    client = served.client
    assert census(client, "ticks", T0) == (0, [])
    do_put(client, "ticks", rows("sensor", [("s1", T0, 1.0), ("s2", T0 + D, 2.0)]))
    assert census(client, "ticks", T0 + D) == (2, ["s1"])
    agrees(client, "ticks", "sensor")


def test_a_stream_that_fails_after_a_good_batch_leaves_the_census_as_it_was(served) -> None:
    client = served.client
    good = rows("store", [("late", T0 + 9 * D, 1.0)])
    bad = pa.table({"store": ["later"], "ts": pa.array([None], pa.timestamp("us")), "value": [2.0]})
    with pytest.raises(pa.ArrowInvalid, match="null timestamps"):
        do_put(client, "sales", [*good.to_batches(), *bad.to_batches()], schema=good.schema)
    assert census(client, "sales", T0 + 2 * D) == (4, ["b", "c", "É"])


def test_a_read_made_while_a_commit_landed_is_not_kept(served, monkeypatch) -> None:
    """The census went stale; while it is read again a commit adds a series. What was read answers that one
    census, and is not kept: the next one counts the new series."""
    import flight_server.store as store_module

    client = served.client
    monkeypatch.setattr(ingest, "PANEL_NOTICE_ROWS", 0)
    do_put(client, "sales", rows("store", [("a", T0 + 3 * D, 1.0)]))  # leaves the census stale
    monkeypatch.undo()
    read = store_module.read_newest

    def read_then_commit(*args):
        newest = read(*args)
        late = rows("store", [("late", T0 + 9 * D, 1.0)])
        served.store.append("sales", late.schema, late.to_batches())
        return newest

    monkeypatch.setattr(store_module, "read_newest", read_then_commit)
    assert census(client, "sales", T0 + 2 * D) == (4, ["b", "c", "É"])
    monkeypatch.undo()
    assert census(client, "sales", T0 + 2 * D) == (5, ["b", "c", "É"])
    agrees(client, "sales")


def test_integer_series_ids_are_counted_as_text(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data" / "meters.csv", "meter,ts,value\n2,2024-01-01,1\n10,2024-01-03,2\n")
    text = SPICEPOD.split("datasets:")[0] + ("datasets:\n  - from: file:data/meters.csv\n    name: meters\n"
                                              "    mode: read_write\n    series_column: meter\n")
    with flight_server(tmp_path, text) as fs:
        do_put(fs.client, "meters", pa.table({"meter": pa.array([7], pa.int64()),
                                              "ts": pa.array([T0], pa.timestamp("us")), "value": [3.0]}))
        assert census(fs.client, "meters", T0 + D) == (3, ["2", "7"])
        assert census(fs.client, "meters", T0 + 3 * D) == (3, ["10", "2", "7"])  # sorted as text
        agrees(fs.client, "meters", "meter")


@pytest.mark.parametrize(("body", "error", "message"), [
    ({"dataset": "solo", "before": "2024-01-01"}, pa.ArrowInvalid, "dataset 'solo' has no series_column"),
    ({"dataset": "nope", "before": "2024-01-01"}, pa.ArrowKeyError, "dataset 'nope' not found"),
    ({"dataset": "sales"}, pa.ArrowInvalid, 'the body must be JSON {"dataset": NAME, "before": ISO 8601 time}'),
    ({"dataset": "sales", "before": "yesterday"}, pa.ArrowInvalid, 'the body must be JSON {"dataset": NAME'),
])
def test_a_bad_census_request_is_refused_by_name(served, body: dict, error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        next(served.client.do_action(flight.Action("series_census", json.dumps(body).encode()), OPTS))
    assert message in str(caught.value)


def test_all_after_tells_rows_that_no_stored_row_can_share_a_key_with() -> None:
    def commit(ids: list, days: list[int], id_type: pa.DataType | None = None) -> pa.Table:
        return pa.table({"store": pa.array(ids, id_type or pa.string()),
                         "ts": pa.array([T0 + d * D for d in days], pa.timestamp("us"))})

    day = int(D / timedelta(microseconds=1))
    base = int((T0 - datetime(1970, 1, 1)) / timedelta(microseconds=1))
    census_ = SeriesCensus("store", "ts", {"a": base + day, "1": base, "b": None})
    assert census_.all_after(commit(["a"], [2]))
    assert census_.all_after(commit(["a", "new", "a"], [3, 0, 2]))  # a series not stored has no row to share
    assert not census_.all_after(commit(["a", "a"], [2, 1]))  # the newest stored time itself
    assert not census_.all_after(commit(["new", "a"], [9, 0]))  # an older row
    assert census_.all_after(commit([1], [1], pa.int64())) and not census_.all_after(commit([1], [0], pa.int64()))
    assert not census_.all_after(commit([1.0], [5], pa.float64()))  # its text may differ from DuckDB's: unsure
    assert not census_.all_after(commit(["b"], [5]))  # stored rows without a time: unsure
    assert not census_.all_after(None)  # a commit too large for its notice
    census_.committed(None, 3)  # the census goes stale
    assert not census_.all_after(commit(["a"], [9]))
