"""RagserveStack: one stage of the service. It only wires the constructs of
``infra/constructs`` together: who gets which environment variable (names from
``ragserve.settings.Env``), which grant, which alarm, which output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import FUNCTIONS, FunctionSpec, StageConfig
from infra.constructs.alarm_topics import AlarmTopics, AlarmTopicsProps
from infra.constructs.api_gateway_account import ApiGatewayAccount
from infra.constructs.bulk_pipeline import BulkPipeline, BulkPipelineProps
from infra.constructs.canary_deployment import CanaryDeployment, CanaryDeploymentProps
from infra.constructs.compaction import Compaction, CompactionProps
from infra.constructs.cost_budget import COST_TAG, CostBudget, CostBudgetProps
from infra.constructs.dashboard import ServiceDashboard, ServiceDashboardProps
from infra.constructs.health_canary import HealthCanary, HealthCanaryProps
from infra.constructs.ingest_queue import IngestQueue, IngestQueueProps
from infra.constructs.live_alias import LiveAlias, LiveAliasProps
from infra.constructs.network import Network, NetworkProps
from infra.constructs.query_cache import QueryCache, QueryCacheProps
from infra.constructs.rest_api import ServiceApi, ServiceApiProps
from infra.constructs.service_alarms import MemoryWatch, ServiceAlarms, ServiceAlarmsProps, emf_metric
from infra.constructs.service_function import ServiceFunction, ServiceFunctionProps
from infra.constructs.storage import SnapshotStorage, SnapshotStorageProps
from infra.constructs.tables import Tables, TablesProps
from infra.constructs.usage_plans import UsagePlans, UsagePlansProps
from infra.constructs.web_acl import WebAcl, WebAclProps
from infra.nag import ack, acknowledge_findings
from ragserve.model.manifest import resolve_model
from ragserve.routes import ROUTES, Route
from ragserve.settings import Env

REPO_ROOT = Path(__file__).resolve().parent.parent
METRICS_NAMESPACE = "ragserve"
# p99 duration of a new version that rolls its deployment back (others: 80% of the timeout)
# (ops: its /health may wait for a cold embed or search function, up to its 10 s probe timeout)
DEPLOY_P99_MS = {"embed": 1000.0, "search": 1000.0, "authorizer": 1000.0, "ops": 12000.0}


_RETENTION = {1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
              60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
              365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS"}


def log_retention(days: int) -> logs.RetentionDays:
    if days not in _RETENTION:
        raise ValueError(f"log_retention_days {days}: use one of {sorted(_RETENTION)}")
    return getattr(logs.RetentionDays, _RETENTION[days])


class RagserveStack(cdk.Stack):
    """Everything of one stage."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig,
                 routes: Sequence[Route] = ROUTES, image_directory: Path = REPO_ROOT, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        prefix = f"ragserve-{config.name}"
        for key, value in (("project", "ragserve"), ("stage", config.name), (COST_TAG, config.name)):
            cdk.Tags.of(self).add(key, value)
        keep = RemovalPolicy.RETAIN if config.removal == "retain" else RemovalPolicy.DESTROY
        retention = log_retention(config.log_retention_days)
        specs = {spec.name: config.function(spec) for spec in FUNCTIONS}

        # -- data ----------------------------------------------------------------------
        self.network = Network(self, "Network", NetworkProps(flow_log_retention=retention))
        self.storage = SnapshotStorage(self, "Storage", SnapshotStorageProps(removal_policy=keep))
        self.tables = Tables(self, "Tables", TablesProps(removal_policy=keep,
                                                         deletion_protection=keep == RemovalPolicy.RETAIN))
        self.ingest_queue = IngestQueue(self, "IngestQueue", IngestQueueProps(
            consumer_timeout=Duration.seconds(specs["ingest"].timeout_s)))
        self.query_cache = QueryCache(self, "QueryCache", QueryCacheProps(
            name=f"{prefix}-query", vpc=self.network.vpc, subnets=self.network.subnets,
            clients=self.network.functions_security_group, max_storage_gb=config.query_cache_max_gb,
            max_ecpu_per_second=config.query_cache_max_ecpu))

        # -- functions -----------------------------------------------------------------
        bucket, tables, queue = self.storage.bucket, self.tables, self.ingest_queue.queue
        store = {Env.STORE: "s3", Env.SNAPSHOT_BUCKET: bucket.bucket_name}
        cache_table = {Env.EMBEDDING_CACHE_TABLE: tables.embedding_cache.table_name}
        environments: dict[str, dict[str, str]] = {
            "embed": {**cache_table},
            "search": {**store, **cache_table, Env.QUERY_CACHE_URL: self.query_cache.url},
            # (+ Env.COMPACTION_FUNCTION, below: the compaction function's name)
            "ingest": {**store, **cache_table, Env.QUEUE_URL: queue.queue_url,
                       Env.DEAD_LETTER_URL: self.ingest_queue.dead_letters.queue_url,
                       Env.IDEMPOTENCY_TABLE: tables.idempotency.table_name},
            # /health: + the embed and search functions (ragserve-<stage>-<name>:live), the
            # collections' CURRENT and manifests in the bucket, and a PING to Valkey
            "ops": {Env.METRICS_SOURCE: "cloudwatch", Env.METRICS_NAMESPACE: METRICS_NAMESPACE,
                    Env.KEYS_TABLE: tables.keys.table_name, Env.SNAPSHOT_BUCKET: bucket.bucket_name,
                    Env.QUEUE_URL: queue.queue_url, Env.IDEMPOTENCY_TABLE: tables.idempotency.table_name,
                    Env.QUERY_CACHE_URL: self.query_cache.url, **cache_table},
            "authorizer": {Env.KEYS_TABLE: tables.keys.table_name},
            "shard": {**store, **cache_table},
            "merge": {**store},
            # the merge policy and retention window: CompactionSettings' defaults
            "compact": {**store},
            # the canary's key and collection: everything it needs comes with its
            # CloudFormation event (infra/constructs/health_canary.py)
            "canary": {},
        }
        self.functions: dict[str, ServiceFunction] = {}
        for name, spec in specs.items():
            self.functions[name] = self._function(spec, environments[name], config, image_directory, retention)
        fn = {name: f.function for name, f in self.functions.items()}
        # the ingest function invokes it (async) after a publish that leaves a merge to do
        fn["ingest"].add_environment(Env.COMPACTION_FUNCTION, fn["compact"].function_name)
        self._grant(fn)
        self.compaction = Compaction(self, "Compaction", CompactionProps(
            function=fn["compact"], vpc=self.network.vpc, subnets=self.network.subnets,
            clients=self.network.functions_security_group, rule_name=f"{prefix}-compact"))

        self.aliases: dict[str, LiveAlias] = {}
        for name, spec in specs.items():
            if spec.live_alias:
                self.aliases[name] = LiveAlias(self, f"{name.title()}Live", LiveAliasProps(
                    function=fn[name],
                    provisioned_min=config.provisioned_concurrency if spec.provisioned else 0,
                    provisioned_max=config.provisioned_concurrency_max if spec.provisioned else 0))
        live = {name: a.alias for name, a in self.aliases.items()}
        # ops' /health asks the embed and search functions (their live aliases) whether they answer
        fn["ops"].add_to_role_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[
            live["embed"].function_arn, live["search"].function_arn]))
        live["ingest"].add_event_source(event_sources.SqsEventSource(
            queue, batch_size=config.ingest_batch_size, report_batch_item_failures=True,
            max_concurrency=config.ingest_max_concurrency))

        # -- API -----------------------------------------------------------------------
        missing = sorted({r.function for r in routes} - {n for n, s in specs.items() if s.in_api})
        if missing:
            raise ValueError(f"routes name functions the stack does not deploy: {missing}")
        self.api = ServiceApi(self, "Api", ServiceApiProps(
            name=prefix, stage_name=config.name, routes=routes,
            integrations={name: live[name] for name in {r.function for r in routes}},
            authorizer_function=live["authorizer"], authorizer_cache=Duration.seconds(config.authorizer_cache_s),
            log_retention=retention, domain_name=config.domain_name, certificate_arn=config.certificate_arn))
        self.usage_plans = UsagePlans(self, "UsagePlans", UsagePlansProps(
            api=self.api.api, stage=self.api.stage, stage_name=config.name, tiers=config.tiers))
        # the account-wide API Gateway setting (execution logs' CloudWatch role): one owner
        # stage per account and region, retained (docs/DEPLOY.md section 2)
        self.api_account: ApiGatewayAccount | None = None
        if config.api_gateway_account_owner:
            self.api_account = ApiGatewayAccount(self, "ApiGatewayAccount")
            self.api.stage.node.add_dependency(self.api_account.account)
        self.web_acl = WebAcl(self, "Waf", WebAclProps(
            name=prefix, stage_arn=self.api.stage.stage_arn, rate_limit=config.waf_rate_limit,
            max_body_bytes=config.max_body_bytes, count_rules=config.waf_count_rules))

        # -- bulk ----------------------------------------------------------------------
        self.bulk = BulkPipeline(self, "Bulk", BulkPipelineProps(
            name=f"{prefix}-bulk", bucket=bucket, shard_function=fn["shard"], merge_function=fn["merge"],
            max_concurrency=config.bulk_max_concurrency, log_retention=retention))

        # -- monitoring ----------------------------------------------------------------
        canary_rate = Duration.minutes(config.canary_rate_minutes)
        canary_tier = config.canary_usage_tier.name
        self.health_canary = HealthCanary(self, "HealthCanary", HealthCanaryProps(
            name=f"{prefix}-health"[:21].rstrip("-"), api_url=self.api.api.url,
            health_url=self.api.api.url_for_path("/health"), setup_function=fn["canary"],
            keys_table=tables.keys, usage_plan=self.usage_plans.plans[canary_tier], tier=canary_tier,
            stage=config.name, queue=queue, dimensions=resolve_model(REPO_ROOT / "model_artifacts").dimensions,
            rate=canary_rate, key_generation=config.canary_key_generation, access_logs=self.storage.access_logs,
            removal_policy=keep))
        self.topics = AlarmTopics(self, "AlarmTopics", AlarmTopicsProps(name=prefix, emails=config.alert_emails))
        self.alarms = ServiceAlarms(self, "Alarms", ServiceAlarmsProps(
            name=prefix, api=self.api.api, stage_name=config.name, canary=self.health_canary.canary,
            canary_rate=canary_rate, page=self.topics.page, notify=self.topics.notify,
            functions=[MemoryWatch(name, f.max_memory_used, f.memory_mb) for name, f in self.functions.items()],
            dead_letters=self.ingest_queue.dead_letters, ingest_function="ingest"))
        self.deployments: dict[str, CanaryDeployment] = {}
        for name, alias in self.aliases.items():
            self.deployments[name] = CanaryDeployment(self, f"{name.title()}Deployment", CanaryDeploymentProps(
                alias=alias.alias, name=f"{prefix}-{name}", deployment=config.deployment,
                p99_ms=DEPLOY_P99_MS.get(name, specs[name].timeout_s * 800.0),
                service_alarms=(self.alarms.error_rate, self.alarms.latency_p99)))
        self.budget = CostBudget(self, "Budget", CostBudgetProps(
            name=f"{prefix}-monthly", stage=config.name, limit_usd=config.budget_usd, topic=self.topics.notify))
        self.dashboard = ServiceDashboard(self, "Dashboard", ServiceDashboardProps(
            name=prefix, api_name=prefix, stage_name=config.name, routes=routes,
            provisioned_aliases={n: a.alias for n, a in self.aliases.items() if a.scaling is not None},
            functions=fn, queue=queue, dead_letters=self.ingest_queue.dead_letters,
            alarms=[self.alarms.error_rate, self.alarms.latency_p99, self.alarms.health, self.alarms.memory,
                    self.alarms.storage_faults, self.alarms.dead_letters],
            storage_faults=emf_metric("StorageFaults", "ingest", "Sum", Duration.minutes(5)),
            compaction=fn["compact"]))

        self._outputs(prefix)
        acknowledge_findings(self)
        self._acknowledge_compaction()

    def _function(self, spec: FunctionSpec, environment: dict[str, str], config: StageConfig,
                  image_directory: Path, retention: logs.RetentionDays) -> ServiceFunction:
        return ServiceFunction(self, f"{spec.name.title()}Function", ServiceFunctionProps(
            name=spec.name, function_name=f"ragserve-{config.name}-{spec.name}", cmd=spec.cmd,
            memory_mb=spec.memory_mb, timeout_s=spec.timeout_s, ephemeral_mb=spec.ephemeral_mb,
            image_directory=str(image_directory), architecture=config.architecture,
            vpc=self.network.vpc if spec.in_vpc else None, subnets=self.network.subnets if spec.in_vpc else None,
            security_groups=[self.network.functions_security_group] if spec.in_vpc else [],
            environment={Env.STAGE: config.name, "POWERTOOLS_LOG_LEVEL": "INFO", **environment},
            reserved_concurrency=spec.reserved_concurrency, log_retention=retention))

    def _grant(self, fn: dict) -> None:
        """Least privilege, spelled out: explicit actions (no ``s3:Get*``-style wildcards)
        on the one bucket / table / queue each function uses."""
        bucket, tables, queue = self.storage.bucket, self.tables, self.ingest_queue.queue
        for name in ("embed", "search", "ingest", "shard"):
            tables.embedding_cache.grant_read_write_data(fn[name])
        tables.idempotency.grant_read_write_data(fn["ingest"])
        fn["authorizer"].add_to_role_policy(iam.PolicyStatement(  # one GetItem per key: not the GSI
            actions=["dynamodb:GetItem"], resources=[tables.keys.table_arn]))
        read, write = ["s3:GetObject"], ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                          "s3:AbortMultipartUpload"]
        for name, actions in (("search", read), ("ingest", write), ("shard", write), ("merge", write),
                              ("compact", write)):
            fn[name].add_to_role_policy(iam.PolicyStatement(actions=actions,
                                                            resources=[bucket.arn_for_objects("*")]))
            fn[name].add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"],
                                                            resources=[bucket.bucket_arn]))
        queue.grant_send_messages(fn["ingest"])
        # the consumer settles its own batches: storage faults deferred (ChangeMessageVisibility,
        # with backoff), poison moved to the DLQ (SendMessage there, DeleteMessage here)
        fn["ingest"].add_to_role_policy(iam.PolicyStatement(
            actions=["sqs:ChangeMessageVisibility", "sqs:DeleteMessage"], resources=[queue.queue_arn]))
        fn["ingest"].add_to_role_policy(iam.PolicyStatement(
            actions=["sqs:SendMessage"], resources=[self.ingest_queue.dead_letters.queue_arn]))
        # the ingest function triggers compaction (the unqualified function: no version wildcard)
        fn["ingest"].add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[fn["compact"].function_arn]))
        # ops: /metrics reads CloudWatch; /health probes each dependency, read-only
        fn["ops"].add_to_role_policy(iam.PolicyStatement(
            actions=["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"], resources=["*"]))
        fn["ops"].add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:DescribeTable"],
            resources=[t.table_arn for t in (tables.keys, tables.embedding_cache, tables.idempotency)]))
        fn["ops"].add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        # ... the collections' pointers and manifests (never a segment's blobs)
        fn["ops"].add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[
            bucket.arn_for_objects("collections/*/CURRENT"), bucket.arn_for_objects("collections/*/versions/*")]))
        fn["ops"].add_to_role_policy(iam.PolicyStatement(actions=["sqs:GetQueueAttributes"],
                                                         resources=[queue.queue_arn]))

    def _acknowledge_compaction(self) -> None:
        """The compaction function's finding, beside the writers' in ``infra.nag``."""
        bucket = self.get_logical_id(self.storage.bucket.node.default_child)
        ack(self.functions["compact"], f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/*]",
            "object-level actions (GetObject, PutObject, DeleteObject) on the snapshots bucket only: compaction "
            "writes merged segments under collections/<c>/ and retention deletes what no kept version references")

    def _outputs(self, prefix: str) -> None:
        outputs = {
            "Stage": self.config.name,
            "ApiUrl": self.api.api.url,
            "HealthUrl": self.api.api.url_for_path("/health"),
            "KeysTableName": self.tables.keys.table_name,
            "EmbeddingCacheTableName": self.tables.embedding_cache.table_name,
            "IdempotencyTableName": self.tables.idempotency.table_name,
            "SnapshotBucketName": self.storage.bucket.bucket_name,
            "IngestQueueUrl": self.ingest_queue.queue.queue_url,
            "IngestDeadLetterQueueUrl": self.ingest_queue.dead_letters.queue_url,
            "QueryCacheEndpoint": self.query_cache.url,
            "BulkStateMachineArn": self.bulk.state_machine.state_machine_arn,
            "CompactionFunctionName": self.functions["compact"].function.function_name,
            "PageTopicArn": self.topics.page.topic_arn,
            "NotifyTopicArn": self.topics.notify.topic_arn,
            "DashboardName": prefix,
        }
        for tier, plan in self.usage_plans.plans.items():
            outputs[f"UsagePlan{tier.title().replace('-', '')}Id"] = plan.usage_plan_id
        if self.api.domain is not None:
            outputs["CustomDomainTarget"] = self.api.domain.domain_name_alias_domain_name
        for key, value in outputs.items():
            cdk.CfnOutput(self, key, value=value)
