"""Compaction in AWS (functions/ingest/compact.py): segment merges and retention run in
a function of their own, never in the writer's invocations.

- an EventBridge schedule (every 15 minutes by default) runs it over every collection;
- the ingest function invokes it asynchronously, with ``{"collection": ...}``, after a
  publish that leaves a merge to do (``Maintenance.trigger``). The functions live in
  isolated subnets, so that call goes through an interface endpoint for Lambda, open
  to the functions' security group only;
- asynchronous events (both kinds) wait at most ``max_event_age`` in Lambda's queue and
  are not retried on failure: a compaction that failed or waited too long is done by
  the next scheduled run anyway, and the function runs one at a time (its reserved
  concurrency is 1), so a burst of publishes must not pile up hours of stale requests.

The grants (S3 on the snapshots bucket, lambda:InvokeFunction for the ingest function)
are the stack's (``RagserveStack._grant``), with the others."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct


@dataclass(frozen=True, slots=True)
class CompactionProps:
    function: lambda_.IFunction  # the compaction function
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    clients: ec2.ISecurityGroup  # who may call the Lambda endpoint (the functions)
    rule_name: str | None = None
    schedule: Duration = Duration.minutes(15)
    max_event_age: Duration = Duration.hours(1)


class Compaction(Construct):
    rule: events.Rule
    endpoint: ec2.InterfaceVpcEndpoint

    def __init__(self, scope: Construct, construct_id: str, props: CompactionProps) -> None:
        super().__init__(scope, construct_id)
        props.function.configure_async_invoke(max_event_age=props.max_event_age, retry_attempts=0)
        self.rule = events.Rule(
            self, "Schedule", rule_name=props.rule_name, schedule=events.Schedule.rate(props.schedule),
            description="ragserve: merge segments and apply retention in every collection",
            targets=[targets.LambdaFunction(props.function)],  # the scheduled event itself: no collection
        )
        self.endpoint = props.vpc.add_interface_endpoint(
            "LambdaEndpoint", service=ec2.InterfaceVpcEndpointAwsService.LAMBDA_, subnets=props.subnets,
            private_dns_enabled=True, open=False)
        self.endpoint.connections.allow_default_port_from(props.clients, "HTTPS to Lambda from the functions")
