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
