"""Stage settings (cdk.json ``context.stages.<name>``, tiers from ``context.tiers``) and
the catalogue of functions the stack deploys.

Everything is a frozen dataclass validated on load, so a typo in cdk.json fails
``cdk synth`` with a message that names the setting, not a CloudFormation error later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_TIER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
Architecture = Literal["x86_64", "arm64"]
Deployment = Literal["canary", "linear", "all_at_once"]
QuotaPeriod = Literal["DAY", "WEEK", "MONTH"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One Lambda function of the image: its handler (the image CMD) and defaults."""

    name: str
    cmd: str
    memory_mb: int | None  # None: the stage's memory_mb (the model-bound functions)
    timeout_s: int
    ephemeral_mb: int = 512  # /tmp: snapshots are downloaded there
    live_alias: bool = True  # an alias `live` (API targets it; CodeDeploy shifts it)
    provisioned: bool = False  # provisioned concurrency + auto scaling on `live`
    in_api: bool = True
    reserved_concurrency: int | None = None  # the cap when the stage's reserved_concurrency names none
    in_vpc: bool = True  # False: no VPC (it calls AWS APIs that have no endpoint in the isolated subnets)


# The functions of functions/Dockerfile's image, by CMD. The search, ingest, bulk and
# compaction handlers are written alongside; the stack references them by these names.
FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec("embed", "functions.embed.handler.lambda_handler", None, 30, provisioned=True),
    FunctionSpec("search", "functions.search.handler.lambda_handler", None, 30, ephemeral_mb=4096,
                 provisioned=True),
    FunctionSpec("ingest", "functions.ingest.handler.lambda_handler", None, 120, ephemeral_mb=4096),
    FunctionSpec("ops", "functions.ops.handler.lambda_handler", 512, 30),
    FunctionSpec("authorizer", "functions.ops.authorizer.lambda_handler", 512, 10),
    FunctionSpec("shard", "functions.ingest.bulk.shard_handler", None, 900, ephemeral_mb=2048,
                 live_alias=False, in_api=False),
    FunctionSpec("merge", "functions.ingest.bulk.merge_handler", 4096, 900, ephemeral_mb=10240,
                 live_alias=False, in_api=False),
    # merges segments (one capped merge: ~340 s of HNSW build) and applies retention; one
    # at a time, so that merges do not race (a race is safe, only wasted work)
    FunctionSpec("compact", "functions.ingest.compact.lambda_handler", 4096, 900, ephemeral_mb=10240,
                 live_alias=False, in_api=False, reserved_concurrency=1),
    # the Synthetics canary's key and collection (a CloudFormation custom resource): it
    # calls API Gateway's management API and Secrets Manager, so it runs outside the VPC
    FunctionSpec("canary", "functions.ops.canary.lambda_handler", 512, 120, live_alias=False, in_api=False,
                 in_vpc=False),
)
FUNCTION_NAMES = tuple(f.name for f in FUNCTIONS)


@dataclass(frozen=True, slots=True)
class TierConfig:
    """A usage plan: per-key throttle (requests/s, burst) and quota."""

    name: str
    rate_limit: float
    burst_limit: int
    quota: int
    quota_period: QuotaPeriod = "MONTH"

    @classmethod
    def from_context(cls, name: str, raw: Mapping[str, Any]) -> TierConfig:
        if not _TIER_NAME.match(name):
            raise ValueError(f"tier name {name!r}: lower-case letters, digits and '-', at most 20")
        _no_unknown(f"tier {name!r}", raw, cls)
        tier = cls(name=name, rate_limit=float(raw["rate_limit"]), burst_limit=int(raw["burst_limit"]),
                   quota=int(raw["quota"]), quota_period=raw.get("quota_period", "MONTH"))
        if tier.rate_limit <= 0 or tier.burst_limit < 1 or tier.quota < 1:
            raise ValueError(f"tier {name!r}: rate_limit, burst_limit and quota must be positive")
        if tier.quota_period not in ("DAY", "WEEK", "MONTH"):
            raise ValueError(f"tier {name!r}: quota_period must be DAY, WEEK or MONTH")
        return tier


@dataclass(frozen=True, slots=True)
class FunctionOverride:
    memory_mb: int | None = None
    timeout_s: int | None = None
    ephemeral_mb: int | None = None


