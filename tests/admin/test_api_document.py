"""The admin API's OpenAPI document: valid OpenAPI 3.1, rendered from the routes the
app registers (so it cannot drift from what is served), every schema a valid JSON
Schema. In-process (falcon's test client; no core call is made)."""

from __future__ import annotations

from typing import Any

import falcon.testing
import jsonschema
import pytest
from falcon.inspect import inspect_routes
from openapi_spec_validator import validate

from identity_admin import api
from identity_admin.app import create_app
from identity_admin.console import Console
from identity_admin.settings import Settings


def _app() -> Any:
    return create_app(Settings(public_url="https://admin.example.com"), lambda: None)


def _document() -> dict[str, Any]:
    answer = falcon.testing.TestClient(_app()).simulate_get("/api/openapi.json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    doc: dict[str, Any] = answer.json
    return doc


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = _document()
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "https://admin.example.com"}]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_the_document_is_what_the_app_serves() -> None:
    served = {
        (r.path, m.method)
        for r in inspect_routes(_app())
        if r.path.startswith(api.PREFIX)
        for m in r.methods
        if not m.internal
    }
    documented = {
        (path, method.upper()) for path, ops in _document()["paths"].items() for method in ops
    }
    assert served == documented
    assert ("/api/v1/tenants/{tenant}/tokens", "POST") in served


def test_every_schema_is_valid_json_schema_and_every_parameter_described() -> None:
    for path, ops in _document()["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and "$ref" not in schema:
                    jsonschema.Draft202012Validator.check_schema(schema)
                assert answer["description"], (path, method, status)
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                jsonschema.Draft202012Validator.check_schema(body["schema"])
            for p in op.get("parameters", []):
                assert p["description"], (path, method, p["name"])
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(api.Route("GET", path, "", _noop, None).placeholders())


async def _noop(call: api.ApiCall) -> None:
    return None


def test_a_route_declared_twice_is_refused() -> None:
    console = Console(Settings(), lambda: None)  # type: ignore[arg-type,return-value]
    route = api.Route("GET", "/things", "Things", _noop, None)
    with pytest.raises(ValueError, match="declared twice"):
        api.Api(console, [route, route])
    with pytest.raises(ValueError, match="GET with a body"):
        api.Api(console, [api.Route("GET", "/x", "X", _noop, None, body={"type": "object"})])
