"""Arrow Flight SQL on the Flight port, over the same store methods plain Flight uses.

A protocol message is never handed to DuckDB as SQL text: only the SQL string inside a statement is,
through the store's read-only query path, with parameters bound as DuckDB parameter values.

Modules: `messages` (the Any wrapping: unpack, decode, pack, refusals), `commands` (the command and
action tables: what each RPC does for each message), `service` (FlightSql: dispatch through the tables),
`queries` (statements, prepared statements and parameter sets; result batch sizes), `handles` (open
prepared-statement handles, bounded), `catalog` (catalog, schema and table rows), `protocol` (static
protocol data: result schemas, SqlInfo, XDBC types, type names). `flight_server/flightsql_pb2.py` is
generated from proto/FlightSql.proto by scripts/gen_flightsql.sh.
"""

from flight_server.flightsql.commands import ACTIONS, COMMANDS, OTHER_ACTIONS
from flight_server.flightsql.handles import MAX_HANDLES_PER_PEER, PreparedStatement, PreparedStatements
from flight_server.flightsql.messages import unpack
from flight_server.flightsql.protocol import XDBC_TYPE_INFO_SCHEMA
from flight_server.flightsql.service import FlightSql

__all__ = [
    "ACTIONS",
    "COMMANDS",
    "MAX_HANDLES_PER_PEER",
    "OTHER_ACTIONS",
    "XDBC_TYPE_INFO_SCHEMA",
    "FlightSql",
    "PreparedStatement",
    "PreparedStatements",
    "unpack",
]
