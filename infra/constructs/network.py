"""The VPC: private isolated subnets only (no NAT, no internet), gateway endpoints for
S3 and DynamoDB (free), and interface endpoints only for what a function calls from
inside: SQS (ingest enqueues) and CloudWatch monitoring (ops reads metrics).

Not needed, so not paid for: CloudWatch Logs and X-Ray (Lambda ships logs and traces
from outside the function's network), Step Functions, API Gateway and ElastiCache
(the cache lives in these subnets)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct


@dataclass(frozen=True, slots=True)
class NetworkProps:
    max_azs: int = 2
    cidr: str = "10.42.0.0/16"
    flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


class Network(Construct):
    vpc: ec2.Vpc
    functions_security_group: ec2.SecurityGroup
    subnets: ec2.SubnetSelection

    def __init__(self, scope: Construct, construct_id: str, props: NetworkProps) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(props.cidr),
            max_azs=props.max_azs,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="private", cidr_mask=22,
                                                          subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)],
            restrict_default_security_group=False,  # True adds a custom-resource Lambda; nothing uses the default SG
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=props.flow_log_retention,
                                  removal_policy=RemovalPolicy.DESTROY)
        self.vpc.add_flow_log("RejectedFlows", traffic_type=ec2.FlowLogTrafficType.REJECT,
                              destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.functions_security_group = ec2.SecurityGroup(
            self, "Functions", vpc=self.vpc, allow_all_outbound=True,
            description="ragserve functions: no inbound; outbound to VPC endpoints and the query cache")
        for name, service in (("S3", ec2.GatewayVpcEndpointAwsService.S3),
                              ("DynamoDb", ec2.GatewayVpcEndpointAwsService.DYNAMODB)):
            self.vpc.add_gateway_endpoint(name, service=service, subnets=[self.subnets])
        for name, service in (("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS),
                              ("Monitoring", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING)):
            endpoint = self.vpc.add_interface_endpoint(name, service=service, subnets=self.subnets,
                                                       private_dns_enabled=True, open=False)
            endpoint.connections.allow_default_port_from(self.functions_security_group,
                                                         f"HTTPS to {name} from the functions")
