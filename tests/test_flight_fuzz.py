"""Bad input on the Arrow Flight surface (SPEC sections 5 and 7; issue 5 item 2).

Generated tickets and SQL (random bytes, non-UTF-8, token soups, mutations of valid SQL, 10 MB texts),
descriptor paths that are empty, nested or not identifiers, DoPut streams whose second batch has
another schema or is not Arrow at all, clients that die mid-DoPut, and concurrent DoPuts to one
dataset. Pass: each refusal is a clear error of the documented kind (INVALID_ARGUMENT arrives as
pa.ArrowInvalid, NOT_FOUND as pa.ArrowKeyError), nothing partial is ever written, every acknowledged
row is stored exactly once, and the server still serves (a DoGet and GET /health) after every case.

pyarrow's client refuses to write a batch whose schema differs from the stream's, so a stream that
changes schema mid-way (or carries a broken IPC message) is sent by `RawGrpc` below: a minimal gRPC
client over plaintext HTTP/2 that posts hand-built FlightData messages (Arrow IPC metadata and bodies
cut out of streams written by pyarrow, i.e. "two writers" spliced together).

The runtime is a subprocess of its own: what is fuzzed is the process (it must not die, and a crash
must not take the test run with it). Counts scale with FLIGHTCAST_FUZZ: unset = a bounded few hundred
cases for `make test`; `full` = thousands (`make fuzz`). The seed is FLIGHTCAST_FUZZ_SEED when set, else
fixed (bounded) or drawn from the clock (full); it is printed and named in every failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest import (
    do_put,
    open_server_connections,
    read_all,
    server_read_everything,
    wait_until,
    write_csv_text,
    write_spicepod,
)

pytestmark = pytest.mark.fuzz

FULL = os.environ.get("FLIGHTCAST_FUZZ", "") == "full"
SEED = int(os.environ.get("FLIGHTCAST_FUZZ_SEED") or (time.time_ns() % 10**9 if FULL else 20240605))


def scale(bounded: int, full: int) -> int:
    return full if FULL else bounded


OPTS = flight.FlightCallOptions(timeout=60)
METRICS_ROWS = 5
RW_SEED = "ts,value\n2024-01-01 00:00:00,1.0\n2024-01-02 00:00:00,2.0\n2024-01-03 00:00:00,3.0\n"
POD = """\
version: v1
kind: Spicepod
name: flight_fuzz
datasets:
  - from: file:data/metrics.csv
    name: metrics
  - from: file:data/rw.csv
    name: rw
    mode: read_write
  - from: file:data/raw.csv
    name: raw
    mode: read_write
  - from: file:data/dropped.csv
    name: dropped
    mode: read_write
  - from: flight
    name: par_sink
"""


@pytest.fixture(scope="module")
def runtime(module_runtime_factory):
    folder = module_runtime_factory.new_dir()
    data = folder / "data"
    write_csv_text(data / "metrics.csv", "ts,value,station\n" + "".join(
        f"2024-01-01 0{h}:00:00,{h + 0.5},s{h % 2}\n" for h in range(METRICS_ROWS)))
    write_csv_text(data / "rw.csv", RW_SEED)
    write_csv_text(data / "raw.csv", RW_SEED)
    write_csv_text(data / "dropped.csv", "ts,batch,row,k\n2000-01-01 00:00:00,-1,0,1\n")
    print(f"\nflight fuzz seed: {SEED} (FLIGHTCAST_FUZZ={'full' if FULL else 'bounded'})")
    return module_runtime_factory(spicepod=write_spicepod(folder, POD))


@pytest.fixture(scope="module")
def client(runtime) -> flight.FlightClient:
    return runtime.flight_client()


# --- outcomes -----------------------------------------------------------------------------------------

def short(message: str) -> str:
    """A server message without pyarrow's appended traceback detail, cut for reports."""
    message = message.split(". Detail: Python exception", 1)[0]
    return message if len(message) < 300 else message[:300] + f"... ({len(message)} chars)"


