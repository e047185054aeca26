"""What a request may carry: query parameters checked like spicepod keys on every route, result formats
chosen by `Accept` (JSON, CSV, Arrow IPC and Parquet with UTC timestamps, 406 otherwise), open probes.

In-process runtimes (harness.InProcessRuntime) on free ports; `negotiate` is also tested on its own.
"""

from __future__ import annotations

import http.client
import io
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import RuntimeFactory, copy_data, nile_spicepod, parse_instant, write_spicepod

from harness.client import HttpResponse
from http_api.app import ROUTES
from http_api.base import route_template
from http_api.formats import ARROW_STREAM, CSV, JSON, PARQUET, PARQUET_LEGACY, negotiate
from spicepod import Limits

KEY = "requests-test-key-5a7b"
SPICEPOD = nile_spicepod("requests")


def start(factory: RuntimeFactory, api_key: str | None = None):
    folder = factory.new_dir()
    copy_data("nile.csv", folder)
    return factory(spicepod=write_spicepod(folder, SPICEPOD), api_key=api_key)


@pytest.fixture(scope="module")
def rt(module_inprocess_factory: RuntimeFactory):
    return start(module_inprocess_factory)


@pytest.fixture(scope="module")
def keyed(module_inprocess_factory: RuntimeFactory):
    return start(module_inprocess_factory, api_key=KEY)


# --- query parameters ---------------------------------------------------------------------------------

# One request per route (a query parameter it does not take is refused before anything else).
EVERY_ROUTE = [
    ("GET", "/health"), ("GET", "/metrics"), ("GET", "/v1/openapi.json"), ("GET", "/v1/ready"),
    ("GET", "/v1/datasets"), ("GET", "/v1/models"), ("GET", "/v1/models/nile_m/predict"),
    ("POST", "/v1/models/nile_m/train"), ("POST", "/v1/predict"), ("POST", "/v1/sql"),
    ("GET", "/v1/models/nile_m/series"), ("GET", "/v1/models/nile_m/forecasts"), ("GET", "/v1/models/nile_m/history"),
    ("GET", "/v1/models/nile_m/anomalies"), ("GET", "/v1/models/nile_m/versions"),
    ("POST", "/v1/models/nile_m/rollback"),
]
BODIES = {"/v1/predict": {"predictions": [{"model_name": "nile_m"}]}, "/v1/sql": "SELECT 1 AS x"}


def _template(path: str) -> str | None:
    return next((route_template(p, h) for p, h in ROUTES if re.fullmatch(p, path)), None)


def test_every_route_is_covered() -> None:
    # The page and its static files are not API routes (tests/test_page.py covers them).
    api = {route_template(p, h) for p, h in ROUTES} - {"/", "/static/{path}"}
    assert {_template(path) for _, path in EVERY_ROUTE} == api


def _request(rt, method: str, path: str, query: str = ""):
    if method == "GET":
        return rt.get(path + query)
    return rt.post(path + query, BODIES.get(path, b""))


@pytest.mark.parametrize(("method", "path"), EVERY_ROUTE, ids=[p for _, p in EVERY_ROUTE])
def test_an_unknown_query_parameter_is_a_400_naming_it(rt, method: str, path: str) -> None:
    response = _request(rt, method, path, "?bogus_param=1")
    assert response.status == 400, (response.status, response.body[:300])
    body = response.json()
    assert body["status"] == "BadRequest"
    assert body["error_message"].startswith("unknown query parameter 'bogus_param'; "), body


def test_a_route_without_parameters_says_so(rt) -> None:
    body = rt.get("/v1/models?limit=3").json()
    assert body["error_message"] == "unknown query parameter 'limit'; /v1/models takes none"


@pytest.mark.parametrize(("query", "name"), [("?Horizon=3", "Horizon"), ("?h=3", "h"),
                                             ("?horizon=3&hrizon=4", "hrizon")])
def test_predict_refuses_a_misspelt_parameter_with_the_predict_envelope(rt, query: str, name: str) -> None:
    response = rt.get(f"/v1/models/nile_m/predict{query}")
    assert response.status == 400
    body = response.json()
    assert set(body) == {"status", "error_message", "model_name", "lookback", "duration_ms"}, body
    assert (body["status"], body["model_name"], body["lookback"]) == ("BadRequest", "nile_m", 8)
    assert body["error_message"] == f"unknown query parameter '{name}'; expected one of explain, horizon, level, series"


@pytest.mark.parametrize("name", ["horizon", "series"])
def test_a_single_valued_parameter_given_twice_is_refused(rt, name: str) -> None:
    response = rt.get(f"/v1/models/nile_m/predict?{name}=3&{name}=5")
    assert response.status == 400
    body = response.json()
    assert body["error_message"] == f"query parameter '{name}' given 2 times; it takes one value"
    assert body["model_name"] == "nile_m"


def test_known_parameters_pass(rt) -> None:
    response = rt.get("/v1/models/nile_m/predict?horizon=2&level=80&level=95")
    assert response.status == 200, response.body
    assert response.json()["horizon"] == 2


def test_a_parameter_name_that_is_not_utf8_is_named_readably(rt) -> None:
    response = rt.get("/v1/models?%FF%FEx=1")
    assert response.status == 400
    assert response.json()["error_message"].startswith("unknown query parameter '\ufffd\ufffdx'")


def test_the_wrong_method_is_still_405_and_no_key_still_401(rt, keyed) -> None:
    assert rt.post("/v1/models?bogus=1").status == 405
    response = keyed.get("/v1/models?bogus=1", auth=False)
    assert (response.status, response.json()["status"]) == (401, "Unauthorized")
    assert rt.get("/no/such/route?bogus=1").status == 404


