"""SeriesCensus: the newest timestamp of each series of a panel dataset, kept by the store, so that a reader
learns how many series there are and which have no row from a time on without a pass over the table (the
census of a panel's full window read, pipelines.grid).

It is read with one GROUP BY when the store opens, and moved on by each commit from the rows its notice
carries (a few thousand at most). A larger commit leaves it stale: the next census reads it again, and keeps
what it read when no commit came meanwhile. A commit DuckDB has made but the census not yet seen is either
in that read or applied after it (the same rows again change nothing), so what is kept is never behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spicepod import quote_ident

log = logging.getLogger("flightcast.store")

Newest = dict[str | None, int | None]  # series id as text -> its newest time in epoch microseconds (None: no time)
NO_TIME = np.iinfo(np.int64).max  # a series whose rows have no time is never counted as ended
_UNKNOWN = np.iinfo(np.int64).min  # the newest time of a series with no stored row


def read_newest(cur: duckdb.DuckDBPyConnection, table: str, series_column: str, time_column: str) -> Newest:
    """Every series' newest timestamp in `table`, as the census query of a window read has it."""
    rows = cur.execute(
        f"SELECT CAST({quote_ident(series_column)} AS VARCHAR), epoch_us(max({quote_ident(time_column)})) "
        f"FROM {table} GROUP BY ALL"
    ).fetchall()
    return dict(rows)


class SeriesCensus:
    """One panel dataset's series and their newest timestamps. The store calls `committed` after each commit
    and `count` for a census. Thread-safe."""

    def __init__(self, series_column: str, time_column: str, newest: Newest | None):
        self.series_column = series_column
        self.time_column = time_column
        self._lock = threading.Lock()
        self._newest = newest  # None: stale (a commit whose rows were not at hand)
        self._commits = 0  # commits seen: a read made while one landed is not kept

    def committed(self, rows: pa.Table | None, row_count: int) -> None:
        """A commit of `row_count` rows, with the rows themselves when its notice carries them (times as naive
        microsecond timestamps); without them the census is stale until read again."""
        if not row_count:
            return
        grouped = None
        if rows is not None:
            try:
                ids = pc.cast(rows.column(self.series_column), pa.string())
                times = pc.cast(rows.column(self.time_column), pa.int64())
                grouped = pa.table({"sid": ids, "t": times}).group_by("sid").aggregate([("t", "max")])
            except (pa.ArrowException, KeyError) as exc:  # committed all the same: the next census reads it again
                log.warning("series census of a commit failed (%s: %s); reading it again when asked",
                            type(exc).__name__, exc)
        with self._lock:
            self._commits += 1
            newest = self._newest
            if newest is None or grouped is None:
                self._newest = None
                return
            for sid, time in zip(grouped.column("sid").to_pylist(), grouped.column("t_max").to_pylist(),
                                 strict=True):
                known = newest.get(sid)
                if known is None or (time is not None and time > known):
                    newest[sid] = time

    def all_after(self, rows: pa.Table | None) -> bool:
        """Whether each of a commit's rows (its notice's rows, times as naive microsecond timestamps) comes after
        every stored row of its series, so that no stored row can share its key; a series the census does not
        know has no stored row. False when the census cannot tell: it is stale, the rows are not at hand, or
        the ids are of a type whose text Arrow may write otherwise than DuckDB (only text and integers are).

        A panel's series arrive at their own times: a series' next row is often older than the dataset's newest
        row, which alone would not spare a replacing commit its search of the table for the keys it replaces."""
        if rows is None or not rows.num_rows:
            return False
        ids = rows.column(self.series_column)
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
            return False
        sids = pc.cast(ids, pa.string()).to_pylist()
        times = pc.cast(rows.column(self.time_column), pa.int64()).to_numpy(zero_copy_only=False)
        with self._lock:
            newest = self._newest
            if newest is None:
                return False
            # Each row against its series' newest stored time (a series the census does not know: none)
            stored = [newest.get(sid, _UNKNOWN) for sid in sids]
        if None in stored:  # a series with rows but no time: nothing to compare with
            return False
        return bool((times > np.array(stored, dtype=np.int64)).all())

    def count(self, before: datetime | np.datetime64, read: Callable[[], Newest]) -> tuple[int, list[str | None]]:
        """census_of the series kept; when stale, of a fresh `read`, kept when no commit landed meanwhile."""
        with self._lock:
            if self._newest is not None:
                return census_of(self._newest, before)
            seen = self._commits
        newest = read()
        answer = census_of(newest, before)  # before it is kept: later commits change the census kept
        with self._lock:
            if self._commits == seen:
                self._newest = newest
        return answer


def census_of(newest: Newest, before: datetime | np.datetime64) -> tuple[int, list[str | None]]:
    """(series count, the ids whose newest time is before `before`, sorted as SQL sorts them)."""
    bound = int(np.datetime64(before, "us").astype(np.int64))
    times = np.fromiter((NO_TIME if t is None else t for t in newest.values()), np.int64, count=len(newest))
    ids = list(newest)
    ended = [ids[i] for i in np.flatnonzero(times < bound).tolist()]
    ended.sort(key=_sql_order)
    return len(ids), ended


def _sql_order(sid: str | None) -> tuple[bool, str]:
    """DuckDB's ORDER BY of text: by code point (byte order in UTF-8), NULL last."""
    return sid is None, sid or ""
