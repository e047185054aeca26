"""The Arrow Flight data plane through a real runtime and a real pyarrow.flight client (SPEC section 5).

Flight status codes as pyarrow 26 clients see them (checked against a bare pyarrow server):
INVALID_ARGUMENT -> pa.ArrowInvalid, NOT_FOUND -> pa.ArrowKeyError, UNAUTHENTICATED ->
flight.FlightUnauthenticatedError; an unmapped server exception arrives as flight.FlightServerError.
One runtime, in this process (harness.InProcessRuntime), serves the whole module; each test that writes uses a
dataset of its own.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from conftest import (
    copy_data,
    do_put,
    parse_instant,
    read_all,
    refused_statements,
    utc_instants,
    write_csv_text,
    write_spicepod,
    write_table,
)

OPTS = flight.FlightCallOptions(timeout=30)
INVALID = pa.ArrowInvalid  # INVALID_ARGUMENT
NOT_FOUND = pa.ArrowKeyError  # NOT_FOUND

# metrics: the read dataset whose exact content the tests know
H = timedelta(hours=1)
M0 = datetime(2024, 1, 1)
METRICS_TS = [M0 + i * H for i in range(5)]
METRICS_VALUE = [1.5, 2.5, 3.5, 4.5, 5.5]
METRICS_COUNT = [1, 2, 3, 4, 5]
METRICS_STATION = ["a", "b", "a", "b", "a"]

# time formats: the same instants written in each format
T0 = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
INSTANTS = [T0, T0 + H, T0 + timedelta(hours=2, minutes=30)]
INSTANTS_MS = [T0, T0 + H, T0 + timedelta(hours=2, minutes=30, milliseconds=250)]
TF_VALUES = [10.0, 20.0, 30.0]


def typed_series(times, values, counts) -> pa.Table:
    return pa.table({
        "ts": pa.array(times, pa.timestamp("us")),
        "value": pa.array(values, pa.float64()),
        "count": pa.array(counts, pa.int64()),
    })


FMT_TABLE = typed_series([datetime(2023, 6, 1) + i * timedelta(days=1) for i in range(4)],
                         [0.25, -1.0, 3.75, 1e6], [10, 20, 30, 40])
# what a load makes of it: integer value columns are read as float64
FMT_LOADED = FMT_TABLE.set_column(2, "count", FMT_TABLE.column("count").cast(pa.float64()))


def build_pod(folder: Path) -> str:
    """Write every data file the module's spicepod uses; return the spicepod text."""
    d = folder / "data"
    write_csv_text(d / "metrics.csv", "ts,value,count,station\n" + "".join(
        f"{t:%Y-%m-%d %H:%M:%S},{v},{c},{s}\n"
        for t, v, c, s in zip(METRICS_TS, METRICS_VALUE, METRICS_COUNT, METRICS_STATION, strict=True)))
    for name in ("rw", "rw_guard", "rw_bad", "rw_empty"):
        write_csv_text(d / f"{name}.csv", "ts,value\n2024-01-01 00:00:00,1.0\n2024-01-02 00:00:00,2.0\n"
                       "2024-01-03 00:00:00,3.0\n")
    write_table(d / "rw_widen.parquet", pa.table({
        "ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
        "n": pa.array([1], pa.int64()), "x": pa.array([0.5], pa.float64())}))
    write_table(d / "fmt.csv", FMT_TABLE)
    write_table(d / "fmt.parquet", FMT_TABLE)
    write_table(d / "fmt.arrow", FMT_TABLE)
    write_table(d / "fmt.feather", FMT_TABLE)
    rows = list(zip(INSTANTS, TF_VALUES, strict=True))
    rows_ms = list(zip(INSTANTS_MS, TF_VALUES, strict=True))
    write_csv_text(d / "tf_timestamp.csv", "ts,value\n" + "".join(
        f"{t:%Y-%m-%d %H:%M:%S},{v}\n" for t, v in rows))
    write_csv_text(d / "tf_timestamptz.csv", "ts,value\n"
                   "2024-03-01T14:00:00+02:00,10.0\n2024-03-01T08:00:00-05:00,20.0\n"
                   "2024-03-01T14:30:00Z,30.0\n")
    write_csv_text(d / "tf_unix_seconds.csv", "ts,value\n" + "".join(
        f"{int(t.timestamp())},{v}\n" for t, v in rows))
    write_csv_text(d / "tf_unix_millis.csv", "ts,value\n" + "".join(
        f"{round(t.timestamp() * 1000)},{v}\n" for t, v in rows_ms))
    write_csv_text(d / "tf_iso8601.csv", "ts,value\n"
                   "2024-03-01T12:00:00Z,10.0\n2024-03-01T13:00:00Z,20.0\n2024-03-01T14:30:00.250Z,30.0\n")
    write_table(d / "tf_unix_millis.parquet", pa.table({
        "ts": pa.array([round(t.timestamp() * 1000) for t in INSTANTS_MS], pa.int64()),
        "value": pa.array(TF_VALUES)}))
    write_table(d / "tf_iso8601.parquet", pa.table({
        "ts": pa.array(["2024-03-01T12:00:00", "2024-03-01T13:00:00", "2024-03-01T14:30:00.250"]),
        "value": pa.array(TF_VALUES)}))
    write_table(d / "tf_custom.arrow", pa.table({
        "at": pa.array([int(t.timestamp()) for t in INSTANTS], pa.int64()),
        "value": pa.array(TF_VALUES)}))
    copy_data("austres.csv", d)
    write_table(d / "secret.parquet", pa.table({"secret": ["host file"]}))
    (d / "secret.json").write_text('{"secret": "host file"}\n')

    def file_ds(name, path, extra=""):
        source = path if str(path).startswith("file:") else f"file:{path}"
        return f"  - from: {source}\n    name: {name}\n{extra}"

    def tf(name, path, fmt, extra=""):
        return file_ds(name, path, f"    time_format: {fmt}\n{extra}")

    return (
        "version: v1\nkind: Spicepod\nname: flight_tests\ndatasets:\n"
        + file_ds("metrics", "data/metrics.csv")
        + "".join(file_ds(n, f"data/{n}.csv", "    mode: read_write\n")
                  for n in ("rw", "rw_guard", "rw_bad", "rw_empty"))
        + file_ds("rw_widen", "data/rw_widen.parquet", "    mode: read_write\n")
        + "  - from: flight\n    name: sink\n"
        + "  - from: flight\n    name: sink2\n"
        + "  - from: flight\n    name: sink_never\n"
        + "  - from: flight\n    name: sink_concurrent\n"
        + "  - from: flight\n    name: sink_widen\n"
        + file_ds("fmt_csv", "data/fmt.csv") + file_ds("fmt_parquet", "data/fmt.parquet")
        + file_ds("fmt_arrow", f"file://{d / 'fmt.arrow'}") + file_ds("fmt_feather", "data/fmt.feather")
        + tf("tf_timestamp", "data/tf_timestamp.csv", "timestamp")
        + tf("tf_timestamptz", "data/tf_timestamptz.csv", "timestamptz")
        + tf("tf_unix_seconds", "data/tf_unix_seconds.csv", "unix_seconds")
        + tf("tf_unix_millis", "data/tf_unix_millis.csv", "unix_millis")
        + tf("tf_iso8601", "data/tf_iso8601.csv", "ISO8601")
        + tf("tf_unix_millis_parquet", "data/tf_unix_millis.parquet", "unix_millis")
        + tf("tf_iso8601_parquet", "data/tf_iso8601.parquet", "ISO8601")
        + tf("tf_custom", "data/tf_custom.arrow", "unix_seconds", "    time_column: at\n")
        + file_ds("austres", "data/austres.csv")
    )


