"""The alarms of docs/ARCHITECTURE.md section 7:

| alarm | metric | threshold | topic |
|---|---|---|---|
| error rate | API Gateway 5XXError / Count | > 5% for 5 min (5 x 1 min) | page |
| p99 latency | API Gateway Latency p99 | > 1000 ms for 10 min (10 x 1 min) | notify |
| health | Synthetics canary SuccessPercent on /health | < 100% for 2 runs (missing = failing) | page |
| memory | max over functions of MaxMemoryUsedMB / memory size | > 90% for 5 min (5 x 1 min) | notify |
| storage faults | EMF StorageFaults of the ingest function (Sum) | > 0 for 15 min (3 x 5 min; missing: keep) | page |
| dead letters | ingest DLQ ApproximateNumberOfMessagesVisible (Max) | > 0 (1 x 5 min) | notify |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_synthetics as synthetics
from constructs import Construct

ERROR_RATE_PERCENT = 5.0
P99_LATENCY_MS = 1000.0
MEMORY_PERCENT = 90.0
EMF_NAMESPACE = "ragserve"  # ragserve.observability.telemetry.NAMESPACE


def emf_metric(name: str, function: str, statistic: str, period: Duration) -> cloudwatch.Metric:
    """A metric a function emits outside any request (ragserve.observability.telemetry):
    its EMF blob's one dimension set is ``service`` = ``ragserve-<function>``."""
    return cloudwatch.Metric(namespace=EMF_NAMESPACE, metric_name=name, statistic=statistic, period=period,
                             dimensions_map={"service": f"ragserve-{function}"})


@dataclass(frozen=True, slots=True)
class MemoryWatch:
    name: str
    max_memory_used: cloudwatch.IMetric  # MB
    memory_mb: int


@dataclass(frozen=True, slots=True)
class ServiceAlarmsProps:
    name: str
    api: apigw.RestApi
    stage_name: str
    canary: synthetics.Canary
    canary_rate: Duration
    functions: Sequence[MemoryWatch]
    page: sns.ITopic
    notify: sns.ITopic
    dead_letters: sqs.IQueue  # the ingest queue's DLQ
    ingest_function: str = "ingest"  # the function whose consumer emits StorageFaults


class ServiceAlarms(Construct):
    error_rate: cloudwatch.Alarm
    latency_p99: cloudwatch.Alarm
    health: cloudwatch.Alarm
    memory: cloudwatch.Alarm
    storage_faults: cloudwatch.Alarm
    dead_letters: cloudwatch.Alarm

    def __init__(self, scope: Construct, construct_id: str, props: ServiceAlarmsProps) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        dims = {"ApiName": props.api.rest_api_name, "Stage": props.stage_name}

        def api_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name=name, dimensions_map=dims,
                                     statistic=statistic, period=minute)

        greater = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        self.error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"errors": api_metric("5XXError", "Sum"), "requests": api_metric("Count", "Sum")},
            period=minute, label="5xx rate (%)",
        ).create_alarm(
            self, "ErrorRate", alarm_name=f"{props.name}-error-rate", threshold=ERROR_RATE_PERCENT,
            evaluation_periods=5, datapoints_to_alarm=5, comparison_operator=greater,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"5xx responses > {ERROR_RATE_PERCENT:g}% of requests for 5 minutes",
        )
        self.latency_p99 = api_metric("Latency", "p99").create_alarm(
            self, "LatencyP99", alarm_name=f"{props.name}-latency-p99", threshold=P99_LATENCY_MS,
            evaluation_periods=10, datapoints_to_alarm=10, comparison_operator=greater,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"API p99 latency > {P99_LATENCY_MS:g} ms for 10 minutes",
        )
        self.health = props.canary.metric_success_percent(period=props.canary_rate, statistic="Average").create_alarm(
            self, "Health", alarm_name=f"{props.name}-health", threshold=100, evaluation_periods=2,
            datapoints_to_alarm=2, comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            alarm_description="GET /health failing (Synthetics canary) on two runs in a row",
        )
        ratios = {  # one expression per function: used / size
            f"r{i}": cloudwatch.MathExpression(expression=f"m{i} / {f.memory_mb}", period=minute,
                                               using_metrics={f"m{i}": f.max_memory_used}, label=f.name)
            for i, f in enumerate(props.functions)
        }
        self.memory = cloudwatch.MathExpression(
            expression=f"100 * MAX([{', '.join(ratios)}])", using_metrics=ratios, period=minute,
            label="max memory used, % of the function's size",
        ).create_alarm(
            self, "Memory", alarm_name=f"{props.name}-memory", threshold=MEMORY_PERCENT, evaluation_periods=5,
            datapoints_to_alarm=5, comparison_operator=greater,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"a function used > {MEMORY_PERCENT:g}% of its memory for 5 minutes "
                              f"({', '.join(f.name for f in props.functions)})",
        )
        five_minutes = Duration.minutes(5)
        # Jobs held back by a storage fault come back with a backoff of up to 15 minutes,
        # so during a lasting fault most periods have no datapoint: missing data keeps the
        # alarm's state (it clears on a batch without faults, StorageFaults = 0).
        self.storage_faults = emf_metric("StorageFaults", props.ingest_function, "Sum", five_minutes).create_alarm(
            self, "StorageFaults", alarm_name=f"{props.name}-storage-faults", threshold=0,
            evaluation_periods=3, datapoints_to_alarm=3, comparison_operator=greater,
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE,
            alarm_description="ingest writes held back by storage faults (the live version unreadable or the "
                              "store refusing writes) for 15 minutes: nothing is published until the store is "
                              "repaired (ragserve collections verify / repair)",
        )
        self.dead_letters = props.dead_letters.metric_approximate_number_of_messages_visible(
            period=five_minutes, statistic="Maximum",
        ).create_alarm(
            self, "DeadLetters", alarm_name=f"{props.name}-dead-letters", threshold=0, evaluation_periods=1,
            datapoints_to_alarm=1, comparison_operator=greater,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="ingest jobs in the dead-letter queue: accepted writes not applied; fix the cause, "
                              "then ragserve queue redrive",
        )
        for alarm, topic in ((self.error_rate, props.page), (self.health, props.page),
                             (self.storage_faults, props.page), (self.latency_p99, props.notify),
                             (self.memory, props.notify), (self.dead_letters, props.notify)):
            alarm.add_alarm_action(actions.SnsAction(topic))
            alarm.add_ok_action(actions.SnsAction(topic))
