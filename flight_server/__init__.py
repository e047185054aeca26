"""The data plane: a DuckDB-backed DatasetStore and the Arrow Flight service over it.

Modules: `store` (DatasetStore: life cycle, reads, the one append path), `sources` (loading files: time
formats, column checks, one row per key at load), `ingest` (DoPut schema checks, per-batch checks, the
keep and replace write paths), `queries` (client query time limit and streaming reader), `service` (the
thin Flight RPC methods) and `auth`.
"""

from flight_server.service import ACTIONS, FlightService
from flight_server.store import DatasetStore

__all__ = ["ACTIONS", "DatasetStore", "FlightService"]