READ_COUNTS = {
    "metrics": 5, "fmt_csv": 4, "fmt_parquet": 4, "fmt_arrow": 4, "fmt_feather": 4,
    "tf_timestamp": 3, "tf_timestamptz": 3, "tf_unix_seconds": 3, "tf_unix_millis": 3, "tf_iso8601": 3,
    "tf_unix_millis_parquet": 3, "tf_iso8601_parquet": 3, "tf_custom": 3, "austres": 89, "rw_guard": 3,
}
ALL_DATASETS = set(READ_COUNTS) | {"rw", "rw_bad", "rw_empty", "rw_widen", "sink", "sink2", "sink_never",
                                      "sink_concurrent", "sink_widen"}


@pytest.fixture(scope="module")
def runtime(module_inprocess_factory):
    """The whole runtime in this process: the Flight data plane needs no process of its own."""
    folder = module_inprocess_factory.new_dir()
    path = write_spicepod(folder, build_pod(folder))
    return module_inprocess_factory(spicepod=path)


@pytest.fixture(scope="module")
def client(runtime) -> flight.FlightClient:
    return runtime.flight_client()


def assert_metrics(table: pa.Table) -> None:
    table = table.sort_by("ts")
    assert table.column_names == ["ts", "value", "count", "station"]
    assert pa.types.is_timestamp(table.schema.field("ts").type) and table.schema.field("ts").type.tz is None
    assert table.schema.field("value").type == pa.float64()
    assert table.schema.field("count").type == pa.float64()  # integer value columns are read as float64
    assert pa.types.is_string(table.schema.field("station").type) or pa.types.is_large_string(
        table.schema.field("station").type)
    assert table.column("ts").to_pylist() == METRICS_TS
    assert table.column("value").to_pylist() == METRICS_VALUE
    assert table.column("count").to_pylist() == METRICS_COUNT
    assert table.column("station").to_pylist() == METRICS_STATION


