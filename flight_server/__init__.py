"""The data plane: a DuckDB-backed DatasetStore and the Arrow Flight service over it."""

from flight_server.service import ACTIONS, FlightService
from flight_server.store import DatasetStore

__all__ = ["ACTIONS", "DatasetStore", "FlightService"]
