"""Untidy data in the store (SPEC sections 2, 5, 8): one row per key, time formats, series ids.

In-process tier: a DatasetStore and its FlightService on port 0 in this process, a real Flight client.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import copy_data, do_put, read_all, write_csv_text

from harness.flight import flight_server
from spicepod import SpicepodError

OPTS = flight.FlightCallOptions(timeout=30)
INVALID = pa.ArrowInvalid
D = timedelta(days=1)
T0 = datetime(2024, 1, 1)


def pod(*datasets: str) -> str:
    return "version: v1\nkind: Spicepod\nname: semantics\ndatasets:\n" + "".join(datasets)


def dataset(name: str, source: str, **keys: str) -> str:
    return f"  - from: {source}\n    name: {name}\n" + "".join(f"    {k}: {v}\n" for k, v in keys.items())


def panel(rows: list[tuple[str, datetime, float]]) -> pa.Table:
    return pa.table({
        "store": pa.array([r[0] for r in rows], pa.string()),
        "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
        "value": pa.array([r[2] for r in rows], pa.float64()),
    })


def rows_of(client, name: str) -> list[tuple]:
    table = read_all(client, f"SELECT * FROM {name} ORDER BY ALL", OPTS)
    return list(zip(*table.to_pydict().values(), strict=True))


def info(client, name: str) -> dict:
    result = next(client.do_action(flight.Action("dataset_info", name.encode()), OPTS))
    return json.loads(result.body.to_pybytes())


PANEL_CSV = "store,ts,value\na,2024-01-01,1.0\nb,2024-01-01,10.0\na,2024-01-02,2.0\nb,2024-01-02,20.0\n"


@pytest.fixture
def panel_flight(tmp_path: Path):
    write_csv_text(tmp_path / "data" / "sales.csv", PANEL_CSV)
    text = pod(
        dataset("sales", "file:data/sales.csv", mode="read_write", series_column="store"),
        dataset("sales_keep", "file:data/sales.csv", mode="read_write", series_column="store", on_duplicate="keep"),
        dataset("ticks", "flight", series_column="sensor"),
        dataset("solo", "flight"),
    )
    with flight_server(tmp_path, text) as fs:
        yield fs


# --- one row per key ------------------------------------------------------------------------------------

def test_readme_do_put_example_twice_stores_one_row(tmp_path: Path) -> None:
    copy_data("us_realgdp.csv", tmp_path / "data")
    with flight_server(tmp_path, pod(dataset("us_realgdp", "file:data/us_realgdp.csv", mode="read_write"))) as fs:
        before = info(fs.client, "us_realgdp")["rows"]
        for _ in range(2):  # the README's example, as written, run twice
            rows = pa.table({
                "ts": pa.array([datetime(2009, 10, 1)], pa.timestamp("us")),
                "value": pa.array([13019.0], pa.float64()),
            })
            writer, results = fs.client.do_put(flight.FlightDescriptor.for_path("us_realgdp"), rows.schema)
            writer.write_table(rows)
            writer.done_writing()
            assert json.loads(results.read().to_pybytes()) == {"dataset": "us_realgdp", "rows": 1}
            writer.close()
        got = read_all(fs.client, "SELECT ts, value FROM us_realgdp WHERE ts >= TIMESTAMP '2009-07-01' ORDER BY ts")
        assert got.to_pydict() == {"ts": [datetime(2009, 7, 1), datetime(2009, 10, 1)], "value": [12990.341, 13019.0]}
        assert info(fs.client, "us_realgdp")["rows"] == before + 1
        total = read_all(fs.client, "SELECT count(*) AS n, count(DISTINCT ts) AS d FROM us_realgdp").to_pydict()
        assert total == {"n": [before + 1], "d": [before + 1]}


def test_a_correction_resent_replaces_the_value(panel_flight) -> None:
    client = panel_flight.client
    correction = panel([("a", T0 + D, 2.5), ("b", T0 + 2 * D, 30.0)])
    assert do_put(client, "sales", correction, OPTS) == {"dataset": "sales", "rows": 2}
    assert rows_of(client, "sales") == [
        ("a", T0, 1.0), ("a", T0 + D, 2.5), ("b", T0, 10.0), ("b", T0 + D, 20.0), ("b", T0 + 2 * D, 30.0),
    ]
    entry = info(client, "sales")
    assert (entry["rows"], entry["series_column"], entry["on_duplicate"]) == (5, "store", "replace")
    assert entry["first_timestamp"] == "2024-01-01T00:00:00Z" and entry["last_timestamp"] == "2024-01-03T00:00:00Z"
    # the commit notice says which series the commit touched
    assert panel_flight.notices[-1] == ("sales", entry["version"], "2024-01-03T00:00:00Z", frozenset({"a", "b"}))
    # the same correction again changes nothing but the version
    assert do_put(client, "sales", correction, OPTS) == {"dataset": "sales", "rows": 2}
    assert info(client, "sales")["rows"] == 5 and len(rows_of(client, "sales")) == 5


def test_rows_after_their_series_newest_are_added_and_corrections_among_them_still_replace(panel_flight) -> None:
    """A series' next row, older than the dataset's newest (another series is ahead), and a new series' rows
    replace nothing; a row at a stored key replaces it, alone or in a stream with rows of the first kind."""
    client = panel_flight.client
    do_put(client, "sales", panel([("a", T0 + 2 * D, 3.0)]), OPTS)  # a is ahead: the dataset's newest is day 2
    do_put(client, "sales", panel([("b", T0 + 2 * D, 30.0), ("c", T0, 5.0)]), OPTS)  # b's next day, a new series
    do_put(client, "sales", panel([("b", T0 + 2 * D, 31.0)]), OPTS)  # b's newest row again: a correction
    do_put(client, "sales", panel([("a", T0 + 3 * D, 4.0), ("b", T0 + D, 21.0)]), OPTS)  # a next day and a correction
    assert rows_of(client, "sales") == [
        ("a", T0, 1.0), ("a", T0 + D, 2.0), ("a", T0 + 2 * D, 3.0), ("a", T0 + 3 * D, 4.0),
        ("b", T0, 10.0), ("b", T0 + D, 21.0), ("b", T0 + 2 * D, 31.0), ("c", T0, 5.0),
    ]
    assert info(client, "sales")["rows"] == 8
    ticks = [(7, T0, 1.0), (8, T0, 2.0)], [(8, T0 + D, 3.0)], [(7, T0, 9.0), (8, T0 + D, 4.0)]  # integer ids
    for sent in ticks:
        do_put(client, "ticks", pa.table({"sensor": pa.array([r[0] for r in sent], pa.int64()),
                                          "ts": pa.array([r[1] for r in sent], pa.timestamp("us")),
                                          "v": [r[2] for r in sent]}), OPTS)
    assert rows_of(client, "ticks") == [(7, T0, 9.0), (8, T0, 2.0), (8, T0 + D, 4.0)]


def test_a_stream_that_repeats_a_key_keeps_the_last(panel_flight) -> None:
    client = panel_flight.client
    inside_a_batch = panel([("c", T0, 1.0), ("c", T0, 2.0), ("c", T0 + D, 3.0), ("c", T0, 4.0)])
    across_batches = [panel([("c", T0 + D, 5.0)]).to_batches()[0], panel([("c", T0 + D, 6.0)]).to_batches()[0]]
    assert do_put(client, "sales", inside_a_batch, OPTS) == {"dataset": "sales", "rows": 4}
    assert rows_of(client, "sales")[-2:] == [("c", T0, 4.0), ("c", T0 + D, 3.0)]
    assert do_put(client, "sales", across_batches, OPTS) == {"dataset": "sales", "rows": 2}
    assert [r for r in rows_of(client, "sales") if r[0] == "c"] == [("c", T0, 4.0), ("c", T0 + D, 6.0)]
    assert info(client, "sales")["rows"] == 6


def test_the_first_do_put_of_a_flight_dataset_is_deduplicated_too(panel_flight) -> None:
    client = panel_flight.client
    ticks = pa.table({"sensor": pa.array([7, 7, 8], pa.int64()), "ts": pa.array([T0, T0, T0], pa.timestamp("us")),
                      "v": [1.0, 2.0, 3.0]})
    assert do_put(client, "ticks", ticks, OPTS) == {"dataset": "ticks", "rows": 3}
    assert rows_of(client, "ticks") == [(7, T0, 2.0), (8, T0, 3.0)]
    assert panel_flight.notices[-1][3] == frozenset({"7", "8"})  # integer ids announced as text
    solo = pa.table({"ts": pa.array([T0 + D, T0, T0 + D], pa.timestamp("us")), "v": [1.0, 2.0, 3.0]})
    assert do_put(client, "solo", solo, OPTS) == {"dataset": "solo", "rows": 3}
    assert rows_of(client, "solo") == [(T0, 2.0), (T0 + D, 3.0)]
    assert panel_flight.notices[-1][3] is None  # no series column: the one series


@pytest.mark.parametrize(("sent", "expected"), [
    ([1, 2, 3, 4], {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0}),  # every stored time sent again
    ([1, 3, 4], {1: 10.0, 2: 2.0, 3: 30.0, 4: 40.0}),  # as many times as stored in the range, not the same
    ([0, 4, 6], {0: 0.0, 1: 1.0, 2: 2.0, 4: 40.0, 6: 60.0}),  # a gap: the stored rows between stay
    ([6, 5], {1: 1.0, 2: 2.0, 4: 4.0, 5: 50.0, 6: 60.0}),  # all new, out of order
], ids=["covering", "same_count_other_keys", "gaps", "new_unsorted"])
def test_overwrites_keep_every_stored_row_they_do_not_send(tmp_path: Path, sent: list[int], expected: dict) -> None:
    write_csv_text(tmp_path / "data" / "days.csv", "ts,value\n2024-01-02,1\n2024-01-03,2\n2024-01-05,4\n")
    with flight_server(tmp_path, pod(dataset("days", "file:data/days.csv", mode="read_write"))) as fs:
        put = pa.table({"ts": pa.array([T0 + d * D for d in sent], pa.timestamp("us")),
                        "value": [d * 10.0 for d in sent]})
        assert do_put(fs.client, "days", put, OPTS) == {"dataset": "days", "rows": len(sent)}
        assert rows_of(fs.client, "days") == [(T0 + d * D, v) for d, v in sorted(expected.items())]
        assert info(fs.client, "days")["rows"] == len(expected)


def test_a_stream_too_large_to_hold_is_staged_in_a_temp_table_alike(panel_flight, monkeypatch) -> None:
    import flight_server.writes

    monkeypatch.setattr(flight_server.writes, "STAGE_IN_MEMORY_BYTES", 1)  # every batch past the first
    client = panel_flight.client
    batches = [panel([("a", T0 + D, 5.0), ("e", T0, 1.0)]).to_batches()[0],
               panel([("e", T0, 2.0), ("e", T0 + D, 3.0)]).to_batches()[0],
               panel([("b", T0 + 3 * D, 4.0)]).to_batches()[0]]
    assert do_put(client, "sales", batches, OPTS) == {"dataset": "sales", "rows": 5}
    assert rows_of(client, "sales") == [
        ("a", T0, 1.0), ("a", T0 + D, 5.0), ("b", T0, 10.0), ("b", T0 + D, 20.0), ("b", T0 + 3 * D, 4.0),
        ("e", T0, 2.0), ("e", T0 + D, 3.0)]
    assert info(client, "sales")["rows"] == 7


def test_keep_stores_every_row(panel_flight) -> None:
    client = panel_flight.client
    again = panel([("a", T0, 1.5), ("a", T0, 1.5)])
    assert do_put(client, "sales_keep", again, OPTS) == {"dataset": "sales_keep", "rows": 2}
    assert [r for r in rows_of(client, "sales_keep") if r[0] == "a"] == [
        ("a", T0, 1.0), ("a", T0, 1.5), ("a", T0, 1.5), ("a", T0 + D, 2.0)]
    assert info(client, "sales_keep")["rows"] == 6
    assert info(client, "sales_keep")["on_duplicate"] == "keep"


def test_concurrent_overwriting_streams_leave_one_row_per_key(panel_flight) -> None:
    errors: list[BaseException] = []
    keys = [(s, T0 + i * D) for s in "xyz" for i in range(200)]

    def writer(value: float) -> None:
        client = flight.FlightClient(panel_flight.location)
        try:
            for _ in range(5):
                do_put(client, "sales", panel([(s, t, value) for s, t in keys]).to_batches(max_chunksize=150), OPTS)
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(float(v),)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    got = read_all(panel_flight.client, "SELECT count(*) AS n, count(DISTINCT (store, ts)) AS d, "
                   "count(DISTINCT value) AS v FROM sales WHERE store IN ('x', 'y', 'z')").to_pydict()
    assert got == {"n": [600], "d": [600], "v": [1]}  # each stream is whole: the last committed one wins
    assert info(panel_flight.client, "sales")["rows"] == 4 + 600


def test_a_file_with_duplicate_keys_loads_deduplicated(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data" / "dup.csv", "ts,value\n2024-01-02,2.0\n2024-01-01,1.0\n2024-01-02,2.5\n"
                   "2024-01-03,3.0\n2024-01-01,1.5\n")
    write_csv_text(tmp_path / "data" / "dup_panel.csv", PANEL_CSV + "a,2024-01-01,1.25\n")
    text = pod(dataset("dup", "file:data/dup.csv"), dataset("dup_rw", "file:data/dup.csv", mode="read_write"),
               dataset("dup_keep", "file:data/dup.csv", on_duplicate="keep"),
               dataset("dup_panel", "file:data/dup_panel.csv", series_column="store"))
    with flight_server(tmp_path, text) as fs:
        expected = [(T0, 1.5), (T0 + D, 2.5), (T0 + 2 * D, 3.0)]
        assert rows_of(fs.client, "dup") == expected
        assert rows_of(fs.client, "dup_rw") == expected
        assert info(fs.client, "dup")["rows"] == 3
        assert len(rows_of(fs.client, "dup_keep")) == 5
        assert rows_of(fs.client, "dup_panel") == [
            ("a", T0, 1.25), ("a", T0 + D, 2.0), ("b", T0, 10.0), ("b", T0 + D, 20.0)]


# --- time formats and value types -------------------------------------------------------------------------

def test_yearly_and_day_first_time_formats(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data" / "yearly.csv", "year,value\n1990,1\n1991,2\n1992,4\n")
    write_csv_text(tmp_path / "data" / "dayfirst.csv", "ts,value\n31/12/2020,1.5\n01/01/2021,2.5\n13/01/2021,3.5\n")
    write_csv_text(tmp_path / "data" / "minutes.csv", "ts,value\n31/12/2020 23:45,1.0\n01/01/2021 00:15,2.0\n")
    text = pod(dataset("yearly", "file:data/yearly.csv", time_column="year", time_format="'%Y'"),
               dataset("dayfirst", "file:data/dayfirst.csv", time_format="'%d/%m/%Y'"),
               dataset("minutes", "file:data/minutes.csv", time_format="'%d/%m/%Y %H:%M'"))
    with flight_server(tmp_path, text) as fs:
        yearly = read_all(fs.client, "SELECT * FROM yearly ORDER BY year")
        assert yearly.schema.field("year").type == pa.timestamp("us")
        assert yearly.schema.field("value").type == pa.float64()  # integer values are read as float64
        assert yearly.to_pydict() == {"year": [datetime(1990, 1, 1), datetime(1991, 1, 1), datetime(1992, 1, 1)],
                                      "value": [1.0, 2.0, 4.0]}
        assert rows_of(fs.client, "dayfirst") == [
            (datetime(2020, 12, 31), 1.5), (datetime(2021, 1, 1), 2.5), (datetime(2021, 1, 13), 3.5)]
        assert rows_of(fs.client, "minutes") == [
            (datetime(2020, 12, 31, 23, 45), 1.0), (datetime(2021, 1, 1, 0, 15), 2.0)]
        assert info(fs.client, "yearly")["last_timestamp"] == "1992-01-01T00:00:00Z"


def _open_fails(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpicepodError) as failure, flight_server(tmp_path, text):
        pass
    return str(failure.value)


def test_a_time_value_that_does_not_parse_names_dataset_row_and_pattern(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data" / "bad.csv", "ts,value\n31/12/2020,1\n2021-01-01,2\n")
    message = _open_fails(tmp_path, pod(dataset("bad", "file:data/bad.csv", time_format="'%d/%m/%Y'")))
    assert message.startswith("dataset 'bad': row 2 of ")
    assert "'2021-01-01'" in message and "does not match time_format '%d/%m/%Y'" in message


def test_a_csv_without_the_time_column_names_it_and_the_columns(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data" / "nots.csv", "when,value\n2020-01-01,1\n")
    message = _open_fails(tmp_path, pod(dataset("nots", "file:data/nots.csv")))
    assert message.startswith("dataset 'nots': time column 'ts' not found in ")
    assert message.endswith("(columns: when, value)")
    assert "Binder" not in message
    message = _open_fails(tmp_path, pod(dataset("nots", "file:data/nots.csv", time_column="when",
                                                series_column="shop")))
    assert "series column 'shop' not found" in message and message.endswith("(columns: when, value)")


@pytest.mark.parametrize(("csv", "expected"), [
    ("shop,ts,value\na,2020-01-01,1\n,2020-01-02,2\n", "row 2 of .*: series id in column 'shop' is null"),
    ("shop,ts,value\n" + "s" * 257 + ",2020-01-01,1\n", "row 1 of .*: series id in column 'shop' is longer than 256"),
    ("shop,ts,value\n1.5,2020-01-01,1\n", "series column 'shop' has type DOUBLE; a series id must be text or an"),
], ids=["null", "too_long", "double"])
def test_bad_series_ids_in_a_file_stop_start_up(tmp_path: Path, csv: str, expected: str) -> None:
    write_csv_text(tmp_path / "data" / "ids.csv", csv)
    message = _open_fails(tmp_path, pod(dataset("ids", "file:data/ids.csv", series_column="shop")))
    assert message.startswith("dataset 'ids': ")
    assert re.search(expected, message), message


def test_int64_values_go_into_a_float64_column(panel_flight) -> None:
    ints = pa.table({"store": ["a"], "ts": pa.array([T0 + 5 * D], pa.timestamp("us")),
                     "value": pa.array([42], pa.int64())})
    assert do_put(panel_flight.client, "sales", ints, OPTS) == {"dataset": "sales", "rows": 1}
    assert rows_of(panel_flight.client, "sales")[2] == ("a", T0 + 5 * D, 42.0)


# --- series ids on DoPut -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ids", "expected"), [
    (["d", None], "column 'store' has null series ids; nothing was stored"),
    (["d", "x" * 257], "a series id in column 'store' is 257 bytes long, over the limit of 256; nothing was stored"),
], ids=["null", "too_long"])
def test_bad_series_ids_refuse_the_whole_stream(panel_flight, ids: list, expected: str) -> None:
    client = panel_flight.client
    before = rows_of(client, "sales")
    good = panel([("d", T0, 1.0), ("a", T0, 99.0)]).to_batches()[0]
    bad = pa.record_batch([pa.array(ids, pa.string()), pa.array([T0 + D, T0 + 2 * D], pa.timestamp("us")),
                           pa.array([1.0, 2.0])], schema=good.schema)
    with pytest.raises(INVALID, match=expected):
        do_put(client, "sales", [good, bad], OPTS)
    assert rows_of(client, "sales") == before
    assert info(client, "sales")["rows"] == len(before)


def test_the_first_do_put_of_a_panel_dataset_needs_the_series_column(panel_flight) -> None:
    no_series = pa.table({"ts": pa.array([T0], pa.timestamp("us")), "v": [1.0]})
    with pytest.raises(INVALID, match="missing series column 'sensor'"):
        do_put(panel_flight.client, "ticks", no_series, OPTS)
    float_ids = pa.table({"sensor": [1.5], "ts": pa.array([T0], pa.timestamp("us")), "v": [1.0]})
    with pytest.raises(INVALID, match="series column 'sensor' must be text or an integer, got double"):
        do_put(panel_flight.client, "ticks", float_ids, OPTS)
    assert read_all(panel_flight.client, "ticks", OPTS).num_rows == 0


def test_series_ids_are_data_not_sql(panel_flight) -> None:
    sneaky = "a'); DROP TABLE sales; --"
    assert do_put(panel_flight.client, "sales", panel([(sneaky, T0, 1.0), (sneaky, T0, 2.0)]), OPTS)["rows"] == 2
    assert [r for r in rows_of(panel_flight.client, "sales") if r[0] == sneaky] == [(sneaky, T0, 2.0)]
    assert info(panel_flight.client, "sales")["rows"] == 5


def test_timezone_aware_rows_replace_the_same_instant(panel_flight) -> None:
    aware = pa.table({"store": ["a"], "ts": pa.array([datetime(2024, 1, 1, 1, tzinfo=timezone.utc)],
                                                     pa.timestamp("us", tz="Europe/Paris")), "value": [7.0]})
    assert do_put(panel_flight.client, "sales", aware, OPTS)["rows"] == 1
    assert do_put(panel_flight.client, "sales", aware, OPTS)["rows"] == 1
    assert rows_of(panel_flight.client, "sales")[:2] == [("a", T0, 1.0), ("a", datetime(2024, 1, 1, 1), 7.0)]


# --- listings and errors -----------------------------------------------------------------------------------

def test_listings_name_series_column_and_on_duplicate(panel_flight) -> None:
    result = next(panel_flight.client.do_action(flight.Action("list_datasets", b""), OPTS))
    listed = {d["name"]: (d["series_column"], d["on_duplicate"]) for d in json.loads(result.body.to_pybytes())}
    assert listed == {"sales": ("store", "replace"), "sales_keep": ("store", "keep"), "ticks": ("sensor", "replace"),
                      "solo": (None, "replace")}


def test_an_unknown_table_suggests_datasets_only(panel_flight) -> None:
    with pytest.raises(INVALID) as failure:
        read_all(panel_flight.client, "SELECT * FROM pg_enu", OPTS)
    assert "does not exist" in str(failure.value) and "Did you mean" not in str(failure.value)
    with pytest.raises(INVALID) as failure:
        panel_flight.client.get_schema(flight.FlightDescriptor.for_command(b"SELECT * FROM sale"), OPTS)
    assert 'Did you mean "sales"?' in str(failure.value) and "pg_" not in str(failure.value)
