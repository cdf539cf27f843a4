"""The OpenAPI document: generated from the routes table, the models and the settings;
valid OpenAPI 3.1; committed as docs/openapi.json and kept current."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from ragserve.api.errors import error_body
from ragserve.api.openapi import OPERATIONS, build_openapi, render_openapi
from ragserve.routes import ROUTES, Route
from ragserve.settings import Limits, SearchLimits


@pytest.fixture(scope="module")
def document() -> dict:
    return build_openapi()


def test_docs_openapi_json_is_the_generated_document(repo_root):
    committed = (repo_root / "docs" / "openapi.json").read_text(encoding="utf-8")

    assert committed == render_openapi(), "run `make openapi`"


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_is_documented_with_its_key_and_path_parameters(document):
    assert set(OPERATIONS) == {r.operation for r in ROUTES}
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == {(r.method, r.resource) for r in ROUTES}
    for route in ROUTES:
        operation = document["paths"][route.resource][route.method.lower()]
        assert operation["operationId"] == route.operation
        if route.scope is None:
            assert operation["security"] == [] and "401" not in operation["responses"]
        else:
            assert operation["security"] == [{"apiKey": []}]
            assert {"401", "403", "429"} <= set(operation["responses"])
        path_names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert path_names == set(re.findall(r"\{(\w+)\}", route.resource))
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")


def test_every_refusal_is_the_error_shape_and_429_carries_retry_after(document):
    error_schema = document["components"]["schemas"]["ErrorResponse"]
    for route in ROUTES:
        for status, response in document["paths"][route.resource][route.method.lower()]["responses"].items():
            if int(status) < 400 or route.operation == "health":
                continue
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            if status == "429":
                assert response["headers"]["Retry-After"]["required"] is True
    # the schema is what the service sends, and nothing else
    assert error_schema["required"] == ["error"]
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse",
                                                 "components": document["components"]})
    validator.validate(error_body("text_too_long", "text 0 has 9000 characters", "req-1"))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"error": {"code": "x", "message": "y"}})


def test_body_routes_document_400_and_413_and_ingest_its_idempotency_key(document):
    for route in ROUTES:
        operation = document["paths"][route.resource][route.method.lower()]
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"])
    for operation in (document["paths"]["/v1/collections/{c}/documents"]["post"],
                      document["paths"]["/v1/collections/{c}/documents/{id}"]["delete"]):
        headers = [p for p in operation["parameters"] if p["in"] == "header"]
        assert [h["name"] for h in headers] == ["Idempotency-Key"] and not headers[0]["required"]
        assert "409" in operation["responses"]


def test_limits_come_from_the_settings_not_from_literals():
    document = build_openapi(Limits(max_texts=7, max_text_chars=99, max_query_chars=33),
                             SearchLimits(max_k=12, max_offset=40), max_documents=5)
    schemas = document["components"]["schemas"]

    texts = schemas["EmbedRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 7 and texts["minItems"] == 1 and texts["items"]["maxLength"] == 99
    assert schemas["OpenAIEmbeddingsRequest"]["properties"]["input"]["anyOf"][1]["maxItems"] == 7
    search = schemas["SearchRequest"]["properties"]
    assert search["query"]["maxLength"] == 33
    assert (search["k"]["minimum"], search["k"]["maximum"]) == (1, 12)
    assert (search["offset"]["minimum"], search["offset"]["maximum"]) == (0, 40)
    assert schemas["DocumentsRequest"]["properties"]["documents"]["maxItems"] == 5
    assert schemas["DocumentIn"]["properties"]["text"]["maxLength"] == 99
    defaults = build_openapi()["components"]["schemas"]
    assert defaults["EmbedRequest"]["properties"]["texts"]["maxItems"] == Limits().max_texts


def test_a_route_without_documentation_is_refused():
    with pytest.raises(KeyError):
        build_openapi(routes=(Route("GET", "/v1/undocumented", "ops", "undocumented", "read"),))


def test_render_is_stable_json(document):
    assert json.loads(render_openapi()) == document
    assert render_openapi() == render_openapi()
