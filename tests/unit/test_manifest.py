"""Models as data: resolving ids, aliases and variants against manifest.json, and
verifying the files' sha256. Tampering happens on a copy in tmp_path, never on the
real artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragserve.errors import ModelArtifactError
from ragserve.model.manifest import resolve_model, sha256_file
from tests.corruption import flip_byte

MODEL_ID = "all-MiniLM-L6-v2"


@pytest.fixture()
def artifacts_copy(artifacts_dir: Path, tmp_path: Path) -> Path:
    """manifest.json, tokenizer.json and the int8 model.onnx copied to tmp_path."""
    copy = tmp_path / "model_artifacts"
    (copy / MODEL_ID).mkdir(parents=True)
    shutil.copy2(artifacts_dir / "manifest.json", copy / "manifest.json")
    for name in ("tokenizer.json", "model.onnx"):
        shutil.copy2(artifacts_dir / MODEL_ID / name, copy / MODEL_ID / name)
    return copy


def test_default_model_resolves_to_the_int8_variant(artifacts_dir):
    spec = resolve_model(artifacts_dir)

    assert spec.id == MODEL_ID
    assert spec.variant == "int8"
    assert (spec.dimensions, spec.max_length, spec.pooling, spec.normalize) == (384, 256, "mean", True)
    assert spec.model_file.path == artifacts_dir / MODEL_ID / "model.onnx"
    assert spec.tokenizer_file.path == artifacts_dir / MODEL_ID / "tokenizer.json"
    assert len(spec.model_file.sha256) == 64
    assert MODEL_ID in spec.aliases


def test_alias_resolves_to_the_same_model(artifacts_dir):
    by_alias = resolve_model(artifacts_dir, "sentence-transformers/all-MiniLM-L6-v2")

    assert by_alias == resolve_model(artifacts_dir, MODEL_ID)
    assert "sentence-transformers/all-MiniLM-L6-v2" in by_alias.aliases


def test_explicit_variant_is_chosen(artifacts_dir):
    spec = resolve_model(artifacts_dir, MODEL_ID, "fp32")

    assert spec.variant == "fp32"
    assert spec.model_file.path.name == "model_fp32.onnx"


def test_unknown_model_id_names_it_and_the_known_models(artifacts_dir):
    with pytest.raises(ModelArtifactError, match="no-such-model") as info:
        resolve_model(artifacts_dir, "no-such-model")

    assert f"known: {MODEL_ID}" in info.value.message
    assert info.value.code == "model_unavailable"


def test_unknown_variant_lists_the_known_variants(artifacts_dir):
    with pytest.raises(ModelArtifactError, match="fp16") as info:
        resolve_model(artifacts_dir, MODEL_ID, "fp16")

    assert "int8" in info.value.message and "fp32" in info.value.message


def test_missing_manifest_is_a_model_artifact_error(tmp_path):
    with pytest.raises(ModelArtifactError, match="manifest not found"):
        resolve_model(tmp_path)


def test_invalid_manifest_json_is_a_model_artifact_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(ModelArtifactError, match="not valid JSON"):
        resolve_model(tmp_path)


def test_real_artifacts_verify(artifacts_dir):
    spec = resolve_model(artifacts_dir)

    spec.verify()  # raises if the committed files do not match the manifest
    assert sha256_file(spec.model_file.path) == spec.model_file.sha256


def test_intact_copy_verifies(artifacts_copy):
    resolve_model(artifacts_copy).verify()


def test_missing_model_file_says_which_file_and_what_to_do(artifacts_copy):
    model = artifacts_copy / MODEL_ID / "model.onnx"
    model.unlink()

    with pytest.raises(ModelArtifactError) as info:
        resolve_model(artifacts_copy).verify()

    message = info.value.message
    assert message.startswith("model file missing")
    assert str(model) in message
    assert "git checkout" in message or "make model" in message


def test_missing_optional_fp32_file_says_how_to_build_it(artifacts_copy):
    with pytest.raises(ModelArtifactError, match="missing.*model_fp32.onnx.*make model"):
        resolve_model(artifacts_copy, variant="fp32").verify()


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_altered_file_is_detected_with_both_digests(artifacts_copy, name):
    target = artifacts_copy / MODEL_ID / name
    spec = resolve_model(artifacts_copy)
    flip_byte(target)

    with pytest.raises(ModelArtifactError) as info:
        spec.verify()

    message = info.value.message
    assert message.startswith("model file altered")
    assert str(target) in message
    assert sha256_file(target) in message  # what it is
    expected = spec.model_file.sha256 if name == "model.onnx" else spec.tokenizer_file.sha256
    assert expected in message  # what the manifest wants


def test_manifest_digest_mismatch_is_detected(artifacts_copy):
    manifest_path = artifacts_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["models"][0]["variants"]["int8"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")

    with pytest.raises(ModelArtifactError, match="altered"):
        resolve_model(artifacts_copy).verify()
