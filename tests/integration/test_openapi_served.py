"""The OpenAPI document as `ragserve serve` publishes it, over real HTTP on 127.0.0.1:
GET /v1/openapi.json (no key) is docs/openapi.json, Swagger UI at /docs loads from local
assets, and schemathesis, fed the served document, runs every operation with a
read+write key: no 5xx, every refusal in the JSON error shape, every answer conforming
to the documented status codes, content types, headers and schemas.

The server has its own data directory with a small "default" collection (searches
answer 200 with results); ingests land in collections of schemathesis's choosing there,
applied by the server's own writer, and are bounded by the documented limits."""

from __future__ import annotations

import http.client
import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve_collections import WRITE_KEY, Server

from ragserve.api.openapi import render_openapi
from ragserve.routes import ROUTES

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory, encoder):
    from ragserve.documents import Document
    from ragserve.ingest.jobs import IngestJob
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.settings import IndexSettings
    from ragserve.snapshots.local import LocalSnapshotStore

    data_dir = tmp_path_factory.mktemp("openapi-served")
    docs = tuple(Document(f"d{i}", f"Note {i} about topic {i % 4}: searching, caching and serving.", {"n": i})
                 for i in range(12))
    CollectionWriter(LocalSnapshotStore(data_dir), encoder, IndexSettings(), data_dir / "scratch").apply(
        "default", [IngestJob("seed", 0, "default", docs)])
    server = Server(data_dir, demo=False)
    yield server
    server.stop()


def get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_the_served_document_is_the_committed_one_and_needs_no_key(served, repo_root):
    status, headers, body = get(served, "/v1/openapi.json")

    assert status == 200 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == json.loads((repo_root / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert json.loads(body) == json.loads(render_openapi())


def test_swagger_ui_is_served_from_local_assets(served):
    status, headers, page = get(served, "/docs")

    assert status == 200 and headers["content-type"].startswith("text/html")
    html = page.decode()
    assert '"/v1/openapi.json"' in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/docs/") for s in sources), sources  # no CDN
    for source in sources:
        status, headers, asset = get(served, source)
        assert status == 200 and len(asset) > 0, source
    status, headers, script = get(served, "/docs/swagger-ui-bundle.js")
    assert headers["content-type"].startswith("application/javascript") and b"SwaggerUIBundle" in script
    status, _, body = get(served, "/docs/../pyproject.toml")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


@pytest.fixture(scope="module")
def served_schema(served):
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{served.port}/v1/openapi.json", timeout=30)


def cases(operation):
    """Valid and invalid requests for one operation (a body, path and header to negate, or none);
    some valid ones name the seeded collection, so that they reach a live version."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if "c" in {p.name for p in operation.path_parameters}:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"c": "default"}))
    if operation.body or operation.path_parameters or operation.headers:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.resource}")
def test_every_operation_conforms_to_the_document(served, served_schema, route):
    operation = served_schema[route.resource][route.method]
    statuses: list[int] = []

    @FUZZ
    @given(case=cases(operation))
    def call(case):
        response = case.call_and_validate(base_url=f"http://127.0.0.1:{served.port}",
                                          headers={"x-api-key": WRITE_KEY}, checks=CHECKS, timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}
            assert body["error"]["code"] and body["error"]["message"]

    call()
    assert any(200 <= s < 300 for s in statuses), statuses  # the valid requests were served, not all refused
