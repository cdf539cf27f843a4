"""The ops function in AWS mode against moto in server mode: /metrics reads the
service's CloudWatch metrics (PutMetricData, then GET /metrics) and /health probes the
dependencies its settings name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aws_helpers import create_keys_table

from ragserve.errors import NotReady
from ragserve.metrics_source.cloudwatch import CloudWatchMetricsSource, prometheus_name, render, snake

REPO = Path(__file__).resolve().parents[3]


def put_service_metrics(cloudwatch) -> None:
    """What the functions' EMF logs become in CloudWatch (dimensions service + Operation)."""
    dims = [{"Name": "service", "Value": "ragserve-embed"}, {"Name": "Operation", "Value": "embed"}]
    cloudwatch.put_metric_data(Namespace="ragserve", MetricData=[
        {"MetricName": "Requests", "Dimensions": dims, "Value": 1, "Unit": "Count"},
        {"MetricName": "Requests", "Dimensions": dims, "Value": 1, "Unit": "Count"},
        {"MetricName": "Requests", "Dimensions": dims, "Value": 1, "Unit": "Count"},
        {"MetricName": "Errors5xx", "Dimensions": dims, "Value": 1, "Unit": "Count"},
        {"MetricName": "RequestLatency", "Dimensions": dims, "Value": 12.5, "Unit": "Milliseconds"},
        {"MetricName": "RequestLatency", "Dimensions": dims, "Value": 30.0, "Unit": "Milliseconds"},
        {"MetricName": "CacheHit", "Dimensions": [{"Name": "service", "Value": "ragserve-search"},
                                                  {"Name": "Cache", "Value": "query"}], "Value": 4},
    ])
    cloudwatch.put_metric_data(Namespace="other", MetricData=[{"MetricName": "Requests", "Value": 99}])


def test_latency_gets_percentiles_by_default():
    from ragserve.metrics_source.cloudwatch import Metric, queries_for

    metrics = [Metric("RequestLatency", (("Operation", "embed"),)), Metric("Requests", ())]
    queries = queries_for(metrics, "ragserve", 300)
    stats = [(m.name, stat) for _, m, stat in queries]
    assert [s for n, s in stats if n == "RequestLatency"][:3] == ["p50", "p95", "p99"]
    assert [s for n, s in stats if n == "Requests"] == ["Sum"]
    assert len({q["Id"] for q, _, _ in queries}) == len(queries)
    assert queries[0][0]["MetricStat"]["Period"] == 300


def test_names_are_prometheus_style():
    assert snake("RequestLatency") == "request_latency" and snake("Errors5xx") == "errors5xx"
    assert prometheus_name("ragserve", "ModelInitMs", "p99") == "ragserve_model_init_ms_p99"


def test_cloudwatch_metrics_render_as_prometheus_gauges(aws):
    cloudwatch = aws("cloudwatch")
    put_service_metrics(cloudwatch)
    text = CloudWatchMetricsSource("ragserve", window_seconds=300, cache_seconds=0, percentiles=(),
                                   client=cloudwatch).render()

    assert text.endswith("\n")
    assert "ragserve_cloudwatch_up 1" in text
    assert "# TYPE ragserve_requests_sum gauge" in text
    assert 'ragserve_requests_sum{operation="embed",service="ragserve-embed"} 3' in text
    assert 'ragserve_errors5xx_sum{operation="embed",service="ragserve-embed"} 1' in text
    assert 'ragserve_request_latency_average{operation="embed",service="ragserve-embed"} 21.25' in text
    assert 'ragserve_request_latency_sample_count{operation="embed",service="ragserve-embed"} 2' in text
    assert 'ragserve_cache_hit_sum{cache="query",service="ragserve-search"} 4' in text
    assert "99" not in text.split("ragserve_requests_sum", 1)[1].split("\n# ", 1)[0]  # other namespaces stay out
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith("ragserve_")


