"""The synthesized stack (offline: no AWS account, no Docker engine), asserted with
aws_cdk.assertions.Template on one synthesis of every stage of cdk.json."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match

from infra.config import FUNCTIONS
from ragserve.ingest.consumer import MAX_ATTEMPTS
from ragserve.ingest.queue import storage_fault_delay
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


def statements(template: dict, role_policy_prefix: str) -> list[dict]:
    """The statements of the default policy of a function's role (``<Name>FunctionServiceRole...``)."""
    return [st for key, policy in resources(template, "AWS::IAM::Policy").items()
            if key.startswith(f"{role_policy_prefix}FunctionServiceRoleDefaultPolicy")
            for st in policy["Properties"]["PolicyDocument"]["Statement"]]


def actions_on(found: list[dict], resource) -> set[str]:
    actions: set[str] = set()
    for st in found:
        targets = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if resource in targets and st["Effect"] == "Allow":
            actions |= set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    return actions


def definition(machine: dict) -> dict:
    """A state machine's definition as a dict (references replaced by a placeholder)."""
    body = machine["DefinitionString"]
    if isinstance(body, dict):
        body = "".join(part if isinstance(part, str) else "<ref>" for part in body["Fn::Join"][1])
    return json.loads(body)


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
    outside = {f"ragserve-{stage}-{spec.name}" for spec in FUNCTIONS if not spec.in_vpc}
    assert outside == {f"ragserve-{stage}-canary"}  # the canary setup calls API Gateway and Secrets Manager
    for f in functions:
        assert f["TracingConfig"] == {"Mode": "Active"}
        if f["FunctionName"] in outside:
            assert "VpcConfig" not in f
        else:
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
        # compaction: a capped merge fits in 15 minutes; one at a time unless the stage says otherwise
        compact = by_name["compact"]
        memory = config.get("functions", {}).get("compact", {}).get("memory_mb", 4096)
        assert (compact["Timeout"], compact["MemorySize"], compact["EphemeralStorage"]["Size"]) == (900, memory, 10240)
        assert compact["ReservedConcurrentExecutions"] == config["reserved_concurrency"].get("compact", 1)
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
    stack = synthesis.stack("prod")
    assert by_name["ingest"][Env.DEAD_LETTER_URL] == {"Ref": logical_id(synthesis, "prod",
                                                                        stack.ingest_queue.dead_letters)}
    assert by_name["ingest"][Env.COMPACTION_FUNCTION] == {"Ref": logical_id(synthesis, "prod",
                                                                            stack.functions["compact"].function)}
    assert set(by_name["compact"]) == {Env.STAGE, "POWERTOOLS_LOG_LEVEL", Env.STORE, Env.SNAPSHOT_BUCKET}
    assert by_name["compact"][Env.STORE] == "s3"
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
    # a safety net only: the consumer dead-letters poison itself after MAX_ATTEMPTS, and defers
    # storage faults (up to 15 min each) for as long as the store is broken, within retention
    receives = main["RedrivePolicy"]["maxReceiveCount"]
    assert receives == 1000 and receives > 100 * MAX_ATTEMPTS
    assert receives * storage_fault_delay(receives) < main["MessageRetentionPeriod"] == 14 * 86_400
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
    assert kinds == [("Gateway", "dynamodb"), ("Gateway", "s3"), ("Interface", "lambda"), ("Interface", "monitoring"),
                     ("Interface", "sqs")]
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


def test_bulk_state_machine_defaults_replace_to_false_and_passes_it_to_shards_and_merge(synthesis):
    [machine] = props(synthesis.templates["prod"], "AWS::StepFunctions::StateMachine")
    found = definition(machine)
    states = found["States"]
    # THEN the first state puts {"replace": false} beside the input, the next merges the input over it
    assert found["StartAt"] == "Defaults" and states["Defaults"]["Type"] == "Pass"
    assert states["Defaults"]["Parameters"] == {"defaults": {"replace": False}, "input.$": "$"}
    apply = states[states["Defaults"]["Next"]]
    assert apply["Type"] == "Pass" and apply["OutputPath"] == "$.args"
    assert apply["Parameters"] == {"args.$": "States.JsonMerge($.defaults, $.input, false)"}
    # AND a replace that is not a boolean ("false" is truthy to the handlers) fails before anything runs
    check = states[apply["Next"]]
    assert check["Type"] == "Choice"
    assert check["Choices"] == [{"Variable": "$.replace", "IsBoolean": True, "Next": "EmbedShards"}]
    assert states[check["Default"]]["Type"] == "Fail"
    # AND both the shards and the final commit get it
    embed = states["EmbedShards"]
    assert embed["ItemSelector"]["replace.$"] == "$.replace"
    assert embed["ItemProcessor"]["States"]["EmbedShard"]["Parameters"]["replace.$"] == "$.replace"
    merge = states[embed["Next"]]
    assert merge["Parameters"]["replace.$"] == "$.replace" and merge.get("End") is True