def outcome(call: Callable[[], object]) -> tuple[str, str]:
    """Run a Flight call: ("ok", ""), ("invalid", msg), ("not_found", msg) or (an error class name, msg).

    "transport" is an ArrowInvalid that gRPC made up on the client (e.g. RESOURCE_EXHAUSTED because the
    server's error message did not fit in the trailers): the client never saw the server's message.
    """
    try:
        call()
    except flight.FlightError as exc:
        return type(exc).__name__, str(exc)
    except (pa.ArrowKeyError, pa.ArrowInvalid) as exc:
        if str(exc).startswith("gRPC returned"):
            return "transport", "[the server's error never reached the client] " + str(exc)
        return ("not_found" if isinstance(exc, pa.ArrowKeyError) else "invalid"), str(exc)
    except (pa.ArrowException, OSError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def assert_serving(runtime, client, context: str = "") -> None:
    """The process is alive, a DoGet answers right, and GET /health is 200 ok."""
    assert runtime.running, f"flightcast died {context}; log tail:\n{runtime.log_text()[-3000:]}"
    got = read_all(client, "SELECT count(*) AS n FROM metrics", OPTS).column("n")[0].as_py()
    assert got == METRICS_ROWS, context
    health = runtime.get("/health", timeout=10)
    assert (health.status, health.text) == (200, "ok"), context


def table_rows(client, name: str) -> list[tuple]:
    table = read_all(client, f"SELECT * FROM {name} ORDER BY ALL", OPTS)
    return list(zip(*table.to_pydict().values(), strict=True))


def run_cases(runtime, client, cases, check: Callable[[object], tuple[bool, str]], label: str) -> int:
    """Run every case through `check` (-> ok?, description), the server checked after each one."""
    failures: list[str] = []
    for n, case in enumerate(cases):
        good, description = check(case)
        if not good and description not in failures:
            failures.append(description)
        assert_serving(runtime, client, f"after {label} case {n}: {description[:300]}")
    assert not failures, (f"{len(failures)} distinct {label} cases of {len(cases)} answered wrongly (seed {SEED}); "
                          "first ones:\n" + "\n".join(failures[:8]))
    return len(cases)


# --- generators ---------------------------------------------------------------------------------------

TOKENS = [
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "UNION", "AND", "OR", "NOT", "NULL", "AS",
    "metrics", "rw", "raw", "nope", "ts", "value", "station", "*", "1", "-1", "1e309", "'x'", "''",
    "'", '"', '"rw"', "(", ")", ",", ";", "--", "/*", "*/", "=", "<>", "+", "::", "CAST", "INTEGER",
    "count(*)", "max(value)", "DROP", "TABLE", "INSERT", "INTO", "VALUES", "DELETE", "UPDATE", "SET",
    "COPY", "TO", "'/tmp/x.csv'", "ATTACH", "PRAGMA", "INSTALL", "LOAD", "CALL", "read_csv('/etc/passwd')",
    "glob('/*')", "\n", "\t", " ", "ü", "😀", "\x00", "\\", "$1", "?", "%s", "{", "}", "[", "]",
]
VALID_SQL = [
    "SELECT * FROM metrics",
    "SELECT count(*) AS n FROM metrics",
    "SELECT station, max(value) AS m FROM metrics GROUP BY station ORDER BY station",
    "SELECT ts, value FROM rw ORDER BY ts DESC LIMIT 2",
    "select 42 as answer",
    "SELECT 'ü😀' AS s, NULL AS n, 1.5::DOUBLE AS d",
    "metrics",
    "rw",
]


def random_ticket(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # random bytes, mostly not UTF-8
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind == 1:  # a token soup
        return " ".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 10))).encode()
    base = bytearray(rng.choice(VALID_SQL).encode())
    if kind == 2:  # byte mutations of valid SQL
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            pos = rng.randrange(len(base) + 1)
            if op == 0 and base:
                del base[min(pos, len(base) - 1)]
            elif op == 1:
                base[pos:pos] = bytes([rng.randrange(256)])
            else:
                base[pos:pos] = rng.choice(TOKENS).encode()
        return bytes(base)
    # valid SQL cut short, or with something appended
    return bytes(base[: rng.randrange(len(base) + 1)]) if rng.random() < 0.5 else (
        bytes(base) + rng.choice(TOKENS).encode())


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- tickets and SQL ------------------------------------------------------------------------------------

@pytest.mark.timeout(600 if FULL else 120)
def test_random_tickets_and_commands(runtime, client) -> None:
    """DoGet and GetFlightInfo(command) on generated input: a result or INVALID_ARGUMENT, nothing else."""
    rng = random.Random(SEED)
    cases = [random_ticket(rng) for _ in range(scale(300, 4000))]
    rw_before = table_rows(client, "rw")

    def check(raw: bytes) -> tuple[bool, str]:
        get = outcome(lambda: client.do_get(flight.Ticket(raw), options=OPTS).read_all())
        info = outcome(lambda: client.get_flight_info(flight.FlightDescriptor.for_command(raw), OPTS))
        allowed = {"ok", "invalid"} if is_utf8(raw) else {"invalid"}
        good = get[0] in allowed and info[0] in allowed and all(
            k != "invalid" or short(m).strip() for k, m in (get, info))
        return good, (f"{raw[:120]!r}: DoGet -> {get[0]} {short(get[1])!r}; "
                      f"GetFlightInfo -> {info[0]} {short(info[1])!r}")

    count = run_cases(runtime, client, cases, check, "ticket")
    assert table_rows(client, "rw") == rw_before, "a generated ticket changed dataset rw"
    print(f"random tickets: {count} cases, each as DoGet ticket and GetFlightInfo command")


@pytest.mark.parametrize("ticket", [b"\xff\xfe\x00", b"SELECT 1 \xc3\x28", b"\x80" * 1000,
                                    b"metrics\xff", b"\xed\xa0\x80"],
                         ids=["bom_nul", "bad_continuation", "lone_continuations", "name_then_ff", "surrogate"])
def test_non_utf8_ticket_is_invalid_argument(runtime, client, ticket: bytes) -> None:
    kind, message = outcome(lambda: client.do_get(flight.Ticket(ticket), options=OPTS).read_all())
    assert kind == "invalid" and "UTF-8" in message, (kind, short(message))
    assert_serving(runtime, client)


# SQL that DoGet accepts must be describable by GetSchema/GetFlightInfo (SPEC 5: the descriptor command is
# the same UTF-8 SQL, answered with "the result's schema").
DESCRIBABLE = [
    "SELECT 1 AS x",
    "select 42 as answer;",
    "SELECT 1 AS x -- a trailing line comment",
    "SELECT 1 AS x /* block */",
    "SELECT count(*) AS n FROM metrics;  ",
    "SELECT * FROM metrics -- every column",
    "\n  SELECT value FROM metrics\n;\n",
]


