"""The synthesized stages: the canary does what a user does (its key in a secret, the
canary collection seeded by the stack, a script that embeds and searches), /health in
AWS reaches the model, the index and Valkey, the account-wide API Gateway setting has
one owner and outlives it, and the API declares no binary media types."""

from __future__ import annotations

import json

import pytest

from infra.config import FUNCTIONS, StageConfig, TierConfig, stage_configs
from infra.constructs.health_canary import CANARY_SCRIPT
from ragserve.auth.store import KEY_ID_INDEX
from ragserve.dependencies.canary import CANARY_COLLECTION, CANARY_QUERY, CANARY_TOP_HIT, seed_job
from ragserve.settings import Env

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
STAGES = ("dev", "prod")
TIERS = {"free": {"rate_limit": 5, "burst_limit": 10, "quota": 100}}


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def logical_id(synthesis, stage: str, construct) -> str:
    return synthesis.stack(stage).get_logical_id(construct.node.default_child)


def function_statements(template: dict, prefix: str) -> list[dict]:
    return [st for key, policy in resources(template, "AWS::IAM::Policy").items()
            if key.startswith(f"{prefix}FunctionServiceRoleDefaultPolicy")
            for st in policy["Properties"]["PolicyDocument"]["Statement"]]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def flat(value) -> str:
    return json.dumps(value, sort_keys=True)


# ------------------------------------------------------------ 8: the canary and /health