def count_rows(client, name: str) -> int:
    return read_all(client, f"SELECT count(*) AS n FROM {name}", OPTS).column("n")[0].as_py()


# --- listing and describing ----------------------------------------------------------------------------

def test_list_flights(client) -> None:
    infos = list(client.list_flights(options=OPTS))
    names = [info.descriptor.path[0].decode() for info in infos]
    assert len(names) == len(set(names)), names
    assert set(names) <= ALL_DATASETS, names
    assert set(READ_COUNTS) <= set(names), names
    by_name = {info.descriptor.path[0].decode(): info for info in infos}
    for name, rows in READ_COUNTS.items():
        info = by_name[name]
        assert info.descriptor.descriptor_type == flight.DescriptorType.PATH
        assert info.descriptor.path == [name.encode()]
        assert info.total_records == rows, name
        assert len(info.endpoints) == 1, name
        table = client.do_get(info.endpoints[0].ticket, options=OPTS).read_all()
        assert table.num_rows == rows, name
        assert table.schema.equals(info.schema), (name, table.schema, info.schema)
    assert by_name["metrics"].schema.names == ["ts", "value", "count", "station"]


def test_get_flight_info_by_path(client) -> None:
    info = client.get_flight_info(flight.FlightDescriptor.for_path("metrics"), OPTS)
    assert info.descriptor.path == [b"metrics"]
    assert info.total_records == 5
    assert len(info.endpoints) == 1
    table = client.do_get(info.endpoints[0].ticket, options=OPTS).read_all()
    assert_metrics(table)
    assert table.schema.equals(info.schema)


def test_get_schema_by_path(client) -> None:
    schema = client.get_schema(flight.FlightDescriptor.for_path("metrics"), OPTS).schema
    assert schema.names == ["ts", "value", "count", "station"]
    assert schema.equals(client.get_flight_info(flight.FlightDescriptor.for_path("metrics"), OPTS).schema)
    assert schema.equals(read_all(client, "metrics", OPTS).schema)


SQL = "SELECT ts, value * 2 AS doubled FROM metrics WHERE value > 2 ORDER BY ts"


def test_get_flight_info_by_sql(client) -> None:
    info = client.get_flight_info(flight.FlightDescriptor.for_command(SQL), OPTS)
    assert info.schema.names == ["ts", "doubled"]
    assert pa.types.is_timestamp(info.schema.field("ts").type)
    assert info.schema.field("doubled").type == pa.float64()
    assert len(info.endpoints) == 1
    assert info.endpoints[0].ticket.ticket == SQL.encode()
    table = client.do_get(info.endpoints[0].ticket, options=OPTS).read_all()
    assert table.schema.equals(info.schema)
    assert table.column("doubled").to_pylist() == [5.0, 7.0, 9.0, 11.0]
    assert table.column("ts").to_pylist() == METRICS_TS[1:]


def test_get_schema_by_sql(client) -> None:
    schema = client.get_schema(flight.FlightDescriptor.for_command(SQL), OPTS).schema
    assert schema.names == ["ts", "doubled"]
    assert schema.field("doubled").type == pa.float64()


# --- DoGet ------------------------------------------------------------------------------------------------

def test_do_get_bare_dataset_name(client) -> None:
    assert_metrics(read_all(client, "metrics", OPTS))


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT count(*) AS n, sum(value) AS s FROM metrics", {"n": [5], "s": [17.5]}),
    ("SELECT station, max(value) AS m, sum(count) AS c FROM metrics GROUP BY station ORDER BY station",
     {"station": ["a", "b"], "m": [5.5, 4.5], "c": [9, 6]}),
    ("SELECT ts, value FROM metrics ORDER BY ts DESC LIMIT 2",
     {"ts": [METRICS_TS[4], METRICS_TS[3]], "value": [5.5, 4.5]}),
    ("SELECT count(*) AS n FROM metrics m JOIN rw_guard g ON m.ts = g.ts", {"n": [1]}),
    ("select 42 as answer;", {"answer": [42]}),
    ("SELECT * FROM metrics WHERE value > 100", {"ts": [], "value": [], "count": [], "station": []}),
])
def test_do_get_sql_ticket(client, sql: str, expected: dict) -> None:
    table = read_all(client, sql, OPTS)
    assert table.to_pydict() == expected


