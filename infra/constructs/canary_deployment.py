"""CodeDeploy for a ``live`` alias: each new version gets a share of the traffic first
(canary 10% for 5 minutes in prod) and is rolled back automatically when one of the
alarms fires: the alias's own error rate and p99 duration, plus the service alarms
passed in. Rolling back by hand is one command (see docs/DEPLOY.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

DEPLOYMENT_CONFIGS = {
    "canary": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "linear": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
}


@dataclass(frozen=True, slots=True)
class CanaryDeploymentProps:
    alias: lambda_.Alias
    name: str
    deployment: str = "canary"
    error_rate_percent: float = 5.0  # function errors (crashes, timeouts) per invocation
    p99_ms: float = 1000.0
    service_alarms: Sequence[cloudwatch.IAlarm] = field(default_factory=tuple)


class CanaryDeployment(Construct):
    deployment_group: codedeploy.LambdaDeploymentGroup
    error_alarm: cloudwatch.Alarm
    latency_alarm: cloudwatch.Alarm

    def __init__(self, scope: Construct, construct_id: str, props: CanaryDeploymentProps) -> None:
        super().__init__(scope, construct_id)
        minute = Duration.minutes(1)
        errors = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={"errors": props.alias.metric_errors(period=minute, statistic="Sum"),
                           "invocations": props.alias.metric_invocations(period=minute, statistic="Sum")},
            period=minute, label=f"{props.name} live error rate (%)",
        )
        self.error_alarm = errors.create_alarm(
            self, "ErrorRate", threshold=props.error_rate_percent, evaluation_periods=2, datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{props.name}: function errors > {props.error_rate_percent}% (rolls a deploy back)",
        )
        self.latency_alarm = props.alias.metric_duration(period=minute, statistic="p99").create_alarm(
            self, "LatencyP99", threshold=props.p99_ms, evaluation_periods=3, datapoints_to_alarm=3,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{props.name}: p99 duration > {props.p99_ms:.0f} ms (rolls a deploy back)",
        )
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self, "DeploymentGroup",
            alias=props.alias,
            deployment_config=DEPLOYMENT_CONFIGS[props.deployment],
            alarms=[self.error_alarm, self.latency_alarm, *props.service_alarms],
            auto_rollback=codedeploy.AutoRollbackConfig(failed_deployment=True, stopped_deployment=True,
                                                        deployment_in_alarm=True),
        )
