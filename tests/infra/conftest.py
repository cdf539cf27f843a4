"""One synthesis of the whole CDK app (every stage of cdk.json, cdk-nag on) per test
session: synthesis costs seconds, every infra test reads the same templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@dataclass
class Synthesis:
    app: Any  # aws_cdk.App
    outdir: Path
    error: Exception | None  # cdk-nag failures surface as a synthesis error
    report: dict | None  # validation-report.json, when a plugin failed
    templates: dict[str, dict]  # stage -> CloudFormation template

    def stack(self, stage: str):
        return self.app.node.find_child(f"Ragserve-{stage}")


@pytest.fixture(scope="session")
def cdk_context() -> dict:
    return json.loads((REPO / "cdk.json").read_text(encoding="utf-8"))["context"]


@dataclass
class Standalone:
    process: subprocess.Popen
    outdir: Path


@pytest.fixture(scope="session")
def standalone_synth(tmp_path_factory) -> Standalone:
    """`python -m infra.app` (dev only, environment-agnostic, no CDK CLI), started in the
    background so that it overlaps the in-process synthesis."""
    outdir = tmp_path_factory.mktemp("standalone")
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "RAGSERVE_CDK_STAGE": "dev",
           "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    for name in ("CDK_CONTEXT_JSON", "CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "infra.app"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    yield Standalone(process, outdir)
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="session")
def synthesis(tmp_path_factory, cdk_context, standalone_synth) -> Synthesis:
    cdk = pytest.importorskip("aws_cdk", reason="the infra extra installs aws-cdk-lib")
    from infra.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir), context=cdk_context)
    # as `cdk synth` runs it with a region configured and no credentials: region known,
    # account not (`python -m infra.app` is tested environment-agnostic in test_app.py)
    saved = {k: os.environ.pop(k, None) for k in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT")}
    os.environ["CDK_DEFAULT_REGION"] = REGION
    try:
        build_app(app)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
    error = None
    try:
        app.synth()
    except Exception as exc:  # noqa: BLE001 - kept for the cdk-nag test to show
        error = exc
    report_file = outdir / "validation-report.json"
    templates = {stage: json.loads((outdir / f"Ragserve-{stage}.template.json").read_text(encoding="utf-8"))
                 for stage in cdk_context["stages"]}
    return Synthesis(app, outdir, error, json.loads(report_file.read_text()) if report_file.exists() else None,
                     templates)


@pytest.fixture(scope="session")
def prod(synthesis):
    from aws_cdk.assertions import Template

    return Template.from_json(synthesis.templates["prod"])


@pytest.fixture(scope="session")
def dev(synthesis):
    from aws_cdk.assertions import Template

    return Template.from_json(synthesis.templates["dev"])