def test_do_get_empty_result_keeps_the_schema(client) -> None:
    table = read_all(client, "SELECT * FROM metrics WHERE value > 100", OPTS)
    assert table.num_rows == 0
    assert table.schema.names == ["ts", "value", "count", "station"]
    assert table.schema.field("value").type == pa.float64()


def test_do_get_large_result_streams(client) -> None:
    reader = client.do_get(flight.Ticket(b"SELECT i, i * 2 AS j FROM range(2000000) t(i)"), options=OPTS)
    rows = total = 0
    for chunk in reader:
        rows += chunk.data.num_rows
        total += pc.sum(chunk.data.column("j")).as_py() or 0
    assert rows == 2_000_000
    assert total == 2 * (2_000_000 - 1) * 2_000_000 // 2


def test_concurrent_do_gets(runtime, client) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            c = flight.FlightClient(runtime.flight_location)
            try:
                for _ in range(5):
                    assert_metrics(read_all(c, "SELECT * FROM metrics", OPTS))
            finally:
                c.close()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


# --- file formats and time formats --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fmt_parquet", "fmt_arrow", "fmt_feather"])
def test_typed_file_formats_load_exactly(client, name: str) -> None:
    table = read_all(client, f"SELECT * FROM {name} ORDER BY ts", OPTS)
    assert table.equals(FMT_LOADED), (table.schema, table.to_pydict())


def test_csv_format_loads(client) -> None:
    table = read_all(client, "SELECT * FROM fmt_csv ORDER BY ts", OPTS)
    assert table.column_names == ["ts", "value", "count"]
    assert pa.types.is_timestamp(table.schema.field("ts").type)
    assert utc_instants(table.column("ts")) == utc_instants(FMT_TABLE.column("ts"))
    assert table.column("value").to_pylist() == FMT_TABLE.column("value").to_pylist()
    assert table.column("count").to_pylist() == FMT_TABLE.column("count").to_pylist()


@pytest.mark.parametrize(("name", "instants"), [
    ("tf_timestamp", INSTANTS),
    ("tf_timestamptz", INSTANTS),
    ("tf_unix_seconds", INSTANTS),
    ("tf_unix_millis", INSTANTS_MS),
    ("tf_iso8601", INSTANTS_MS),
    ("tf_unix_millis_parquet", INSTANTS_MS),
    ("tf_iso8601_parquet", INSTANTS_MS),
])
def test_time_formats_load_as_timestamps(client, name: str, instants: list[datetime]) -> None:
    schema = client.get_schema(flight.FlightDescriptor.for_path(name), OPTS).schema
    assert pa.types.is_timestamp(schema.field("ts").type), schema
    table = read_all(client, f"SELECT * FROM {name} ORDER BY ts", OPTS)
    assert pa.types.is_timestamp(table.schema.field("ts").type), table.schema
    assert utc_instants(table.column("ts")) == instants
    assert table.column("value").to_pylist() == TF_VALUES


def test_custom_time_column(client) -> None:
    table = read_all(client, 'SELECT * FROM tf_custom ORDER BY "at"', OPTS)
    assert pa.types.is_timestamp(table.schema.field("at").type), table.schema
    assert utc_instants(table.column("at")) == INSTANTS


def test_dates_in_csv_become_timestamps(client) -> None:
    table = read_all(client, "SELECT * FROM austres ORDER BY ts", OPTS)
    assert pa.types.is_timestamp(table.schema.field("ts").type), table.schema
    assert table.num_rows == 89
    assert table.column("ts")[0].as_py().replace(tzinfo=None) == datetime(1971, 4, 1)
    assert table.column("ts")[88].as_py().replace(tzinfo=None) == datetime(1993, 4, 1)
    assert table.column("value")[0].as_py() == 13067.3


# --- DoPut -------------------------------------------------------------------------------------------------

SINK_TABLE = pa.table({
    "ts": pa.array([datetime(2024, 5, 1, h) for h in range(4)], pa.timestamp("us")),
    "value": pa.array([1.25, None, -3.5, 1e10], pa.float64()),
    "count": pa.array([1, 2, None, -4], pa.int64()),
    "name": pa.array(["x", "y", None, "ünïcode"], pa.string()),
    "flag": pa.array([True, False, None, True], pa.bool_()),
})


