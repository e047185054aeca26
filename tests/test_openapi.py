"""The OpenAPI document stays true to the app: its route table, and the statuses each route answers, in both
directions."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

import pytest
import tornado.web
from conftest import RuntimeFactory, copy_data, nile_spicepod, write_spicepod

from http_api.app import ROUTES
from http_api.base import HTTP_STATUS_NAMES
from http_api.openapi import build_openapi
from http_api.page import is_page_route
from http_api.predict import PredictHandler
from spicepod import Limits

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def handler_methods(handler: type[tornado.web.RequestHandler]) -> set[str]:
    """Methods the handler class itself answers: those it overrides from tornado's RequestHandler."""
    return {
        m for m in HTTP_METHODS
        if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)
    }


def as_openapi_path(pattern: str, handler: type[tornado.web.RequestHandler]) -> str:
    """`/v1/models/([^/]+)/predict` -> `/v1/models/{name}/predict`, groups named after the handler's arguments."""
    method = getattr(handler, sorted(handler_methods(handler))[0])
    names = iter(method.__code__.co_varnames[1:method.__code__.co_argcount])
    path = re.sub(r"\((?:[^()\\]|\\.)*\)", lambda _m: "{" + next(names) + "}", pattern)
    return path.replace("\\", "")


def route_table() -> set[tuple[str, str]]:
    """The JSON API's operations; the page's routes (files for people) are not part of the document."""
    return {(as_openapi_path(p, h), m) for p, h in ROUTES if not is_page_route(h) for m in handler_methods(h)}


def document_table(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in doc["paths"].items() for method in ops if method in HTTP_METHODS}


@pytest.mark.parametrize("api_key", [False, True])
def test_every_route_is_documented_and_every_documented_route_exists(api_key: bool) -> None:
    routes, documented = route_table(), document_table(build_openapi(api_key=api_key))
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations that the app does not serve"


def test_route_table_is_not_trivially_empty() -> None:
    routes = route_table()
    assert ("/v1/models/{name}/predict", "get") in routes
    assert ("/v1/predict", "post") in routes
    assert ("/v1/openapi.json", "get") in routes
    assert ("/metrics", "get") in routes
    assert ("/", "get") not in routes and {p for p, _ in ROUTES} >= {"/", "/static/(.+)"}


def test_path_parameters_match_the_template() -> None:
    doc = build_openapi(api_key=False)
    for path, ops in doc["paths"].items():
        in_path = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, (path, method)
            assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


@pytest.mark.parametrize("api_key", [False, True])
def test_document_shape(api_key: bool) -> None:
    doc = build_openapi(api_key=api_key)
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert any(code.startswith("2") for code in responses), (path, method)
            assert {"400", "405", "413", "500"} <= set(responses), (path, method)
            protected = path not in ("/health", "/v1/ready")  # probes are open
            assert ("401" in responses) == (api_key and protected), (path, method)
            assert ("security" in op) == (api_key and protected), (path, method)
    error = schemas["Error"]
    assert {"status", "error_message", "duration_ms"} <= set(error["required"])
    success = schemas["PredictSuccess"]
    assert set(success["required"]) == {"status", "model_name", "model_version", "lookback", "prediction",
                                        "duration_ms", "horizon", "timestamps"}
    assert ("securitySchemes" in doc["components"]) == api_key