class CountingClient:
    def __init__(self, client, fail: bool = False) -> None:
        self.client, self.fail, self.calls = client, fail, 0

    def get_paginator(self, name):
        self.calls += 1
        if self.fail:
            raise ConnectionError("cloudwatch down")
        return self.client.get_paginator(name)

    def get_metric_data(self, **kwargs):
        return self.client.get_metric_data(**kwargs)


def test_results_are_cached_and_stale_figures_are_served_when_cloudwatch_fails(aws):
    cloudwatch = aws("cloudwatch")
    put_service_metrics(cloudwatch)
    now = [1_000_000.0]
    counting = CountingClient(cloudwatch)
    source = CloudWatchMetricsSource("ragserve", cache_seconds=30, percentiles=(), client=counting,
                                     clock=lambda: now[0])
    # moto keeps real timestamps: read the window around the real time
    import time

    now[0] = time.time()
    first = source.render()
    now[0] += 10
    assert source.render().split("ragserve_cloudwatch_age")[1].splitlines()[-1] != ""  # served from cache
    assert counting.calls == 1
    # WHEN CloudWatch fails after the cache expired
    counting.fail = True
    now[0] += 31
    stale = source.render()
    # THEN the last figures are served, marked down
    assert "ragserve_cloudwatch_up 0" in stale
    assert 'ragserve_requests_sum{operation="embed",service="ragserve-embed"} 3' in stale and "up 1" in first
    # AND with nothing cached yet, it is a 503
    with pytest.raises(NotReady):
        CloudWatchMetricsSource("ragserve", client=CountingClient(cloudwatch, fail=True)).render()


def test_render_is_deterministic_and_empty_without_data():
    text = render([], "ragserve", 300)
    assert text.splitlines()[0].startswith("# HELP ragserve_cloudwatch_up")
    assert "ragserve_cloudwatch_up 1" in text and text.count("# TYPE") == 2


_OPS_IN_AWS_MODE = textwrap.dedent(
    """
    import json, sys
    from ragserve.local.events import LocalContext, rest_event
    import functions.ops.handler as ops
    context = LocalContext(function_name="ragserve-ops")
    metrics = ops.lambda_handler(rest_event("GET", "/metrics", headers={"x-api-key": "k"}), context)
    health = ops.lambda_handler(rest_event("GET", "/health"), context)
    print(json.dumps({"metrics": metrics, "health": health}))
    """
)