def test_do_put_flight_dataset_round_trip(runtime, client) -> None:
    result = do_put(client, "sink", SINK_TABLE, OPTS)
    assert result == {"dataset": "sink", "rows": 4}
    got = read_all(client, "SELECT * FROM sink ORDER BY ts", OPTS)
    assert got.schema.equals(SINK_TABLE.schema), got.schema
    assert got.equals(SINK_TABLE), got.to_pydict()
    # the first DoPut gave the dataset its schema
    schema = client.get_schema(flight.FlightDescriptor.for_path("sink"), OPTS).schema
    assert schema.equals(SINK_TABLE.schema)
    # a second stream, in two batches, appends
    more = pa.table({
        "ts": pa.array([datetime(2024, 5, 2), datetime(2024, 5, 3)], pa.timestamp("us")),
        "value": [7.0, 8.0], "count": pa.array([7, 8], pa.int64()), "name": ["p", "q"],
        "flag": [False, False],
    }, schema=SINK_TABLE.schema)
    assert do_put(client, "sink", more.to_batches(max_chunksize=1), OPTS) == {"dataset": "sink", "rows": 2}
    got = read_all(client, "sink", OPTS).sort_by("ts")
    assert got.equals(pa.concat_tables([SINK_TABLE, more])), got.to_pydict()
    info = client.get_flight_info(flight.FlightDescriptor.for_path("sink"), OPTS)
    assert info.total_records == 6


def test_flight_dataset_keeps_its_first_schema(client) -> None:
    first = pa.table({"ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")), "v": [1.0]})
    assert do_put(client, "sink2", first, OPTS) == {"dataset": "sink2", "rows": 1}
    other = pa.table({"ts": pa.array([datetime(2024, 1, 2)], pa.timestamp("us")), "other": [2.0]})
    with pytest.raises(INVALID) as info:
        do_put(client, "sink2", other, OPTS)
    assert "other" in str(info.value) or "'v'" in str(info.value), str(info.value)
    assert read_all(client, "sink2", OPTS).equals(first)


def test_do_put_read_write_round_trip(runtime, client) -> None:
    schema = client.get_schema(flight.FlightDescriptor.for_path("rw"), OPTS).schema
    assert schema.names == ["ts", "value"]
    assert pa.types.is_timestamp(schema.field("ts").type)
    new = pa.table({"ts": pa.array([datetime(2030, 1, 1), datetime(2030, 1, 2)], schema.field("ts").type),
                    "value": pa.array([10.5, 11.5], schema.field("value").type)}, schema=schema)
    assert do_put(client, "rw", new, OPTS) == {"dataset": "rw", "rows": 2}
    got = read_all(client, "SELECT * FROM rw WHERE ts >= TIMESTAMP '2030-01-01' ORDER BY ts", OPTS)
    assert got.equals(new), (got.schema, got.to_pydict())
    # visible to the next DoGet, ListFlights and /v1/datasets
    assert count_rows(client, "rw") == 5
    info = {i.descriptor.path[0].decode(): i for i in client.list_flights(options=OPTS)}["rw"]
    assert info.total_records == 5
    entry = {d["name"]: d for d in runtime.get_json("/v1/datasets")}["rw"]
    assert entry["rows"] == 5
    assert parse_instant(entry["last_timestamp"]) == datetime(2030, 1, 2, tzinfo=timezone.utc)


def test_do_put_lossless_widening(client) -> None:
    # rw_widen's integer column `n` was read as float64 at load: int32 and int64 (pandas' default) go in
    narrow = pa.table({"ts": pa.array([datetime(2024, 2, 1)], pa.timestamp("us")),
                       "n": pa.array([7], pa.int32()), "x": pa.array([2.25], pa.float32())})
    assert do_put(client, "rw_widen", narrow, OPTS) == {"dataset": "rw_widen", "rows": 1}
    pandas_like = pa.table({"ts": pa.array([datetime(2024, 2, 2)], pa.timestamp("ms")),
                            "n": pa.array([-12], pa.int64()), "x": pa.array([3], pa.int64())})
    assert do_put(client, "rw_widen", pandas_like, OPTS) == {"dataset": "rw_widen", "rows": 1}
    got = read_all(client, "SELECT * FROM rw_widen ORDER BY ts", OPTS)
    assert got.schema.field("n").type == pa.float64() and got.schema.field("x").type == pa.float64()
    assert got.column("n").to_pylist() == [1.0, 7.0, -12.0]
    assert got.column("x").to_pylist() == [0.5, 2.25, 3.0]


def test_do_put_integer_widening(client) -> None:
    first = pa.table({"ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")), "n": pa.array([1], pa.int64())})
    assert do_put(client, "sink_widen", first, OPTS) == {"dataset": "sink_widen", "rows": 1}
    narrow = pa.table({"ts": pa.array([datetime(2024, 1, 2)], pa.timestamp("s")), "n": pa.array([-2], pa.int8())})
    assert do_put(client, "sink_widen", narrow, OPTS) == {"dataset": "sink_widen", "rows": 1}
    got = read_all(client, "SELECT * FROM sink_widen ORDER BY ts", OPTS)
    assert got.schema.field("n").type == pa.int64()
    assert got.column("n").to_pylist() == [1, -2]
    wide = pa.table({"ts": pa.array([datetime(2024, 1, 3)], pa.timestamp("us")), "n": pa.array([3.0])})
    with pytest.raises(INVALID, match="'n' has type double, expected int64"):
        do_put(client, "sink_widen", wide, OPTS)


