"""CDK app: one ``RagserveStack`` per stage of cdk.json's ``stages`` context, checked
by cdk-nag's AwsSolutions rules.

    cdk synth                         # every stage (the CLI runs cdk.json's "app": python -m infra.app)
    cdk deploy -c stage=dev           # one stage
    python -m infra.app               # without the CLI: reads cdk.json itself, writes cdk.out/
    RAGSERVE_CDK_STAGE=dev python -m infra.app
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO / "layers") not in sys.path:  # `cdk synth` without `pip install -e .`
    sys.path.insert(0, str(_REPO / "layers"))

from infra.config import StageConfig, stage_configs  # noqa: E402
from infra.nag import add_nag_checks  # noqa: E402
from infra.stack import RagserveStack  # noqa: E402

__all__ = ["RagserveStack", "StageConfig", "build_app", "main", "stage_configs"]


def cdk_json_context() -> dict:
    return json.loads((_REPO / "cdk.json").read_text(encoding="utf-8")).get("context", {})


def build_app(app: cdk.App | None = None, *, nag: bool = True) -> cdk.App:
    """The stages of the app's context; run without the CDK CLI (which passes cdk.json's
    context in), the context of cdk.json."""
    app = app or cdk.App()
    stages, tiers = app.node.try_get_context("stages"), app.node.try_get_context("tiers")
    if stages is None:
        fallback = cdk_json_context()
        stages, tiers = fallback.get("stages"), tiers or fallback.get("tiers")
    only = app.node.try_get_context("stage") or os.environ.get("RAGSERVE_CDK_STAGE") or None
    for config in stage_configs(stages, only, tiers):
        env = cdk.Environment(
            account=config.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=config.region or os.environ.get("CDK_DEFAULT_REGION"),
        )
        RagserveStack(app, f"Ragserve-{config.name}", config=config, env=env,
                      description=f"ragserve ({config.name}): embeddings and semantic search")
    if nag:
        add_nag_checks(app)
    return app


def main() -> None:
    # the CLI sets CDK_OUTDIR; alone, write to cdk.out/ as the CLI would (not to a temp dir)
    build_app(cdk.App(outdir=os.environ.get("CDK_OUTDIR") or str(_REPO / "cdk.out"))).synth()


if __name__ == "__main__":
    main()
