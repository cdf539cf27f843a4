"""One Telemetry per function: Powertools Logger, Tracer and Metrics (EMF, namespace
``ragserve``, names of docs/ARCHITECTURE.md section 7), mirrored into the process's Prometheus
registry so that /metrics can show the same figures.

EMF metrics are collected per invocation (``Telemetry.invocation``) in an
``EphemeralMetrics`` held in a context variable, not in Powertools' process-wide
``Metrics`` state: the local server runs invocations on concurrent threads, where a
shared metric set would mix requests and, with metrics disabled, never be cleared.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

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
_top_score = REGISTRY.histogram("ragserve_search_top_score", "Similarity of the best hit (drift signal).",
                                (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
_writes = REGISTRY.counter("ragserve_documents_written_total", "Documents applied by the writer, by kind.")
_write_failures = REGISTRY.counter("ragserve_write_failures_total", "Queue messages whose write failed.")
_storage_faults = REGISTRY.counter("ragserve_storage_faults_total",
                                   "Queue messages held back because the store could not be read or written.")
_index_load = REGISTRY.gauge("ragserve_index_load_ms", "Time to fetch, verify and open the last collection version.")


_current: ContextVar[EphemeralMetrics | None] = ContextVar("ragserve_metrics", default=None)
# Cache metrics carry the dimension Cache, not Operation: one metric set per cache.
_current_caches: ContextVar[dict[str, EphemeralMetrics] | None] = ContextVar("ragserve_cache_metrics", default=None)


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
        self._pending: list[tuple[str, str, float]] = []  # recorded between invocations (init, swaps)
        self._cold = True
        self._lock = threading.Lock()

    @contextmanager
    def invocation(self) -> Iterator[EphemeralMetrics]:
        """Collect this invocation's EMF metrics and print them as one blob at the end."""
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=self.service)
        with self._lock:
            cold, self._cold = self._cold, False
            pending, self._pending = self._pending, []
        if cold:
            metrics.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
        for name, unit, value in pending:
            metrics.add_metric(name=name, unit=unit, value=value)
        token = _current.set(metrics)
        caches: dict[str, EphemeralMetrics] = {}
        caches_token = _current_caches.set(caches)
        try:
            yield metrics
        finally:
            _current.reset(token)
            _current_caches.reset(caches_token)
            metrics.flush_metrics()
            for cache_metrics in caches.values():
                cache_metrics.flush_metrics()

    def _emf(self, name: str, unit: str, value: float) -> None:
        """Into this invocation's metrics; outside one (init), into the next invocation's."""
        metrics = _current.get()
        if metrics is not None:
            metrics.add_metric(name=name, unit=unit, value=value)
        else:
            with self._lock:
                self._pending.append((name, unit, value))

    def record_request(self, operation: str, status: int, latency_ms: float) -> None:
        metrics = _current.get()
        if metrics is not None:
            metrics.add_dimension(name="Operation", value=operation)
        self._emf("RequestLatency", MetricUnit.Milliseconds, latency_ms)
        self._emf("Requests", MetricUnit.Count, 1)
        self._emf("Errors4xx", MetricUnit.Count, int(400 <= status < 500))
        self._emf("Errors5xx", MetricUnit.Count, int(status >= 500))
        _requests.inc(operation=operation, status=status_class(status))
        _latency.observe(latency_ms / 1000.0, operation=operation)

    def record_embedding(self, batch_size: int, tokens: int, truncated: int, dimensions: int) -> None:
        self._emf("BatchSize", MetricUnit.Count, batch_size)
        self._emf("Tokens", MetricUnit.Count, tokens)
        self._emf("EmbeddingDimensions", MetricUnit.Count, dimensions)
        _texts.inc(batch_size)
        _tokens.inc(tokens)
        _truncated.inc(truncated)
        _batch.observe(batch_size)

    def record_model_init(self, init_ms: float, dimensions: int) -> None:
        """At init; the EMF figure goes out with the first invocation."""
        self._emf("ModelInitMs", MetricUnit.Milliseconds, init_ms)
        _init.set(init_ms)
        _dims.set(dimensions)

    def record_search(self, query_chars: int, top_score: float | None, index_version: int) -> None:
        self._emf("QueryLength", MetricUnit.Count, query_chars)
        self._emf("IndexVersion", MetricUnit.Count, index_version)
        if top_score is not None:
            self._emf("TopScore", MetricUnit.NoUnit, top_score)
            _top_score.observe(top_score)

    def record_writes(self, results, failed_messages: int) -> None:
        """One consumer batch: versions published, documents written, messages failed."""
        for result in results:
            if result.version is not None:
                self._emf("IndexVersion", MetricUnit.Count, result.version)
            _writes.inc(result.upserted, kind="upsert")
            _writes.inc(result.deleted, kind="delete")
            _writes.inc(result.unchanged, kind="unchanged")
        self._emf("WriteFailures", MetricUnit.Count, failed_messages)
        _write_failures.inc(failed_messages)

    def record_storage_faults(self, deferred_messages: int) -> None:
        """Messages held back because the store could not be read or written (alarmed)."""
        self._emf("StorageFaults", MetricUnit.Count, deferred_messages)
        _storage_faults.inc(deferred_messages)

    def record_cache(self, cache: str, hits: int, misses: int) -> None:
        """EMF CacheHit / CacheMiss with dimension Cache (the Prometheus side is counted
        by the cache layer itself)."""
        caches = _current_caches.get()
        if caches is None:
            return
        metrics = caches.get(cache)
        if metrics is None:
            metrics = caches[cache] = EphemeralMetrics(namespace=NAMESPACE, service=self.service)
            metrics.add_dimension(name="Cache", value=cache)
        metrics.add_metric(name="CacheHit", unit=MetricUnit.Count, value=hits)
        metrics.add_metric(name="CacheMiss", unit=MetricUnit.Count, value=misses)

    def record_index_load(self, version: int, load_ms: float) -> None:
        self._emf("IndexLoadMs", MetricUnit.Milliseconds, load_ms)
        _index_load.set(load_ms)


def render_prometheus() -> str:
    return REGISTRY.render()
