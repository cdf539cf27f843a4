"""CDK app: one ``RagserveStack`` per stage of cdk.json's ``stages`` context.

    cdk synth                    # every stage
    cdk deploy -c stage=dev      # one stage

A stub for now: the stack carries the stage's settings; the image, functions, API,
queues, caches and alarms come with the full stack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from constructs import Construct

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


@dataclass(frozen=True, slots=True)
class StageConfig:
    """Settings of one stage (cdk.json ``context.stages.<name>``)."""

    name: str
    memory_mb: int  # Lambda memory (CPU is proportional: ~1 vCPU per 1,769 MB)
    provisioned_concurrency: int  # warm instances of the search/embed functions; 0 = none
    account: str | None = None  # None: the CLI's (CDK_DEFAULT_ACCOUNT)
    region: str | None = None  # None: the CLI's (CDK_DEFAULT_REGION)

    @classmethod
    def from_context(cls, name: str, raw: Mapping[str, Any]) -> StageConfig:
        if not _STAGE_NAME.match(name):
            raise ValueError(f"stage name {name!r}: lower-case letters, digits and '-', at most 20")
        unknown = set(raw) - {"memory_mb", "provisioned_concurrency", "account", "region"}
        if unknown:
            raise ValueError(f"stage {name!r}: unknown settings {sorted(unknown)}")
        config = cls(
            name=name,
            memory_mb=int(raw.get("memory_mb", 2048)),
            provisioned_concurrency=int(raw.get("provisioned_concurrency", 0)),
            account=raw.get("account"),
            region=raw.get("region"),
        )
        if not 128 <= config.memory_mb <= 10240:
            raise ValueError(f"stage {name!r}: memory_mb must be within 128..10240, not {config.memory_mb}")
        if config.provisioned_concurrency < 0:
            raise ValueError(f"stage {name!r}: provisioned_concurrency must be >= 0")
        return config


def stage_configs(stages: Mapping[str, Any] | None, only: str | None = None) -> list[StageConfig]:
    """The stages to build: all of ``stages``, or just ``only`` (``-c stage=...``)."""
    if not stages:
        raise ValueError("cdk.json context has no 'stages'")
    if only is not None:
        if only not in stages:
            raise ValueError(f"unknown stage {only!r} (known: {', '.join(sorted(stages))})")
        stages = {only: stages[only]}
    return [StageConfig.from_context(name, raw or {}) for name, raw in stages.items()]


class RagserveStack(cdk.Stack):
    """Everything of one stage. Stub: settings and tags only."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        cdk.Tags.of(self).add("project", "ragserve")
        cdk.Tags.of(self).add("stage", config.name)
        # CloudFormation refuses a template without resources: a no-cost placeholder
        # until the real constructs arrive.
        cdk.CfnWaitConditionHandle(self, "Placeholder")
        cdk.CfnOutput(self, "Stage", value=config.name)


def build_app(app: cdk.App | None = None) -> cdk.App:
    app = app or cdk.App()
    only = app.node.try_get_context("stage")
    for config in stage_configs(app.node.try_get_context("stages"), only):
        env = cdk.Environment(
            account=config.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=config.region or os.environ.get("CDK_DEFAULT_REGION"),
        )
        RagserveStack(app, f"Ragserve-{config.name}", config=config, env=env,
                      description=f"ragserve ({config.name}): embeddings and semantic search")
    return app


def main() -> None:
    build_app().synth()


if __name__ == "__main__":
    main()
