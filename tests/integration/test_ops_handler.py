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


# ------------------------------------------- AWS: the embed and search functions, in parallel


class FakeLambda:
    """A Lambda client whose functions answer with the real handlers (embed's /health,
    search's GET /v1/collections/{c}) or with what a test sets."""

    def __init__(self, answers: dict | None = None, delay: float = 0.0) -> None:
        self.answers = answers or {}
        self.delay = delay
        self.calls: list[tuple[str, str, dict]] = []

    def invoke(self, FunctionName, InvocationType, Payload, Qualifier=None):  # noqa: N803 - boto3's names
        import io
        import json
        import time

        event = json.loads(Payload)
        self.calls.append((FunctionName, Qualifier, event))
        time.sleep(self.delay)
        answer = self.answers.get(FunctionName)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            import importlib

            module = importlib.import_module(f"functions.{FunctionName.rsplit('-', 1)[1]}.handler")
            answer = module.lambda_handler(event, LocalContext(function_name=FunctionName))
        error = {"FunctionError": "Unhandled"} if "errorType" in answer else {}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode()), **error}


def probe_checks(client, monkeypatch, **service):
    from ragserve import health
    from ragserve.dependencies import ServiceChecks, register_aws_checks
    from ragserve.settings import OpsSettings

    registered: dict = {}
    facts: dict = {}
    monkeypatch.setattr(health, "register", lambda name, check: registered.__setitem__(name, check))
    monkeypatch.setattr(health, "register_fact", lambda name, value: facts.__setitem__(name, value))
    names = register_aws_checks(OpsSettings(health_cache_seconds=30), clients=lambda service: client,
                                service=ServiceChecks(**service))
    return names, registered, facts


def test_ops_asks_the_live_embed_and_search_functions(monkeypatch, seeded_default_collection):
    import functions.search.handler  # noqa: F401 - the real search function answers the probe

    client = FakeLambda()
    names, checks, facts = probe_checks(client, monkeypatch, embed_function="ragserve-test-embed:live",
                                        search_function="ragserve-test-search:live", canary_collection="default")
    assert names == ["embed_function", "search_function"] and sorted(facts) == ["model"]
    # THEN the embed function reports its model, the search function describes the collection
    assert (checks["embed_function"]().status, checks["embed_function"]().detail) == ("healthy", "ok")
    assert facts["model"]() == "all-MiniLM-L6-v2"
    search = checks["search_function"]()
    assert (search.status, search.detail) == ("healthy", "ok")
    (embed_name, embed_alias, embed_event), (search_name, search_alias, search_event) = client.calls
    assert (embed_name, embed_alias, embed_event["path"]) == ("ragserve-test-embed", "live", "/health")
    assert (search_name, search_alias, search_event["path"]) == ("ragserve-test-search", "live",
                                                                 "/v1/collections/default")
    # as a read key limited to that collection would
    assert search_event["requestContext"]["authorizer"]["collections"] == "default"
    assert search_event["requestContext"]["authorizer"]["scope"] == "read"
    # AND the results are cached: no second invocation within the TTL
    checks["embed_function"]()
    assert len(client.calls) == 2


def test_a_broken_model_or_an_unseeded_collection_shows_on_ops_health(monkeypatch):
    import json

    broken = {"statusCode": 503, "body": json.dumps({"status": "unhealthy", "model": None, "index_version": None,
                                                      "checks": {"model": "model file altered (see the log)"}})}
    not_found = {"statusCode": 404, "body": json.dumps({"error": {"code": "collection_not_found", "message": "x",
                                                                  "request_id": "r"}})}
    client = FakeLambda({"e": broken, "s": not_found})
    _, checks, facts = probe_checks(client, monkeypatch, embed_function="e", search_function="s")
    embed = checks["embed_function"]()
    assert (embed.status, embed.detail) == ("unhealthy", "model: model file altered (see the log)")
    assert facts["model"]() is None
    search = checks["search_function"]()
    assert (search.status, search.detail) == ("degraded", "canary: no version yet (collection_not_found)")
    # a function that raises, or answers 503: unhealthy
    client = FakeLambda({"e": {"errorType": "Runtime.ImportModuleError", "errorMessage": "no module"},
                         "s": {"statusCode": 503, "body": json.dumps({"error": {"code": "not_ready"}})}})
    _, checks, _ = probe_checks(client, monkeypatch, embed_function="e", search_function="s")
    assert checks["embed_function"]().detail == "unreachable: function error: Runtime.ImportModuleError"
    assert checks["embed_function"]().status == "unhealthy"
    assert (checks["search_function"]().status, checks["search_function"]().detail) == (
        "unhealthy", "canary: not_ready (503)")


def test_expired_probes_run_in_parallel(monkeypatch):
    import time

    from ragserve import dependencies

    client = FakeLambda({name: {"statusCode": 200, "body": '{"status": "healthy", "checks": {}}'}
                         for name in ("a", "b")}, delay=0.4)
    _, checks, _ = probe_checks(client, monkeypatch, embed_function="a", search_function="b")
    started = time.monotonic()
    dependencies.refresh(list(checks.values()))
    assert time.monotonic() - started < 0.75  # two probes of 0.4 s each, at once
    assert len(client.calls) == 2
    started = time.monotonic()
    dependencies.refresh(list(checks.values()))  # cached: nothing probes again
    assert time.monotonic() - started < 0.1 and len(client.calls) == 2


def test_locally_ops_checks_no_aws_service():
    from ragserve.dependencies import ServiceChecks
    from ragserve.settings import OpsSettings

    assert ServiceChecks.from_env(OpsSettings()) == ServiceChecks()
    deployed = ServiceChecks.from_env(OpsSettings(metrics_source="cloudwatch", stage="dev"))
    assert (deployed.embed_function, deployed.search_function) == ("ragserve-dev-embed:live",
                                                                   "ragserve-dev-search:live")
    assert deployed.index and deployed.canary_collection == "canary"