@pytest.mark.parametrize("sql", DESCRIBABLE, ids=[f"q{i}" for i in range(len(DESCRIBABLE))])
def test_get_schema_agrees_with_do_get(runtime, client, sql: str) -> None:
    table = read_all(client, sql, OPTS)  # DoGet takes it
    kind, message = outcome(lambda: client.get_schema(flight.FlightDescriptor.for_command(sql), OPTS))
    assert kind == "ok", (
        f"DoGet answers {sql!r} ({table.num_rows} rows) but GetSchema refuses it: {kind} {short(message)!r}")
    schema = client.get_schema(flight.FlightDescriptor.for_command(sql), OPTS).schema
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql), OPTS)
    assert schema.equals(table.schema) and info.schema.equals(table.schema), (schema, info.schema, table.schema)
    assert_serving(runtime, client)


TEN_MB = 10_000_000
# An unknown name is looked up by DuckDB's did-you-mean search, whose time grows with the name times the
# catalog (12 s for a 10 MB name): bounded runs use 1 MB names, still far past what gRPC's trailers hold,
# and an echo of the whole name still fails the size check below; `make fuzz` sends 10 MB.
HUGE_NAME = scale(TEN_MB // 10, TEN_MB)
# A write is refused only once DuckDB has parsed it (5 s for 10 MB of VALUES): bounded runs send 1 MB of them,
# the 10 MB literal, comment and garbage try the size; `make fuzz` sends 10 MB.
WRITE_VALUES = scale(40_000, 400_000)


def huge_cases() -> list[tuple[str, str, set[str], str | None]]:
    """(id, SQL, allowed DoGet outcomes, a phrase the refusal must contain)."""
    statements = scale(100_000, 1_000_000)
    return [
        ("literal_10mb", "SELECT '" + "a" * TEN_MB + "' AS s", {"ok"}, None),
        ("comment_10mb", "SELECT 1 AS x /* " + "c" * TEN_MB + " */", {"ok"}, None),
        ("garbage_10mb", "SELEC " + "x " * (TEN_MB // 2), {"invalid"}, "syntax error"),
        ("unknown_table_huge", "SELECT * FROM " + "t" * HUGE_NAME, {"invalid"}, "does not exist"),
        ("unknown_column_huge", "SELECT " + "c" * HUGE_NAME + " FROM metrics", {"invalid"}, "not found"),
        ("many_statements", "SELECT 1;" * statements, {"invalid"}, "one SQL statement"),
        ("deep_parentheses", "SELECT " + "(" * 100_000 + "1" + ")" * 100_000, {"invalid"}, "depth"),
        ("write_10mb", "INSERT INTO rw VALUES ('2030-01-01', 1.0)" + ", ('2030-01-01', 1.0)" * WRITE_VALUES,
         {"invalid"}, ""),
    ]


@pytest.mark.timeout(300 if FULL else 120)
@pytest.mark.parametrize("case_id", [c[0] for c in huge_cases()])
def test_huge_sql(runtime, client, case_id: str) -> None:
    """~10 MB of SQL as a DoGet ticket and as a GetFlightInfo command: the answer or a clear refusal.

    A refusal must reach the client as the server's message (not a transport error because the
    message echoed 10 MB of input and did not fit in the gRPC trailers), and promptly.
    """
    _, sql, allowed, phrase = next(c for c in huge_cases() if c[0] == case_id)
    rw_before = table_rows(client, "rw")
    raw = sql.encode()
    results = []
    for call_name, call in (
        ("DoGet", lambda: client.do_get(flight.Ticket(raw), options=OPTS).read_all()),
        ("GetFlightInfo", lambda: client.get_flight_info(flight.FlightDescriptor.for_command(raw), OPTS)),
    ):
        started = time.monotonic()
        kind, message = outcome(call)
        elapsed = time.monotonic() - started
        results.append((call_name, kind, short(message), round(elapsed, 2)))
        if call_name == "DoGet" or "ok" not in allowed:
            good = kind in allowed and (phrase is None or phrase.lower() in message.lower())
            assert good, (f"{case_id} ({len(raw)} bytes) {call_name}: expected {sorted(allowed)} "
                          f"{'with ' + repr(phrase) if phrase else ''}, got {kind}: {short(message)!r}")
            assert len(message) < 1_000_000, f"{case_id} {call_name}: the error echoes {len(message)} chars"
        assert_serving(runtime, client, f"after {case_id} {call_name}")
    assert table_rows(client, "rw") == rw_before
    print(f"huge SQL {case_id}: {results}")


@pytest.mark.parametrize("size", [1_000, 6_000, 60_000])
@pytest.mark.parametrize("where", ["descriptor_path", "ticket_table", "command_column"])
def test_error_echoing_long_input_still_reaches_the_client(runtime, client, where: str, size: int) -> None:
    """An error about a long name must arrive as the server's error (NOT_FOUND / INVALID_ARGUMENT with its
    message), not as a client-side RESOURCE_EXHAUSTED because the message echoed the whole input and
    overflowed gRPC's 16 KiB metadata limit."""
    name = "n" * size
    call, expected = {
        "descriptor_path": (lambda: client.get_schema(flight.FlightDescriptor.for_path(name), OPTS), "not_found"),
        "ticket_table": (lambda: client.do_get(flight.Ticket(f"SELECT * FROM {name}".encode()),
                                               options=OPTS).read_all(), "invalid"),
        "command_column": (lambda: client.get_flight_info(
            flight.FlightDescriptor.for_command(f"SELECT {name} FROM metrics"), OPTS), "invalid"),
    }[where]
    kind, message = outcome(call)
    assert kind == expected and name[:50] in message, (
        f"{where} with a {size}-char name: expected {expected} naming it, got {kind}: {short(message)[:200]!r}")
    assert_serving(runtime, client)


# --- descriptor paths -------------------------------------------------------------------------------------

NAME_PARTS = [
    "rw", "metrics", "nope", "RW", " rw", "rw ", "r w", "rw;", "rw; DROP TABLE rw; --", 'rw"', '"rw"', "'rw'",
    "rw' OR '1'='1", "main.rw", "store.main.rw", "ü", "数据", "😀", "rw\x00", "\x00", "", " ", "\n", "-",
    "1rw", "a" * 10_000, "..", "/etc/passwd", "file:data/rw.csv", "%s", "${env:HOME}", "rw\u200b",
]
PUT_TABLE = pa.table({"ts": pa.array([datetime(2030, 1, 1)], pa.timestamp("us")), "value": ["not a double"]})


def random_path(rng: random.Random) -> list[bytes]:
    n = rng.choice([0, 1, 1, 1, 2, 2, 3])
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            parts.append(rng.choice(NAME_PARTS).encode())
        elif r < 0.8:
            parts.append("".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 4))).encode())
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))))
    return parts


