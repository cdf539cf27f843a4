"""Two SNS topics: ``page`` (wake someone: errors, health) and ``notify`` (look
tomorrow: latency, memory, budget). Encrypted with a customer-managed key (rotated)
that CloudWatch alarms and AWS Budgets may use; TLS only; optional e-mail subscribers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

PUBLISHERS = ("cloudwatch.amazonaws.com", "budgets.amazonaws.com")


@dataclass(frozen=True, slots=True)
class AlarmTopicsProps:
    name: str
    emails: Sequence[str] = ()


class AlarmTopics(Construct):
    page: sns.Topic
    notify: sns.Topic
    key: kms.Key

    def __init__(self, scope: Construct, construct_id: str, props: AlarmTopicsProps) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.DESTROY,
                           description=f"{props.name}: alarm topics")
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AlarmPublishers", actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
            principals=[iam.ServicePrincipal(p) for p in PUBLISHERS],
        ))
        self.page = self._topic("Page", f"{props.name}-page", props.emails)
        self.notify = self._topic("Notify", f"{props.name}-notify", props.emails)

    def _topic(self, construct_id: str, name: str, emails: Sequence[str]) -> sns.Topic:
        topic = sns.Topic(self, construct_id, topic_name=name, display_name=name, master_key=self.key,
                          enforce_ssl=True)
        topic.add_to_resource_policy(iam.PolicyStatement(
            sid="BudgetsPublish", actions=["sns:Publish"], resources=[topic.topic_arn],
            principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
        ))
        for email in emails:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic
