"""/metrics from CloudWatch: the service's EMF metrics (namespace ``ragserve``) read
with ListMetrics + GetMetricData and rendered as Prometheus gauges, so a Prometheus
server can scrape a serverless service.

Each CloudWatch metric and statistic becomes one gauge over the last window (default
300 s), e.g. ``ragserve_request_latency_p99{operation="embed",service="ragserve-embed"}``
and ``ragserve_requests_sum{...}``; dimensions become labels. Results are cached for a
few seconds per instance, which bounds GetMetricData calls (and cost) whatever the
scrape rate. When CloudWatch cannot be read, the last good answer is served with
``ragserve_cloudwatch_up 0``; with no answer yet, ``NotReady`` (503)."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragserve.errors import NotReady

# Statistics per metric name (docs/ARCHITECTURE.md section 7); anything else: Average and Maximum.
# The metrics of PERCENTILE_METRICS also get the configured percentiles (p50, p95, p99).
STATISTICS: dict[str, tuple[str, ...]] = {
    "RequestLatency": ("Average", "Maximum", "SampleCount"),
    "Requests": ("Sum",),
    "Errors4xx": ("Sum",),
    "Errors5xx": ("Sum",),
    "CacheHit": ("Sum",),
    "CacheMiss": ("Sum",),
    "ColdStart": ("Sum",),
    "Tokens": ("Sum",),
    "WriteFailures": ("Sum",),
    "BatchSize": ("Average", "Maximum", "Sum"),
    "QueryLength": ("Average", "Maximum"),
    "TopScore": ("Average", "Minimum"),
    "EmbeddingDimensions": ("Maximum",),
    "IndexVersion": ("Maximum",),
    "ModelInitMs": ("Average", "Maximum"),
    "IndexLoadMs": ("Average", "Maximum"),
}
DEFAULT_STATISTICS = ("Average", "Maximum")
PERCENTILE_METRICS = frozenset({"RequestLatency"})
DEFAULT_PERCENTILES = ("p50", "p95", "p99")
MAX_QUERIES = 500  # GetMetricData's limit per call


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    dimensions: tuple[tuple[str, str], ...]  # sorted (name, value)


@dataclass(frozen=True, slots=True)
class Sample:
    metric: Metric
    stat: str
    value: float


def snake(name: str) -> str:
    """``RequestLatency`` -> ``request_latency``; ``Errors4xx`` -> ``errors4xx``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