def expected_path_outcome(parts: list[bytes], call: str) -> set[str]:
    if any(not is_utf8(p) for p in parts):
        # proto3 `string` field: pyarrow's gRPC layer refuses the message before any flightcast code runs
        # (INTERNAL / UNKNOWN with an empty message); all that can be asked is a refusal and no harm
        return {"invalid", "FlightInternalError", "FlightServerError", "OSError"}
    if len(parts) != 1:
        return {"invalid"}
    name = parts[0].decode()
    if name not in {"rw", "metrics", "raw", "dropped", "par_sink"}:
        return {"not_found"}
    return {"invalid"} if call == "DoPut" else {"ok"}


@pytest.mark.timeout(600 if FULL else 120)
def test_descriptor_paths(runtime, client) -> None:
    """GetFlightInfo, GetSchema and DoPut with empty, nested and non-identifier descriptor paths."""
    rng = random.Random(SEED + 1)
    cases = [[p.encode()] for p in NAME_PARTS] + [[], [b"rw", b"metrics"], [b"rw", b"rw"], [b"a", b"b", b"c"]]
    cases += [random_path(rng) for _ in range(scale(200, 3000))]
    before = {name: table_rows(client, name) for name in ("rw", "raw", "metrics")}

    def put(descriptor):
        writer, reader = client.do_put(descriptor, PUT_TABLE.schema, options=OPTS)
        try:
            writer.write_table(PUT_TABLE)
            writer.done_writing()
            reader.read()
        except Exception:
            writer.close()  # raises the server's error
            raise
        writer.close()

    def check(parts: list[bytes]) -> tuple[bool, str]:
        descriptor = flight.FlightDescriptor.for_path(*parts)
        got = {
            "GetFlightInfo": outcome(lambda: client.get_flight_info(descriptor, OPTS)),
            "GetSchema": outcome(lambda: client.get_schema(descriptor, OPTS)),
            "DoPut": outcome(lambda: put(descriptor)),
        }
        bad = {c: k for c, (k, _) in got.items() if k not in expected_path_outcome(parts, c)}
        # a NOT_FOUND names what was not found (when it is printable)
        for c, (k, m) in got.items():
            if k == "not_found" and len(parts) == 1 and len(parts[0]) < 200 and parts[0].decode() not in m:
                bad[c] = "not_found without the name"
        shown = [p[:40] for p in parts]
        return not bad, f"path {shown!r}: " + "; ".join(f"{c} -> {k} {short(m)[:120]!r}" for c, (k, m) in got.items())

    count = run_cases(runtime, client, cases, check, "descriptor path")
    for name, rows in before.items():
        assert table_rows(client, name) == rows, f"a refused DoPut changed {name}"
    print(f"descriptor paths: {count} cases x (GetFlightInfo, GetSchema, DoPut)")


# --- raw DoPut streams -------------------------------------------------------------------------------------

