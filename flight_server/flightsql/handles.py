"""Open prepared-statement handles: bounded per connection and in total, dropped after being idle."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from spicepod import InvalidInput

log = logging.getLogger("flightcast.flightsql")

# A client that never closes its handles cannot grow memory without bound.
MAX_HANDLES_PER_PEER = 64  # per connection: the least recently used handle goes first
MAX_HANDLES = 4096  # over all connections
HANDLE_IDLE_S = 600.0  # a handle unused this long is dropped


@dataclass
class PreparedStatement:
    """A prepared read-only query, its parameters and the parameter sets bound to it."""

    sql: str
    peer: str
    parameter_names: list[str]
    parameter_schema: pa.Schema
    dataset_schema: pa.Schema
    parameters: list[list[Any]] = field(default_factory=list)  # bound parameter sets, one per execution
    bound_types: tuple[pa.DataType, ...] = ()  # the Arrow types of the values dataset_schema was found with
    used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class PreparedStatements:
    """Open prepared-statement handles: bounded per peer and in total, dropped after being idle."""

    def __init__(self, per_peer: int = MAX_HANDLES_PER_PEER, total: int = MAX_HANDLES,
                 idle_s: float = HANDLE_IDLE_S, clock=time.monotonic):
        self.per_peer = per_peer
        self.total = total
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._handles: OrderedDict[bytes, PreparedStatement] = OrderedDict()  # least recently used first
        self._by_peer: dict[str, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._handles)

    def count(self, peer: str) -> int:
        with self._lock:
            return len(self._by_peer.get(peer, ()))

    def add(self, statement: PreparedStatement) -> bytes:
        handle = secrets.token_bytes(16)
        with self._lock:
            now = self._clock()
            self._expire(now)
            statement.used = now
            mine = self._by_peer.get(statement.peer, {})
            while len(mine) >= self.per_peer:
                self._drop(next(iter(mine)), "the connection's oldest")
            while len(self._handles) >= self.total:
                self._drop(next(iter(self._handles)), "the server's oldest")
            self._handles[handle] = statement
            self._by_peer.setdefault(statement.peer, OrderedDict())[handle] = None
        return handle

    def get(self, handle: bytes) -> PreparedStatement:
        with self._lock:
            now = self._clock()
            self._expire(now)
            statement = self._handles.get(handle)
            if statement is None:
                raise InvalidInput(
                    "unknown prepared statement handle: it was closed, unused for more than "
                    f"{self.idle_s:g} s, or dropped because its connection opened more than {self.per_peer}"
                )
            statement.used = now
            self._handles.move_to_end(handle)
            self._by_peer[statement.peer].move_to_end(handle)
            return statement

    def close(self, handle: bytes) -> None:
        with self._lock:
            if handle in self._handles:
                self._drop(handle, None)

    def _expire(self, now: float) -> None:
        while self._handles:
            handle, oldest = next(iter(self._handles.items()))
            if now - oldest.used <= self.idle_s:
                return
            self._drop(handle, "idle")

    def _drop(self, handle: bytes, why: str | None) -> None:
        statement = self._handles.pop(handle)
        mine = self._by_peer[statement.peer]
        mine.pop(handle, None)
        if not mine:
            del self._by_peer[statement.peer]
        if why:
            log.info("flight sql: dropped a prepared statement handle of %s (%s)", statement.peer, why)