def test_do_put_nanoseconds_are_kept_when_whole_microseconds(client) -> None:
    whole = pa.table({"ts": pa.array([1_900_000_000_123_456_000], pa.timestamp("ns")),
                      "n": pa.array([8], pa.int64()), "x": pa.array([1.5], pa.float64())})
    before = count_rows(client, "rw_widen")
    assert do_put(client, "rw_widen", whole, OPTS) == {"dataset": "rw_widen", "rows": 1}
    got = read_all(client, "SELECT ts FROM rw_widen WHERE n = 8", OPTS)
    assert got.column("ts").cast(pa.int64()).to_pylist() == [1_900_000_000_123_456]  # microseconds
    finer = pa.table({"ts": pa.array([1_900_000_001_000_000_001], pa.timestamp("ns")),
                      "n": pa.array([9], pa.int64()), "x": pa.array([1.5], pa.float64())})
    with pytest.raises(INVALID, match="finer than a microsecond"):
        do_put(client, "rw_widen", finer, OPTS)
    assert count_rows(client, "rw_widen") == before + 1


@pytest.mark.parametrize(("unit", "value"), [("s", 9 * 10**15), ("ms", -(10**17)), ("us", 253402300800 * 10**6)])
def test_do_put_of_a_timestamp_past_the_year_9999_is_refused_and_stores_nothing(client, unit, value) -> None:
    far = pa.table({"ts": pa.array([value], pa.timestamp(unit)),
                    "n": pa.array([10], pa.int64()), "x": pa.array([1.5], pa.float64())})
    before = count_rows(client, "rw_widen")
    with pytest.raises(INVALID, match=r"column 'ts' has a timestamp outside the years 1 to 9999 \("
                                      + str(value) + " " + unit + r" since 1970\); nothing was stored"):
        do_put(client, "rw_widen", far, OPTS)
    assert count_rows(client, "rw_widen") == before


def test_do_put_empty_stream(client) -> None:
    schema = client.get_schema(flight.FlightDescriptor.for_path("rw_empty"), OPTS).schema
    assert do_put(client, "rw_empty", schema.empty_table(), OPTS) == {"dataset": "rw_empty", "rows": 0}
    assert count_rows(client, "rw_empty") == 3


BAD_TS = pa.array([datetime(2031, 1, 1), datetime(2031, 1, 2)], pa.timestamp("us"))


@pytest.mark.parametrize(("table", "column"), [
    (pa.table({"ts": BAD_TS, "amount": [1.0, 2.0]}), ("amount", "value")),
    (pa.table({"ts": BAD_TS, "value": ["1.0", "2.0"]}), ("value",)),
    (pa.table({"ts": BAD_TS}), ("value",)),
    (pa.table({"ts": BAD_TS, "value": [1.0, 2.0], "extra": [1, 2]}), ("extra",)),
    (pa.table({"ts": pa.array(["2031-01-01", "2031-01-02"]), "value": [1.0, 2.0]}), ("ts",)),
    (pa.table({"ts": BAD_TS, "value": pa.array([True, False])}), ("value",)),
], ids=["wrong_name", "wrong_type", "missing_column", "extra_column", "string_time", "bool_into_double"])
def test_do_put_schema_mismatch_refused(client, table: pa.Table, column: tuple[str, ...]) -> None:
    before = read_all(client, "SELECT * FROM rw_bad ORDER BY ts", OPTS)
    with pytest.raises(INVALID) as info:
        do_put(client, "rw_bad", table, OPTS)
    message = str(info.value)
    assert any(c in message for c in column), message
    assert read_all(client, "SELECT * FROM rw_bad ORDER BY ts", OPTS).equals(before)


def test_do_put_to_read_dataset_refused(client) -> None:
    table = pa.table({"ts": pa.array([datetime(2030, 1, 1)], pa.timestamp("us")), "value": [1.0],
                      "count": pa.array([1], pa.int64()), "station": ["z"]})
    with pytest.raises(INVALID) as info:
        do_put(client, "metrics", table, OPTS)
    assert "metrics" in str(info.value)
    assert_metrics(read_all(client, "metrics", OPTS))


def test_do_put_to_unknown_dataset_not_found(client) -> None:
    table = pa.table({"ts": pa.array([datetime(2030, 1, 1)], pa.timestamp("us")), "value": [1.0]})
    with pytest.raises(NOT_FOUND) as info:
        do_put(client, "nope_dataset", table, OPTS)
    assert "nope_dataset" in str(info.value)


