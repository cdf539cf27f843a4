"""Settings: defaults, environment overrides, explicit arguments, and errors that name
the variable at fault."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from ragserve.settings import (
    EmbedSettings,
    EncoderSettings,
    Env,
    GatewaySettings,
    Limits,
    SettingsError,
    default_artifacts_dir,
)


def test_limits_defaults_are_those_of_the_design():
    limits = Limits.from_env({})

    assert limits.max_texts == 100
    assert limits.max_text_chars == 8192
    assert limits.max_query_chars == 500
    assert limits.max_body_bytes == 1_048_576


def test_encoder_defaults(repo_root):
    settings = EncoderSettings.from_env({})

    assert settings.artifacts_dir == repo_root / "model_artifacts"
    assert settings.model_id is None and settings.variant is None and settings.threads is None
    assert (settings.token_budget, settings.max_batch) == (256, 64)


def test_default_artifacts_dir_is_the_repos_model_artifacts(repo_root):
    assert default_artifacts_dir() == repo_root / "model_artifacts"
    assert (default_artifacts_dir() / "manifest.json").is_file()


def test_environment_overrides_defaults(tmp_path):
    environ = {
        Env.MAX_TEXTS: "5",
        Env.MAX_TEXT_CHARS: "100",
        Env.MAX_BODY_BYTES: "2048",
        Env.ARTIFACTS_DIR: str(tmp_path),
        Env.MODEL_VARIANT: "fp32",
        Env.THREADS: "3",
        Env.TOKEN_BUDGET: "1024",
    }

    settings = EmbedSettings.from_env(environ)

    assert (settings.limits.max_texts, settings.limits.max_text_chars, settings.limits.max_body_bytes) == (5, 100, 2048)
    assert settings.encoder.artifacts_dir == Path(tmp_path)
    assert settings.encoder.variant == "fp32"
    assert (settings.encoder.threads, settings.encoder.token_budget) == (3, 1024)


def test_empty_variable_means_default():
    assert Limits.from_env({Env.MAX_TEXTS: ""}).max_texts == 100


def test_explicit_argument_beats_environment():
    settings = EncoderSettings.from_env({Env.THREADS: "4", Env.MAX_BATCH: "8"}, threads=2, max_batch=None)

    assert settings.threads == 2  # argument
    assert settings.max_batch == 8  # None argument: the environment's value stands


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv(Env.MAX_QUERY_CHARS, "42")

    assert Limits.from_env().max_query_chars == 42


@pytest.mark.parametrize(
    ("cls", "variable", "value"),
    [
        (Limits, Env.MAX_TEXTS, "many"),
        (Limits, Env.MAX_TEXTS, "0"),
        (Limits, Env.MAX_BODY_BYTES, "-1"),
        (EncoderSettings, Env.MODEL_VARIANT, "fp16"),
        (EncoderSettings, Env.THREADS, "0"),
        (EncoderSettings, Env.TOKEN_BUDGET, "8"),
        (GatewaySettings, Env.RATE_LIMIT_RPS, "0"),
    ],
)
def test_invalid_value_names_the_variable(cls, variable, value):
    with pytest.raises(SettingsError) as info:
        cls.from_env({variable: value})

    message = str(info.value)
    assert variable in message
    assert cls.__name__ in message


def test_several_invalid_values_are_all_named():
    with pytest.raises(SettingsError) as info:
        Limits.from_env({Env.MAX_TEXTS: "x", Env.MAX_QUERY_CHARS: "y"})

    assert Env.MAX_TEXTS in str(info.value) and Env.MAX_QUERY_CHARS in str(info.value)


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_embed_settings_fail_at_init_on_a_bad_variable():
    with pytest.raises(SettingsError, match=Env.MAX_TEXT_CHARS):
        EmbedSettings.from_env({Env.MAX_TEXT_CHARS: "lots"})


def test_settings_are_frozen():
    limits = Limits.from_env({})

    with pytest.raises(pydantic.ValidationError):
        limits.max_texts = 1  # type: ignore[misc]


def test_unknown_override_is_rejected():
    with pytest.raises(SettingsError, match="max_textz"):
        Limits.from_env({}, max_textz=3)


def test_env_names_are_unique_and_prefixed():
    names = [v for k, v in vars(Env).items() if k.isupper()]

    assert len(names) == len(set(names))
    assert all(name.startswith("RAGSERVE_") for name in names)
