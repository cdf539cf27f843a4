"""Ops function: GET /health, GET /metrics and GET /v1/openapi.json.

Locally (one process serves every function) /health reports every check the loaded
functions registered (the model, the index, the caches) and /metrics renders the
process's Prometheus registry. In AWS (``RAGSERVE_METRICS_SOURCE=cloudwatch``) each
function runs apart, so /health probes the dependencies named in its settings, asks
the embed and search functions whether they answer (their model, the canary
collection), reads the collections' ``CURRENT`` and manifests and PINGs Valkey
(``ragserve.dependencies``), and /metrics reads the service's metrics from CloudWatch.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve import dependencies
from ragserve.api.app import create_app, health_response, resolve
from ragserve.api.openapi import build_openapi
from ragserve.dependencies import ServiceChecks, register_aws_checks
from ragserve.metrics_source import open_metrics_source
from ragserve.observability.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from ragserve.observability.telemetry import Telemetry
from ragserve.settings import IngestSettings, OpsSettings, SearchLimits

SETTINGS = OpsSettings.from_env()
telemetry = Telemetry("ops")
logger, tracer = telemetry.logger, telemetry.tracer
METRICS = open_metrics_source(SETTINGS)
CHECKS = register_aws_checks(SETTINGS, service=ServiceChecks.from_env(SETTINGS))
_INGEST = IngestSettings.from_env()
OPENAPI = build_openapi(_INGEST.limits, SearchLimits.from_env(), _INGEST.max_documents)  # the limits in force
logger.info("ops ready", extra={"metrics_source": SETTINGS.metrics_source, "checks": CHECKS})
app = create_app(telemetry)


@app.get("/health")
def handle_get_health() -> Response:
    dependencies.refresh()  # the expired probes, in parallel
    return health_response()


@app.get("/metrics")
@tracer.capture_method
def handle_get_metrics() -> Response:
    return Response(status_code=200, content_type=PROMETHEUS_CONTENT_TYPE, body=METRICS.render())


@app.get("/v1/openapi.json")
def handle_get_openapi() -> dict:
    return OPENAPI


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, telemetry)
