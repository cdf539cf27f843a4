"""The CloudWatch dashboard: latency percentiles per operation, throughput, 4xx/5xx,
cache hit rate, provisioned concurrency utilization, cold starts, top-score drift,
the queue, storage faults and compaction. Operations come from the routes table, so
new routes show up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ragserve.routes import Route

NAMESPACE = "ragserve"  # EMF namespace of ragserve.observability.telemetry
CACHES = ("embedding", "query")


def search(metric: str, statistic: str, period: int, **dimensions: str) -> str:
    """A CloudWatch SEARCH over the EMF namespace, whatever dimension set a function
    emitted the metric with (one EMF blob carries service and Operation for all its
    metrics)."""
    terms = " ".join([f'Namespace="{NAMESPACE}"', f'MetricName="{metric}"',
                      *(f'{k}="{v}"' for k, v in sorted(dimensions.items()))])
    return f"SEARCH('{terms}', '{statistic}', {period})"


@dataclass(frozen=True, slots=True)
class ServiceDashboardProps:
    name: str
    api_name: str
    stage_name: str
    routes: Sequence[Route]
    provisioned_aliases: Mapping[str, lambda_.Alias]
    functions: Mapping[str, lambda_.IFunction]
    queue: sqs.IQueue
    dead_letters: sqs.IQueue
    alarms: Sequence[cloudwatch.IAlarm]
    storage_faults: cloudwatch.IMetric | None = None  # ingest jobs held back by storage faults
    compaction: lambda_.IFunction | None = None  # the compaction function


class ServiceDashboard(Construct):
    dashboard: cloudwatch.Dashboard

    def __init__(self, scope: Construct, construct_id: str, props: ServiceDashboardProps) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        operations = [(f"ragserve-{r.function}", r.operation) for r in props.routes]

        def emf(name: str, statistic: str, service: str, operation: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic=statistic, period=minute,
                                     dimensions_map={"service": service, "Operation": operation},
                                     label=f"{operation} {statistic}")

        def api(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name=name, statistic=statistic,
                                     period=minute, dimensions_map={"ApiName": props.api_name,
                                                                    "Stage": props.stage_name},
                                     label=f"{name} {statistic}")

        latency = [
            cloudwatch.GraphWidget(
                title=f"Latency {stat} by operation (ms)", width=8, height=6,
                left=[emf("RequestLatency", stat, service, operation) for service, operation in operations])
            for stat in ("p50", "p95", "p99")
        ]
        def search_sum(metric: str, cache: str) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(expression="SUM(" + search(metric, "Sum", 60, Cache=cache) + ")",
                                             period=minute)

        hit_rates = [
            cloudwatch.MathExpression(
                expression=f"100 * hits_{cache} / (hits_{cache} + misses_{cache})", label=f"{cache} hit rate (%)",
                period=minute, using_metrics={f"hits_{cache}": search_sum("CacheHit", cache),
                                              f"misses_{cache}": search_sum("CacheMiss", cache)})
            for cache in CACHES
        ]
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=props.name)
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(props.alarms),
                                                                width=24, height=3))
        self.dashboard.add_widgets(*latency)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Throughput (requests/min) by operation", width=8, height=6,
                                   left=[emf("Requests", "Sum", s, o) for s, o in operations]),
            cloudwatch.GraphWidget(title="API 4xx / 5xx", width=8, height=6,
                                   left=[api("4XXError", "Sum"), api("5XXError", "Sum")],
                                   right=[api("Count", "Sum")]),
            cloudwatch.GraphWidget(title="Cache hit rate (%)", width=8, height=6, left=hit_rates,
                                   left_y_axis=cloudwatch.YAxisProps(min=0, max=100)),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Provisioned concurrency utilization", width=8, height=6,
                left=[alias.metric("ProvisionedConcurrencyUtilization", statistic="Maximum", period=minute,
                                   label=name) for name, alias in props.provisioned_aliases.items()],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=1)),
            cloudwatch.GraphWidget(
                title="Cold starts", width=8, height=6,
                left=[cloudwatch.MathExpression(
                    expression=search("ColdStart", "Sum", 60),
                    label="cold starts", period=minute)]),
            cloudwatch.GraphWidget(
                title="Top-1 similarity (drift signal)", width=8, height=6,
                left=[cloudwatch.MathExpression(
                    expression=search("TopScore", "Average", 300),
                    label="mean top score", period=Duration.minutes(5))]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Function errors and throttles", width=12, height=6,
                left=[fn.metric_errors(period=minute, label=f"{name} errors") for name, fn in props.functions.items()],
                right=[fn.metric_throttles(period=minute, label=f"{name} throttles")
                       for name, fn in props.functions.items()]),
            cloudwatch.GraphWidget(
                title="Ingest queue", width=12, height=6,
                left=[props.queue.metric_approximate_number_of_messages_visible(period=minute, label="waiting"),
                      props.dead_letters.metric_approximate_number_of_messages_visible(period=minute,
                                                                                        label="dead letters")],
                right=[props.queue.metric_approximate_age_of_oldest_message(period=minute, label="oldest (s)")]),
        )
        compaction: list[cloudwatch.IWidget] = []
        if props.storage_faults is not None:
            compaction.append(cloudwatch.GraphWidget(
                title="Storage faults (ingest jobs held back)", width=12, height=6,
                left=[props.storage_faults.with_(label="held back", period=Duration.minutes(5))]))
        if props.compaction is not None:
            five = Duration.minutes(5)
            compaction.append(cloudwatch.GraphWidget(
                title="Compaction runs", width=12, height=6,
                left=[props.compaction.metric_invocations(period=five, label="runs"),
                      props.compaction.metric_errors(period=five, label="errors"),
                      props.compaction.metric_throttles(period=five, label="waiting (throttled)")],
                right=[props.compaction.metric_duration(period=five, statistic="Maximum", label="longest (ms)")]))
        if compaction:
            self.dashboard.add_widgets(*compaction)