def test_do_put_with_command_descriptor_refused(client) -> None:
    table = pa.table({"ts": pa.array([datetime(2030, 1, 1)], pa.timestamp("us")), "value": [1.0]})
    descriptor = flight.FlightDescriptor.for_command(b"rw_bad")
    writer, _reader = client.do_put(descriptor, table.schema, options=OPTS)
    with pytest.raises(INVALID):
        try:
            writer.write_table(table)
            writer.done_writing()
        finally:
            writer.close()
    assert count_rows(client, "rw_bad") == 3


# --- errors ------------------------------------------------------------------------------------------------

def test_bad_sql_invalid_argument_with_duckdb_message(client) -> None:
    for call in (
        lambda: read_all(client, "SELEC 1", OPTS),
        lambda: client.get_flight_info(flight.FlightDescriptor.for_command("SELEC 1"), OPTS),
        lambda: client.get_schema(flight.FlightDescriptor.for_command("SELEC 1"), OPTS),
    ):
        with pytest.raises(INVALID) as info:
            call()
        assert 'syntax error at or near "SELEC"' in str(info.value)


def test_sql_on_unknown_table(client) -> None:
    with pytest.raises(INVALID) as info:
        read_all(client, "SELECT * FROM nope_table", OPTS)
    assert "nope_table" in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.parametrize("name", ["nope_dataset", 'metrics"; DROP TABLE rw_guard; --'])
@pytest.mark.parametrize("call", ["get_flight_info", "get_schema"])
def test_unknown_dataset_path_not_found(client, call: str, name: str) -> None:
    with pytest.raises(NOT_FOUND) as info:
        getattr(client, call)(flight.FlightDescriptor.for_path(name), OPTS)
    assert name in str(info.value)
    assert count_rows(client, "rw_guard") == 3


@pytest.mark.parametrize("ticket", [b"", b"\xff\xfe\x00", b"   "], ids=["empty", "not_utf8", "blank"])
def test_malformed_ticket_invalid_argument(client, ticket: bytes) -> None:
    with pytest.raises(INVALID):
        client.do_get(flight.Ticket(ticket), options=OPTS).read_all()
    assert count_rows(client, "metrics") == 5


def test_error_mid_stream_is_not_a_short_result(client) -> None:
    sql = ("SELECT i, CAST(CASE WHEN i < 1500000 THEN '1' ELSE 'x' END AS INTEGER) AS v "
           "FROM range(2000000) t(i)")
    with pytest.raises(INVALID) as info:
        read_all(client, sql, OPTS)
    assert "Conversion Error" in str(info.value)
    assert count_rows(client, "metrics") == 5


def test_concurrent_do_puts_all_land(runtime) -> None:
    schema = pa.schema([("ts", pa.timestamp("us")), ("value", pa.float64())])
    errors: list[BaseException] = []
    results: list[dict] = []

    def worker(k: int) -> None:
        c = flight.FlightClient(runtime.flight_location)
        try:
            table = pa.table({
                "ts": pa.array([datetime(2040, 1, 1) + timedelta(minutes=1000 * k + i) for i in range(500)],
                               pa.timestamp("us")),
                "value": pa.array([float(k)] * 500)}, schema=schema)
            results.append(do_put(c, "sink_concurrent", table.to_batches(max_chunksize=100), OPTS))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)
        finally:
            c.close()

    first = pa.table({"ts": pa.array([datetime(2039, 1, 1)], pa.timestamp("us")), "value": [-1.0]}, schema=schema)
    client = runtime.flight_client()
    assert do_put(client, "sink_concurrent", first, OPTS) == {"dataset": "sink_concurrent", "rows": 1}
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results == [{"dataset": "sink_concurrent", "rows": 500}] * 6
    got = read_all(client, "SELECT value, count(*) AS n FROM sink_concurrent GROUP BY value ORDER BY value", OPTS)
    assert got.to_pydict() == {"value": [-1.0] + [float(k) for k in range(6)], "n": [1] + [500] * 6}


# --- refused statements -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guard_baseline(client) -> dict[str, pa.Table]:
    names = ("metrics", "rw_guard")
    return {name: read_all(client, f"SELECT * FROM {name} ORDER BY ts", OPTS) for name in names}


REFUSED_IDS = [s[0] for s in refused_statements(Path("/d"), Path("/o"))]


