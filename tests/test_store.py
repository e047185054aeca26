"""The DatasetStore on its own (no Flight): streaming reads against the query time limit."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from flight_server.store import DatasetStore
from spicepod import LimitExceeded, Limits


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