def run_ops(endpoint: str, **env: str) -> dict:
    """The ops handler in a fresh process (its init reads the settings, as in Lambda)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAGSERVE_")}
    base.update({"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
                 "RAGSERVE_METRICS_SOURCE": "cloudwatch", "RAGSERVE_METRICS_CACHE_SECONDS": "0",
                 # moto computes no percentiles (GetMetricData fails on pNN): real CloudWatch does
                 "RAGSERVE_METRICS_PERCENTILES": "none"}, **env)
    done = subprocess.run([sys.executable, "-c", _OPS_IN_AWS_MODE], cwd=REPO, env=base, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ops_handler_serves_cloudwatch_metrics_and_dependency_health(aws, moto_endpoint):
    # GIVEN metrics in CloudWatch, the keys table and the bucket, but no queue
    put_service_metrics(aws("cloudwatch"))
    table = create_keys_table(aws("dynamodb"), "ragserve-test-keys")
    aws("s3").create_bucket(Bucket="ragserve-test-snapshots")
    queue_url = f"{moto_endpoint}/123456789012/missing.fifo"
    # WHEN the ops function answers GET /metrics and GET /health
    result = run_ops(moto_endpoint, RAGSERVE_KEYS_TABLE=table, RAGSERVE_SNAPSHOT_BUCKET="ragserve-test-snapshots",
                     RAGSERVE_QUEUE_URL=queue_url)
    # THEN /metrics is Prometheus text from CloudWatch
    metrics = result["metrics"]
    assert metrics["statusCode"] == 200
    assert metrics["multiValueHeaders"]["Content-Type"][0].startswith("text/plain; version=0.0.4")
    assert 'ragserve_requests_sum{operation="embed",service="ragserve-embed"} 3' in metrics["body"]
    # AND /health reports each dependency: the queue is missing, so degraded (still 200)
    health = result["health"]
    body = json.loads(health["body"])
    assert health["statusCode"] == 200 and body["status"] == "degraded"
    assert body["checks"]["keys_table"] == "ok" and body["checks"]["snapshot_bucket"] == "ok"
    assert body["checks"]["ingest_queue"].startswith("unreachable: ")
    assert "missing" not in body["checks"]["ingest_queue"]  # no resource names on a public route


def test_ops_health_is_unhealthy_without_the_keys_table(aws, moto_endpoint):
    result = run_ops(moto_endpoint, RAGSERVE_KEYS_TABLE="absent")
    body = json.loads(result["health"]["body"])
    assert result["health"]["statusCode"] == 503 and body["status"] == "unhealthy"
    assert body["checks"] == {"keys_table": "unreachable: ResourceNotFoundException"}


# ------------------------------------------------------------- /health: index and Valkey


def publish_canary(s3, bucket: str, encoder, tmp_path, collection: str | None = None) -> int:
    """The canary collection (or ``collection``) as the single writer publishes it from the seed job."""
    from dataclasses import replace

    from ragserve.dependencies.canary import CANARY_COLLECTION, seed_job
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.settings import IndexSettings
    from ragserve.snapshots.s3 import S3SnapshotStore

    store = S3SnapshotStore(bucket, client=s3)
    name = collection or CANARY_COLLECTION
    CollectionWriter(store, encoder, IndexSettings(), tmp_path / "scratch").apply(
        name, [replace(seed_job(), collection=name)])
    return store.current(name)


def test_ops_health_reads_the_canary_index_and_pings_valkey(aws, moto_endpoint, redis_server, encoder, tmp_path):
    # GIVEN the canary collection published in the bucket, and Valkey up
    s3 = aws("s3")
    s3.create_bucket(Bucket="ragserve-test-snapshots")
    version = publish_canary(s3, "ragserve-test-snapshots", encoder, tmp_path)
    # WHEN the ops function (AWS mode) answers /health
    result = run_ops(moto_endpoint, RAGSERVE_SNAPSHOT_BUCKET="ragserve-test-snapshots",
                     RAGSERVE_QUERY_CACHE_URL=redis_server.url)
    body = json.loads(result["health"]["body"])
    # THEN the index (CURRENT and the manifest, verified) and Valkey are ok, and the
    # default collection being absent is no finding (index_version: the default's, none)
    assert body["checks"] == {"snapshot_bucket": "ok", "index": "ok", "query_cache": "ok"}
    assert body["status"] == "healthy" and result["health"]["statusCode"] == 200
    assert version == 1 and body["index_version"] is None
    # AND with a default collection, its live version is /health's index_version
    publish_canary(s3, "ragserve-test-snapshots", encoder, tmp_path, "default")
    publish_canary(s3, "ragserve-test-snapshots", encoder, tmp_path, "default")  # unchanged: no new version
    body = json.loads(run_ops(moto_endpoint, RAGSERVE_SNAPSHOT_BUCKET="ragserve-test-snapshots")["health"]["body"])
    assert body["checks"]["index"] == "ok" and body["index_version"] == 1


def test_ops_health_is_degraded_by_an_unreadable_index_or_valkey_down(aws, moto_endpoint, encoder, tmp_path):
    import socket

    s3 = aws("s3")
    s3.create_bucket(Bucket="ragserve-test-snapshots")
    publish_canary(s3, "ragserve-test-snapshots", encoder, tmp_path)
    # GIVEN a default collection whose manifest is altered, and nothing listening for Valkey
    s3.put_object(Bucket="ragserve-test-snapshots", Key="collections/default/CURRENT", Body=b"3\n")
    s3.put_object(Bucket="ragserve-test-snapshots", Key="collections/default/versions/v3.json", Body=b'{"format": 2}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    result = run_ops(moto_endpoint, RAGSERVE_SNAPSHOT_BUCKET="ragserve-test-snapshots", RAGSERVE_QUERY_CACHE_URL=dead)
    body = json.loads(result["health"]["body"])
    # THEN both are findings (degraded: the service still answers), named without resources
    assert result["health"]["statusCode"] == 200 and body["status"] == "degraded"
    assert body["checks"]["index"] == "default: snapshot_corrupt"
    assert body["checks"]["query_cache"].startswith("unreachable: ")
    assert "127.0.0.1" not in json.dumps(body) and "ragserve-test-snapshots" not in json.dumps(body)
    assert body["index_version"] is None
    # AND a bucket without the canary collection: not seeded yet
    s3.create_bucket(Bucket="ragserve-empty")
    empty = json.loads(run_ops(moto_endpoint, RAGSERVE_SNAPSHOT_BUCKET="ragserve-empty")["health"]["body"])
    assert empty["checks"]["index"] == "canary: no version yet" and empty["status"] == "degraded"


def test_ops_health_asks_the_embed_and_search_functions_of_its_stage(aws, moto_endpoint):
    # GIVEN a stage whose functions cannot be reached (moto has no such function)
    result = run_ops(moto_endpoint, RAGSERVE_STAGE="test", RAGSERVE_KEYS_TABLE=create_keys_table(aws("dynamodb")))
    body = json.loads(result["health"]["body"])
    # THEN the model is unknown and the service unhealthy: nothing can embed or search
    assert result["health"]["statusCode"] == 503 and body["status"] == "unhealthy"
    assert body["checks"]["embed_function"] == body["checks"]["search_function"] == \
        "unreachable: ResourceNotFoundException"
    assert body["checks"]["keys_table"] == "ok" and body["model"] is None


# ------------------------------------------------- the canary setup (CloudFormation custom resource)


def canary_request(kind: str, props: dict, physical: str | None = None, old: dict | None = None) -> dict:
    event = {"RequestType": kind, "ResponseURL": "http://127.0.0.1:9/unused", "StackId": "stack", "RequestId": kind,
             "LogicalResourceId": "HealthCanarySetup", "ResourceProperties": props}
    if physical is not None:
        event["PhysicalResourceId"] = physical
    if old is not None:
        event["OldResourceProperties"] = old
    return event


def test_canary_setup_issues_a_read_key_for_the_canary_collection_and_seeds_it(aws, moto_endpoint, monkeypatch):
    from canary_resources import prepare_canary_resources

    from functions.ops import canary
    from ragserve.auth.keys import hash_key
    from ragserve.dependencies.canary import CANARY_COLLECTION, seed_job
    from ragserve.ingest.jobs import IngestJob

    props = {**prepare_canary_resources(moto_endpoint), "Collection": CANARY_COLLECTION, "Generation": "1"}
    # WHEN CloudFormation creates the resource
    key_id, data = canary.handle(canary_request("Create", props))
    # THEN the secret holds a key whose hash is an active read record for the canary collection only
    secret = json.loads(aws("secretsmanager").get_secret_value(SecretId=props["SecretArn"])["SecretString"])
    assert secret["key_id"] == key_id == data["KeyId"] and secret["api_key"].startswith("rsk")
    [item] = aws("dynamodb").scan(TableName=props["KeysTable"])["Items"]
    assert item["key_hash"]["S"] == hash_key(secret["api_key"]) and item["status"]["S"] == "active"
    assert item["scope"]["S"] == "read" and [c["S"] for c in item["collections"]["L"]] == [CANARY_COLLECTION]
    assert item["tier"]["S"] == props["Tier"]
    # AND its API Gateway key is in the canary tier's usage plan (usage plans meter it)
    [in_plan] = aws("apigateway").get_usage_plan_keys(usagePlanId=props["PlanId"])["items"]
    assert in_plan["id"] == item["api_gateway_key_id"]["S"]
    # AND the canary documents wait in the ingest queue for the single writer
    [message] = aws("sqs").receive_message(QueueUrl=props["QueueUrl"], AttributeNames=["All"],
                                           MaxNumberOfMessages=10)["Messages"]
    assert IngestJob.from_json(message["Body"]) == seed_job() and data["SeedJobId"] == seed_job().job_id
    assert message["Attributes"]["MessageGroupId"] == CANARY_COLLECTION
    # AND the real authorizer lets the key read the canary collection, and nothing else
    response = authorize(authorizer(monkeypatch, props["KeysTable"]), secret["api_key"],
                         "arn:aws:execute-api:us-east-1:123456789012:api1/test/POST/v1/search")
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert response["context"]["collections"] == CANARY_COLLECTION and response["context"]["scope"] == "read"
    allowed = response["policyDocument"]["Statement"][0]["Resource"]
    assert not any("/POST/v1/collections" in arn or "/DELETE/" in arn for arn in allowed)
    assert any(arn.endswith("/GET/v1/collections/canary") for arn in allowed)
    assert "rsk" not in json.dumps(data)  # the key goes to the secret only

    # WHEN CloudFormation updates it with the same key properties: the same key, the documents again
    same, _ = canary.handle(canary_request("Update", props, key_id, old=dict(props)))
    assert same == key_id
    # WHEN the generation changes: a new key (a new physical id), stored in the secret
    newer = {**props, "Generation": "2"}
    rotated, _ = canary.handle(canary_request("Update", newer, key_id, old=props))
    assert rotated != key_id
    assert json.loads(aws("secretsmanager").get_secret_value(
        SecretId=props["SecretArn"])["SecretString"])["key_id"] == rotated
    # AND CloudFormation's delete of the old physical id revokes the old key
    canary.handle(canary_request("Delete", props, key_id))
    handler = authorizer(monkeypatch, props["KeysTable"])
    assert authorize(handler, secret["api_key"])["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    states = {i["key_id"]["S"]: i["status"]["S"] for i in aws("dynamodb").scan(TableName=props["KeysTable"])["Items"]}
    assert states == {key_id: "revoked", rotated: "active"}
    with pytest.raises(aws("apigateway").exceptions.NotFoundException):  # usage plans stop it at once
        aws("apigateway").get_api_key(apiKey=item["api_gateway_key_id"]["S"])
    # AND a key revoked by hand is replaced at the next update; a delete twice is harmless
    canary.handle(canary_request("Delete", newer, rotated))
    canary.handle(canary_request("Delete", newer, rotated))
    replaced, _ = canary.handle(canary_request("Update", newer, rotated, old=dict(newer)))
    assert replaced not in (key_id, rotated)


def test_canary_setup_answers_cloudformation_even_when_it_fails(aws, moto_endpoint):
    from functions.ops import canary
    from ragserve.local.events import LocalContext

    sent = []
    props = {"KeysTable": "absent", "PlanId": "none", "Tier": "premium", "SecretArn": "none", "QueueUrl": "none",
             "Collection": "canary", "Generation": "1", "Stage": "test"}
    original = canary.respond
    canary.respond = lambda event, answer: sent.append(answer)
    try:
        answer = canary.lambda_handler(canary_request("Create", props), LocalContext(function_name="canary"))
    finally:
        canary.respond = original
    assert sent == [answer] and answer["Status"] == "FAILED"
    assert answer["Reason"].count("\n") == 0 and answer["PhysicalResourceId"]
    # a delete of a resource whose create failed (no key id) succeeds without calling AWS
    assert canary.handle(canary_request("Delete", props, "2026/11/30/[$LATEST]abc")) == (
        "2026/11/30/[$LATEST]abc", {})


def authorizer(monkeypatch, table: str):
    import importlib

    monkeypatch.setenv("RAGSERVE_KEYS_TABLE", table)
    import functions.ops.authorizer as module

    return importlib.reload(module).lambda_handler


def authorize(handler, key: str, method_arn: str = "arn:aws:execute-api:us-east-1:123456789012:api1/test/GET/x"):
    from ragserve.local.events import LocalContext

    return handler({"type": "REQUEST", "methodArn": method_arn, "headers": {"x-api-key": key}},
                   LocalContext(function_name="ragserve-authorizer"))