@pytest.mark.parametrize("stage", STAGES)
def test_the_stack_issues_the_canary_key_and_seeds_the_canary_collection(synthesis, stage):
    template, stack = synthesis.templates[stage], synthesis.stack(stage)
    canary = stack.health_canary
    [(_, setup)] = resources(template, "Custom::RagserveCanary").items()
    props = setup["Properties"]
    tier = stack.config.canary_usage_tier.name
    # THEN a custom resource served by the canary function ...
    assert props["ServiceToken"] == {"Fn::GetAtt": [logical_id(synthesis, stage, stack.functions["canary"].function),
                                                    "Arn"]}
    # ... issues a key in the keys table, on the canary tier's usage plan, into the secret ...
    assert props["KeysTable"] == {"Ref": logical_id(synthesis, stage, stack.tables.keys)}
    assert props["PlanId"] == {"Ref": logical_id(synthesis, stage, stack.usage_plans.plans[tier])}
    assert props["Tier"] == tier == "premium"  # the highest rate limit of cdk.json's tiers
    assert props["SecretArn"] == {"Ref": logical_id(synthesis, stage, canary.secret)}
    assert props["Stage"] == stage and props["Generation"] == str(stack.config.canary_key_generation)
    # ... and queues the canary documents to the ingest queue (the single writer publishes them)
    assert props["QueueUrl"] == {"Ref": logical_id(synthesis, stage, stack.ingest_queue.queue)}
    assert props["Collection"] == CANARY_COLLECTION and props["SeedJobId"] == seed_job().job_id
    # AND the Synthetics canary runs after it
    canary_id = logical_id(synthesis, stage, canary.canary)
    assert stack.get_logical_id(canary.setup.node.default_child) in template["Resources"][canary_id]["DependsOn"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_canary_key_lives_in_a_secret_only_the_canary_reads(synthesis, stage):
    template, stack = synthesis.templates[stage], synthesis.stack(stage)
    secret = {"Ref": logical_id(synthesis, stage, stack.health_canary.secret)}
    [found] = resources(template, "AWS::SecretsManager::Secret").values()
    assert found["DeletionPolicy"] == "Delete"  # the key is revoked with the stack anyway
    users: dict[str, set[str]] = {}
    for key, policy in resources(template, "AWS::IAM::Policy").items():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if secret in as_list(st["Resource"]):
                users.setdefault(key, set()).update(as_list(st["Action"]))
    canary_role = logical_id(synthesis, stage, stack.health_canary.canary.role)
    readers = {k for k, actions in users.items() if "secretsmanager:GetSecretValue" in actions}
    assert len(readers) == 1 and any(canary_role in flat(template["Resources"][k]["Properties"]["Roles"])
                                     for k in readers)
    writers = {k: a for k, a in users.items() if k.startswith("CanaryFunction")}
    assert list(writers.values()) == [{"secretsmanager:PutSecretValue"}]  # the setup writes, never reads
    assert set(users) == readers | set(writers)


@pytest.mark.parametrize("stage", STAGES)
def test_canary_script_embeds_and_searches_with_the_key_and_asserts_the_answers(synthesis, stage):
    template, stack = synthesis.templates[stage], synthesis.stack(stage)
    [canary] = resources(template, "AWS::Synthetics::Canary").values()
    props = canary["Properties"]
    script = props["Code"]["Script"]
    assert script == CANARY_SCRIPT
    for needle in ("'GET /health'", "'POST /v1/embed'", "'POST /v1/search'", "'x-api-key'", "GetSecretValueCommand",
                   "CANARY_TOP_HIT", "DIMENSIONS", "restrictedHeaders", "includeRequestHeaders: false"):
        assert needle in script, needle
    env = props["RunConfig"]["EnvironmentVariables"]
    assert env["CANARY_SECRET_ARN"] == {"Ref": logical_id(synthesis, stage, stack.health_canary.secret)}
    assert (env["CANARY_COLLECTION"], env["CANARY_QUERY"], env["CANARY_TOP_HIT"]) == (
        CANARY_COLLECTION, CANARY_QUERY, CANARY_TOP_HIT)
    from ragserve.model.manifest import resolve_model
    from ragserve.settings import default_artifacts_dir

    assert env["CANARY_DIMENSIONS"] == str(resolve_model(default_artifacts_dir()).dimensions) == "384"
    api = logical_id(synthesis, stage, stack.api.api)
    assert {"Ref": api} in env["API_URL"]["Fn::Join"][1] and env["API_URL"]["Fn::Join"][1][-1] == "/"
    assert props["RunConfig"]["TimeoutInSeconds"] == 60
    # AND the health alarm follows the canary's runs
    [alarm] = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("AlarmName") == f"ragserve-{stage}-health"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("CloudWatchSynthetics", "SuccessPercent")
    assert alarm["Dimensions"] == [{"Name": "CanaryName", "Value": {"Ref": logical_id(synthesis, stage,
                                                                                      stack.health_canary.canary)}}]


def test_canary_setup_function_runs_outside_the_vpc_with_exactly_its_permissions(synthesis):
    template, stack = synthesis.templates["prod"], synthesis.stack("prod")
    function_id = logical_id(synthesis, "prod", stack.functions["canary"].function)
    function = template["Resources"][function_id]["Properties"]
    assert "VpcConfig" not in function
    assert function["ImageConfig"]["Command"] == ["functions.ops.canary.lambda_handler"]
    # its permissions outlive the custom resource it serves: the stack's delete can still revoke the key
    assert any(d.startswith("CanaryFunctionServiceRoleDefaultPolicy")
               for d in template["Resources"][function_id]["DependsOn"])
    assert set(function["Environment"]["Variables"]) == {Env.STAGE, "POWERTOOLS_LOG_LEVEL"}
    table = logical_id(synthesis, "prod", stack.tables.keys)
    granted = {(action, flat(resource)) for st in function_statements(template, "Canary")
               for action in as_list(st["Action"]) for resource in as_list(st["Resource"])}
    dynamo = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query"}
    for action in dynamo:
        assert (action, flat({"Fn::GetAtt": [table, "Arn"]})) in granted
        assert (action, flat({"Fn::Join": ["", [{"Fn::GetAtt": [table, "Arn"]}, f"/index/{KEY_ID_INDEX}"]]})) in granted
    actions = {a for a, _ in granted}
    assert actions == dynamo | {"apigateway:POST", "apigateway:DELETE", "apigateway:PUT",
                                "secretsmanager:PutSecretValue", "sqs:SendMessage",
                                "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    queue = logical_id(synthesis, "prod", stack.ingest_queue.queue)
    assert ("sqs:SendMessage", flat({"Fn::GetAtt": [queue, "Arn"]})) in granted
    plan = logical_id(synthesis, "prod", stack.usage_plans.plans["premium"])
    assert any(a == "apigateway:POST" and f'{{"Ref": "{plan}"}}' in r and r.endswith('"/keys"]]}')
               for a, r in granted)


def test_ops_health_reaches_the_model_the_index_and_valkey(synthesis):
    template, stack = synthesis.templates["prod"], synthesis.stack("prod")
    ops = template["Resources"][logical_id(synthesis, "prod", stack.functions["ops"].function)]["Properties"]
    env = ops["Environment"]["Variables"]
    # THEN ops knows the query cache (PING) and the stage (its functions' names)
    assert "rediss://" in flat(env[Env.QUERY_CACHE_URL]) and env[Env.STAGE] == "prod"
    assert env[Env.METRICS_SOURCE] == "cloudwatch" and Env.SNAPSHOT_BUCKET in env
    found = function_statements(template, "Ops")
    bucket = logical_id(synthesis, "prod", stack.storage.bucket)
    reads = [r for st in found if "s3:GetObject" in as_list(st["Action"]) for r in as_list(st["Resource"])]
    assert sorted(flat(r) for r in reads) == sorted(flat({"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, suffix]]})
                                                    for suffix in ("/collections/*/CURRENT",
                                                                   "/collections/*/versions/*"))
    invoked = [r for st in found if "lambda:InvokeFunction" in as_list(st["Action"]) for r in as_list(st["Resource"])]
    aliases = [{"Ref": logical_id(synthesis, "prod", stack.aliases[name].alias)} for name in ("embed", "search")]
    assert sorted(map(flat, invoked)) == sorted(map(flat, aliases))
    # AND the functions' names are the ones ops derives from its stage
    names = {f["Properties"]["FunctionName"] for f in resources(template, "AWS::Lambda::Function").values()}
    from ragserve.dependencies import ServiceChecks
    from ragserve.settings import OpsSettings

    service = ServiceChecks.from_env(OpsSettings(metrics_source="cloudwatch", stage="prod"))
    assert {service.embed_function.split(":")[0], service.search_function.split(":")[0]} <= names
    assert service.embed_function.endswith(":live") and service.index
    # AND ops reaches Lambda through the interface endpoint from its subnets
    assert "VpcConfig" in ops


# ----------------------------------------------------- 10: the API Gateway account setting


def test_exactly_one_stage_owns_the_api_gateway_account_setting_and_it_outlives_the_stack(synthesis, cdk_context):
    owners = [stage for stage in STAGES if resources(synthesis.templates[stage], "AWS::ApiGateway::Account")]
    assert owners == [s for s in STAGES if cdk_context["stages"][s].get("api_gateway_account_owner")] == ["dev"]
    template, stack = synthesis.templates["dev"], synthesis.stack("dev")
    [(account_id, account)] = resources(template, "AWS::ApiGateway::Account").items()
    role_id = logical_id(synthesis, "dev", stack.api_account.role)
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    role = template["Resources"][role_id]
    # THEN deleting the owner's stack keeps the setting and its role: the other stages keep logging
    for resource in (account, role):
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in flat(role["Properties"]["ManagedPolicyArns"])
    assert "RoleName" not in role["Properties"]  # a redeploy after a delete does not collide with the kept role
    # AND the owner's stage (execution logs on) is deployed after the setting
    stage_id = logical_id(synthesis, "dev", stack.api.stage)
    assert account_id in template["Resources"][stage_id]["DependsOn"]
    # AND no stage's API makes a role of its own
    for stage in STAGES:
        apigw_roles = [k for k, r in resources(synthesis.templates[stage], "AWS::IAM::Role").items()
                       if "apigateway.amazonaws.com" in flat(r["Properties"]["AssumeRolePolicyDocument"])]
        assert apigw_roles == ([role_id] if stage == "dev" else []), stage
    assert synthesis.stack("prod").api_account is None


def test_two_owners_in_one_account_are_refused_in_two_accounts_allowed():
    owner = {"api_gateway_account_owner": True}
    with pytest.raises(ValueError, match="api_gateway_account_owner"):
        stage_configs({"dev": owner, "prod": owner}, None, TIERS)
    with pytest.raises(ValueError, match="api_gateway_account_owner"):  # even when synthesizing one of them
        stage_configs({"dev": owner, "prod": owner}, "prod", TIERS)
    apart = stage_configs({"dev": {**owner, "account": "111111111111"}, "prod": {**owner, "account": "222222222222"}},
                          None, TIERS)
    assert [c.api_gateway_account_owner for c in apart] == [True, True]
    assert not StageConfig.from_context("dev", {}, TIERS).api_gateway_account_owner
    with pytest.raises(ValueError, match="true or false"):
        StageConfig.from_context("dev", {"api_gateway_account_owner": "yes"}, TIERS)


def test_canary_tier_defaults_to_the_highest_rate_limit_and_must_be_a_tier():
    tiers = {**TIERS, "premium": {"rate_limit": 500, "burst_limit": 1000, "quota": 1000}}
    assert StageConfig.from_context("dev", {}, tiers).canary_usage_tier.name == "premium"
    assert StageConfig.from_context("dev", {"canary_tier": "free"}, tiers).canary_usage_tier == \
        TierConfig("free", 5.0, 10, 100)
    with pytest.raises(ValueError, match="canary_tier 'gold'"):
        StageConfig.from_context("dev", {"canary_tier": "gold"}, tiers)


# ------------------------------------------------------------ 11: no binary media types


@pytest.mark.parametrize("stage", STAGES)
def test_the_api_declares_no_binary_media_types(synthesis, stage):
    [api] = resources(synthesis.templates[stage], "AWS::ApiGateway::RestApi").values()
    # THEN every request body reaches the functions as text, isBase64Encoded false
    # (docs/ARCHITECTURE.md section 3.1); nothing converts bodies on the way
    assert "BinaryMediaTypes" not in api["Properties"]
    for method in resources(synthesis.templates[stage], "AWS::ApiGateway::Method").values():
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY" and "ContentHandling" not in integration


# ------------------------------------------------------------- 9: invoke runs every CMD


def test_ragserve_invoke_resolves_every_function_of_the_stack_to_its_cmd():
    from ragserve.cli import invoke_handler_path

    for spec in FUNCTIONS:
        assert invoke_handler_path(spec.name) == spec.cmd, spec.name


def test_an_ops_deploy_is_not_rolled_back_for_waiting_on_a_cold_function(synthesis):
    """/health waits up to 10 s for a cold embed or search function (its probe timeout):
    the new ops version's p99 rollback limit leaves room for that."""
    stack = synthesis.stack("prod")
    template = synthesis.templates["prod"]
    alarm = template["Resources"][logical_id(synthesis, "prod", stack.deployments["ops"].latency_alarm)]
    from ragserve.dependencies import TIMEOUTS

    assert alarm["Properties"]["Threshold"] == 12000 > sum(TIMEOUTS["lambda"]) * 1000