def test_bulk_defaults_behave_as_step_functions_evaluates_them(synthesis):
    """The two Pass states by hand (shallow States.JsonMerge: the second object wins)."""
    [machine] = props(synthesis.templates["prod"], "AWS::StepFunctions::StateMachine")
    states = definition(machine)["States"]
    defaults = states["Defaults"]["Parameters"]["defaults"]
    for given, replace in (({}, False), ({"replace": True}, True), ({"replace": False}, False)):
        start = {"collection": "docs", "job_id": "j1", "prefix": "bulk/j1/shards/", **given}
        after = {**defaults, **start}  # Defaults, then ApplyDefaults
        assert after == {"collection": "docs", "job_id": "j1", "prefix": "bulk/j1/shards/", "replace": replace}


# ---------------------------------------------------------------------- compaction


def test_compaction_function_runs_on_a_schedule_one_at_a_time(synthesis, prod):
    stack = synthesis.stack("prod")
    compact = logical_id(synthesis, "prod", stack.functions["compact"].function)
    # THEN an EventBridge rule runs it every 15 minutes with the scheduled event (no collection)
    [rule] = [r for r in props(synthesis.templates["prod"], "AWS::Events::Rule")
              if any(t["Arn"] == {"Fn::GetAtt": [compact, "Arn"]} for t in r["Targets"])]
    assert rule["ScheduleExpression"] == "rate(15 minutes)" and rule["State"] == "ENABLED"
    assert all("Input" not in t for t in rule["Targets"])
    prod.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com",
        "FunctionName": {"Fn::GetAtt": [compact, "Arn"]}})
    # AND async events (schedule, triggers) wait at most an hour and are not retried: the next run does it
    prod.has_resource_properties("AWS::Lambda::EventInvokeConfig", {
        "FunctionName": {"Ref": compact}, "Qualifier": "$LATEST", "MaximumRetryAttempts": 0,
        "MaximumEventAgeInSeconds": 3600})
    # AND it is no API target and has no alias
    assert "compact" not in stack.aliases
    assert not [r for r in ROUTES if r.function == "compact"]


