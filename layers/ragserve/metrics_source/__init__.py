"""Where GET /metrics reads from: this process's Prometheus registry (local, the
embedded default), or the service's CloudWatch metrics (AWS, where each request may
land on a different instance and only CloudWatch sees them all)."""

from __future__ import annotations

from typing import Any, Protocol

from ragserve.settings import OpsSettings


class MetricsSource(Protocol):
    def render(self) -> str:
        """Prometheus text exposition (format 0.0.4)."""
        ...


class LocalMetricsSource:
    """The in-process registry every function's Telemetry writes to."""

    def render(self) -> str:
        from ragserve.observability.telemetry import render_prometheus

        return render_prometheus()


def open_metrics_source(settings: OpsSettings, client: Any = None) -> MetricsSource:
    if settings.metrics_source == "cloudwatch":
        from ragserve.metrics_source.cloudwatch import CloudWatchMetricsSource

        return CloudWatchMetricsSource(settings.metrics_namespace, window_seconds=settings.metrics_window_seconds,
                                       cache_seconds=settings.metrics_cache_seconds,
                                       percentiles=settings.percentiles, client=client)
    return LocalMetricsSource()


__all__ = ["LocalMetricsSource", "MetricsSource", "open_metrics_source"]
