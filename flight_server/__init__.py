"""The data plane: a DuckDB-backed DatasetStore and the Arrow Flight service over it.

Modules: `store` (DatasetStore: life cycle, reads, the one append path), `sources` (loading files: time
formats, column checks, one row per key at load), `ingest` (DoPut schema checks, per-batch checks, the
keep and replace write paths, and `receive`, the one DoPut of plain Flight and Flight SQL), `queries`
(client query time limit and streaming reader), `service` (the thin Flight RPC methods), `flightsql/`
(Arrow Flight SQL on the same port: one command table over the same store methods; `flightsql_pb2` is
generated from proto/FlightSql.proto), `notices` (commit notices for serve nodes, over DoExchange),
`auth` (the API key: bearer header or basic-auth handshake; any handshake passes without a key) and
`allocator` (the C allocator kept from handing each streamed batch's buffers back to the kernel).
"""

from flight_server.service import ACTIONS, FlightService
from flight_server.store import DatasetStore

__all__ = ["ACTIONS", "DatasetStore", "FlightService"]
