"""The warm GET predict path: the same bodies and headers as any JSON answer (but no ETag), requests with and
without a body, the access log and the metrics.

In-process runtimes (harness.InProcessRuntime) on free ports; ForecastJson is also tested on its own.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
from conftest import RuntimeFactory, copy_data, nile_spicepod, write_spicepod
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.client import HttpResponse
from http_api.app import WHOLE_BODY_BYTES
from http_api.metrics import LATENCY_BUCKETS, Metrics
from http_api.predict import ForecastJson, forecast_body
from pipelines.forecasts import Forecast

SPICEPOD = nile_spicepod("warm")
PREDICT = "/v1/models/nile_m/predict"


@pytest.fixture(scope="module")
def rt(module_inprocess_factory: RuntimeFactory):
    folder = module_inprocess_factory.new_dir()
    copy_data("nile.csv", folder)
    return module_inprocess_factory(spicepod=write_spicepod(folder, SPICEPOD))


def raw_request(rt, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> HttpResponse:
    """One request with exactly these headers (http.client adds only Host and Accept-Encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", rt.http_port, timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        return HttpResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


# --- ForecastJson: the encoding of a forecast, kept while it does not change ---------------------------

FORECASTS = [
    Forecast("m", "1.0", 8, 3, None, ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"],
             [1.5, 2.25, -0.1]),
    Forecast("m", "1.1", 8, 2, "sensor é/1", ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"], [1e300, 0.0],
             intervals={"80": ([0.5, -1.0], [2.5, 1.0]), "97.5": ([0.1, -2.0], [3.0, 2.0])}, method="ets+theta",
             contributions={"lags": [0.7, 0.6], "calendar": [0.3, 0.4]}),
    Forecast("m", "1.0", 8, 1, "nan", ["2024-01-01T00:00:00Z"], [math.nan]),
]


@pytest.mark.parametrize("forecast", FORECASTS, ids=["plain", "everything", "nan"])
def test_forecast_json_is_the_body_write_json_would_send(forecast: Forecast) -> None:
    encoded = ForecastJson()
    for duration in (0.123, 12.5, 0.001, 3.0):  # the second and later answers reuse the encoding
        expected = json.dumps({**forecast_body(forecast), "duration_ms": duration}).encode()
        assert encoded.body(forecast, duration) == expected


def test_forecast_json_follows_a_changed_forecast() -> None:
    encoded = ForecastJson()
    first = FORECASTS[0]
    moved = Forecast("m", "1.0", 8, 3, None, ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"],
                     [1.5, 2.25, -0.1])
    for forecast in (first, moved, first):
        assert json.loads(encoded.body(forecast, 1.0)) == {**forecast_body(forecast), "duration_ms": 1.0}


def test_forecast_json_forgets_everything_past_its_bound() -> None:
    encoded = ForecastJson()
    for i in range(ForecastJson.MAX_KEPT + 5):
        forecast = Forecast("m", "1.0", 8, 1, f"s{i}", ["2024-01-01T00:00:00Z"], [float(i)])
        assert json.loads(encoded.body(forecast, 0.5))["prediction"] == [float(i)]
    assert len(encoded._kept) == 5


# --- a warm GET over HTTP -----------------------------------------------------------------------------

def test_warm_gets_answer_the_same_forecast_with_the_usual_headers(rt) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", rt.http_port, timeout=30)
    try:
        answers = []
        for _ in range(3):  # one keep-alive connection, as clients under load use
            conn.request("GET", PREDICT)
            response = conn.getresponse()
            answers.append((response.status, dict(response.getheaders()), response.read()))
    finally:
        conn.close()
    bodies = [json.loads(body) for _, _, body in answers]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert list(bodies[0]) == ["status", "model_name", "model_version", "lookback", "prediction", "horizon",
                               "timestamps", "method", "duration_ms"]
    assert all({**b, "duration_ms": 0} == {**bodies[0], "duration_ms": 0} for b in bodies)
    assert (bodies[0]["status"], bodies[0]["model_name"], bodies[0]["horizon"]) == ("Success", "nile_m", 3)
    for _, headers, body in answers:
        # No Etag: the body's own duration_ms makes every answer differ, so none could ever be revalidated.
        assert set(headers) == {"Server", "Content-Type", "Date", "Content-Length"}, headers
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
        assert headers["Content-Length"] == str(len(body))
        assert headers["Server"].startswith("TornadoServer/")
        date = parsedate_to_datetime(headers["Date"])
        assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 5, headers["Date"]


def test_the_date_header_moves_with_the_clock(rt) -> None:
    first = rt.get(PREDICT).headers["Date"]
    deadline = time.monotonic() + 5
    while rt.get(PREDICT).headers["Date"] == first:  # the Date has a resolution of one second
        assert time.monotonic() < deadline, f"Date stayed {first} for 5 s"
    assert parsedate_to_datetime(rt.get(PREDICT).headers["Date"]) > parsedate_to_datetime(first)


# --- requests with and without a body -------------------------------------------------------------------

@pytest.mark.parametrize("headers, body", [
    ({}, b""),
    ({"Content-Length": "0"}, b""),
    ({"Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),
], ids=["no-body", "content-length-0", "chunked-empty"])
def test_get_predict_with_or_without_body_headers(rt, headers: dict[str, str], body: bytes) -> None:
    response = raw_request(rt, "GET", PREDICT, headers, body)
    assert response.status == 200, response.body
    assert response.json()["model_name"] == "nile_m"


def padded(payload: bytes, size: int) -> bytes:
    """The same JSON, `size` bytes long (spaces before its closing brace)."""
    return payload[:-1] + b" " * (size - len(payload)) + payload[-1:]


def test_a_post_body_arrives_whole_with_a_length_or_in_chunks(rt) -> None:
    """Small bodies of a known length are read with their headers, larger ones and chunks streamed: each
    arrives whole."""
    payload = json.dumps({"predictions": [{"model_name": "nile_m", "horizon": 2}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:10], payload[10:])) + b"0\r\n\r\n"
    framings = [({"Content-Length": str(len(body))}, body)
                for body in (payload, padded(payload, WHOLE_BODY_BYTES), padded(payload, WHOLE_BODY_BYTES + 1))]
    framings.append(({"Transfer-Encoding": "chunked"}, chunked))
    for headers, body in framings:
        response = raw_request(rt, "POST", "/v1/predict", {"Content-Type": "application/json", **headers}, body)
        assert response.status == 200, response.body
        [item] = response.json()["predictions"]
        assert (item["status"], item["horizon"]) == ("Success", 2)


@pytest.mark.parametrize("size", [0, WHOLE_BODY_BYTES + 1], ids=["read-whole", "streamed"])
def test_a_body_sent_in_pieces_is_read_whole_before_the_batch_runs(rt, size: int) -> None:
    """A slow client's body, in pieces with pauses between them: the batch waits for every byte the length
    promises."""
    payload = json.dumps({"predictions": [{"model_name": "nile_m", "horizon": 2}, {"model_name": "nile_m"}]}).encode()
    payload = padded(payload, max(size, len(payload)))
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", rt.http_port), timeout=30) as sock:
        sock.sendall(head + payload[:7])
        time.sleep(0.2)
        sock.sendall(payload[7:20])
        time.sleep(0.2)
        sock.sendall(payload[20:])
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < content_length(reply):
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:300]
    items = json.loads(reply.split(b"\r\n\r\n", 1)[1])["predictions"]
    assert [(item["status"], item["horizon"]) for item in items] == [("Success", 2), ("Success", 3)]


def content_length(reply: bytes) -> int:
    match = re.search(rb"\r\nContent-Length: (\d+)\r\n", reply)
    return int(match.group(1)) if match else 1 << 30


def test_a_post_without_a_body_is_a_400_naming_it(rt) -> None:
    response = raw_request(rt, "POST", "/v1/predict", {})
    assert response.status == 400
    assert response.json()["error_message"].startswith("request body is not JSON")


# --- the access log ---------------------------------------------------------------------------------------

def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tornado.access"]


def wait_for_line(caplog: pytest.LogCaptureFixture, start: str) -> None:
    """The line is written after the response is sent: wait for it."""
    deadline = time.monotonic() + 10
    while not any(line.startswith(start) for line in access_lines(caplog)):
        assert time.monotonic() < deadline, f"no access line {start!r}: {access_lines(caplog)}"
        time.sleep(0.01)


def test_the_access_log_has_every_request_when_info_is_on(rt, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    assert rt.get(PREDICT).status == 200
    assert rt.get("/nowhere").status == 404
    wait_for_line(caplog, "200 GET /v1/models/nile_m/predict (127.0.0.1)")
    wait_for_line(caplog, "404 GET /nowhere (127.0.0.1)")


def test_the_access_log_at_warning_has_only_the_failures(rt, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tornado.access")
    assert rt.get(PREDICT).status == 200
    assert rt.get("/nowhere").status == 404
    wait_for_line(caplog, "404 GET /nowhere (127.0.0.1)")  # written after the 200's line would have been
    assert not any(line.startswith("200 ") for line in access_lines(caplog)), access_lines(caplog)


# --- the metrics ------------------------------------------------------------------------------------------

def samples(rt) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics by (name, labels)."""
    text = rt.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_warm_gets_are_counted(rt) -> None:
    route = (("code", "200"), ("method", "GET"), ("route", "/v1/models/{name}/predict"))
    before = samples(rt)
    for _ in range(5):
        assert rt.get(PREDICT).status == 200
    after = samples(rt)
    for name, labels in [("flightcast_http_requests_total", route),
                         ("flightcast_http_request_duration_seconds_count", route),
                         ("flightcast_http_request_duration_seconds_bucket", tuple(sorted((*route, ("le", "+Inf"))))),
                         ("flightcast_predictions_total", (("model", "nile_m"), ("status", "Success"))),
                         ("flightcast_prediction_duration_seconds_count", (("model", "nile_m"),))]:
        assert after[(name, labels)] - before.get((name, labels), 0.0) == 5, name


def test_request_metrics_are_exposed_as_prometheus_client_would() -> None:
    ours = Metrics()
    ours.known_models(["m0"])
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter("flightcast_http_requests", "HTTP requests answered, by route pattern, method and status code",
                       ["route", "method", "code"], registry=registry)
    latency = Histogram("flightcast_http_request_duration_seconds",
                        "Time to answer an HTTP request, by route, method and code", ["route", "method", "code"],
                        buckets=LATENCY_BUCKETS, registry=registry)
    predictions = Counter("flightcast_predictions",
                          "Model predictions served (GET predict and batch items), by model and status",
                          ["model", "status"], registry=registry)
    prediction_latency = Histogram("flightcast_prediction_duration_seconds",
                                   "Time to serve one model prediction, by model", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=registry)
    answered = [("/a", "GET", 200, 0.0003), ("/a", "GET", 200, 0.0005), ("/b", "POST", 400, 0.7),
                ("/a", "GET", 200, 100.0), ("/a", "GET", 200, 0.001)]
    for route, method, code, seconds in answered:
        ours.request(route, method, code, seconds)
        requests.labels(route, method, str(code)).inc()
        latency.labels(route, method, str(code)).observe(seconds)
    for model, status, seconds in [("m0", "Success", 0.0002), ("zz", "BadRequest", 0.01), ("m0", "Success", 0.004)]:
        ours.prediction(model, status, seconds)
        label = model if model == "m0" else "(unknown)"
        predictions.labels(label, status).inc()
        prediction_latency.labels(label).observe(seconds)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())  # creation times
        return [line for line in text.splitlines() if re.search(r"flightcast_(http_request|prediction)", line)]

    assert lines(ours.registry) == lines(registry)
    assert len(lines(registry)) == 100


def test_a_predict_answer_has_no_etag_so_if_none_match_never_makes_it_a_304(rt) -> None:
    first = rt.get(PREDICT)
    again = raw_request(rt, "GET", PREDICT, {"If-None-Match": "*"})
    assert (first.status, again.status) == (200, 200)
    assert "Etag" not in first.headers and "Etag" not in again.headers
    assert json.loads(again.body)["prediction"] == json.loads(first.body)["prediction"]
    # Other JSON answers keep Tornado's ETag, and a matching If-None-Match still gets its 304.
    models = rt.get("/v1/models")
    assert raw_request(rt, "GET", "/v1/models", {"If-None-Match": models.headers["Etag"]}).status == 304
