"""AWS WAF on the API stage: the hard limits usage plans cannot guarantee.

Rules, in order: a per-IP rate-based rule (429 with Retry-After), a body-size rule on
Content-Length (413; API Gateway's own limit is 10 MB, the service's is 1 MB), and the
AWS managed common rule set. Two of its body rules only count: bodies up to 1 MB are
normal here (SizeRestrictions_BODY blocks over 8 KB), and documents are data that may
well contain markup (CrossSiteScripting_BODY); which rules count is a stage setting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

RATE_RESPONSE = "rate_limited"
SIZE_RESPONSE = "body_too_large"


def greater_than_regex(limit: int) -> str:
    """A regex that matches exactly the decimal integers greater than ``limit`` (leading
    zeros allowed): WAF cannot compare a header numerically."""
    digits = str(limit)
    n = len(digits)
    alternatives = [f"[1-9][0-9]{{{n},}}"]  # more digits
    for i, d in enumerate(digits):
        if d == "9":
            continue
        rest = n - i - 1
        higher = f"[{int(d) + 1}-9]" if int(d) < 8 else "9"
        tail = f"[0-9]{{{rest}}}" if rest > 1 else ("[0-9]" if rest == 1 else "")
        alternatives.append(digits[:i] + higher + tail)
    return "^0*(" + "|".join(alternatives) + ")$"


def _error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message, "request_id": ""}})


@dataclass(frozen=True, slots=True)
class WebAclProps:
    name: str
    stage_arn: str
    rate_limit: int  # requests per IP per 5 minutes
    max_body_bytes: int
    count_rules: Sequence[str] = ("SizeRestrictions_BODY", "CrossSiteScripting_BODY")


class WebAcl(Construct):
    acl: wafv2.CfnWebACL
    association: wafv2.CfnWebACLAssociation

    def __init__(self, scope: Construct, construct_id: str, props: WebAclProps) -> None:
        super().__init__(scope, construct_id)

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=metric,
                                                            sampled_requests_enabled=True)

        def block(status: int, body_key: str, headers: dict[str, str] | None = None):
            return wafv2.CfnWebACL.RuleActionProperty(block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=status, custom_response_body_key=body_key,
                    response_headers=[wafv2.CfnWebACL.CustomHTTPHeaderProperty(name=k, value=v)
                                      for k, v in (headers or {}).items()] or None,
                )))

        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name="rate-per-ip", priority=0, action=block(429, RATE_RESPONSE, {"Retry-After": "60"}),
                statement=wafv2.CfnWebACL.StatementProperty(rate_based_statement=(
                    wafv2.CfnWebACL.RateBasedStatementProperty(limit=props.rate_limit, aggregate_key_type="IP",
                                                               evaluation_window_sec=300))),
                visibility_config=visibility(f"{props.name}-rate-per-ip"),
            ),
            wafv2.CfnWebACL.RuleProperty(
                name="body-size", priority=1, action=block(413, SIZE_RESPONSE),
                statement=wafv2.CfnWebACL.StatementProperty(regex_match_statement=(
                    wafv2.CfnWebACL.RegexMatchStatementProperty(
                        regex_string=greater_than_regex(props.max_body_bytes),
                        field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                            single_header={"Name": "content-length"}),
                        text_transformations=[wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")],
                    ))),
                visibility_config=visibility(f"{props.name}-body-size"),
            ),
            wafv2.CfnWebACL.RuleProperty(
                name="aws-common", priority=2,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(managed_rule_group_statement=(
                    wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS", name="AWSManagedRulesCommonRuleSet",
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}))
                            for rule in props.count_rules] or None,
                    ))),
                visibility_config=visibility(f"{props.name}-aws-common"),
            ),
        ]
        self.acl = wafv2.CfnWebACL(
            self, "WebAcl", name=props.name, scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=rules,
            custom_response_bodies={
                RATE_RESPONSE: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=_error_body("rate_limited", "too many requests from this address; retry later")),
                SIZE_RESPONSE: wafv2.CfnWebACL.CustomResponseBodyProperty(
                    content_type="APPLICATION_JSON",
                    content=_error_body("body_too_large", f"request body is over {props.max_body_bytes} bytes")),
            },
            visibility_config=visibility(props.name),
        )
        self.association = wafv2.CfnWebACLAssociation(self, "Association", resource_arn=props.stage_arn,
                                                       web_acl_arn=self.acl.attr_arn)
