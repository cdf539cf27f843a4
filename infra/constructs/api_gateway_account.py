"""The account-wide API Gateway setting (``AWS::ApiGateway::Account``): the IAM role API
Gateway uses to write execution logs to CloudWatch, for every REST API of the account
and region. It is one setting, not one per API: a stack that owned it and was deleted
would take the other stages' execution logging with it (their deploys then fail:
"CloudWatch Logs role ARN must be set in account settings").

So exactly one stage per account and region makes it (``api_gateway_account_owner`` in
cdk.json, checked by ``infra.config``), the others' RestApi makes no role
(``cloud_watch_role=False``), and both the role and the setting are retained when the
owner's stack is deleted (docs/DEPLOY.md section 2)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

PUSH_TO_CLOUDWATCH = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


class ApiGatewayAccount(Construct):
    role: iam.Role
    account: apigw.CfnAccount

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self, "CloudWatchRole", assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway: execution logs of every REST API of the account and region (ragserve)",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(PUSH_TO_CLOUDWATCH)],
        )
        self.role.apply_removal_policy(RemovalPolicy.RETAIN)
        self.account = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.account.apply_removal_policy(RemovalPolicy.RETAIN)
        self.account.node.add_dependency(self.role)
