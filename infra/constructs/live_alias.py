"""The alias ``live`` that API Gateway, SQS and CodeDeploy target; for the latency-bound
functions, provisioned concurrency (the model and the index are loaded in init, so
warm instances answer without a cold start) and Application Auto Scaling on
provisioned-concurrency utilization (target 0.7)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ALIAS_NAME = "live"


@dataclass(frozen=True, slots=True)
class LiveAliasProps:
    function: lambda_.Function
    provisioned_min: int = 0  # 0: no provisioned concurrency
    provisioned_max: int = 0
    utilization_target: float = 0.7


class LiveAlias(Construct):
    alias: lambda_.Alias
    scaling: lambda_.IScalableFunctionAttribute | None

    def __init__(self, scope: Construct, construct_id: str, props: LiveAliasProps) -> None:
        super().__init__(scope, construct_id)
        provisioned = props.provisioned_min > 0
        self.alias = lambda_.Alias(
            self, "Alias", alias_name=ALIAS_NAME, version=props.function.current_version,
            provisioned_concurrent_executions=props.provisioned_min if provisioned else None,
        )
        self.scaling = None
        if provisioned:
            self.scaling = self.alias.add_auto_scaling(min_capacity=props.provisioned_min,
                                                       max_capacity=max(props.provisioned_max, props.provisioned_min))
            self.scaling.scale_on_utilization(utilization_target=props.utilization_target)
