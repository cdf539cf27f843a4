"""Settings: environment variable names (defined once, imported by the runtime and by
the CDK app) and one frozen, validated settings object per function.

Explicit argument beats environment beats default. No other module reads ragserve's
variables (``observability.tracing`` reads the Lambda and Powertools ones, as
Powertools itself does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Env:
    """Names of the environment variables ragserve reads."""

    ARTIFACTS_DIR = "RAGSERVE_ARTIFACTS_DIR"
    MODEL_ID = "RAGSERVE_MODEL_ID"
    MODEL_VARIANT = "RAGSERVE_MODEL_VARIANT"
    THREADS = "RAGSERVE_THREADS"
    TOKEN_BUDGET = "RAGSERVE_TOKEN_BUDGET"
    MAX_BATCH = "RAGSERVE_MAX_BATCH"
    MAX_TEXTS = "RAGSERVE_MAX_TEXTS"
    MAX_TEXT_CHARS = "RAGSERVE_MAX_TEXT_CHARS"
    MAX_QUERY_CHARS = "RAGSERVE_MAX_QUERY_CHARS"
    MAX_BODY_BYTES = "RAGSERVE_MAX_BODY_BYTES"
    API_KEYS = "RAGSERVE_API_KEYS"
    RATE_LIMIT_RPS = "RAGSERVE_RATE_LIMIT_RPS"
    RATE_LIMIT_BURST = "RAGSERVE_RATE_LIMIT_BURST"
    DATA_DIR = "RAGSERVE_DATA_DIR"


class SettingsError(ValueError):
    """An environment variable holds a value that the settings cannot accept."""


class _EnvSettings(BaseModel):
    """Base: frozen, and built from the environment by ``from_env``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ENV_NAMES: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            field: environ[name] for field, name in cls.ENV_NAMES.items() if environ.get(name, "") != ""
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.ENV_NAMES.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(f"invalid {cls.__name__}: {problems}") from None


def default_artifacts_dir() -> Path:
    """``model_artifacts/`` beside the package: in the repo (layers/ragserve/../../)
    and in the Lambda image (/var/task/ragserve/../)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "model_artifacts", package.parent.parent / "model_artifacts"):
        if (candidate / "manifest.json").exists():
            return candidate
    return package.parent.parent / "model_artifacts"


class EncoderSettings(_EnvSettings):
    """Which model to load and how to run it."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "artifacts_dir": Env.ARTIFACTS_DIR,
        "model_id": Env.MODEL_ID,
        "variant": Env.MODEL_VARIANT,
        "threads": Env.THREADS,
        "token_budget": Env.TOKEN_BUDGET,
        "max_batch": Env.MAX_BATCH,
    }

    artifacts_dir: Path = Field(default_factory=default_artifacts_dir)
    model_id: str | None = None  # None: the manifest's default model
    variant: Literal["int8", "fp32"] | None = None  # None: the model's default variant
    threads: int | None = Field(default=None, ge=1, le=64)  # parallel workers; None: the CPUs available
    token_budget: int = Field(default=256, ge=16, le=1 << 20)  # padded tokens per micro-batch
    max_batch: int = Field(default=64, ge=1, le=4096)  # texts per micro-batch (the manifest may cap it)


class Limits(_EnvSettings):
    """Request limits of DESIGN.md section 3."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "max_texts": Env.MAX_TEXTS,
        "max_text_chars": Env.MAX_TEXT_CHARS,
        "max_query_chars": Env.MAX_QUERY_CHARS,
        "max_body_bytes": Env.MAX_BODY_BYTES,
    }

    max_texts: int = Field(default=100, ge=1)
    max_text_chars: int = Field(default=8192, ge=1)
    max_query_chars: int = Field(default=500, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)


class EmbedSettings(BaseModel):
    """Everything the embed function reads at init."""

    model_config = ConfigDict(frozen=True)

    encoder: EncoderSettings
    limits: Limits

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmbedSettings:
        return cls(encoder=EncoderSettings.from_env(environ), limits=Limits.from_env(environ))


class GatewaySettings(_EnvSettings):
    """The local API Gateway emulator: keys and the per-key token bucket."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "api_keys": Env.API_KEYS,
        "rate_limit_rps": Env.RATE_LIMIT_RPS,
        "rate_limit_burst": Env.RATE_LIMIT_BURST,
    }

    api_keys: str = ""  # "KEY:read,KEY2:write"
    rate_limit_rps: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=100, ge=1)
