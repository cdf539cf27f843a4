"""One Telemetry per function: Powertools Logger, Tracer and Metrics (EMF, namespace
``ragserve``, names of DESIGN.md section 6), mirrored into the process's Prometheus
registry so that /metrics can show the same figures."""

from __future__ import annotations

import sys

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ragserve.observability.prometheus import REGISTRY
from ragserve.observability.tracing import make_tracer

NAMESPACE = "ragserve"
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 100)

_requests = REGISTRY.counter("ragserve_requests_total", "Requests answered, by operation and status class.")
_latency = REGISTRY.histogram("ragserve_request_duration_seconds", "Handler time per request.",
                              LATENCY_BUCKETS_S)
_tokens = REGISTRY.counter("ragserve_tokens_total", "Tokens fed to the model.")
_texts = REGISTRY.counter("ragserve_texts_embedded_total", "Texts embedded.")
_truncated = REGISTRY.counter("ragserve_texts_truncated_total", "Texts cut at the model's max length.")
_batch = REGISTRY.histogram("ragserve_batch_size", "Texts per embedding request.", BATCH_BUCKETS)
_init = REGISTRY.gauge("ragserve_model_init_ms", "Model load, verification and warm-up time.")
_dims = REGISTRY.gauge("ragserve_embedding_dimensions", "Dimensions of the served model.")


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Telemetry:
    """Logger, Tracer and Metrics of one function (``service`` = the function's name)."""

    def __init__(self, service: str) -> None:
        self.service = f"ragserve-{service}"
        # stderr: Lambda captures both streams; stdout stays free for EMF and for
        # `ragserve invoke`'s JSON result.
        self.logger = Logger(service=self.service, stream=sys.stderr)
        self.tracer = make_tracer(self.service)
        self.metrics = Metrics(namespace=NAMESPACE, service=self.service)

    def record_request(self, operation: str, status: int, latency_ms: float) -> None:
        self.metrics.add_dimension(name="Operation", value=operation)
        self.metrics.add_metric(name="RequestLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        self.metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name="Errors4xx", unit=MetricUnit.Count, value=int(400 <= status < 500))
        self.metrics.add_metric(name="Errors5xx", unit=MetricUnit.Count, value=int(status >= 500))
        _requests.inc(operation=operation, status=status_class(status))
        _latency.observe(latency_ms / 1000.0, operation=operation)

    def record_embedding(self, batch_size: int, tokens: int, truncated: int, dimensions: int) -> None:
        self.metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=batch_size)
        self.metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=tokens)
        self.metrics.add_metric(name="EmbeddingDimensions", unit=MetricUnit.Count, value=dimensions)
        _texts.inc(batch_size)
        _tokens.inc(tokens)
        _truncated.inc(truncated)
        _batch.observe(batch_size)

    def record_model_init(self, init_ms: float, dimensions: int) -> None:
        """At init: EMF is flushed with the first invocation's metrics."""
        self.metrics.add_metric(name="ModelInitMs", unit=MetricUnit.Milliseconds, value=init_ms)
        _init.set(init_ms)
        _dims.set(dimensions)


def render_prometheus() -> str:
    return REGISTRY.render()
