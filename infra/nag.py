"""cdk-nag (AwsSolutionsChecks) for the stack, and the findings acknowledged on purpose.

cdk-nag 3 acknowledges one finding at a time (``AwsSolutions-IAM5[Resource::*]``), so
a new wildcard, managed policy or unauthenticated route fails synthesis until someone
reviews it and adds a reason here. Each acknowledgement is made on the narrowest
construct that has the finding, with a reason specific to it; ids that contain logical
ids are computed from the constructs, never copied from a report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

if TYPE_CHECKING:
    from infra.stack import RagserveStack



def pseudo(stack: cdk.Stack) -> tuple[str, str, str]:
    """Partition, region and account as cdk-nag writes them in finding ids: the
    placeholder while unresolved (an environment-agnostic stack), else the value."""
    def shown(value: str, name: str) -> str:
        return f"<AWS::{name}>" if cdk.Token.is_unresolved(value) else value

    return shown(stack.partition, "Partition"), shown(stack.region, "Region"), shown(stack.account, "AccountId")


def managed_policy(stack: cdk.Stack, name: str) -> str:
    """The IAM4 finding id of an AWS managed service-role policy."""
    return f"AwsSolutions-IAM4[Policy::arn:{pseudo(stack)[0]}:iam::aws:policy/service-role/{name}]"
ANY_RESOURCE = "AwsSolutions-IAM5[Resource::*]"


def add_nag_checks(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


PLUGIN = "AwsSolutions"  # the validation plugin's name: acknowledgements are "<plugin>::<finding>"


def ack(construct: Construct, finding: str, reason: str) -> None:
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=f"{PLUGIN}::{finding}", reason=reason))


def _arn(stack: cdk.Stack, construct: Construct) -> str:
    """How cdk-nag writes ``Fn::GetAtt <resource>.Arn`` in a finding id."""
    return f"<{stack.get_logical_id(construct.node.default_child)}.Arn>"


def acknowledge_findings(stack: RagserveStack) -> None:
    partition, region, account = pseudo(stack)
    basic_execution, vpc_access = (managed_policy(stack, "AWSLambdaBasicExecutionRole"),
                                   managed_policy(stack, "AWSLambdaVPCAccessExecutionRole"))
    # -- Lambda execution roles ---------------------------------------------------------
    objects = f"AwsSolutions-IAM5[Resource::{_arn(stack, stack.storage.bucket)}/*]"
    for name, service_function in stack.functions.items():
        role = service_function.function.role
        ack(role, basic_execution, "AWS's minimal policy for Lambda logging (CreateLogGroup/Stream, PutLogEvents); "
            "the function's log group is created by the stack with its retention")
        if service_function.function.is_bound_to_vpc:
            ack(role, vpc_access, "AWS's minimal policy a Lambda function in a VPC needs to manage its ENIs "
                "(ec2:CreateNetworkInterface & co. have no resource-level permissions)")
        ack(service_function, ANY_RESOURCE,
            "xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) have no resource-level permissions"
            + ("; cloudwatch:GetMetricData and cloudwatch:ListMetrics (/metrics) neither" if name == "ops" else ""))
        if name in ("search", "ingest", "shard", "merge"):
            ack(service_function, objects, "object-level actions (GetObject, and for writers PutObject/DeleteObject) "
                "on the snapshots bucket only: keys are collections/<c>/v<N>/... and bulk/<job>/..., made at run time")
    bucket = _arn(stack, stack.storage.bucket)
    for pattern in ("collections/*/CURRENT", "collections/*/versions/*"):
        ack(stack.functions["ops"], f"AwsSolutions-IAM5[Resource::{bucket}/{pattern}]",
            "/health reads each collection's CURRENT pointer and its manifests (s3:GetObject only, never a segment's "
            "blobs); collection names are made at run time")
    apigateway = f"arn:{partition}:apigateway:{region}::"
    setup = stack.functions["canary"]
    ack(setup, f"AwsSolutions-IAM5[Resource::{apigateway}/apikeys/*]",
        "the canary setup deletes (apigateway:DELETE) the canary's own API key when it revokes it; API Gateway "
        "gives the key its id at creation, so the policy cannot name it")
    ack(setup, f"AwsSolutions-IAM5[Resource::{apigateway}/tags/*]",
        "the canary's API key is created with its tags (project, stage, key_id, tier); the tags resource is "
        "named by the key's ARN, made at creation")

    # -- CodeDeploy, API Gateway ------------------------------------------------------
    for deployment in stack.deployments.values():
        ack(deployment.deployment_group, managed_policy(stack, "AWSCodeDeployRoleForLambdaLimited"),
            "AWS's policy for CodeDeploy Lambda deployments, scoped by AWS to shifting alias traffic, reading "
            "the rollback alarms and invoking hooks")
    if stack.api_account is not None:
        ack(stack.api_account.role, managed_policy(stack, "AmazonAPIGatewayPushToCloudWatchLogs"),
            "the account-level role API Gateway needs to write execution logs to CloudWatch (required by APIG6); "
            "AWS maintains the policy")
    for (method, resource), api_method in stack.api.methods.items():
        ack(api_method, "AwsSolutions-COG4", "machine clients authenticate with API keys checked by the Lambda REQUEST "
            "authorizer (hashed in DynamoDB, scoped, metered by usage plans); there are no end users for Cognito")
        if resource == "/health" and method == "GET":
            ack(api_method, "AwsSolutions-APIG4", "GET /health is public by design (docs/ARCHITECTURE.md section 3): "
                "the canary and load balancers probe it; it reveals no data and WAF rate-limits it")
        if resource == "/v1/openapi.json" and method == "GET":
            ack(api_method, "AwsSolutions-APIG4", "GET /v1/openapi.json is public by design: the API's published "
                "OpenAPI document (routes and schemas, no data, no keys), WAF rate-limits it")

    # -- Step Functions bulk pipeline ---------------------------------------------------
    machine = stack.bulk.state_machine
    ack(machine.role, ANY_RESOURCE, "X-Ray tracing and CloudWatch Logs vended delivery (logs:CreateLogDelivery & co.) "
        "have no resource-level permissions")
    for function in (stack.functions["shard"].function, stack.functions["merge"].function):
        ack(machine.role, f"AwsSolutions-IAM5[Resource::{_arn(stack, function)}:*]",
            "lambda:InvokeFunction on this one function's versions (CDK's LambdaInvoke grant)")
    machine_name = ('{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + stack.get_logical_id(machine.node.default_child)
                    + '"}]}]}')
    executions = f"arn:{partition}:states:{region}:{account}:execution:{machine_name}"
    for suffix in ("/*:*", ":*"):
        ack(machine, f"AwsSolutions-IAM5[Resource::{executions}{suffix}]",
            "the Distributed Map describes and stops its own child executions of this state machine only")

    # -- Synthetics canary ------------------------------------------------------------
    canary = stack.health_canary
    ack(canary.secret, "AwsSolutions-SMG4", "the canary's API key is rotated by the stack, not by a Secrets Manager "
        "rotation function: change canary_key_generation in cdk.json and deploy (a new key is issued and stored, "
        "the old one revoked; docs/DEPLOY.md section 2)")
    ack(canary.canary, ANY_RESOURCE, "Synthetics' own role: s3:ListAllMyBuckets, xray:PutTraceSegments and "
        "cloudwatch:PutMetricData (conditioned on the CloudWatchSynthetics namespace) have no resource scoping")
    ack(canary.canary, f"AwsSolutions-IAM5[Resource::{_arn(stack, canary.artifacts)}/health/*]",
        "the canary writes its run artifacts under health/ of its own private bucket")
    ack(canary.canary, f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{region}:{account}:"
        "log-group:/aws/lambda/cwsyn-*]", "Synthetics names the canary's log group cwsyn-<name>-<random id> at "
        "creation; the prefix is as narrow as it can be")
