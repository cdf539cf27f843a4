"""An AWS Budgets monthly cost budget for the stage, alerting the notify topic at 80%
of actual spend and 100% of forecast spend. It counts the resources tagged
``ragserve-stage=<stage>`` (the stack tags everything it makes): activate that tag as
a cost-allocation tag once, in the Billing console."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_sns as sns
from constructs import Construct

COST_TAG = "ragserve-stage"


@dataclass(frozen=True, slots=True)
class CostBudgetProps:
    name: str
    stage: str
    limit_usd: float
    topic: sns.ITopic


class CostBudget(Construct):
    budget: budgets.CfnBudget

    def __init__(self, scope: Construct, construct_id: str, props: CostBudgetProps) -> None:
        super().__init__(scope, construct_id)
        subscriber = budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=props.topic.topic_arn)

        def alert(kind: str, percent: float) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind, comparison_operator="GREATER_THAN", threshold=percent,
                    threshold_type="PERCENTAGE"),
                subscribers=[subscriber])

        self.budget = budgets.CfnBudget(
            self, "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=props.name, budget_type="COST", time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=props.limit_usd, unit="USD"),
                cost_filters={"TagKeyValue": [f"user:{COST_TAG}${props.stage}"]},
            ),
            notifications_with_subscribers=[alert("ACTUAL", 80), alert("FORECASTED", 100)],
        )
