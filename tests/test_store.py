"""The DatasetStore on its own (no Flight): streaming reads against the query time limit."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from flight_server.store import STREAM_BATCH_ROWS, DatasetStore
from spicepod import InvalidInput, LimitExceeded, Limits, parse_spicepod


@pytest.fixture
def store(tmp_path):
    store = DatasetStore([], tmp_path, Limits(query_timeout_s=1.0))
    store.open()
    yield store
    store.close()


def test_reading_slowly_does_not_count_against_the_query_limit(store) -> None:
    rows = 0
    for n, batch in enumerate(store.query("SELECT i FROM range(30000) t(i)", batch_rows=1000)):
        rows += batch.num_rows
        if n < 8:
            time.sleep(0.25)  # 2 s of reading in all, twice the limit; the query itself takes milliseconds
    assert rows == 30_000


def test_results_stream_in_whole_batches_of_two_row_groups(store) -> None:
    sizes = [batch.num_rows for batch in store.query("SELECT i FROM range(1000000) t(i)")]
    assert STREAM_BATCH_ROWS == 2 * 122_880
    assert sizes == [STREAM_BATCH_ROWS] * 4 + [1_000_000 - 4 * STREAM_BATCH_ROWS]


def test_a_reader_that_stops_taking_batches_gets_an_error(store) -> None:
    batches = iter(store.query("SELECT i FROM range(100000) t(i)", batch_rows=1000))
    for _ in range(3):  # past the batches read inline: the read-ahead thread is running
        next(batches)
    time.sleep(2.5)
    with pytest.raises(pa.ArrowInvalid, match="took nothing for 1 s"):
        for _ in batches:
            pass


def test_a_query_running_past_the_limit_is_stopped(store) -> None:
    # Stopped before its first batch (a typed error) or while streaming (an Arrow error in the stream).
    with pytest.raises((LimitExceeded, pa.ArrowInvalid), match="ran longer than 1 s"):
        store.query("SELECT count(*) FROM range(1000000000) a, range(1000000000) b").read_all()
    assert store.query("SELECT 42 AS x").read_all().to_pydict() == {"x": [42]}



def test_a_select_that_writes_is_refused_and_writes_nothing(tmp_path) -> None:
    (tmp_path / "kept.csv").write_text("ts,value\n2024-01-01,1.0\n2024-01-02,2.0\n")
    pod = f"""
version: v1
kind: Spicepod
name: store-guard
datasets:
  - from: file:{tmp_path / 'kept.csv'}
    name: kept
    mode: read_write
"""
    store = DatasetStore(parse_spicepod(pod, tmp_path / "spicepod.yaml").datasets, tmp_path / "data")
    store.open()
    try:
        sql = "WITH gone AS (DELETE FROM store.main.kept RETURNING *) SELECT count(*) AS n FROM gone"
        refusal = ("only read-only queries are allowed; refused a SELECT that writes "
                   "(a WITH clause that inserts, updates or deletes, or a sequence's nextval)")
        for call in (store.query, store.query_schema, store.check_read_only):
            with pytest.raises(InvalidInput) as info:
                call(sql)
            assert str(info.value) == refusal
        assert store.query("SELECT count(*) AS n FROM kept").read_all().to_pydict() == {"n": [2]}
    finally:
        store.close()


SCHEMA_QUERIES = [
    "SELECT 1::TINYINT AS a, 2::HUGEINT AS b, 3.5::DECIMAL(10, 2) AS c, 'x' AS d,"
    " TIMESTAMPTZ '2020-01-01 00:00+00' AS e,"
    " TIMESTAMP_NS '2020-01-01' AS f, DATE '2020-01-01' AS g, INTERVAL 1 DAY AS h, [1, 2] AS i, {'x': 1} AS j,"
    " MAP {'k': 1} AS k, 'ab'::BLOB AS l, TIME '01:00' AS m, 1::UBIGINT AS n, NULL AS o, uuid() AS p",
    "SELECT * FROM range(3) t(i)",
    "DESCRIBE SELECT 1 AS x",
]


@pytest.mark.parametrize("sql", SCHEMA_QUERIES)
def test_a_query_schema_is_the_schema_of_its_result(store, sql: str) -> None:
    assert store.query_schema(sql).equals(store.query(sql).read_all().schema, check_metadata=True)


def test_a_query_schema_with_parameters_is_typed_by_their_values(store) -> None:
    schema = store.query_schema("SELECT ? AS a, $2 * 2 AS b", params=["x", 1.5])
    assert schema == pa.schema([("a", pa.string()), ("b", pa.float64())])
