"""Usage plans, one per tier of cdk.json (``ragserve-<stage>-<tier>``): per-key
throttle (rate, burst) and quota on the API's stage. ``ragserve keys create --tier``
attaches keys to them by that name. Usage plans are best effort; WAF is the hard
limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_apigateway as apigw
from constructs import Construct

from infra.config import TierConfig
from ragserve.keys.manager import usage_plan_name


@dataclass(frozen=True, slots=True)
class UsagePlansProps:
    api: apigw.RestApi
    stage: apigw.Stage
    stage_name: str
    tiers: Sequence[TierConfig]


class UsagePlans(Construct):
    plans: dict[str, apigw.UsagePlan]

    def __init__(self, scope: Construct, construct_id: str, props: UsagePlansProps) -> None:
        super().__init__(scope, construct_id)
        self.plans = {}
        for tier in props.tiers:
            self.plans[tier.name] = apigw.UsagePlan(
                self, tier.name.title().replace("-", ""),
                name=usage_plan_name(props.stage_name, tier.name),
                description=f"ragserve {props.stage_name} tier {tier.name}",
                throttle=apigw.ThrottleSettings(rate_limit=tier.rate_limit, burst_limit=tier.burst_limit),
                quota=apigw.QuotaSettings(limit=tier.quota, period=getattr(apigw.Period, tier.quota_period)),
                api_stages=[apigw.UsagePlanPerApiStage(api=props.api, stage=props.stage)],
            )
