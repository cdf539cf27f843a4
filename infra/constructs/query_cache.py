"""ElastiCache Serverless (Valkey) for the query cache, in the private subnets; TLS
always on (serverless caches only speak TLS). Only the functions' security group may
connect. Usage limits cap storage and ECPUs (the cost guard)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Fn
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from constructs import Construct

VALKEY_PORTS = (6379, 6380)  # 6380: reads from replicas


@dataclass(frozen=True, slots=True)
class QueryCacheProps:
    name: str
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    clients: ec2.ISecurityGroup
    max_storage_gb: int = 1
    max_ecpu_per_second: int = 5000
    major_engine_version: str = "8"


class QueryCache(Construct):
    cache: elasticache.CfnServerlessCache
    security_group: ec2.SecurityGroup
    url: str  # rediss://<endpoint>:<port> (a token until deploy)

    def __init__(self, scope: Construct, construct_id: str, props: QueryCacheProps) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=props.vpc, allow_all_outbound=False,
                                                description="ragserve query cache: Valkey from the functions only")
        for port in VALKEY_PORTS:
            self.security_group.add_ingress_rule(props.clients, ec2.Port.tcp(port), f"Valkey {port} from functions")
        self.cache = elasticache.CfnServerlessCache(
            self, "Cache",
            engine="valkey",
            major_engine_version=props.major_engine_version,
            serverless_cache_name=props.name,
            description="ragserve query cache",
            subnet_ids=props.vpc.select_subnets(subnet_type=props.subnets.subnet_type).subnet_ids,
            security_group_ids=[self.security_group.security_group_id],
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(maximum=props.max_storage_gb,
                                                                                 unit="GB"),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=props.max_ecpu_per_second),
            ),
        )
        self.url = Fn.join("", ["rediss://", self.cache.attr_endpoint_address, ":", self.cache.attr_endpoint_port])
