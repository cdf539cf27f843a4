"""The ops function, locally: GET /health reports the checks every function loaded in
this process registered (the model at least), GET /metrics renders the process's
Prometheus registry; and the routes table sends both to it."""

from __future__ import annotations

import re

import pytest

from ragserve.local.events import LocalContext, rest_event
from ragserve.routes import ROUTES, find_route

API_KEY = "local-dev-key"


@pytest.fixture(scope="module")
def ops():
    import functions.embed.handler  # noqa: F401 - registers the model's health check, as `ragserve serve` does
    import functions.ops.handler as ops

    return ops


def call(handler, method: str, path: str, body: str | None = None) -> dict:
    headers = {"x-api-key": API_KEY, "content-type": "application/json"}
    return handler.lambda_handler(rest_event(method, path, headers=headers, body=body),
                                  LocalContext(function_name="ops"))


def test_health_and_metrics_are_routed_to_ops():
    assert find_route("GET", "/health")[0].function == "ops"
    assert find_route("GET", "/metrics")[0].function == "ops"
    assert find_route("GET", "/health")[0].scope is None and find_route("GET", "/metrics")[0].scope == "read"
    assert {r.function for r in ROUTES} >= {"embed", "ops"}


def test_health_reports_the_model_loaded_in_this_process(ops):
    response = call(ops, "GET", "/health")
    import json

    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert body["status"] == "healthy"
    assert body["model"] == "all-MiniLM-L6-v2"
    assert body["checks"]["model"] == "ok"
    assert set(body) >= {"status", "model", "index_version", "checks"}


def test_metrics_render_the_process_registry_including_other_functions(ops):
    from functions.embed import handler as embed

    def embed_2xx(text: str) -> float:
        found = re.search(r'^ragserve_requests_total\{operation="embed",status="2xx"\} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = call(ops, "GET", "/metrics")["body"]
    assert call(embed, "POST", "/v1/embed", '{"texts": ["hello"]}')["statusCode"] == 200
    response = call(ops, "GET", "/metrics")
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["Content-Type"][0].startswith("text/plain; version=0.0.4")
    assert embed_2xx(response["body"]) == embed_2xx(before) + 1
    assert 'ragserve_requests_total{operation="metrics",status="2xx"}' in response["body"]


def test_unknown_route_on_ops_is_a_json_404(ops):
    response = call(ops, "GET", "/nope")
    assert response["statusCode"] == 404 and '"not_found"' in response["body"]
