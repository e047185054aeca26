"""What the store knows of each dataset (DatasetState), and what it tells its listeners after each commit
(CommitListener)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from flight_server.census import SeriesCensus
from spicepod import DatasetSpec
from spicepod.timestamps import iso_utc

# Called as listener(dataset, version, last_timestamp, series, rows) after each commit: last_timestamp is ISO
# 8601 UTC; series is the frozenset of series ids (as text) the commit touched, or None for "all or
# unknown" (a dataset without series_column, or a commit touching very many series); rows are the rows
# committed (times as naive microsecond timestamps) when they were few (ingest.NOTICE_ROWS), else None.
CommitListener = Callable[[str, int, "str | None", "frozenset[str] | None", "pa.Table | None"], None]


@dataclass
class DatasetState:
    """What the store knows of one dataset, kept current on every commit."""

    spec: DatasetSpec
    table: str  # the qualified table holding the rows
    schema: pa.Schema | None  # None for a `from: flight` dataset before its first DoPut
    rows: int = 0
    first_ts: object = None  # datetime or None
    last_ts: object = None
    version: int = 1
    # Held while a `from: flight` dataset's table is created by its first DoPut; `keep` appends to an
    # existing table do not take it (DuckDB appends in separate transactions do not conflict).
    create_lock: threading.Lock = field(default_factory=threading.Lock)
    # Held by a `replace` DoPut from the start of its merge transaction to its stats update, so that each
    # merge sees every row committed before it (one row per key across concurrent DoPuts).
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    stats_lock: threading.Lock = field(default_factory=threading.Lock)  # rows, time range, version
    census: SeriesCensus | None = None  # a panel's series and their newest times

    def info(self) -> dict:
        return {
            "name": self.spec.name,
            "from": self.spec.source,
            "mode": self.spec.mode,
            "time_column": self.spec.time_column,
            "series_column": self.spec.series_column,
            "on_duplicate": self.spec.on_duplicate,
            "rows": self.rows,
            "columns": [] if self.schema is None else [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "first_timestamp": iso_utc(self.first_ts),
            "last_timestamp": iso_utc(self.last_ts),
            "version": self.version,
        }