def test_predict_refusals_of_the_request_keep_the_general_envelope(rt, keyed) -> None:
    # Only 400 and 500 take the Spice envelope (model_name, lookback); no key, a wrong method and a body
    # over the limit refuse the HTTP request itself, as on every route.
    refusals = [
        (keyed.get("/v1/models/nile_m/predict", auth=False), 401, "Unauthorized"),
        (rt.post("/v1/models/nile_m/predict", b""), 405, "MethodNotAllowed"),
        (_oversized(rt, "GET", "/v1/models/nile_m/predict"), 413, "PayloadTooLarge"),
    ]
    for response, status, name in refusals:
        body = response.json()
        assert (response.status, body["status"]) == (status, name), body
        assert set(body) == {"status", "error_message", "duration_ms"}, body


def _oversized(rt, method: str, path: str):
    """A request whose Content-Length is over the default limit; the server answers from the headers."""
    conn = http.client.HTTPConnection("127.0.0.1", rt.http_port, timeout=30)
    try:
        conn.putrequest(method, path)
        conn.putheader("Content-Length", str(Limits.max_request_bytes + 1))
        conn.endheaders()
        response = conn.getresponse()
        return HttpResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


# --- open probes ---------------------------------------------------------------------------------------

def test_health_and_ready_need_no_key(keyed) -> None:
    assert (keyed.get("/health", auth=False).text, keyed.get("/v1/ready", auth=False).text) == ("ok", "ready")
    assert keyed.get("/v1/models", auth=False).status == 401
    assert keyed.get("/v1/models").status == 200


# --- result formats of POST /v1/sql ---------------------------------------------------------------------

SQL = "SELECT ts, value FROM nile ORDER BY ts LIMIT 2"
INSTANTS = [datetime(1871, 1, 1, tzinfo=timezone.utc), datetime(1872, 1, 1, tzinfo=timezone.utc)]


def test_arrow_timestamps_are_utc_and_the_same_instants_as_json(rt) -> None:
    response = rt.post("/v1/sql", SQL, headers={"Accept": ARROW_STREAM})
    assert (response.status, response.content_type) == (200, ARROW_STREAM)
    table = pa.ipc.open_stream(response.body).read_all()
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.column("ts").to_pylist() == INSTANTS
    rows = rt.post("/v1/sql", SQL).json()
    assert [parse_instant(r["ts"]) for r in rows] == INSTANTS


def test_every_kind_of_timestamp_is_utc_in_arrow(rt) -> None:
    sql = ("SELECT ts::TIMESTAMPTZ AS aware, ts::TIMESTAMP_NS AS nanos, ts::TIMESTAMP_S AS seconds, "
           "[ts] AS listed, {'at': ts} AS nested FROM nile ORDER BY ts LIMIT 1")
    table = pa.ipc.open_stream(rt.post("/v1/sql", sql, headers={"Accept": ARROW_STREAM}).body).read_all()
    utc = pa.timestamp("us", tz="UTC")
    assert [table.schema.field(n).type for n in ("aware", "nanos", "seconds")] == [utc, utc, utc]
    assert table.schema.field("listed").type.value_type == utc
    assert table.schema.field("nested").type.field("at").type == utc
    row = table.to_pylist()[0]
    assert row == {"aware": INSTANTS[0], "nanos": INSTANTS[0], "seconds": INSTANTS[0], "listed": [INSTANTS[0]],
                   "nested": {"at": INSTANTS[0]}}
    json_row = rt.post("/v1/sql", sql).json()[0]
    assert json_row["aware"] == json_row["nanos"] == json_row["seconds"] == "1871-01-01T00:00:00Z"


@pytest.mark.parametrize("media", [PARQUET, PARQUET_LEGACY])
def test_parquet(rt, media: str) -> None:
    response = rt.post("/v1/sql", SQL, headers={"Accept": media})
    assert (response.status, response.content_type) == (200, media)
    table = pq.read_table(io.BytesIO(response.body))
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.to_pylist() == [{"ts": INSTANTS[0], "value": 1120.0}, {"ts": INSTANTS[1], "value": 1160.0}]


@pytest.mark.parametrize(("accept", "content_type"), [
    (None, JSON), ("", JSON), ("*/*", JSON), ("application/*", JSON), ("text/*", CSV),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JSON),
    ("application/json;q=0.5, text/csv", CSV), ("text/csv, application/json", CSV),
    (f"{ARROW_STREAM}, */*", ARROW_STREAM), ("TEXT/CSV", CSV), ("text/csv; charset=utf-8", CSV),
])
def test_accept_picks_the_format(rt, accept: str | None, content_type: str) -> None:
    headers = {} if accept is None else {"Accept": accept}
    response = rt.post("/v1/sql", SQL, headers=headers)
    assert response.status == 200, response.body
    assert response.content_type.split(";")[0] == content_type


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "text/csv;q=0", "nonsense", "image/*"])
def test_an_accept_it_cannot_serve_is_406_naming_what_it_serves(rt, accept: str) -> None:
    response = rt.post("/v1/sql", "SELECT no_such_column FROM nowhere", headers={"Accept": accept})
    assert response.status == 406  # refused before the (bad) query runs
    body = response.json()
    assert body["status"] == "NotAcceptable"
    for media in (JSON, CSV, ARROW_STREAM, PARQUET):
        assert media in body["error_message"]


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, JSON), ("", JSON), ("*/*", JSON), ("text/csv", CSV), ("text/*;q=0.1, application/json;q=0.2", JSON),
    ("text/csv;q=1, */*;q=0", CSV), ("*/*;q=0", None), ("text/csv;q=x", None), ("text/csv;q=2", None),
    ("application/json;q=0, */*", CSV), (",,;", None), ("text", None),
])
def test_negotiate(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept, [JSON, CSV]) == chosen