@dataclass(frozen=True, slots=True)
class StageConfig:
    """Settings of one stage (cdk.json ``context.stages.<name>``)."""

    name: str
    memory_mb: int = 2048  # model-bound functions (CPU is proportional: ~1 vCPU per 1,769 MB)
    architecture: Architecture = "x86_64"
    provisioned_concurrency: int = 0  # warm `live` instances of embed and search (minimum); 0 = none
    provisioned_concurrency_max: int = 0  # auto scaling ceiling (target utilization 0.7)
    reserved_concurrency: Mapping[str, int] = field(default_factory=dict)  # per function: the cost guard
    functions: Mapping[str, FunctionOverride] = field(default_factory=dict)
    deployment: Deployment = "canary"  # CodeDeploy: canary 10% for 5 min, linear 10%/min, or all at once
    authorizer_cache_s: int = 300  # how long API Gateway keeps a key's policy (revocation lag)
    waf_rate_limit: int = 2000  # requests per IP per 5 minutes (WAF, the hard limit)
    max_body_bytes: int = 1_048_576  # WAF blocks larger Content-Length (the handlers check again)
    ingest_batch_size: int = 10  # SQS FIFO messages per invocation of the single writer
    ingest_max_concurrency: int = 5  # writer invocations at once (one per collection at most)
    bulk_max_concurrency: int = 50  # shard functions at once in the Distributed Map
    query_cache_max_gb: int = 1  # ElastiCache Serverless storage ceiling
    query_cache_max_ecpu: int = 5000  # ElastiCache Serverless ECPU/s ceiling
    log_retention_days: int = 30
    canary_rate_minutes: int = 5  # Synthetics canary: /health, an embed and a search
    canary_tier: str | None = None  # usage plan of the canary's key; None: the tier with the highest rate limit
    canary_key_generation: int = 1  # change it to give the canary a new key (the old one is revoked)
    # this stage's stack owns the account-wide API Gateway setting (its CloudWatch role), kept
    # when the stack is deleted; at most one stage per account and region
    api_gateway_account_owner: bool = False
    budget_usd: float = 100.0  # AWS Budgets, monthly (cost-allocation tags project/stage)
    alert_emails: tuple[str, ...] = ()  # subscribed to both SNS topics (confirm by mail)
    removal: Literal["retain", "destroy"] = "retain"  # data stores on stack deletion
    domain_name: str | None = None  # optional custom domain (TLS 1.2) ...
    certificate_arn: str | None = None  # ... with its ACM certificate, same region
    waf_count_rules: tuple[str, ...] = ("SizeRestrictions_BODY", "CrossSiteScripting_BODY")
    tiers: tuple[TierConfig, ...] = ()
    account: str | None = None  # None: the CLI's (CDK_DEFAULT_ACCOUNT)
    region: str | None = None  # None: the CLI's (CDK_DEFAULT_REGION)

    @classmethod
    def from_context(cls, name: str, raw: Mapping[str, Any],
                     tiers: Mapping[str, Any] | None = None) -> StageConfig:
        if not _STAGE_NAME.match(name):
            raise ValueError(f"stage name {name!r}: lower-case letters, digits and '-', at most 20")
        _no_unknown(f"stage {name!r}", raw, cls)
        values = dict(raw)
        tier_specs = {**(tiers or {}), **(values.pop("tiers", None) or {})}
        overrides = values.pop("functions", None) or {}
        unknown = set(overrides) - set(FUNCTION_NAMES)
        if unknown:
            raise ValueError(f"stage {name!r}: unknown functions {sorted(unknown)} (known: {FUNCTION_NAMES})")
        reserved = values.pop("reserved_concurrency", None) or {}
        if set(reserved) - set(FUNCTION_NAMES):
            raise ValueError(f"stage {name!r}: reserved_concurrency names unknown functions "
                             f"{sorted(set(reserved) - set(FUNCTION_NAMES))}")
        config = cls(
            name=name,
            **{k: tuple(v) if k in ("alert_emails", "waf_count_rules") else v for k, v in values.items()},
            reserved_concurrency={k: int(v) for k, v in reserved.items()},
            functions={k: _override(name, k, v) for k, v in overrides.items()},
            tiers=tuple(TierConfig.from_context(t, spec) for t, spec in sorted(tier_specs.items())),
        )
        config.validate()
        return config

    def validate(self) -> None:
        where = f"stage {self.name!r}"
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError(f"{where}: memory_mb must be within 128..10240, not {self.memory_mb}")
        if self.architecture not in ("x86_64", "arm64"):
            raise ValueError(f"{where}: architecture must be x86_64 or arm64")
        if self.deployment not in ("canary", "linear", "all_at_once"):
            raise ValueError(f"{where}: deployment must be canary, linear or all_at_once")
        if self.provisioned_concurrency < 0 or self.provisioned_concurrency_max < self.provisioned_concurrency:
            raise ValueError(f"{where}: need 0 <= provisioned_concurrency <= provisioned_concurrency_max")
        for spec in FUNCTIONS:
            cap = self.reserved_concurrency.get(spec.name)
            if cap is not None and cap < 1:
                raise ValueError(f"{where}: reserved_concurrency of {spec.name} must be >= 1")
            if spec.provisioned and cap is not None and cap < self.provisioned_concurrency_max:
                raise ValueError(f"{where}: reserved_concurrency of {spec.name} ({cap}) is below "
                                 f"provisioned_concurrency_max ({self.provisioned_concurrency_max})")
        if not self.tiers:
            raise ValueError(f"{where}: no usage plan tiers (context 'tiers')")
        if not 0 <= self.authorizer_cache_s <= 3600:
            raise ValueError(f"{where}: authorizer_cache_s must be within 0..3600")
        if self.waf_rate_limit < 10:  # WAF's minimum for rate-based rules
            raise ValueError(f"{where}: waf_rate_limit must be >= 10")
        if not 1 <= self.ingest_batch_size <= 10:  # SQS FIFO's maximum
            raise ValueError(f"{where}: ingest_batch_size must be within 1..10")
        if self.ingest_max_concurrency < 2:  # SQS event source's minimum
            raise ValueError(f"{where}: ingest_max_concurrency must be >= 2")
        if self.removal not in ("retain", "destroy"):
            raise ValueError(f"{where}: removal must be retain or destroy")
        if bool(self.domain_name) != bool(self.certificate_arn):
            raise ValueError(f"{where}: domain_name and certificate_arn go together")
        if self.canary_rate_minutes < 1:
            raise ValueError(f"{where}: canary_rate_minutes must be >= 1")
        if self.canary_tier is not None and self.canary_tier not in {t.name for t in self.tiers}:
            raise ValueError(f"{where}: canary_tier {self.canary_tier!r} is not one of its tiers "
                             f"({', '.join(t.name for t in self.tiers)})")
        if not isinstance(self.api_gateway_account_owner, bool):
            raise ValueError(f"{where}: api_gateway_account_owner must be true or false")

    @property
    def canary_usage_tier(self) -> TierConfig:
        """The usage plan the canary's key goes to."""
        if self.canary_tier is not None:
            return next(t for t in self.tiers if t.name == self.canary_tier)
        return max(self.tiers, key=lambda t: (t.rate_limit, t.quota))

    @property
    def provisioned(self) -> bool:
        return self.provisioned_concurrency > 0

    def function(self, spec: FunctionSpec) -> FunctionSpec:
        """The spec with this stage's memory, reserved concurrency and overrides applied."""
        override = self.functions.get(spec.name, FunctionOverride())
        return replace(
            spec,
            memory_mb=override.memory_mb or spec.memory_mb or self.memory_mb,
            timeout_s=override.timeout_s or spec.timeout_s,
            ephemeral_mb=override.ephemeral_mb or spec.ephemeral_mb,
            reserved_concurrency=self.reserved_concurrency.get(spec.name, spec.reserved_concurrency),
        )