def test_predict_and_batch_documented_as_spec() -> None:
    doc = build_openapi(api_key=False)
    get = doc["paths"]["/v1/models/{name}/predict"]["get"]
    assert {p["name"] for p in get["parameters"]} == {"name", "horizon", "series", "level", "explain"}
    documented = {p["name"] for p in get["parameters"] if p["in"] == "query"}
    assert documented <= set(PredictHandler.query_params), "a documented query parameter the route refuses"
    assert {"200", "400", "500"} <= set(get["responses"])
    post = doc["paths"]["/v1/predict"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("BatchPredictRequest")
    assert "400" in post["responses"]
    sql = doc["paths"]["/v1/sql"]["post"]["responses"]["200"]["content"]
    assert set(sql) == {"application/json", "text/csv", "application/vnd.apache.arrow.stream",
                        "application/vnd.apache.parquet", "application/x-parquet"}
    assert "406" in doc["paths"]["/v1/sql"]["post"]["responses"]


# --- every status a route answers is documented, and every documented refusal is answered ----------------

KEY = "openapi-test-key-31c9"
SPICEPOD = nile_spicepod("statuses")

# (method, path, body, headers): the error cases of each route beyond those every route has (a query
# parameter, a wrong method, a body over the limit, no key, an empty model name), which error_cases adds.
ROUTE_ERRORS: list[tuple[str, str, str, dict[str, str]]] = [
    ("GET", "/v1/models/nope/predict", "", {}),
    ("GET", "/v1/models/nile_m/predict?horizon=0", "", {}),
    ("POST", "/v1/models/nope/train", "", {}),
    ("GET", "/v1/models/nope/versions", "", {}),
    ("POST", "/v1/models/nope/rollback", "", {}),
    ("POST", "/v1/models/nile_m/rollback?version=99", "", {}),
    ("POST", "/v1/models/nile_m/rollback", "", {}),
    ("GET", "/v1/models/nope/series", "", {}),
    ("GET", "/v1/models/nile_m/series?limit=0", "", {}),
    ("GET", "/v1/models/nope/forecasts", "", {}),
    ("GET", "/v1/models/nile_m/forecasts?series=a", "", {}),
    ("GET", "/v1/models/nile_m/forecasts", "", {"Accept": "image/png"}),
    ("GET", "/v1/models/nope/history", "", {}),
    ("GET", "/v1/models/nile_m/history?limit=0", "", {}),
    ("GET", "/v1/models/nope/anomalies", "", {}),
    ("GET", "/v1/models/nile_m/anomalies?limit=0", "", {}),
    ("GET", "/v1/models/nile_m/anomalies", "", {"Accept": "image/png"}),
    ("POST", "/v1/predict", "not json", {}),
    ("POST", "/v1/sql", "SELECT FROM WHERE", {}),
    ("POST", "/v1/sql", "SELECT 1", {"Accept": "application/xml"}),
]
# Server failures: the runtime under test has none to show (a data node down, a bug).
FAILURES = {"500", "503"}


def api_operations() -> list[tuple[str, str, type[tornado.web.RequestHandler]]]:
    """(template, method, handler) of every operation of the JSON API."""
    return [(as_openapi_path(p, h), m, h) for p, h in ROUTES if not is_page_route(h)
            for m in sorted(handler_methods(h))]


def concrete(template: str) -> str:
    return template.replace("{name}", "nile_m")


def error_cases() -> list[tuple[str, str, str, str, str, dict[str, str], bool]]:
    """(template, operation, method sent, path, body, headers, with_key) for every error case of every operation
    (a wrong method counts for each operation of the path, where the document lists 405)."""
    cases = []
    for template, method, handler in api_operations():
        path = concrete(template)
        wrong = next(m for m in ("DELETE", "PUT", "PATCH") if m.lower() not in handler_methods(handler))
        over = {"Content-Length": str(Limits.max_request_bytes + 1)}  # headers only: refused from them
        cases += [(template, method, method.upper(), path + "?bogus=1", "", {}, False),
                  (template, method, wrong, path, "", {}, False),
                  (template, method, method.upper(), path, "", over, False)]
        if path not in ("/health", "/v1/ready"):
            cases.append((template, method, method.upper(), path, "", {}, True))
        if "{name}" in template:  # an empty name matches no route
            cases.append((template, method, method.upper(), template.replace("{name}", ""), "", {}, False))
    for method, path, body, headers in ROUTE_ERRORS:
        template = next(as_openapi_path(p, h) for p, h in ROUTES if re.fullmatch(p, path.split("?")[0]))
        cases.append((template, method.lower(), method, path, body, headers, False))
    return cases


def send(port: int, method: str, path: str, body: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One request; the status and the JSON body (headers-only when a Content-Length is given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if "Content-Length" in headers:
            conn.putrequest(method, path)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
        else:
            conn.request(method, path, body.encode() if body or method in ("POST", "PUT", "PATCH") else None,
                         headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def runtimes(module_inprocess_factory: RuntimeFactory):
    """An open runtime and one with an API key, on the same data."""
    started = []
    for key in (None, KEY):
        folder = module_inprocess_factory.new_dir()
        copy_data("nile.csv", folder)
        started.append(module_inprocess_factory(spicepod=write_spicepod(folder, SPICEPOD), api_key=key))
    return started


def test_every_status_a_route_answers_is_documented_and_every_documented_refusal_happens(runtimes) -> None:
    open_rt, keyed = runtimes
    answered: dict[tuple[str, str], set[str]] = {(t, m): set() for t, m, _ in api_operations()}
    wrong: list[str] = []
    for template, operation, method, path, body, headers, needs_key in error_cases():
        rt = keyed if needs_key else open_rt
        status, payload = send(rt.http_port, method, path, body, headers)
        assert payload["status"] == HTTP_STATUS_NAMES[status], (method, path, status, payload)
        assert payload["error_message"] and isinstance(payload["duration_ms"], float), (method, path, payload)
        answered[template, operation].add(str(status))
        if str(status) not in build_openapi(api_key=needs_key)["paths"][template][operation]["responses"]:
            wrong.append(f"{method} {path} answers {status}, not documented for {operation}")
    assert wrong == []
    keyed_doc = build_openapi(api_key=True)["paths"]
    for (template, method), statuses in answered.items():
        documented = {s for s in keyed_doc[template][method]["responses"] if not s.startswith("2")}
        assert documented - FAILURES == statuses, (template, method)


def test_predict_routes_answer_400_and_500_in_the_spice_envelope(runtimes) -> None:
    open_rt, _ = runtimes
    status, body = send(open_rt.http_port, "GET", "/v1/models/nope/predict", "", {})
    assert status == 400
    assert set(body) == {"status", "error_message", "model_name", "duration_ms"}
    assert (body["status"], body["error_message"], body["model_name"]) == (
        "BadRequest", "model 'nope' not found", "nope")
    status, body = send(open_rt.http_port, "GET", "/v1/models/nile_m/history", "", {})
    assert status == 200
    status, body = send(open_rt.http_port, "GET", "/v1/models/nope/history", "", {})
    assert (status, body["status"], body["error_message"]) == (404, "NotFound", "model 'nope' not found")
    assert "model_name" not in body