def prometheus_name(namespace: str, metric: str, stat: str) -> str:
    return f"{snake(namespace)}_{snake(metric)}_{snake(stat.replace('.', '_'))}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(samples: Iterable[Sample], namespace: str, window_seconds: int, *, up: bool = True,
           age_seconds: float = 0.0) -> str:
    """Prometheus text: one gauge family per (metric, statistic), sorted by name."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(prometheus_name(namespace, sample.metric.name, sample.stat), []).append(sample)
    lines: list[str] = []
    prefix = snake(namespace)
    lines += [f"# HELP {prefix}_cloudwatch_up Whether the last read of CloudWatch succeeded.",
              f"# TYPE {prefix}_cloudwatch_up gauge", f"{prefix}_cloudwatch_up {int(up)}",
              f"# HELP {prefix}_cloudwatch_age_seconds Age of the figures below (they are cached).",
              f"# TYPE {prefix}_cloudwatch_age_seconds gauge",
              f"{prefix}_cloudwatch_age_seconds {_number(round(age_seconds, 3))}"]
    for name in sorted(families):
        members = families[name]
        first = members[0]
        lines.append(f"# HELP {name} CloudWatch {namespace}/{first.metric.name} {first.stat} "
                     f"over the last {window_seconds} s.")
        lines.append(f"# TYPE {name} gauge")
        for sample in sorted(members, key=lambda s: s.metric.dimensions):
            labels = ",".join(f'{snake(k)}="{_escape(v)}"' for k, v in sample.metric.dimensions)
            lines.append(f"{name}{{{labels}}} {_number(sample.value)}" if labels else f"{name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def window(now: float, window_seconds: int) -> tuple[datetime, datetime]:
    """[start, end) of the last ``window_seconds``, ending on the next whole minute (so
    one period covers every point, including those of the current minute)."""
    end = (math.floor(now / 60) + 1) * 60
    return datetime.fromtimestamp(end - window_seconds, UTC), datetime.fromtimestamp(end, UTC)


def statistics_of(name: str, percentiles: Sequence[str] = DEFAULT_PERCENTILES) -> tuple[str, ...]:
    stats = STATISTICS.get(name, DEFAULT_STATISTICS)
    return tuple(percentiles) + stats if name in PERCENTILE_METRICS else stats


def queries_for(metrics: Sequence[Metric], namespace: str, period: int,
                percentiles: Sequence[str] = DEFAULT_PERCENTILES) -> list[tuple[dict, Metric, str]]:
    out: list[tuple[dict, Metric, str]] = []
    for metric in metrics:
        for stat in statistics_of(metric.name, percentiles):
            query = {
                "Id": f"m{len(out)}",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": metric.name,
                               "Dimensions": [{"Name": k, "Value": v} for k, v in metric.dimensions]},
                    "Period": period,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            out.append((query, metric, stat))
    return out


class CloudWatchMetricsSource:
    def __init__(self, namespace: str = "ragserve", *, window_seconds: int = 300, cache_seconds: float = 30.0,
                 percentiles: Sequence[str] = DEFAULT_PERCENTILES, client: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.percentiles = tuple(percentiles)
        self.window_seconds = window_seconds
        self.cache_seconds = cache_seconds
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Sample]] | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ragserve.auth.store import aws_client

            self._client = aws_client("cloudwatch", timeouts=(2.0, 5.0))
        return self._client

    def list_metrics(self) -> list[Metric]:
        metrics: set[Metric] = set()
        for page in self.client.get_paginator("list_metrics").paginate(Namespace=self.namespace):
            for m in page.get("Metrics", []):
                dims = tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
                metrics.add(Metric(m["MetricName"], dims))
        return sorted(metrics, key=lambda m: (m.name, m.dimensions))

    def collect(self) -> list[Sample]:
        start, end = window(self._clock(), self.window_seconds)
        queries = queries_for(self.list_metrics(), self.namespace, self.window_seconds, self.percentiles)
        samples: list[Sample] = []
        for i in range(0, len(queries), MAX_QUERIES):
            chunk = queries[i:i + MAX_QUERIES]
            by_id = {q["Id"]: (metric, stat) for q, metric, stat in chunk}
            kwargs: dict[str, Any] = {"MetricDataQueries": [q for q, _, _ in chunk], "StartTime": start,
                                      "EndTime": end, "ScanBy": "TimestampDescending"}
            while True:
                page = self.client.get_metric_data(**kwargs)
                for result in page.get("MetricDataResults", []):
                    values = [v for v in result.get("Values", []) if v is not None]
                    if values and result["Id"] in by_id:
                        metric, stat = by_id[result["Id"]]
                        samples.append(Sample(metric, stat, float(values[0])))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return samples

    def render(self) -> str:
        now = self._clock()
        with self._lock:
            cached = self._cached
            if cached is not None and now - cached[0] < self.cache_seconds:
                return render(cached[1], self.namespace, self.window_seconds, age_seconds=now - cached[0])
            try:
                samples = self.collect()
            except Exception as exc:  # noqa: BLE001 - any AWS failure: serve stale figures, or 503
                if cached is None:
                    raise NotReady(f"CloudWatch metrics unavailable: {type(exc).__name__}") from exc
                return render(cached[1], self.namespace, self.window_seconds, up=False,
                              age_seconds=now - cached[0])
            self._cached = (now, samples)
            return render(samples, self.namespace, self.window_seconds)