STATIC_TABLE = [None, (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
                (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"), (b":status", b"200"),
                (b":status", b"204"), (b":status", b"206"), (b":status", b"304"), (b":status", b"400"),
                (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
                (b"accept-encoding", b"gzip, deflate")] + [(n.encode(), b"") for n in (
    "accept-language accept-ranges accept access-control-allow-origin age allow authorization cache-control "
    "content-disposition content-encoding content-language content-length content-location content-range "
    "content-type cookie date etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified link location max-forwards proxy-authenticate proxy-authorization range "
    "referer refresh retry-after server set-cookie strict-transport-security transfer-encoding user-agent vary "
    "via www-authenticate").split()]
assert len(STATIC_TABLE) == 62  # RFC 7541 appendix A, 1-based


class _Hpack:
    """Just enough HPACK decoding for gRPC trailers (Huffman-coded strings come back as b'<huffman>')."""

    def __init__(self) -> None:
        self.table: list[tuple[bytes, bytes]] = []
        self.size = 4096

    @staticmethod
    def _int(buf: bytes, i: int, prefix: int) -> tuple[int, int]:
        mask = (1 << prefix) - 1
        value = buf[i] & mask
        i += 1
        if value < mask:
            return value, i
        shift = 0
        while True:
            b = buf[i]
            i += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, i

    def _str(self, buf: bytes, i: int) -> tuple[bytes, int]:
        huffman = buf[i] & 0x80
        n, i = self._int(buf, i, 7)
        return (b"<huffman>" if huffman else bytes(buf[i:i + n])), i + n

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        return STATIC_TABLE[index] if index < len(STATIC_TABLE) else self.table[index - len(STATIC_TABLE)]

    def _evict(self) -> None:
        while sum(len(a) + len(b) + 32 for a, b in self.table) > self.size:
            self.table.pop()

    def decode(self, buf: bytes) -> list[tuple[bytes, bytes]]:
        out, i = [], 0
        while i < len(buf):
            b = buf[i]
            if b & 0x80:
                index, i = self._int(buf, i, 7)
                out.append(self._entry(index))
            elif b & 0xE0 == 0x20:
                self.size, i = self._int(buf, i, 5)
                self._evict()
            else:
                indexed = bool(b & 0x40)
                index, i = self._int(buf, i, 6 if indexed else 4)
                name, i = (self._entry(index)[0], i) if index else self._str(buf, i)
                value, i = self._str(buf, i)
                out.append((name, value))
                if indexed:
                    self.table.insert(0, (name, value))
                    self._evict()
        return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, data: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(data)) + data


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def flight_data(header: bytes = b"", body: bytes = b"", path: list[bytes] | None = None) -> bytes:
    """A FlightData protobuf: descriptor (1, a PATH descriptor), data_header (2), data_body (1000)."""
    out = b""
    if path is not None:
        out += _pb(1, b"\x08\x01" + b"".join(_pb(3, p) for p in path))
    if header:
        out += _pb(2, header)
    if body:
        out += _pb(1000, body)
    return out


def ipc_messages(schema: pa.Schema, batches: list[pa.RecordBatch]) -> list[tuple[bytes, bytes]]:
    """(flatbuffer metadata, body) of each IPC message pyarrow writes for a stream: schema first."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return [(m.metadata.to_pybytes(), m.body.to_pybytes() if m.body is not None else b"")
            for m in pa.ipc.MessageReader.open_stream(sink.getvalue())]


class RawGrpc:
    """One gRPC call over plaintext HTTP/2 on a fresh connection, with hand-built request messages."""

    DO_PUT = b"/arrow.flight.protocol.FlightService/DoPut"

    def __init__(self, port: int, timeout: float = 30.0):
        self.port = port
        self.timeout = timeout

    def _request(self, messages: list[bytes], end_stream: bool, cut: int | None) -> bytes:
        headers = b"".join(b"\x00" + _varint(len(k)) + k + _varint(len(v)) + v for k, v in (
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", self.DO_PUT),
            (b":authority", f"127.0.0.1:{self.port}".encode()), (b"content-type", b"application/grpc"),
            (b"te", b"trailers")))
        body = b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)
        if cut is not None:
            body = body[:cut]
        assert len(body) < 60_000, "keep raw requests inside HTTP/2's initial flow-control window"
        chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + _frame(1, 4, 1, headers)
        for n, chunk in enumerate(chunks):
            out += _frame(0, 1 if end_stream and n == len(chunks) - 1 else 0, 1, chunk)
        return out

    def call(self, messages: list[bytes]) -> tuple[int | None, str, list[bytes]]:
        """Send the messages and half-close; return (grpc-status, grpc-message, response messages)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
            sock.sendall(self._request(messages, True, None))
            buf, block, data, headers = b"", b"", b"", []
            hpack, ended = _Hpack(), False
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                    got = sock.recv(65536)
                    if not got:
                        raise ConnectionError("the server closed the connection without trailers")
                    buf += got
                n = int.from_bytes(buf[:3], "big")
                kind, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + n], buf[9 + n:]
                if kind == 4 and not flags & 1:
                    sock.sendall(_frame(4, 1, 0, b""))  # SETTINGS ack
                elif kind == 6 and not flags & 1:
                    sock.sendall(_frame(6, 1, 0, payload))  # PING ack
                elif kind == 7:
                    raise ConnectionError(f"GOAWAY {payload!r}")
                elif stream == 1 and kind == 3:
                    raise ConnectionError(f"RST_STREAM {payload!r}")
                elif stream == 1 and kind == 0:
                    data += payload
                elif stream == 1 and kind in (1, 9):
                    if kind == 1:
                        ended = bool(flags & 1)
                        if flags & 0x8:
                            payload = payload[1 + payload[0]:len(payload) - payload[0]]
                        if flags & 0x20:
                            payload = payload[5:]
                    block += payload
                    if flags & 4:
                        headers += hpack.decode(block)
                        block = b""
                        if ended:
                            break
            else:
                raise TimeoutError("no trailers in time")
        fields = dict(headers)
        replies, i = [], 0
        while i + 5 <= len(data):
            n = struct.unpack(">I", data[i + 1:i + 5])[0]
            replies.append(data[i + 5:i + 5 + n])
            i += 5 + n
        status = fields.get(b"grpc-status", b"")
        return (int(status) if status.isdigit() else None,
                unquote(fields.get(b"grpc-message", b"").decode("latin-1")), replies)

    def abandon(self, messages: list[bytes], cut: int | None = None) -> None:
        """Send (part of) a stream without ending it, then, once the server has read it all, drop the
        connection with a TCP reset."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as sock:
            sock.sendall(self._request(messages, False, cut))
            wait_until(lambda: server_read_everything(self.port), "the server read the abandoned stream")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


OK, INVALID_ARGUMENT, UNKNOWN = 0, 3, 2
SCHEMA_A = pa.schema([("ts", pa.timestamp("us")), ("value", pa.float64())])


def raw_batch(schema: pa.Schema, n: int, start: datetime, **columns) -> pa.RecordBatch:
    base = {"ts": pa.array([start + timedelta(hours=i) for i in range(n)], pa.timestamp("us")),
            "value": pa.array([i + 0.5 for i in range(n)], pa.float64())}
    base.update(columns)
    return pa.record_batch([base[f.name] if f.name in base else pa.array(range(n), f.type) for f in schema],
                           schema=schema)


def raw_streams() -> dict[str, tuple[list[bytes], set[int]]]:
    """id -> (FlightData messages of one DoPut to `raw`, allowed grpc statuses)."""
    t0 = datetime(2040, 1, 1)
    a = ipc_messages(SCHEMA_A, [raw_batch(SCHEMA_A, 2, t0)])
    schema_b = pa.schema([("ts", pa.timestamp("us")), ("value", pa.string())])
    b = ipc_messages(schema_b, [raw_batch(schema_b, 2, t0 + timedelta(days=1), value=pa.array(["p", "q"]))])
    schema_c = SCHEMA_A.append(pa.field("extra", pa.int64()))
    c = ipc_messages(schema_c, [raw_batch(schema_c, 2, t0 + timedelta(days=2))])
    schema_d = pa.schema([("ts", pa.timestamp("us"))])
    d = ipc_messages(schema_d, [raw_batch(schema_d, 2, t0 + timedelta(days=3))])
    first = flight_data(a[0][0], path=[b"raw"])
    garbage = bytes(random.Random(SEED).randrange(256) for _ in range(96))
    # Messages that pyarrow's gRPC layer rejects before the DoPut handler runs come back UNKNOWN from
    # Arrow C++ itself ("Stream finished before first message sent", ...); flightcast cannot map those.
    pre_handler = {INVALID_ARGUMENT, UNKNOWN}
    return {
        # the second batch has another schema: a new schema message mid-stream, then its batch
        "second_schema_other_type": ([first, flight_data(*a[1]), flight_data(b[0][0]), flight_data(*b[1])],
                                     {INVALID_ARGUMENT}),
        "second_schema_extra_column": ([first, flight_data(*a[1]), flight_data(c[0][0]), flight_data(*c[1])],
                                       {INVALID_ARGUMENT}),
        # a batch laid out for another schema, without a schema message
        "second_batch_fewer_columns": ([first, flight_data(*a[1]), flight_data(*d[1])], {INVALID_ARGUMENT}),
        "second_batch_truncated_body": ([first, flight_data(*a[1]), flight_data(a[1][0], a[1][1][:5])],
                                        {INVALID_ARGUMENT}),
        "second_message_garbage_header": ([first, flight_data(*a[1]), flight_data(garbage, b"x" * 16)],
                                          {INVALID_ARGUMENT}),
        "descriptor_without_schema": ([flight_data(path=[b"raw"])], {INVALID_ARGUMENT}),
        "batch_before_schema": ([flight_data(a[1][0], a[1][1], path=[b"raw"])], pre_handler),
        "schema_without_descriptor": ([flight_data(a[0][0]), flight_data(*a[1])], pre_handler),
        "not_protobuf": ([b"\xff\xff\xff\xff", b"\x00"], pre_handler),
        "no_messages": ([], pre_handler),
    }


RAW_IDS = list(raw_streams())


def test_raw_client_control_stream_commits(runtime, client) -> None:
    """The hand-built client is right: a valid two-batch stream commits, with the usual PutResult."""
    t0 = datetime(2041, 1, 1)
    msgs = ipc_messages(SCHEMA_A, [raw_batch(SCHEMA_A, 2, t0), raw_batch(SCHEMA_A, 3, t0 + timedelta(days=1))])
    before = len(table_rows(client, "raw"))
    status, message, replies = RawGrpc(runtime.flight_port).call(
        [flight_data(msgs[0][0], path=[b"raw"])] + [flight_data(h, b) for h, b in msgs[1:]])
    assert (status, message) == (OK, ""), message
    assert len(replies) == 1
    # PutResult { bytes app_metadata = 1; }
    assert replies[0][:1] == b"\x0a"
    assert json.loads(replies[0][2:]) == {"dataset": "raw", "rows": 5}
    assert len(table_rows(client, "raw")) == before + 5
    assert_serving(runtime, client)


def test_pyarrow_refuses_a_second_schema_client_side(runtime, client) -> None:
    """Why the raw client exists: pyarrow will not put a batch of another schema on a DoPut stream."""
    other = pa.record_batch({"ts": pa.array([datetime(2042, 1, 1)], pa.timestamp("us")), "value": ["x"]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("raw"), SCHEMA_A, options=OPTS)
    try:
        with pytest.raises(pa.ArrowInvalid, match="different schema"):
            writer.write_batch(other)
    finally:
        writer.close()


@pytest.mark.parametrize("stream_id", RAW_IDS)
def test_raw_do_put_bad_stream(runtime, client, stream_id: str) -> None:
    """A DoPut stream that changes schema or breaks the IPC format: INVALID_ARGUMENT, nothing written."""
    messages, allowed = raw_streams()[stream_id]
    before = table_rows(client, "raw")
    status, message, replies = RawGrpc(runtime.flight_port).call(messages)
    after = table_rows(client, "raw")
    assert after == before, f"{stream_id}: the refused stream left {len(after) - len(before)} rows behind"
    assert_serving(runtime, client, stream_id)
    assert status in allowed and message.strip(), (
        f"{stream_id}: expected grpc-status {sorted(allowed)} (INVALID_ARGUMENT) with a message, got "
        f"{status} {message!r}")
    assert not replies, replies


def test_raw_do_put_extra_column_batch_is_whole_or_refused(runtime, client) -> None:
    """A batch with one column more than the stream's schema: Arrow's reader takes the declared columns;
    the stream must then commit whole, or be refused whole."""
    t0 = datetime(2043, 1, 1)
    a = ipc_messages(SCHEMA_A, [raw_batch(SCHEMA_A, 2, t0)])
    schema_c = SCHEMA_A.append(pa.field("extra", pa.int64()))
    c = ipc_messages(schema_c, [raw_batch(schema_c, 3, t0 + timedelta(days=1))])
    before = len(table_rows(client, "raw"))
    status, message, _ = RawGrpc(runtime.flight_port).call(
        [flight_data(a[0][0], path=[b"raw"]), flight_data(*a[1]), flight_data(*c[1])])
    after = len(table_rows(client, "raw"))
    assert (status, after) in ((OK, before + 5), (INVALID_ARGUMENT, before)), (status, message, before, after)
    assert_serving(runtime, client)


@pytest.mark.parametrize("cut", ["mid_message", "after_batches"])
def test_raw_do_put_connection_reset_leaves_nothing(runtime, client, cut: str) -> None:
    """The connection dies (TCP reset) inside a gRPC message, or after whole batches but before the end."""
    t0 = datetime(2044, 1, 1)
    msgs = ipc_messages(SCHEMA_A, [raw_batch(SCHEMA_A, 50, t0), raw_batch(SCHEMA_A, 50, t0 + timedelta(days=5))])
    stream = [flight_data(msgs[0][0], path=[b"raw"])] + [flight_data(h, b) for h, b in msgs[1:]]
    before = table_rows(client, "raw")
    size = sum(5 + len(m) for m in stream)
    connections = open_server_connections(runtime.flight_port)
    RawGrpc(runtime.flight_port).abandon(stream, cut=size - 37 if cut == "mid_message" else None)
    wait_until(lambda: not open_server_connections(runtime.flight_port) - connections,
               "the server dropped the reset connection")
    assert table_rows(client, "raw") == before
    assert_serving(runtime, client)


# --- clients killed mid-DoPut -----------------------------------------------------------------------------

WRITER = r"""
import json, random, sys, time
from datetime import datetime, timedelta
import pyarrow as pa, pyarrow.flight as flight
location, name, first_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
client = flight.FlightClient(location)
schema = pa.schema([("ts", pa.timestamp("us")), ("batch", pa.int64()), ("row", pa.int64()), ("k", pa.int64())])
print("ready", flush=True)
bid = first_id
while True:
    k = rng.randint(1, 3000)
    base = datetime(2001, 1, 1) + timedelta(seconds=bid * 10_000)
    table = pa.table({"ts": pa.array([base + timedelta(seconds=i) for i in range(k)], pa.timestamp("us")),
                      "batch": pa.array([bid] * k, pa.int64()), "row": pa.array(range(k), pa.int64()),
                      "k": pa.array([k] * k, pa.int64())}, schema=schema)
    print(f"start {bid} {k}", flush=True)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), schema)
    for batch in table.to_batches(max_chunksize=max(1, k // rng.randint(1, 4))):
        writer.write_batch(batch)
        time.sleep(rng.uniform(0, 0.01))
    writer.done_writing()
    result = json.loads(reader.read().to_pybytes())
    writer.close()
    assert result == {"dataset": name, "rows": k}, result
    print(f"ack {bid} {k}", flush=True)
    bid += 1
"""


def check_batches(client, name: str, acked: dict[int, int], maybe: dict[int, int], context: str) -> set[int]:
    """Every acknowledged batch stored whole, once; besides them only `maybe` ones, each whole. -> ids."""
    table = read_all(client, f"SELECT batch, count(*) AS n, count(DISTINCT row) AS d, min(k) AS k0, "
                              f"max(k) AS k1 FROM {name} WHERE batch >= 0 GROUP BY batch", OPTS)
    stored = {b: (n, d, k0, k1) for b, n, d, k0, k1 in zip(*table.to_pydict().values(), strict=True)}
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{context}: acknowledged batches missing: {missing[:10]}"
    extra = sorted(set(stored) - set(acked) - set(maybe))
    assert not extra, f"{context}: batches stored that were never sent or were refused: {extra[:10]}"
    for b, (n, d, k0, k1) in stored.items():
        k = acked.get(b, maybe.get(b))
        assert (n, d, k0, k1) == (k, k, k, k), (
            f"{context}: batch {b} stored as {n} rows ({d} distinct), expected exactly {k}: partial or duplicated")
    return set(stored)


@pytest.mark.timeout(300 if FULL else 120)
def test_client_killed_mid_do_put(runtime, client) -> None:
    """A writer process doing numbered DoPuts is SIGKILLed at a random moment, again and again."""
    rng = random.Random(SEED + 2)
    acked: dict[int, int] = {}
    durable_maybe: dict[int, int] = {}
    next_id, cycles, rows = 0, scale(4, 25), 0
    port = int(runtime.flight_location.rsplit(":", 1)[1])
    before = open_server_connections(port)
    for cycle in range(cycles):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, runtime.flight_location, "dropped", str(next_id),
                                 str(rng.randrange(10**9))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.8))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        started: dict[int, int] = {}
        for line in out.splitlines():
            word, bid, k = line.split()
            (acked if word == "ack" else started)[int(bid)] = int(k)
        assert "Traceback" not in err, err
        in_flight = {b: k for b, k in started.items() if b not in acked}
        assert len(in_flight) <= 1, in_flight
        next_id = max(started, default=next_id - 1) + 1
        wait_until(lambda: not open_server_connections(port) - before, f"the server dropped killed writer {cycle}")
        present = check_batches(client, "dropped", acked, {**durable_maybe, **in_flight}, f"cycle {cycle}")
        durable_maybe.update({b: k for b, k in in_flight.items() if b in present})
        rows += sum(acked.values()) + sum(durable_maybe.values())
        assert_serving(runtime, client, f"after killed writer {cycle}")
    # a batch that was absent right after its writer's kill must not have turned up since
    assert check_batches(client, "dropped", acked, durable_maybe, "end") == set(acked) | set(durable_maybe)
    print(f"killed writers: {cycles} cycles, {len(acked)} acknowledged DoPuts, "
          f"{len(durable_maybe)} in-flight ones stored whole, {rows} rows checked")


# --- concurrent DoPuts ----------------------------------------------------------------------------------

PARALLEL_SCHEMA = pa.schema([("ts", pa.timestamp("us")), ("writer", pa.int64()), ("seq", pa.int64()),
                         ("row", pa.int64()), ("k", pa.int64()), ("value", pa.float64())])


def par_table(writer: int, seq: int, k: int) -> pa.Table:
    base = datetime(2050, 1, 1) + timedelta(seconds=writer * 10**7 + seq * 10**4)
    return pa.table({
        "ts": pa.array([base + timedelta(seconds=i) for i in range(k)], pa.timestamp("us")),
        "writer": pa.array([writer] * k, pa.int64()), "seq": pa.array([seq] * k, pa.int64()),
        "row": pa.array(range(k), pa.int64()), "k": pa.array([k] * k, pa.int64()),
        "value": pa.array([writer + seq / 1000] * k, pa.float64())}, schema=PARALLEL_SCHEMA)


@pytest.mark.timeout(300 if FULL else 120)
def test_concurrent_do_puts_to_one_dataset(runtime) -> None:
    """8 threads of numbered DoPuts (some refused) into one `from: flight` dataset, a reader watching."""
    threads_n, puts = 8, scale(12, 120)
    acked: dict[tuple[int, int], int] = {}
    refused: list[tuple[int, int]] = []
    errors: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    reads = [0]

    def writer(w: int) -> None:
        rng = random.Random(SEED * 31 + w)
        c = flight.FlightClient(runtime.flight_location)
        try:
            for seq in range(puts):
                k = rng.randint(1, 200)
                table = par_table(w, seq, k)
                bad = rng.random() < 0.15
                if bad:  # a time column that is not a timestamp: refused whatever the schema is by then
                    table = table.set_column(0, "ts", pa.array([str(t) for t in table.column("ts").to_pylist()]))
                kind, message = outcome(lambda t=table, k=k: do_put(
                    c, "par_sink", t.to_batches(max_chunksize=max(1, k // rng.randint(1, 3))), OPTS))
                with lock:
                    if bad and kind == "invalid":
                        refused.append((w, seq))
                    elif not bad and kind == "ok":
                        acked[(w, seq)] = k
                    else:
                        errors.append(f"writer {w} put {seq} (bad={bad}): {kind} {short(message)!r}")
        except BaseException as exc:  # reported by the test thread
            errors.append(f"writer {w}: {exc!r}")
        finally:
            c.close()

    partial_sql = ("SELECT writer, seq FROM par_sink GROUP BY writer, seq HAVING count(*) <> min(k) "
                   "OR count(DISTINCT row) <> min(k) OR min(k) <> max(k)")

    def reader() -> None:
        c = flight.FlightClient(runtime.flight_location)
        try:
            while not done.is_set():
                any_acked = bool(acked)  # before the query is sent
                try:
                    partial = read_all(c, partial_sql, OPTS)
                except pa.ArrowInvalid as exc:
                    if "par_sink" in str(exc) and not any_acked:  # no table before the first DoPut commits
                        time.sleep(0.005)
                        continue
                    raise
                reads[0] += 1
                if partial.num_rows:
                    errors.append(f"a reader saw partial or duplicated DoPuts: {partial.to_pydict()}")
                    return
                time.sleep(0.005)
        except BaseException as exc:  # reported by the test thread
            errors.append(f"reader: {exc!r}")
        finally:
            c.close()

    watcher = threading.Thread(target=reader)
    workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads_n)]
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(250 if FULL else 100)
    done.set()
    watcher.join(30)
    assert not any(t.is_alive() for t in workers), "a writer hung"
    assert not errors, errors[:10]
    client = runtime.flight_client()
    got = read_all(client, "SELECT writer, seq, count(*) AS n, count(DISTINCT row) AS d, min(k) AS k0, "
                           "max(k) AS k1 FROM par_sink GROUP BY writer, seq", OPTS).to_pydict()
    stored = {(w, s): (n, d, k0, k1) for w, s, n, d, k0, k1 in zip(*got.values(), strict=True)}
    assert set(stored) == set(acked), (sorted(set(acked) - set(stored))[:10], sorted(set(stored) - set(acked))[:10])
    wrong = {key: v for key, v in stored.items() if v != (acked[key],) * 4}
    assert not wrong, f"partial or duplicated DoPuts: {dict(list(wrong.items())[:10])}"
    total = read_all(client, "SELECT count(*) AS n FROM par_sink", OPTS).column("n")[0].as_py()
    assert total == sum(acked.values())
    assert_serving(runtime, client)
    print(f"concurrent DoPuts: {threads_n} threads, {len(acked)} acknowledged ({total} rows, each once), "
          f"{len(refused)} refused, {reads[0]} concurrent consistency reads")


def test_store_survives_the_module(runtime, client) -> None:
    """Last: the datasets no test meant to change are unchanged, and the process never restarted."""
    assert [r[1] for r in table_rows(client, "rw")] == [1.0, 2.0, 3.0]
    assert runtime.running
    assert_serving(runtime, client)
