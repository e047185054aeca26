"""Arrow Flight SQL (SPEC section 10) through the real ADBC Flight SQL driver and raw protocol messages.

ADBC (`adbc_driver_flightsql.dbapi`, the Go driver) raises its DB-API errors with the gRPC status in the
message (`INVALID_ARGUMENT: [FlightSQL] ...`); a pyarrow.flight client gets INVALID_ARGUMENT as
pa.ArrowInvalid and UNIMPLEMENTED as pa.ArrowNotImplementedError. One in-process Flight server
(harness.flight_server) serves most of the module; tests that write use datasets of their own.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as dbapi
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import (
    do_put,
    read_all,
    refused_statements,
    write_csv_text,
    write_spicepod,
    write_table,
)
from google.protobuf import any_pb2

from flight_server import flightsql as flight_sql
from flight_server import flightsql_pb2 as pb
from harness.flight import ServedFlight, flight_server

OPTS = flight.FlightCallOptions(timeout=30)
KEY = "fc-sql-key-5d4c3b2a19"
WRONG = "fc-sql-wrong-0f1e2d3c"
ADBC_ERROR = adbc_driver_manager.Error

H = timedelta(hours=1)
M0 = datetime(2024, 1, 1)
METRICS_CSV = "ts,value,count,station\n" + "".join(
    f"{M0 + i * H:%Y-%m-%d %H:%M:%S},{i + 1.5},{i + 1},{'ab'[i % 2]}\n" for i in range(5))
SERIES_CSV = "ts,value\n2024-01-01 00:00:00,1.0\n2024-01-02 00:00:00,2.0\n2024-01-03 00:00:00,3.0\n"
RW_DATASETS = ("rw_guard", "rw_ingest", "rw_bad", "rw_durable")


def build_pod(folder: Path) -> Path:
    data = folder / "data"
    write_csv_text(data / "metrics.csv", METRICS_CSV)
    for name in RW_DATASETS:
        write_csv_text(data / f"{name}.csv", SERIES_CSV)
    write_table(data / "secret.parquet", pa.table({"secret": ["host file"]}))
    (data / "secret.json").write_text('{"secret": "host file"}\n')
    rw = "".join(f"  - {{from: file:data/{n}.csv, name: {n}, mode: read_write}}\n" for n in RW_DATASETS)
    return write_spicepod(folder, "version: v1\nkind: Spicepod\nname: flight_sql\ndatasets:\n"
                          "  - {from: file:data/metrics.csv, name: metrics}\n" + rw
                          + "  - {from: flight, name: sink}\n")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFlight]:
    """The Flight data plane in this process (harness.flight_server); Flight SQL needs no process of its own."""
    folder = tmp_path_factory.mktemp("flight_sql")
    build_pod(folder)
    with flight_server(folder) as served:
        yield served


@pytest.fixture(scope="module")
def client(runtime) -> flight.FlightClient:
    return runtime.flight_client()


def connect(location: str, **db_kwargs: str) -> dbapi.Connection:
    # autocommit=True: the server has no transactions, and asking to turn autocommit off only warns
    return dbapi.connect(location, db_kwargs=db_kwargs or None, autocommit=True)


@pytest.fixture(scope="module")
def conn(runtime):
    with connect(runtime.flight_location) as connection:
        yield connection


def fetch(conn, sql: str, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def packed(message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def command(message) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(packed(message))


def fetch_command(client, message) -> tuple[pa.Schema, pa.Table]:
    """GetFlightInfo of a Flight SQL command, then DoGet of its one ticket."""
    info = client.get_flight_info(command(message), OPTS)
    assert len(info.endpoints) == 1
    return info.schema, client.do_get(info.endpoints[0].ticket, OPTS).read_all()


def guard_rows(client) -> pa.Table:
    return read_all(client, "SELECT * FROM rw_guard ORDER BY ts", OPTS)


# --- the protocol module ---------------------------------------------------------------------------------

def test_generated_module_imports_on_the_pinned_protobuf_runtime() -> None:
    import google.protobuf

    pins = dict(line.split("==") for line in (Path(__file__).parent.parent / "constraints.txt").read_text()
                .splitlines() if "==" in line and not line.startswith("#"))
    assert google.protobuf.__version__ == pins["protobuf"]
    source = Path(pb.__file__).read_text()
    generated_for = re.search(r"Protobuf Python Version: (\S+)", source)[1]
    as_tuple = lambda v: tuple(int(p) for p in v.split(".")[:3])  # noqa: E731
    assert as_tuple(generated_for) <= as_tuple(pins["protobuf"])
    assert pb.CommandStatementQuery(query="SELECT 1").SerializeToString() == b"\n\x08SELECT 1"


# --- queries -----------------------------------------------------------------------------------------------

QUERIES = [
    "SELECT * FROM metrics ORDER BY ts",
    "SELECT station, sum(value) AS total, count(*) AS n FROM metrics GROUP BY station ORDER BY station",
    "SELECT * FROM memory.main.metrics WHERE count > 2 ORDER BY ts",
    "SELECT * FROM metrics WHERE false",
    "SELECT 1 AS one, 'x' AS text, NULL::DOUBLE AS nothing",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_query_equals_plain_doget(conn, client, sql: str) -> None:
    expected = read_all(client, sql, OPTS)
    got = fetch(conn, sql)
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)


@pytest.mark.parametrize("sql", [
    "SELECT i, i * 0.5 AS half FROM range(1500000) t(i)",
    "SELECT i, repeat('x', 2000) AS text FROM range(20000) t(i)",  # 40 MB of strings in few DuckDB batches
])
def test_large_results_stay_under_the_drivers_message_limit(conn, client, sql: str) -> None:
    expected = read_all(client, sql, OPTS)
    got = fetch(conn, sql)
    assert got.num_rows == expected.num_rows and got.equals(expected)


def test_result_batches_are_the_stores_or_sliced_under_the_message_limit(client) -> None:
    # Fixed-width rows come as DuckDB streams them; long strings are sliced below the bound.
    info = client.get_flight_info(command(pb.CommandStatementQuery(query="SELECT i FROM range(1000000) t(i)")), OPTS)
    sizes = [chunk.data.num_rows for chunk in client.do_get(info.endpoints[0].ticket, OPTS)]
    step = flight_sql.queries.MAX_BATCH_ROWS
    assert sizes == [step, step, 1_000_000 - 2 * step]
    sql = "SELECT i, repeat('x', 2000) AS text FROM range(20000) t(i)"
    info = client.get_flight_info(command(pb.CommandStatementQuery(query=sql)), OPTS)
    chunks = [chunk.data for chunk in client.do_get(info.endpoints[0].ticket, OPTS)]
    assert sum(c.num_rows for c in chunks) == 20_000
    assert max(c.nbytes for c in chunks) <= flight_sql.queries.MAX_BATCH_BYTES


@pytest.mark.parametrize("sql", QUERIES[:2])
def test_statement_query_command_equals_plain_doget(client, sql: str) -> None:
    schema, got = fetch_command(client, pb.CommandStatementQuery(query=sql))
    expected = read_all(client, sql, OPTS)
    assert schema.equals(expected.schema) and got.equals(expected)


@pytest.mark.parametrize(("sql", "parameters", "plain"), [
    ("SELECT * FROM metrics WHERE value > ? AND station = ? ORDER BY ts", (2.0, "a"),
     "SELECT * FROM metrics WHERE value > 2.0 AND station = 'a' ORDER BY ts"),
    ("SELECT * FROM metrics WHERE ts >= ? ORDER BY ts", (M0 + 3 * H,),
     "SELECT * FROM metrics WHERE ts >= TIMESTAMP '2024-01-01 03:00:00' ORDER BY ts"),
    ("SELECT count(*) AS n FROM metrics WHERE count BETWEEN $1 AND $2", (2, 4),
     "SELECT count(*) AS n FROM metrics WHERE count BETWEEN 2 AND 4"),
])
def test_query_with_parameters_equals_plain_doget(conn, client, sql, parameters, plain) -> None:
    expected = read_all(client, plain, OPTS)
    assert expected.num_rows > 0
    assert fetch(conn, sql, parameters).equals(expected)


def test_prepared_statement_reused_with_new_parameters(conn, client) -> None:
    sql = "SELECT ts, value FROM metrics WHERE station = ? ORDER BY ts"
    with conn.cursor() as cur:
        for station in ("a", "b", "a", "zz"):
            cur.execute(sql, (station,))
            expected = read_all(client, f"SELECT ts, value FROM metrics WHERE station = '{station}' ORDER BY ts")
            assert cur.fetch_arrow_table().equals(expected), station


def test_parameters_are_values_never_sql(conn, client) -> None:
    before = guard_rows(client)
    for value in ("a' OR '1'='1", "a'; DROP TABLE rw_guard; --"):
        got = fetch(conn, "SELECT * FROM metrics WHERE station = ?", (value,))
        assert got.num_rows == 0
    assert guard_rows(client).equals(before)


@pytest.mark.parametrize(("sql", "value"), [
    ("SELECT * FROM read_csv(?)", "/etc/passwd"),
    ("SELECT * FROM read_text(?)", "/etc/hostname"),
    ("SELECT * FROM query(?)", "DELETE FROM rw_guard"),
])
def test_parameters_cannot_reach_the_host_or_write(conn, client, sql: str, value: str) -> None:
    before = guard_rows(client)
    with pytest.raises(ADBC_ERROR) as info:
        fetch(conn, sql, (value,))
    assert "root:" not in str(info.value)
    assert guard_rows(client).equals(before)


def test_prepared_statement_schemas(client) -> None:
    request = pb.ActionCreatePreparedStatementRequest(
        query="SELECT ts, value FROM metrics WHERE value > ? AND station = $2")
    results = list(client.do_action(flight.Action("CreatePreparedStatement", packed(request)), OPTS))
    assert len(results) == 1
    wrapped = any_pb2.Any.FromString(results[0].body.to_pybytes())
    result = pb.ActionCreatePreparedStatementResult()
    assert wrapped.Unpack(result)
    dataset = pa.ipc.read_schema(pa.py_buffer(result.dataset_schema))
    assert dataset.equals(client.get_schema(flight.FlightDescriptor.for_path("metrics"), OPTS).schema.remove(3)
                          .remove(2))
    parameters = pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))
    assert parameters.names == ["1", "2"]
    assert [f.type for f in parameters] == [pa.float64(), pa.utf8()]
    assert result.is_update is False
    close = pb.ActionClosePreparedStatementRequest(prepared_statement_handle=result.prepared_statement_handle)
    assert list(client.do_action(flight.Action("ClosePreparedStatement", packed(close)), OPTS)) == []
    query = pb.CommandPreparedStatementQuery(prepared_statement_handle=result.prepared_statement_handle)
    with pytest.raises(pa.ArrowInvalid, match="unknown prepared statement handle"):
        client.get_flight_info(command(query), OPTS)


def test_plain_sql_starting_with_a_newline_is_still_sql(client) -> None:
    assert read_all(client, "\nSELECT 2 AS two", OPTS).to_pydict() == {"two": [2]}


# --- catalog ------------------------------------------------------------------------------------------------

def test_get_objects_lists_every_dataset_with_its_columns(conn, client) -> None:
    objects = conn.adbc_get_objects().read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["memory"]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["main"]
    tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
    assert set(tables) == {"metrics", "sink", *RW_DATASETS}
    assert {t["table_type"] for t in tables.values()} == {"TABLE"}
    expected = client.get_schema(flight.FlightDescriptor.for_path("metrics"), OPTS).schema
    columns = tables["metrics"]["table_columns"]
    assert [c["column_name"] for c in columns] == expected.names
    assert [c["ordinal_position"] for c in columns] == [1, 2, 3, 4]
    # Integer value columns are read as float64.
    assert [c["xdbc_type_name"] for c in columns] == ["TIMESTAMP", "DOUBLE", "DOUBLE", "VARCHAR"]


def test_concurrent_clients_get_their_own_results(runtime, client) -> None:
    import threading

    sql = "SELECT ts, value FROM metrics WHERE count = ? ORDER BY ts"
    expected = {n: read_all(client, f"SELECT ts, value FROM metrics WHERE count = {n} ORDER BY ts", OPTS)
                for n in range(1, 6)}
    failures: list[str] = []

    def worker(n: int) -> None:
        try:
            with connect(runtime.flight_location) as connection, connection.cursor() as cur:
                for _ in range(15):
                    cur.execute(sql, (n,))
                    if not cur.fetch_arrow_table().equals(expected[n]):
                        failures.append(f"wrong result for {n}")
        except Exception as exc:  # reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


def test_get_table_schema_equals_the_dataset_schema(conn, client) -> None:
    for name in ("metrics", "rw_guard"):
        expected = client.get_schema(flight.FlightDescriptor.for_path(name), OPTS).schema
        assert conn.adbc_get_table_schema(name).equals(expected)
    with pytest.raises(ADBC_ERROR):
        conn.adbc_get_table_schema("no_such_dataset")


def test_get_info_and_table_types(conn) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "flightcast"
    assert info["vendor_version"] == "0.1.0"
    assert info["vendor_arrow_version"] == pa.__version__
    assert conn.adbc_get_table_types() == ["TABLE"]


# The schemas FlightSql.proto defines, written out here independently of the server's constants.
PROTOCOL_SCHEMAS = {
    "CommandGetCatalogs": pa.schema([pa.field("catalog_name", pa.utf8(), False)]),
    "CommandGetDbSchemas": pa.schema([pa.field("catalog_name", pa.utf8()),
                                      pa.field("db_schema_name", pa.utf8(), False)]),
    "CommandGetTables": pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8()),
                                   pa.field("table_name", pa.utf8(), False),
                                   pa.field("table_type", pa.utf8(), False)]),
    "CommandGetTableTypes": pa.schema([pa.field("table_type", pa.utf8(), False)]),
    "CommandGetSqlInfo": pa.schema([
        pa.field("info_name", pa.uint32(), False),
        pa.field("value", pa.dense_union([
            pa.field("string_value", pa.utf8(), False), pa.field("bool_value", pa.bool_(), False),
            pa.field("bigint_value", pa.int64(), False), pa.field("int32_bitmask", pa.int32(), False),
            pa.field("string_list", pa.list_(pa.utf8()), False),
            pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), False)]), False)]),
}


@pytest.mark.parametrize("name", list(PROTOCOL_SCHEMAS))
def test_catalog_result_schemas_are_the_protocols(client, name: str) -> None:
    message = getattr(pb, name)()
    schema, table = fetch_command(client, message)
    assert schema.equals(PROTOCOL_SCHEMAS[name]), schema
    assert table.schema.equals(PROTOCOL_SCHEMAS[name]), table.schema
    assert client.get_schema(command(message), OPTS).schema.equals(PROTOCOL_SCHEMAS[name])


def test_get_tables_filters_and_includes_schemas(client) -> None:
    message = pb.CommandGetTables(table_name_filter_pattern="rw\\_%", include_schema=True)
    schema, table = fetch_command(client, message)
    assert schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type", "table_schema"]
    assert schema.field("table_schema").type == pa.binary() and not schema.field("table_schema").nullable
    assert table.column("table_name").to_pylist() == sorted(RW_DATASETS)
    stored = pa.ipc.read_schema(pa.py_buffer(table.column("table_schema")[0].as_py()))
    assert stored.equals(client.get_schema(flight.FlightDescriptor.for_path("rw_bad"), OPTS).schema)
    for pattern, names in (("m_tr%", ["metrics"]), ("%", sorted({"metrics", "sink", *RW_DATASETS})), ("x%", [])):
        _, table = fetch_command(client, pb.CommandGetTables(table_name_filter_pattern=pattern))
        assert table.column("table_name").to_pylist() == names, pattern
    for kwargs in ({"catalog": "other"}, {"db_schema_filter_pattern": "store"}, {"table_types": ["VIEW"]}):
        _, table = fetch_command(client, pb.CommandGetTables(**kwargs))
        assert table.num_rows == 0, kwargs


def test_sql_info(client) -> None:
    ids = [0, 1, 2, 3, 8, 10, 504]
    _, table = fetch_command(client, pb.CommandGetSqlInfo(info=ids))
    got = dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist(), strict=True))
    assert got == {0: "flightcast", 1: "0.1.0", 2: pa.__version__, 3: True, 8: 0, 10: True, 504: '"'}
    _, everything = fetch_command(client, pb.CommandGetSqlInfo())
    assert everything.num_rows >= len(ids)


def test_xdbc_type_info(client) -> None:
    schema, table = fetch_command(client, pb.CommandGetXdbcTypeInfo())
    assert schema.equals(flight_sql.XDBC_TYPE_INFO_SCHEMA)
    assert schema.field("create_params").type == pa.list_(pa.field("item", pa.utf8(), False))
    rows = table.to_pylist()
    assert [(r["data_type"], r["type_name"]) for r in rows] == sorted((r["data_type"], r["type_name"]) for r in rows)
    assert {"BIGINT", "DOUBLE", "VARCHAR", "TIMESTAMP"} <= {r["type_name"] for r in rows}
    _, only = fetch_command(client, pb.CommandGetXdbcTypeInfo(data_type=pb.XdbcDataType.Value("XDBC_VARCHAR")))
    assert only.column("type_name").to_pylist() == ["VARCHAR"]


# --- writes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", ["DELETE FROM rw_guard", "UPDATE rw_guard SET value = 0",
                                 "INSERT INTO rw_guard SELECT * FROM rw_guard"])
def test_updates_through_adbc_refused_and_nothing_changed(conn, client, sql: str) -> None:
    before = guard_rows(client)
    with conn.cursor() as cur, pytest.raises(ADBC_ERROR, match="INVALID_ARGUMENT"):
        cur.execute(sql)
    assert guard_rows(client).equals(before)


def test_update_commands_refused_with_invalid_argument(client) -> None:
    before = guard_rows(client)
    messages = [pb.CommandStatementUpdate(query="DELETE FROM rw_guard"),
                pb.CommandPreparedStatementUpdate(prepared_statement_handle=b"anything")]
    for message in messages:
        writer, _ = client.do_put(command(message), pa.schema([]), OPTS)
        with pytest.raises(pa.ArrowInvalid, match="read-only"):
            try:
                writer.done_writing()
            finally:
                writer.close()
    assert guard_rows(client).equals(before)


def ingest_rows(start: datetime, n: int = 3, value: float = 7.0) -> pa.Table:
    return pa.table({"ts": pa.array([start + i * H for i in range(n)], pa.timestamp("us")),
                     "value": pa.array([value + i for i in range(n)], pa.float64())})


def test_ingest_append_is_visible_at_once(conn, client) -> None:
    rows = ingest_rows(datetime(2031, 1, 1))
    with conn.cursor() as cur:
        assert cur.adbc_ingest("rw_ingest", rows, mode="append") == 3
    got = read_all(client, "SELECT * FROM rw_ingest WHERE ts >= '2031-01-01' ORDER BY ts", OPTS)
    assert got.equals(rows)
    assert fetch(conn, "SELECT count(*) AS n FROM rw_ingest").to_pydict() == {"n": [6]}


def test_ingest_into_a_from_flight_dataset(conn, client) -> None:
    rows = ingest_rows(datetime(2032, 1, 1), n=4)
    with conn.cursor() as cur:
        assert cur.adbc_ingest("sink", rows, mode="append") == 4
    assert read_all(client, "SELECT * FROM sink ORDER BY ts", OPTS).equals(rows)


@pytest.mark.parametrize(("target", "mode", "kwargs", "match"), [
    ("metrics", "append", {}, "read-only"),
    ("no_such_dataset", "append", {}, "not found"),
    ("rw_bad", "create", {}, "only appending"),
    ("rw_bad", "replace", {}, "only appending"),
    ("rw_bad", "create_append", {}, "only appending"),
    ("rw_bad", "append", {"temporary": True}, "temporary"),
    ("rw_bad", "append", {"db_schema_name": "store"}, "unknown schema"),
])
def test_ingest_anywhere_else_refused_and_nothing_written(conn, client, target, mode, kwargs, match) -> None:
    rows = ingest_rows(datetime(2033, 1, 1))
    before = {n: read_all(client, f"SELECT * FROM {n} ORDER BY ts", OPTS) for n in ("metrics", "rw_bad")}
    with conn.cursor() as cur, pytest.raises(ADBC_ERROR, match=match):
        cur.adbc_ingest(target, rows, mode=mode, **kwargs)
    for name, table in before.items():
        assert read_all(client, f"SELECT * FROM {name} ORDER BY ts", OPTS).equals(table), name


def test_ingest_schema_mismatch_refused_before_anything_is_written(conn, client) -> None:
    before = read_all(client, "SELECT * FROM rw_bad ORDER BY ts", OPTS)
    bad = pa.table({"ts": pa.array([datetime(2034, 1, 1)], pa.timestamp("us")), "value": ["text"]})
    with conn.cursor() as cur, pytest.raises(ADBC_ERROR, match="value"):
        cur.adbc_ingest("rw_bad", bad, mode="append")
    assert read_all(client, "SELECT * FROM rw_bad ORDER BY ts", OPTS).equals(before)


@pytest.mark.slow
def test_ingest_is_durable_across_kill_9(runtime_factory) -> None:
    first = runtime_factory(spicepod=build_pod(runtime_factory.new_dir()))
    rows = ingest_rows(datetime(2035, 1, 1), n=50)
    with connect(first.flight_location) as connection, connection.cursor() as cur:
        assert cur.adbc_ingest("rw_durable", rows, mode="append") == 50
    first.kill()
    second = runtime_factory(spicepod=first.spicepod, data_dir=first.data_dir)
    got = read_all(second.flight_client(), "SELECT * FROM rw_durable WHERE ts >= '2035-01-01' ORDER BY ts", OPTS)
    assert got.equals(rows)


# --- the sealed SQL surface ------------------------------------------------------------------------------------

REFUSED_IDS = [s[0] for s in refused_statements(Path("/d"), Path("/o"))]


@pytest.mark.parametrize("path", ["adbc", "statement_query"])
@pytest.mark.parametrize("statement_id", REFUSED_IDS)
def test_refused_statement(runtime, conn, client, tmp_path: Path, statement_id: str, path: str) -> None:
    data = runtime.spicepod.parent / "data"
    sql, must_not_exist = next((s, p) for i, s, p in refused_statements(data, tmp_path) if i == statement_id)
    before = guard_rows(client)
    metrics = read_all(client, "SELECT * FROM metrics ORDER BY ts", OPTS)
    if path == "adbc":
        with pytest.raises(ADBC_ERROR) as info:
            fetch(conn, sql)
    else:
        with pytest.raises(pa.ArrowInvalid) as info:
            fetch_command(client, pb.CommandStatementQuery(query=sql))
    assert "host file" not in str(info.value)
    if must_not_exist is not None:
        assert not must_not_exist.exists()
    assert guard_rows(client).equals(before)
    assert read_all(client, "SELECT * FROM metrics ORDER BY ts", OPTS).equals(metrics)


@pytest.mark.parametrize("path", ["adbc", "statement_query"])
def test_a_select_that_writes_is_refused(conn, client, path: str) -> None:
    # Parses as a SELECT; DuckDB's binder says it deletes every row of the stored table.
    sql = "WITH gone AS (DELETE FROM store.main.rw_guard RETURNING *) SELECT count(*) AS n FROM gone"
    before = guard_rows(client)
    if path == "adbc":
        with pytest.raises(ADBC_ERROR, match="refused a SELECT that writes"):
            fetch(conn, sql)
    else:
        with pytest.raises(pa.ArrowInvalid, match="refused a SELECT that writes"):
            fetch_command(client, pb.CommandStatementQuery(query=sql))
    assert guard_rows(client).equals(before)


# --- unimplemented ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    pb.CommandGetPrimaryKeys(table="metrics"),
    pb.CommandGetExportedKeys(table="metrics"),
    pb.CommandStatementSubstraitPlan(plan=pb.SubstraitPlan(plan=b"\x00", version="0.1")),
], ids=lambda m: type(m).__name__)
def test_unimplemented_command_named(client, message) -> None:
    name = type(message).__name__
    with pytest.raises(pa.ArrowNotImplementedError, match=name):
        client.get_flight_info(command(message), OPTS)
    with pytest.raises(pa.ArrowNotImplementedError, match=name):
        client.do_get(flight.Ticket(packed(message)), OPTS).read_all()


def test_unknown_protocol_message_is_unimplemented_not_sql(client) -> None:
    wrapped = any_pb2.Any(type_url="type.googleapis.com/arrow.flight.protocol.sql.CommandGetSomethingNew",
                          value=b"\x0a\x03abc")
    descriptor = flight.FlightDescriptor.for_command(wrapped.SerializeToString())
    with pytest.raises(pa.ArrowNotImplementedError, match="CommandGetSomethingNew"):
        client.get_flight_info(descriptor, OPTS)


@pytest.mark.parametrize("action", ["BeginTransaction", "CancelFlightInfo", "CloseSession",
                                    "CreatePreparedSubstraitPlan"])
def test_unimplemented_action_named(client, action: str) -> None:
    with pytest.raises(pa.ArrowNotImplementedError, match=action):
        list(client.do_action(flight.Action(action, b""), OPTS))


def test_list_actions_names_the_flight_sql_actions(client) -> None:
    actions = {a.type: a.description for a in client.list_actions(OPTS)}
    assert {"list_datasets", "dataset_info", "CreatePreparedStatement", "ClosePreparedStatement"} <= set(actions)
    assert all(actions.values())


# --- prepared statement handles are bounded -----------------------------------------------------------------

def create_prepared(client, sql: str = "SELECT 1 AS x") -> bytes:
    request = pb.ActionCreatePreparedStatementRequest(query=sql)
    body = list(client.do_action(flight.Action("CreatePreparedStatement", packed(request)), OPTS))[0].body
    result = pb.ActionCreatePreparedStatementResult()
    any_pb2.Any.FromString(body.to_pybytes()).Unpack(result)
    return result.prepared_statement_handle


def test_a_connection_that_never_closes_handles_keeps_a_bounded_number(runtime) -> None:
    leaky = runtime.flight_client()
    handles = [create_prepared(leaky) for _ in range(flight_sql.MAX_HANDLES_PER_PEER + 10)]
    oldest, newest = handles[0], handles[-1]
    with pytest.raises(pa.ArrowInvalid, match="unknown prepared statement handle"):
        leaky.get_flight_info(command(pb.CommandPreparedStatementQuery(prepared_statement_handle=oldest)), OPTS)
    info = leaky.get_flight_info(command(pb.CommandPreparedStatementQuery(prepared_statement_handle=newest)), OPTS)
    assert leaky.do_get(info.endpoints[0].ticket, OPTS).read_all().to_pydict() == {"x": [1]}


def test_handles_expire_and_are_bounded_in_total() -> None:
    now = [0.0]
    handles = flight_sql.PreparedStatements(per_peer=3, total=5, idle_s=10, clock=lambda: now[0])

    def statement(peer: str) -> flight_sql.PreparedStatement:
        return flight_sql.PreparedStatement("SELECT 1", peer, [], pa.schema([]), pa.schema([]))

    first = [handles.add(statement(f"peer{i}")) for i in range(5)]
    assert len(handles) == 5
    extra = handles.add(statement("peer9"))
    assert len(handles) == 5 and handles.get(extra).peer == "peer9"
    with pytest.raises(Exception, match="unknown prepared statement handle"):
        handles.get(first[0])
    now[0] = 5.0
    handles.get(first[1])  # used: its idle clock starts again
    now[0] = 12.0
    assert handles.get(first[1]).peer == "peer1"
    assert len(handles) == 1  # the rest were idle for more than 10 s
    for _ in range(5):
        handles.add(statement("same"))
    assert handles.count("same") == 3
    single = flight_sql.PreparedStatements(per_peer=1, total=2)
    kept = [single.add(statement("one")) for _ in range(3)][-1]
    assert single.count("one") == 1 and len(single) == 1 and single.get(kept).peer == "one"


# --- authentication --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFlight]:
    folder = tmp_path_factory.mktemp("flight_sql_keyed")
    build_pod(folder)
    with flight_server(folder, api_key=KEY) as served:
        yield served


def test_auth_bearer_option(keyed) -> None:
    with connect(keyed.flight_location, **{
            adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {KEY}"}) as connection:
        assert fetch(connection, "SELECT count(*) AS n FROM metrics").to_pydict() == {"n": [5]}


@pytest.mark.parametrize("username", ["analyst", "ab", ""])
def test_auth_username_password(keyed, username: str) -> None:
    # `user:key` of every length modulo 3: base64 with no, one and two padding characters (the Go driver
    # leaves padding out)
    assert len({len(f"{u}:{KEY}") % 3 for u in ("analyst", "ab", "")}) == 3
    with connect(keyed.flight_location, username=username, password=KEY) as connection:
        assert fetch(connection, "SELECT count(*) AS n FROM metrics").to_pydict() == {"n": [5]}
        with connection.cursor() as cur:
            assert cur.adbc_ingest("rw_ingest", ingest_rows(datetime(2036, 1, 1) + len(username) * H, 1),
                                   mode="append") == 1


@pytest.mark.parametrize("credentials", [{}, {"username": "analyst", "password": WRONG},
                                         {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value:
                                          f"Bearer {WRONG}"}], ids=["none", "wrong_password", "wrong_bearer"])
def test_auth_refused_unauthenticated(keyed, credentials: dict) -> None:
    with pytest.raises(ADBC_ERROR, match="UNAUTHENTICATED") as info:
        with connect(keyed.flight_location, **credentials) as connection:
            fetch(connection, "SELECT 1")
    assert KEY not in str(info.value) and WRONG not in str(info.value)


def test_handshake_basic_auth_without_padding_gets_a_bearer_token(keyed) -> None:
    raw = base64.b64encode(f"a:{KEY}".encode()).decode()
    assert raw.endswith("=")
    client = keyed.flight_client()
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Basic {raw.rstrip('=')}".encode())],
                                       timeout=30)

    class Silent(flight.ClientAuthHandler):
        def authenticate(self, outgoing, incoming):
            pass

        def get_token(self):
            return b""

    client.authenticate(Silent(), options=options)
    wrong = base64.b64encode(f"a:{WRONG}".encode()).decode().rstrip("=")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate(Silent(), options=flight.FlightCallOptions(
            headers=[(b"authorization", f"Basic {wrong}".encode())], timeout=30))


def test_plain_flight_unchanged_beside_flight_sql(client) -> None:
    assert read_all(client, "metrics", OPTS).num_rows == 5
    table = ingest_rows(datetime(2037, 1, 1), n=2)
    assert do_put(client, "rw_ingest", table, OPTS) == {"dataset": "rw_ingest", "rows": 2}
    with pytest.raises(pa.ArrowInvalid):
        list(client.do_action(flight.Action("no_such_action", b""), OPTS))
