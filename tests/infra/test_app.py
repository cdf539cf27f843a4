"""The CDK app around the stack: every handler the stack names imports, the staged
image context holds what the Dockerfile copies, stage settings are validated, and
``python -m infra.app`` synthesizes on its own (no CDK CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.config import FUNCTIONS, StageConfig, TierConfig, stage_configs

REPO = Path(__file__).resolve().parents[2]
TIERS = {"free": {"rate_limit": 5, "burst_limit": 10, "quota": 100}}

_IMPORT = textwrap.dedent(
    """
    import importlib, json, sys
    module_name, _, attr = sys.argv[1].rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(json.dumps({"ok": False, "why": f"module not found: {exc.name}"}))
    else:
        print(json.dumps({"ok": callable(getattr(module, attr, None)), "why": f"{attr} is not a callable"}))
    """
)


def import_in_fresh_process(handler: str, data_dir: Path) -> tuple[str, bool, str]:
    """As the Lambda runtime would: a new interpreter imports CMD's module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSERVE_", "AWS_"))}
    env.update(POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true",
               RAGSERVE_DATA_DIR=str(data_dir))
    done = subprocess.run([sys.executable, "-c", _IMPORT, handler], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    if done.returncode != 0:
        return handler, False, f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return handler, result["ok"], result["why"]


def test_every_handler_the_stack_names_is_importable(synthesis, tmp_path):
    commands = sorted({f["Properties"]["ImageConfig"]["Command"][0]
                       for template in synthesis.templates.values()
                       for f in template["Resources"].values() if f["Type"] == "AWS::Lambda::Function"})
    assert commands == sorted(spec.cmd for spec in FUNCTIONS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda cmd: import_in_fresh_process(cmd, tmp_path / cmd), commands))
    failures = [f"{handler}: {why}" for handler, ok, why in results if not ok]
    assert not failures, "\n".join(failures)


def test_staged_image_context_holds_every_file_the_dockerfile_copies(synthesis):
    from test_image import bind_mount_sources, copies, parse_dockerfile

    manifest = json.loads((synthesis.outdir / "Ragserve-prod.assets.json").read_text())
    [image] = manifest["dockerImages"].values()
    staged = synthesis.outdir / image["source"]["directory"]
    instructions = parse_dockerfile()
    sources = [s for c in copies(instructions) for s in c.sources] + bind_mount_sources(instructions)
    assert sources
    for source in sources:
        assert list(staged.glob(source.strip("/"))), f"{source} is not in the staged build context"
    assert (staged / image["source"]["dockerFile"]).is_file()
    assert not (staged / ".venv").exists() and not (staged / "tests").exists()  # .dockerignore applies


def test_stage_settings_are_validated():
    base = {"reserved_concurrency": {"embed": 5}}
    assert StageConfig.from_context("dev", base, TIERS).reserved_concurrency == {"embed": 5}
    bad = [
        ("Dev", {}, "stage name"),
        ("dev", {"memory_mb": 64}, "memory_mb"),
        ("dev", {"memroy_mb": 2048}, "unknown settings"),
        ("dev", {"provisioned_concurrency": 3, "provisioned_concurrency_max": 2}, "provisioned_concurrency"),
        ("dev", {"provisioned_concurrency": 1, "provisioned_concurrency_max": 9,
                 "reserved_concurrency": {"search": 4}}, "below"),
        ("dev", {"reserved_concurrency": {"nope": 1}}, "unknown functions"),
        ("dev", {"functions": {"embed": {"memroy_mb": 1}}}, "unknown settings"),
        ("dev", {"domain_name": "api.example.com"}, "go together"),
        ("dev", {"deployment": "yolo"}, "deployment"),
        ("dev", {"ingest_batch_size": 11}, "ingest_batch_size"),
    ]
    for name, raw, message in bad:
        with pytest.raises(ValueError, match=message):
            StageConfig.from_context(name, raw, TIERS)
    with pytest.raises(ValueError, match="no usage plan tiers"):
        StageConfig.from_context("dev", {}, {})
    with pytest.raises(ValueError, match="quota_period"):
        TierConfig.from_context("free", {"rate_limit": 1, "burst_limit": 1, "quota": 1, "quota_period": "YEAR"})
    with pytest.raises(ValueError, match="unknown stage"):
        stage_configs({"dev": {}}, "prod", TIERS)


def test_compaction_function_runs_one_at_a_time_unless_the_stage_says_otherwise():
    specs = {spec.name: spec for spec in FUNCTIONS}
    compact = specs["compact"]
    assert compact.cmd == "functions.ingest.compact.lambda_handler"
    assert (compact.memory_mb, compact.timeout_s, compact.ephemeral_mb) == (4096, 900, 10240)
    assert not compact.live_alias and not compact.in_api and not compact.provisioned
    default = StageConfig.from_context("dev", {}, TIERS)
    assert default.function(compact).reserved_concurrency == 1
    assert default.function(specs["embed"]).reserved_concurrency is None  # no cap unless the stage sets one
    stage = StageConfig.from_context("dev", {"reserved_concurrency": {"compact": 2, "embed": 7}}, TIERS)
    assert stage.function(compact).reserved_concurrency == 2
    assert stage.function(specs["embed"]).reserved_concurrency == 7


def test_stage_tiers_override_the_shared_ones():
    config = StageConfig.from_context("dev", {"tiers": {"free": {"rate_limit": 1, "burst_limit": 2, "quota": 3}}},
                                      {**TIERS, "pro": {"rate_limit": 9, "burst_limit": 9, "quota": 9}})
    assert [(t.name, t.rate_limit, t.quota) for t in config.tiers] == [("free", 1.0, 3), ("pro", 9.0, 9)]


def test_python_m_infra_app_synthesizes_without_the_cdk_cli(standalone_synth):
    # (started by the fixture: dev only, no region or account, no CDK CLI context)
    _, stderr = standalone_synth.process.communicate(timeout=300)
    assert standalone_synth.process.returncode == 0, stderr[-3000:]
    outdir = standalone_synth.outdir
    assert json.loads((outdir / "Ragserve-dev.template.json").read_text())["Resources"]
    assert not (outdir / "Ragserve-prod.template.json").exists()
    report = json.loads((outdir / "validation-report.json").read_text())  # cdk-nag ran ...
    plugins = {r["pluginName"]: r["conclusion"] for r in report["pluginReports"]}
    assert plugins["AwsSolutions"] == "success" and set(plugins.values()) == {"success"}  # ... and passed
    assert json.loads((REPO / "cdk.json").read_text())["app"] == "python -m infra.app"
