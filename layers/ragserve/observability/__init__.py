"""Logs, traces and metrics (Powertools) plus an in-process Prometheus registry."""

from ragserve.observability.telemetry import Telemetry

__all__ = ["Telemetry"]
