"""One ragserve function: a container-image Lambda from the one image
(functions/Dockerfile, repo root as context) with its CMD, in the private subnets
(but for a function that calls AWS APIs with no endpoint there: ``vpc=None``),
X-Ray active, its own log group (retention set), a reserved-concurrency cap, and a
metric of its peak memory taken from Lambda's REPORT lines (for the memory alarm)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

MEMORY_NAMESPACE = "ragserve/Lambda"
# Lambda's text REPORT line: "REPORT RequestId: <id> Duration: 2.3 ms Billed Duration: 3 ms
# Memory Size: 2048 MB Max Memory Used: 180 MB [Init Duration: ...]"
_REPORT_COLUMNS = ("type", "request_id_label", "request_id", "duration_label", "duration", "duration_unit",
                   "billed_label1", "billed_label2", "billed", "billed_unit", "size_label1", "size_label2",
                   "memory_size", "memory_size_unit", "max_label1", "max_label2", "max_label3", "max_memory_used",
                   "max_memory_unit", "...")


@dataclass(frozen=True, slots=True)
class ServiceFunctionProps:
    name: str  # functions/<name> (or the catalogue's name)
    function_name: str
    cmd: str
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int
    image_directory: str  # the repo root: the image's build context
    vpc: ec2.IVpc | None  # None: outside the VPC
    subnets: ec2.SubnetSelection | None
    security_groups: Sequence[ec2.ISecurityGroup]
    architecture: str = "x86_64"
    dockerfile: str = "functions/Dockerfile"
    environment: Mapping[str, str] = field(default_factory=dict)
    reserved_concurrency: int | None = None
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


class ServiceFunction(Construct):
    function: lambda_.DockerImageFunction
    log_group: logs.LogGroup
    max_memory_used: cloudwatch.Metric  # MB, Maximum per minute
    memory_mb: int

    def __init__(self, scope: Construct, construct_id: str, props: ServiceFunctionProps) -> None:
        super().__init__(scope, construct_id)
        arm = props.architecture == "arm64"
        self.memory_mb = props.memory_mb
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=f"/aws/lambda/{props.function_name}",
                                       retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.function = lambda_.DockerImageFunction(
            self, "Function",
            function_name=props.function_name,
            description=f"ragserve {props.name}: {props.cmd}",
            code=lambda_.DockerImageCode.from_image_asset(
                props.image_directory, file=props.dockerfile, cmd=[props.cmd],
                platform=ecr_assets.Platform.LINUX_ARM64 if arm else ecr_assets.Platform.LINUX_AMD64,
            ),
            architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
            memory_size=props.memory_mb,
            timeout=Duration.seconds(props.timeout_s),
            ephemeral_storage_size=Size.mebibytes(props.ephemeral_mb),
            environment=dict(props.environment),
            tracing=lambda_.Tracing.ACTIVE,
            vpc=props.vpc,
            vpc_subnets=props.subnets,
            security_groups=list(props.security_groups) if props.vpc is not None else None,
            reserved_concurrent_executions=props.reserved_concurrency,
            log_group=self.log_group,
        )
        metric_name = f"MaxMemoryUsedMB-{props.function_name}"
        logs.MetricFilter(
            self, "MaxMemoryUsed", log_group=self.log_group, metric_namespace=MEMORY_NAMESPACE,
            metric_name=metric_name, metric_value="$max_memory_used",
            filter_pattern=logs.FilterPattern.space_delimited(*_REPORT_COLUMNS).where_string("type", "=", "REPORT"),
            unit=cloudwatch.Unit.MEGABYTES,
        )
        self.max_memory_used = cloudwatch.Metric(namespace=MEMORY_NAMESPACE, metric_name=metric_name,
                                                 statistic="Maximum", period=Duration.minutes(1))
