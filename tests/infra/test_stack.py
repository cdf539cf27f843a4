"""The synthesized stack (offline: no AWS account, no Docker engine), asserted with
aws_cdk.assertions.Template on one synthesis of every stage of cdk.json."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match

from infra.config import FUNCTIONS
from ragserve.routes import ROUTES
from ragserve.settings import Env

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ENV_NAMES = {v for k, v in vars(Env).items() if k.isupper()}


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def props(template: dict, kind: str) -> list[dict]:
    return [r.get("Properties", {}) for r in resources(template, kind).values()]


def logical_id(synthesis, stage: str, construct) -> str:
    stack = synthesis.stack(stage)
    return stack.get_logical_id(construct.node.default_child)


def flat(value) -> str:
    return json.dumps(value, sort_keys=True)


# ----------------------------------------------------------------------- functions


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_function_is_an_image_function_of_the_one_dockerfile_with_its_cmd(synthesis, stage):
    template = synthesis.templates[stage]
    functions = props(template, "AWS::Lambda::Function")
    commands = sorted(f["ImageConfig"]["Command"][0] for f in functions)
    # THEN exactly the catalogue, each an image (same asset), each with its handler as CMD
    assert commands == sorted(spec.cmd for spec in FUNCTIONS)
    assert {f["PackageType"] for f in functions} == {"Image"}
    assert len({flat(f["Code"]["ImageUri"]) for f in functions}) == 1  # ONE image
    for f in functions:
        assert f["TracingConfig"] == {"Mode": "Active"}
        assert f["VpcConfig"]["SubnetIds"] and f["VpcConfig"]["SecurityGroupIds"]
        assert f["Architectures"] == ["x86_64"]
        assert f["LoggingConfig"]["LogGroup"]
        assert f["FunctionName"].startswith(f"ragserve-{stage}-")
    manifest = json.loads((synthesis.outdir / f"Ragserve-{stage}.assets.json").read_text())
    [image] = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "functions/Dockerfile"


def test_memory_timeout_and_reserved_concurrency_follow_the_stage(synthesis, cdk_context):
    for stage in ("dev", "prod"):
        config = cdk_context["stages"][stage]
        by_name = {f["FunctionName"].rsplit("-", 1)[1]: f
                   for f in props(synthesis.templates[stage], "AWS::Lambda::Function")}
        assert by_name["embed"]["MemorySize"] == by_name["search"]["MemorySize"] == config["memory_mb"]
        assert by_name["ops"]["MemorySize"] == 512 and by_name["embed"]["Timeout"] == 30
        assert by_name["shard"]["Timeout"] == 900 and by_name["merge"]["EphemeralStorage"]["Size"] == 10240
        for name, cap in config["reserved_concurrency"].items():
            assert by_name[name]["ReservedConcurrentExecutions"] == cap
    prod_merge = next(f for f in props(synthesis.templates["prod"], "AWS::Lambda::Function")
                      if f["FunctionName"].endswith("-merge"))
    assert prod_merge["MemorySize"] == 10240  # the prod override


def test_environment_names_come_from_ragserve_settings(synthesis):
    for stage in ("dev", "prod"):
        for f in props(synthesis.templates[stage], "AWS::Lambda::Function"):
            names = set(f["Environment"]["Variables"])
            assert names - ENV_NAMES <= {"POWERTOOLS_LOG_LEVEL"}, names - ENV_NAMES
            assert f["Environment"]["Variables"][Env.STAGE] == stage
    by_name = {f["FunctionName"].rsplit("-", 1)[1]: f["Environment"]["Variables"]
               for f in props(synthesis.templates["prod"], "AWS::Lambda::Function")}
    assert by_name["search"][Env.STORE] == "s3" and Env.SNAPSHOT_BUCKET in by_name["search"]
    assert "rediss://" in flat(by_name["search"][Env.QUERY_CACHE_URL])
    assert Env.QUEUE_URL in by_name["ingest"] and Env.IDEMPOTENCY_TABLE in by_name["ingest"]
    assert by_name["ops"][Env.METRICS_SOURCE] == "cloudwatch" and Env.KEYS_TABLE in by_name["ops"]
    assert set(by_name["authorizer"]) == {Env.STAGE, Env.KEYS_TABLE, "POWERTOOLS_LOG_LEVEL"}


def test_prod_aliases_have_provisioned_concurrency_and_scale_at_70_percent(prod, synthesis, cdk_context):
    config = cdk_context["stages"]["prod"]
    aliases = resources(synthesis.templates["prod"], "AWS::Lambda::Alias")
    assert {a["Properties"]["Name"] for a in aliases.values()} == {"live"}
    assert len(aliases) == 5  # embed, search, ingest, ops, authorizer
    warm = {k: a for k, a in aliases.items() if "ProvisionedConcurrencyConfig" in a["Properties"]}
    assert sorted(k.split("Live")[0] for k in warm) == ["Embed", "Search"]
    for alias in warm.values():
        assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {
            "ProvisionedConcurrentExecutions": config["provisioned_concurrency"]}
    prod.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 2)
    prod.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ScalableDimension": "lambda:function:ProvisionedConcurrency", "ServiceNamespace": "lambda",
        "MinCapacity": config["provisioned_concurrency"], "MaxCapacity": config["provisioned_concurrency_max"],
    })
    prod.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 0.7,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "LambdaProvisionedConcurrencyUtilization"}},
    })


def test_dev_has_no_provisioned_concurrency(dev, synthesis):
    dev.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    assert not any("ProvisionedConcurrencyConfig" in a
                   for a in props(synthesis.templates["dev"], "AWS::Lambda::Alias"))


def test_codedeploy_canary_with_alarm_rollback_on_every_alias(prod, dev, synthesis):
    for template, config in ((prod, "CodeDeployDefault.LambdaCanary10Percent5Minutes"),
                             (dev, "CodeDeployDefault.LambdaAllAtOnce")):
        template.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 5)
        template.all_resources_properties("AWS::CodeDeploy::DeploymentGroup", {
            "DeploymentConfigName": config,
            "AutoRollbackConfiguration": {"Enabled": True,
                                          "Events": Match.array_with(["DEPLOYMENT_STOP_ON_ALARM"])},
            "AlarmConfiguration": {"Enabled": True, "Alarms": Match.any_value()},
        })
    stack = synthesis.stack("prod")
    service_alarms = {stack.get_logical_id(a.node.default_child)
                      for a in (stack.alarms.error_rate, stack.alarms.latency_p99)}
    for group in props(synthesis.templates["prod"], "AWS::CodeDeploy::DeploymentGroup"):
        names = {a["Name"]["Ref"] for a in group["AlarmConfiguration"]["Alarms"]}
        assert service_alarms <= names and len(names) == 4  # + the alias's own error rate and p99


def test_ingest_consumes_the_fifo_queue_with_partial_batch_failures(prod, cdk_context):
    prod.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "BatchSize": cdk_context["stages"]["prod"].get("ingest_batch_size", 10),
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": Match.any_value()},
        "FunctionName": Match.object_like({"Fn::Join": ["", Match.array_with([":live"])]}),
    })


# ----------------------------------------------------------------------------- API


def test_api_routes_are_the_routes_table(synthesis):
    for stage in ("dev", "prod"):
        template = synthesis.templates[stage]
        stack = synthesis.stack(stage)
        methods = resources(template, "AWS::ApiGateway::Method")
        assert len(methods) == len(ROUTES)
        for route in ROUTES:
            method = stack.api.methods[(route.method, route.resource)]
            found = methods[stack.get_logical_id(method.node.default_child)]["Properties"]
            assert found["HttpMethod"] == route.method and found["OperationName"] == route.operation
            alias = stack.aliases[route.function].alias
            assert {"Ref": stack.get_logical_id(alias.node.default_child)} in \
                found["Integration"]["Uri"]["Fn::Join"][1]
            assert found["Integration"]["Type"] == "AWS_PROXY"
            if route.scope is None:
                assert found["AuthorizationType"] == "NONE" and not found.get("ApiKeyRequired")
            else:
                assert found["AuthorizationType"] == "CUSTOM" and found["ApiKeyRequired"] is True
            for param in re.findall(r"\{(\w+)\}", route.resource):
                assert found["RequestParameters"][f"method.request.path.{param}"] is True


def test_request_authorizer_checks_x_api_key_and_api_keys_come_from_it(prod, cdk_context):
    prod.has_resource_properties("AWS::ApiGateway::RestApi", {
        "ApiKeySourceType": "AUTHORIZER", "EndpointConfiguration": {"Types": ["REGIONAL"]}})
    prod.has_resource_properties("AWS::ApiGateway::Authorizer", {
        "Type": "REQUEST", "IdentitySource": "method.request.header.x-api-key",
        "AuthorizerResultTtlInSeconds": cdk_context["stages"]["prod"]["authorizer_cache_s"],
        "AuthorizerUri": Match.object_like({"Fn::Join": ["", Match.array_with([
            Match.object_like({"Ref": Match.string_like_regexp("AuthorizerLive")})])]}),
    })


def test_stage_has_access_logs_xray_execution_logs_and_no_body_logging(prod):
    prod.has_resource_properties("AWS::ApiGateway::Stage", {
        "TracingEnabled": True,
        "AccessLogSetting": {"DestinationArn": Match.any_value(),
                             "Format": Match.string_like_regexp(r"\$context\.requestId")},
        "MethodSettings": Match.array_with([Match.object_like({
            "LoggingLevel": "ERROR", "DataTraceEnabled": False, "MetricsEnabled": True,
            "HttpMethod": "*", "ResourcePath": "/*"})]),
    })
    prod.has_resource_properties("AWS::ApiGateway::RequestValidator", {
        "ValidateRequestBody": True, "ValidateRequestParameters": True})


def test_gateway_errors_use_the_service_error_shape(synthesis):
    responses = props(synthesis.templates["prod"], "AWS::ApiGateway::GatewayResponse")
    by_type = {r["ResponseType"]: r for r in responses}
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "THROTTLED", "QUOTA_EXCEEDED", "REQUEST_TOO_LARGE",
            "AUTHORIZER_FAILURE", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(by_type)
    assert by_type["THROTTLED"]["StatusCode"] == "429"
    assert by_type["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"
    assert by_type["AUTHORIZER_FAILURE"]["StatusCode"] == "503"
    assert by_type["REQUEST_TOO_LARGE"]["StatusCode"] == "413"
    for response in responses:
        body = response["ResponseTemplates"]["application/json"]
        assert body.startswith('{"error":{"code":"') and '"request_id":"$context.requestId"' in body


def test_usage_plans_per_tier_with_throttle_and_quota(synthesis, cdk_context):
    for stage in ("dev", "prod"):
        tiers = {**cdk_context["tiers"], **cdk_context["stages"][stage].get("tiers", {})}
        plans = {p["UsagePlanName"]: p for p in props(synthesis.templates[stage], "AWS::ApiGateway::UsagePlan")}
        assert set(plans) == {f"ragserve-{stage}-{t}" for t in tiers}
        for tier, spec in tiers.items():
            plan = plans[f"ragserve-{stage}-{tier}"]
            assert plan["Throttle"] == {"RateLimit": spec["rate_limit"], "BurstLimit": spec["burst_limit"]}
            assert plan["Quota"] == {"Limit": spec["quota"], "Period": spec["quota_period"]}
            assert len(plan["ApiStages"]) == 1
    assert synthesis.templates["dev"]["Outputs"]["UsagePlanFreeId"]


def test_waf_rate_rule_body_size_rule_and_common_rules_on_the_stage(prod, synthesis, cdk_context):
    acl = props(synthesis.templates["prod"], "AWS::WAFv2::WebACL")[0]
    rules = {r["Name"]: r for r in acl["Rules"]}
    rate = rules["rate-per-ip"]
    assert rate["Statement"]["RateBasedStatement"] == {
        "Limit": cdk_context["stages"]["prod"]["waf_rate_limit"], "AggregateKeyType": "IP", "EvaluationWindowSec": 300}
    assert rate["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    size = rules["body-size"]["Statement"]["RegexMatchStatement"]
    assert size["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert re.match(size["RegexString"], "1048577") and not re.match(size["RegexString"], "1048576")
    common = rules["aws-common"]["Statement"]["ManagedRuleGroupStatement"]
    assert (common["VendorName"], common["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    assert {o["Name"] for o in common["RuleActionOverrides"]} == {"SizeRestrictions_BODY", "CrossSiteScripting_BODY"}
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    stage_id = next(iter(resources(synthesis.templates["prod"], "AWS::ApiGateway::Stage")))
    prod.has_resource_properties("AWS::WAFv2::WebACLAssociation", {
        "ResourceArn": Match.object_like({"Fn::Join": ["", Match.array_with([{"Ref": stage_id}])]})})


# ---------------------------------------------------------------------------- data


def test_snapshots_bucket_is_versioned_encrypted_private_and_tls_only(prod, synthesis):
    stack = synthesis.stack("prod")
    bucket_id = stack.get_logical_id(stack.storage.bucket.node.default_child)
    bucket = synthesis.templates["prod"]["Resources"][bucket_id]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["LoggingConfiguration"]["DestinationBucketName"]
    prod.has_resource_properties("AWS::S3::BucketPolicy", {
        "Bucket": {"Ref": bucket_id},
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])},
    })
    assert synthesis.templates["prod"]["Resources"][bucket_id]["DeletionPolicy"] == "Retain"


def test_tables_have_pitr_ttl_and_the_schemas_the_code_reads(synthesis):
    from ragserve.auth.store import KEY_ID_INDEX, PARTITION_KEY

    stack = synthesis.stack("prod")
    template = synthesis.templates["prod"]["Resources"]

    def table(construct) -> dict:
        return template[stack.get_logical_id(construct.node.default_child)]["Properties"]

    for construct in (stack.tables.embedding_cache, stack.tables.idempotency, stack.tables.keys):
        found = table(construct)
        assert found["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert found["BillingMode"] == "PAY_PER_REQUEST" and found["DeletionProtectionEnabled"] is True
    assert table(stack.tables.embedding_cache)["TimeToLiveSpecification"] == {"AttributeName": "expires_at",
                                                                               "Enabled": True}
    assert table(stack.tables.idempotency)["TimeToLiveSpecification"] == {"AttributeName": "expiration",
                                                                           "Enabled": True}
    assert table(stack.tables.idempotency)["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    keys = table(stack.tables.keys)
    assert keys["KeySchema"] == [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}]
    assert [i["IndexName"] for i in keys["GlobalSecondaryIndexes"]] == [KEY_ID_INDEX]


def test_ingest_queue_is_fifo_with_a_dlq_and_producer_deduplication(prod, synthesis):
    queues = props(synthesis.templates["prod"], "AWS::SQS::Queue")
    assert len(queues) == 2
    assert all(q["FifoQueue"] is True and q["ContentBasedDeduplication"] is False for q in queues)
    assert all(q["SqsManagedSseEnabled"] is True for q in queues)
    [main] = [q for q in queues if "RedrivePolicy" in q]
    assert main["RedrivePolicy"]["maxReceiveCount"] == 5
    ingest_timeout = next(f["Timeout"] for f in props(synthesis.templates["prod"], "AWS::Lambda::Function")
                          if f["FunctionName"].endswith("-ingest"))
    assert main["VisibilityTimeout"] >= 6 * ingest_timeout
    prod.has_resource_properties("AWS::SQS::QueuePolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})


def test_serverless_valkey_cache_in_the_private_subnets(prod, synthesis):
    prod.has_resource_properties("AWS::ElastiCache::ServerlessCache", {
        "Engine": "valkey", "ServerlessCacheName": "ragserve-prod-query",
        "SubnetIds": Match.any_value(), "SecurityGroupIds": Match.any_value(),
        "CacheUsageLimits": {"DataStorage": {"Maximum": 5, "Unit": "GB"}, "ECPUPerSecond": {"Maximum": 20000}},
    })
    prod.has_resource_properties("AWS::EC2::SecurityGroupIngress", {"FromPort": 6379, "ToPort": 6379,
                                                                    "IpProtocol": "tcp"})


def test_network_is_isolated_with_endpoints_and_flow_logs(prod, synthesis):
    template = synthesis.templates["prod"]
    for kind in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"):
        prod.resource_count_is(kind, 0)
    assert all(s["MapPublicIpOnLaunch"] is False for s in props(template, "AWS::EC2::Subnet"))
    endpoints = props(template, "AWS::EC2::VPCEndpoint")
    kinds = sorted((e.get("VpcEndpointType", "Gateway"), flat(e["ServiceName"]).split(".")[-1].strip('"]}'))
                   for e in endpoints)
    assert kinds == [("Gateway", "dynamodb"), ("Gateway", "s3"), ("Interface", "monitoring"), ("Interface", "sqs")]
    prod.resource_count_is("AWS::EC2::FlowLog", 1)


def test_bulk_state_machine_runs_a_distributed_map_over_s3_then_the_merge(synthesis):
    stack = synthesis.stack("prod")
    [machine] = props(synthesis.templates["prod"], "AWS::StepFunctions::StateMachine")
    definition = flat(machine["DefinitionString"])
    assert '\\"Mode\\":\\"DISTRIBUTED\\"' in definition and "s3:listObjectsV2" in definition
    assert '\\"Prefix.$\\":\\"$.prefix\\"' in definition
    for name in ("shard", "merge"):
        fid = stack.get_logical_id(stack.functions[name].function.node.default_child)
        assert fid in definition
    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert machine["LoggingConfiguration"]["Level"] == "ALL"


# ------------------------------------------------------------------------ monitoring


def alarm(synthesis, stage: str, name: str) -> dict:
    return next(a for a in props(synthesis.templates[stage], "AWS::CloudWatch::Alarm")
                if a.get("AlarmName") == f"ragserve-{stage}-{name}")


def test_the_four_service_alarms_with_their_thresholds_and_topics(synthesis):
    stack = synthesis.stack("prod")
    page = {"Ref": stack.get_logical_id(stack.topics.page.node.default_child)}
    notify = {"Ref": stack.get_logical_id(stack.topics.notify.node.default_child)}
    expected = {  # name: (threshold, comparison, evaluation periods x 1 min (health: x canary rate), topic)
        "error-rate": (5, "GreaterThanThreshold", 5, page),
        "latency-p99": (1000, "GreaterThanThreshold", 10, notify),
        "health": (100, "LessThanThreshold", 2, page),
        "memory": (90, "GreaterThanThreshold", 5, notify),
    }
    for name, (threshold, comparison, periods, topic) in expected.items():
        found = alarm(synthesis, "prod", name)
        assert (found["Threshold"], found["ComparisonOperator"], found["EvaluationPeriods"]) == \
            (threshold, comparison, periods), name
        assert found["DatapointsToAlarm"] == periods and found["AlarmActions"] == [topic], name
    error_rate = flat(alarm(synthesis, "prod", "error-rate")["Metrics"])
    assert "5XXError" in error_rate and '"Count"' in error_rate
    latency = alarm(synthesis, "prod", "latency-p99")
    assert (latency["MetricName"], latency["ExtendedStatistic"], latency["Period"]) == ("Latency", "p99", 60)
    health = alarm(synthesis, "prod", "health")
    assert (health["Namespace"], health["MetricName"], health["TreatMissingData"]) == (
        "CloudWatchSynthetics", "SuccessPercent", "breaching")
    memory = flat(alarm(synthesis, "prod", "memory")["Metrics"])
    assert "100 * MAX([" in memory and memory.count("MaxMemoryUsedMB-ragserve-prod-") == len(FUNCTIONS)


def test_memory_metric_filters_read_lambda_report_lines(prod, synthesis):
    filters = props(synthesis.templates["prod"], "AWS::Logs::MetricFilter")
    assert len(filters) == len(FUNCTIONS)
    for f in filters:
        assert f["FilterPattern"].startswith('[type = "REPORT", ')
        assert f["MetricTransformations"][0]["MetricValue"] == "$max_memory_used"


def test_dashboard_shows_latency_throughput_errors_cache_concurrency_cold_starts_drift(synthesis):
    [dashboard] = props(synthesis.templates["prod"], "AWS::CloudWatch::Dashboard")
    body = flat(dashboard["DashboardBody"])
    for title in ("Latency p50 by operation", "Latency p95 by operation", "Latency p99 by operation",
                  "Throughput", "API 4xx / 5xx", "Cache hit rate", "Provisioned concurrency utilization",
                  "Cold starts", "Top-1 similarity (drift signal)", "Ingest queue"):
        assert title in body, title
    for route in ROUTES:
        assert f'\\"Operation\\",\\"{route.operation}\\"' in body, route


def test_health_canary_calls_health_over_https(prod, synthesis, cdk_context):
    prod.has_resource_properties("AWS::Synthetics::Canary", {
        "Schedule": {"Expression": "rate(5 minutes)"},
        "RunConfig": Match.object_like({"EnvironmentVariables": {"HEALTH_URL": Match.object_like({
            "Fn::Join": ["", Match.array_with(["https://", Match.string_like_regexp("/health$")])]})}}),
        "StartCanaryAfterCreation": True,
    })
    [canary] = props(synthesis.templates["prod"], "AWS::Synthetics::Canary")
    assert "executeHttpStep" in canary["Code"]["Script"]


def test_budget_alerts_the_notify_topic(prod, synthesis, cdk_context):
    stack = synthesis.stack("prod")
    notify = {"Ref": stack.get_logical_id(stack.topics.notify.node.default_child)}
    prod.has_resource_properties("AWS::Budgets::Budget", {
        "Budget": Match.object_like({"BudgetType": "COST", "TimeUnit": "MONTHLY",
                                     "BudgetLimit": {"Amount": cdk_context["stages"]["prod"]["budget_usd"],
                                                     "Unit": "USD"}}),
        "NotificationsWithSubscribers": Match.array_with([Match.object_like({
            "Notification": Match.object_like({"NotificationType": "ACTUAL", "Threshold": 80}),
            "Subscribers": [{"SubscriptionType": "SNS", "Address": notify}]})]),
    })


def test_topics_are_encrypted_and_log_groups_have_retention(prod, synthesis, cdk_context):
    prod.all_resources_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    prod.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    for stage in ("dev", "prod"):
        groups = props(synthesis.templates[stage], "AWS::Logs::LogGroup")
        assert groups and all(g["RetentionInDays"] == cdk_context["stages"][stage]["log_retention_days"]
                              for g in groups if "RetentionInDays" in g)
        assert all("RetentionInDays" in g for g in groups)


def test_outputs_name_what_operators_need(synthesis):
    for stage in ("dev", "prod"):
        outputs = synthesis.templates[stage]["Outputs"]
        for name in ("ApiUrl", "HealthUrl", "KeysTableName", "EmbeddingCacheTableName", "IdempotencyTableName",
                     "SnapshotBucketName", "IngestQueueUrl", "BulkStateMachineArn", "PageTopicArn",
                     "NotifyTopicArn", "QueryCacheEndpoint", "Stage"):
            assert name in outputs, (stage, name)
        assert outputs["Stage"]["Value"] == stage


# --------------------------------------------------------------------------- cdk-nag


def acknowledgements(synthesis) -> list[tuple[str, str, str]]:
    from aws_cdk import Validations

    found = []
    for construct in synthesis.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                found += [(construct.node.path, rule, reason) for rule, reason in entry.data.items()
                          if rule.startswith("AwsSolutions::")]  # (CDK itself acknowledges some cfn-lint rules)
    return found


def test_cdk_nag_aws_solutions_reports_no_unacknowledged_finding(synthesis):
    assert synthesis.report is not None, "cdk-nag did not run"
    violations = [v["ruleName"] for r in synthesis.report["pluginReports"] for v in r.get("violations", [])]
    assert synthesis.error is None and not violations, violations or synthesis.error
    plugins = {r["pluginName"]: r for r in synthesis.report["pluginReports"]}
    assert {r["conclusion"] for r in plugins.values()} == {"success"}  # (CDK adds "CloudFormation Validate")
    plugin = plugins["AwsSolutions"]
    # every suppressed finding carries the reason it was acknowledged with
    suppressed = plugin["suppressedViolations"]
    assert suppressed and all(len(v["reason"]) >= 60 for v in suppressed)


def test_every_acknowledgement_is_specific_and_explained(synthesis):
    acks = acknowledgements(synthesis)
    assert acks
    for path, rule, reason in acks:
        assert rule.startswith("AwsSolutions::AwsSolutions-"), rule
        assert len(reason) >= 60, (path, rule, reason)
        assert not path.endswith(("Ragserve-dev", "Ragserve-prod")), f"stack-wide acknowledgement: {rule}"
    # never a blanket acknowledgement of a rule that takes finding ids
    assert not [r for _, r, _ in acks if r.endswith(("-IAM4", "-IAM5"))]