def test_compaction_function_reads_writes_and_deletes_snapshots_only(synthesis):
    template = synthesis.templates["prod"]
    stack = synthesis.stack("prod")
    bucket = logical_id(synthesis, "prod", stack.storage.bucket)
    found = statements(template, "Compact")
    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/*"]]}
    assert actions_on(found, objects) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                          "s3:AbortMultipartUpload"}
    assert actions_on(found, {"Fn::GetAtt": [bucket, "Arn"]}) == {"s3:ListBucket"}
    # nothing else but X-Ray
    other = [st for st in found if st["Resource"] not in (objects, {"Fn::GetAtt": [bucket, "Arn"]})]
    assert [set(st["Action"]) for st in other] == [{"xray:PutTraceSegments", "xray:PutTelemetryRecords"}]


def test_ingest_function_may_trigger_compaction_and_settle_its_own_messages(synthesis):
    template = synthesis.templates["prod"]
    stack = synthesis.stack("prod")
    found = statements(template, "Ingest")
    compact = logical_id(synthesis, "prod", stack.functions["compact"].function)
    queue = logical_id(synthesis, "prod", stack.ingest_queue.queue)
    dead_letters = logical_id(synthesis, "prod", stack.ingest_queue.dead_letters)
    # THEN it invokes the compaction function (the function itself: no version wildcard)
    assert actions_on(found, {"Fn::GetAtt": [compact, "Arn"]}) == {"lambda:InvokeFunction"}
    assert not [st for st in found if "lambda:InvokeFunction" in flat(st["Action"])
                and st["Resource"] != {"Fn::GetAtt": [compact, "Arn"]}]
    # AND defers (ChangeMessageVisibility) and removes (DeleteMessage) queue messages itself
    assert {"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:SendMessage"} <= \
        actions_on(found, {"Fn::GetAtt": [queue, "Arn"]})
    # AND moves poison messages to the DLQ, where it may only send
    assert actions_on(found, {"Fn::GetAtt": [dead_letters, "Arn"]}) == {"sqs:SendMessage"}


def test_lambda_endpoint_lets_the_functions_reach_lambda_from_the_isolated_subnets(synthesis, prod):
    stack = synthesis.stack("prod")
    endpoint = stack.compaction.endpoint
    found = synthesis.templates["prod"]["Resources"][logical_id(synthesis, "prod", endpoint)]["Properties"]
    assert found["VpcEndpointType"] == "Interface" and found["PrivateDnsEnabled"] is True
    assert flat(found["ServiceName"]).endswith('.lambda"')
    [group] = found["SecurityGroupIds"]
    functions_sg = logical_id(synthesis, "prod", stack.network.functions_security_group)
    prod.has_resource_properties("AWS::EC2::SecurityGroupIngress", {
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "GroupId": group,
        "SourceSecurityGroupId": {"Fn::GetAtt": [functions_sg, "GroupId"]}})


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


def emitted_storage_faults(capsys, monkeypatch) -> dict:
    """The EMF blob the ingest function's consumer prints after a batch with storage faults."""
    from ragserve.observability.telemetry import Telemetry

    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    telemetry = Telemetry("ingest")  # as functions/ingest/handler.py names it
    capsys.readouterr()
    with telemetry.invocation():
        telemetry.record_writes([], 0)
        telemetry.record_storage_faults(2)
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"StorageFaults"' in line]
    [blob] = blobs
    return blob


def test_storage_faults_alarm_watches_exactly_the_metric_the_ingest_function_emits(synthesis, capsys, monkeypatch):
    blob = emitted_storage_faults(capsys, monkeypatch)
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    [dimension_set] = directive["Dimensions"]
    assert "StorageFaults" in {m["Name"] for m in directive["Metrics"]}
    stack = synthesis.stack("prod")
    page = {"Ref": stack.get_logical_id(stack.topics.page.node.default_child)}
    for stage in ("dev", "prod"):
        found = alarm(synthesis, stage, "storage-faults")
        # THEN namespace, name and the complete dimension set match the EMF blob
        assert (found["Namespace"], found["MetricName"]) == (directive["Namespace"], "StorageFaults")
        assert sorted((d["Name"], d["Value"]) for d in found["Dimensions"]) == \
            sorted((name, blob[name]) for name in dimension_set)
        # AND any fault in each of 3 five-minute periods pages; sparse retries (backoff up to
        # 15 min) keep the state instead of clearing it
        assert (found["Statistic"], found["Period"], found["Threshold"], found["ComparisonOperator"]) == \
            ("Sum", 300, 0, "GreaterThanThreshold")
        assert (found["EvaluationPeriods"], found["DatapointsToAlarm"], found["TreatMissingData"]) == (3, 3, "ignore")
    assert alarm(synthesis, "prod", "storage-faults")["AlarmActions"] == [page]


def test_dead_letter_queue_alarm(synthesis):
    stack = synthesis.stack("prod")
    notify = {"Ref": stack.get_logical_id(stack.topics.notify.node.default_child)}
    dead_letters = logical_id(synthesis, "prod", stack.ingest_queue.dead_letters)
    found = alarm(synthesis, "prod", "dead-letters")
    assert (found["Namespace"], found["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert found["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letters, "QueueName"]}}]
    assert (found["Threshold"], found["ComparisonOperator"], found["EvaluationPeriods"]) == \
        (0, "GreaterThanThreshold", 1)
    assert found["AlarmActions"] == found["OKActions"] == [notify]


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
                  "Cold starts", "Top-1 similarity (drift signal)", "Ingest queue", "Storage faults",
                  "Compaction runs"):
        assert title in body, title
    for route in ROUTES:
        assert f'\\"Operation\\",\\"{route.operation}\\"' in body, route
    # the alarm widget lists every service alarm, the new storage-faults and dead-letters too
    stack = synthesis.stack("prod")
    for construct in (stack.alarms.error_rate, stack.alarms.latency_p99, stack.alarms.health, stack.alarms.memory,
                      stack.alarms.storage_faults, stack.alarms.dead_letters):
        assert stack.get_logical_id(construct.node.default_child) in body


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
                     "NotifyTopicArn", "QueryCacheEndpoint", "CompactionFunctionName", "Stage"):
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