@pytest.mark.parametrize("statement_id", REFUSED_IDS)
def test_refused_statement(runtime, client, guard_baseline, tmp_path: Path, statement_id: str) -> None:
    data = runtime.spicepod.parent / "data"
    sql, must_not_exist = next((s, p) for i, s, p in refused_statements(data, tmp_path) if i == statement_id)
    with pytest.raises(INVALID) as info:
        read_all(client, sql, OPTS)
    assert str(info.value).strip()
    assert "host file" not in str(info.value)
    if must_not_exist is not None:
        assert not must_not_exist.exists()
    for name, before in guard_baseline.items():
        assert read_all(client, f"SELECT * FROM {name} ORDER BY ts", OPTS).equals(before), name
    assert count_rows(client, "rw_guard") == 3


@pytest.mark.parametrize("sql", ["DELETE FROM rw_guard", "DROP TABLE rw_guard",
                                 "INSERT INTO rw_guard SELECT * FROM rw_guard"])
@pytest.mark.parametrize("call", ["get_flight_info", "get_schema"])
def test_refused_statement_by_command(client, guard_baseline, sql: str, call: str) -> None:
    with pytest.raises(INVALID):
        getattr(client, call)(flight.FlightDescriptor.for_command(sql), OPTS)
    assert read_all(client, "SELECT * FROM rw_guard ORDER BY ts", OPTS).equals(guard_baseline["rw_guard"])


# A data-modifying WITH parses as a SELECT; the binder says it writes. The stored table is reachable by its
# qualified name (the plain name is a view, which DuckDB would refuse to write through anyway).
WRITING_SELECTS = [
    "WITH gone AS (DELETE FROM store.main.rw_guard RETURNING *) SELECT count(*) AS n FROM gone",
    "WITH added AS (INSERT INTO store.main.rw_guard SELECT * FROM store.main.rw_guard RETURNING *) "
    "SELECT * FROM added",
    "WITH zeroed AS (UPDATE store.main.rw_guard SET value = 0 RETURNING *) SELECT max(value) AS v FROM zeroed",
]
WRITING_SELECT_REFUSAL = ("only read-only queries are allowed; refused a SELECT that writes "
                          "(a WITH clause that inserts, updates or deletes, or a sequence's nextval)")


@pytest.mark.parametrize("sql", WRITING_SELECTS)
def test_a_select_that_writes_is_refused(client, guard_baseline, sql: str) -> None:
    for call in (lambda: read_all(client, sql, OPTS),
                 lambda: client.get_flight_info(flight.FlightDescriptor.for_command(sql), OPTS)):
        with pytest.raises(INVALID) as info:
            call()
        assert WRITING_SELECT_REFUSAL in str(info.value)
    assert read_all(client, "SELECT * FROM rw_guard ORDER BY ts", OPTS).equals(guard_baseline["rw_guard"])


# --- actions and HTTP views of the data -------------------------------------------------------------------

def test_list_actions_have_descriptions(client) -> None:
    for action in client.list_actions(options=OPTS):
        assert action.type and action.description, action


def test_health_and_ready(runtime) -> None:
    health = runtime.get("/health")
    assert (health.status, health.text) == (200, "ok")
    ready = runtime.get("/v1/ready")
    assert (ready.status, ready.text) == (200, "ready")


def test_http_datasets(runtime) -> None:
    entries = runtime.get_json("/v1/datasets")
    names = [e["name"] for e in entries]
    assert sorted(names) == sorted(ALL_DATASETS), names
    by_name = {e["name"]: e for e in entries}
    metrics = by_name["metrics"]
    assert set(metrics) >= {"name", "from", "mode", "time_column", "rows", "columns", "first_timestamp",
                            "last_timestamp"}
    assert metrics["from"] == "file:data/metrics.csv"
    assert (metrics["mode"], metrics["time_column"], metrics["rows"]) == ("read", "ts", 5)
    assert [c["name"] for c in metrics["columns"]] == ["ts", "value", "count", "station"]
    assert all(isinstance(c["type"], str) and c["type"] for c in metrics["columns"])
    assert "timestamp" in metrics["columns"][0]["type"].lower()
    assert parse_instant(metrics["first_timestamp"]) == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert parse_instant(metrics["last_timestamp"]) == datetime(2024, 1, 1, 4, tzinfo=timezone.utc)
    millis = by_name["tf_unix_millis"]
    assert millis["rows"] == 3
    assert parse_instant(millis["first_timestamp"]) == INSTANTS_MS[0]
    assert parse_instant(millis["last_timestamp"]) == INSTANTS_MS[-1]
    custom = by_name["tf_custom"]
    assert custom["time_column"] == "at"
    assert parse_instant(custom["last_timestamp"]) == INSTANTS[-1]
    assert (by_name["sink_never"]["from"], by_name["sink_never"]["mode"]) == ("flight", "read_write")
    assert by_name["rw_guard"]["mode"] == "read_write"
    assert by_name["austres"]["rows"] == 89