def _override(stage: str, name: str, raw: Mapping[str, Any]) -> FunctionOverride:
    _no_unknown(f"stage {stage!r} function {name!r}", raw, FunctionOverride)
    return FunctionOverride(**{k: int(v) for k, v in raw.items()})


def _no_unknown(where: str, raw: Mapping[str, Any], cls: type) -> None:
    known = {f.name for f in fields(cls)} - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}")


def stage_configs(context_stages: Mapping[str, Any] | None, only: str | None = None,
                  tiers: Mapping[str, Any] | None = None) -> list[StageConfig]:
    """The stages to build: all of ``stages``, or just ``only`` (``-c stage=...``)."""
    if not context_stages:
        raise ValueError("cdk.json context has no 'stages'")
    if only is not None and only not in context_stages:
        raise ValueError(f"unknown stage {only!r} (known: {', '.join(sorted(context_stages))})")
    configs = [StageConfig.from_context(name, raw or {}, tiers) for name, raw in context_stages.items()]
    check_api_gateway_account_owners(configs)  # over every stage, even when synthesizing one
    return [c for c in configs if only is None or c.name == only]


def check_api_gateway_account_owners(configs: list[StageConfig]) -> None:
    """``AWS::ApiGateway::Account`` is one setting per account and region: two stages that
    both own it would overwrite each other's, and deleting one would take it from the
    other. Stages that pin no account (or region) count as sharing the CLI's."""
    owners: dict[tuple[str, str], list[str]] = {}
    for config in configs:
        if config.api_gateway_account_owner:
            owners.setdefault((config.account or "<cli>", config.region or "<cli>"), []).append(config.name)
    for (account, region), names in owners.items():
        if len(names) > 1:
            raise ValueError(f"stages {', '.join(names)} all set api_gateway_account_owner in account {account}, "
                             f"region {region}: the API Gateway account setting needs one owner there")
