"""The OpenAPI document stays true to the app's route table, in both directions."""

from __future__ import annotations

import re
from typing import Any

import pytest
import tornado.web

from http_api.app import ROUTES
from http_api.openapi import build_openapi
from http_api.page import is_page_route
from http_api.predict import PredictHandler

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
            assert "500" in responses and "404" in responses and "405" in responses
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
    assert {p["name"] for p in get["parameters"]} == {"name", "horizon", "series", "level"}
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
