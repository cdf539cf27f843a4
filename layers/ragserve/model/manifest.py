"""Models as data: ``model_artifacts/manifest.json`` names each model, its shape, its
files and their sha256. Code resolves a model id against it and verifies the files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ragserve.errors import ModelArtifactError

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model variant, resolved to absolute paths."""

    id: str
    dimensions: int
    pooling: str
    normalize: bool
    max_length: int
    variant: str
    model_file: ArtifactFile
    tokenizer_file: ArtifactFile
    aliases: frozenset[str] = frozenset()  # every name a caller may use, the id included
    max_batch: int | None = None  # texts per run; 1 where rows would change each other's results

    def verify(self) -> None:
        """Fail with a message that says what to do if a file is missing or altered."""
        for artifact in (self.tokenizer_file, self.model_file):
            if not artifact.path.is_file():
                hint = (" Build it with `make model`." if self.variant != "int8"
                        else " Restore it from git (`git checkout -- model_artifacts`) or rebuild with `make model`.")
                raise ModelArtifactError(f"model file missing: {artifact.path}.{hint}", summary="model file missing")
            actual = sha256_file(artifact.path)
            if actual != artifact.sha256:
                raise ModelArtifactError(
                    f"model file altered: {artifact.path} has sha256 {actual}, manifest expects "
                    f"{artifact.sha256}. Restore it or rebuild with `make model`.",
                    summary="model file altered",
                )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(artifacts_dir: Path, model_id: str | None = None, variant: str | None = None) -> ModelSpec:
    """Find ``model_id`` (or an alias, or the default) and ``variant`` in the manifest."""
    manifest_path = artifacts_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelArtifactError(f"model manifest not found: {manifest_path}",
                                 summary="model manifest missing") from None
    except ValueError as exc:
        raise ModelArtifactError(f"model manifest is not valid JSON: {manifest_path}: {exc}",
                                 summary="model manifest invalid") from None
    wanted = model_id or manifest["default_model"]
    for entry in manifest["models"]:
        if wanted == entry["id"] or wanted in entry.get("aliases", ()):
            break
    else:
        known = ", ".join(m["id"] for m in manifest["models"])
        raise ModelArtifactError(f"model {wanted!r} is not in {manifest_path} (known: {known})",
                                 summary="model not in manifest")
    chosen = variant or entry["default_variant"]
    if chosen not in entry["variants"]:
        raise ModelArtifactError(
            f"model {entry['id']!r} has no variant {chosen!r} (known: {', '.join(entry['variants'])})",
            summary="model variant not in manifest")
    file = entry["variants"][chosen]
    return ModelSpec(
        id=entry["id"],
        dimensions=int(entry["dimensions"]),
        pooling=entry["pooling"],
        normalize=bool(entry["normalize"]),
        max_length=int(entry["max_length"]),
        variant=chosen,
        model_file=ArtifactFile(artifacts_dir / file["file"], file["sha256"]),
        tokenizer_file=ArtifactFile(artifacts_dir / entry["tokenizer"]["file"], entry["tokenizer"]["sha256"]),
        aliases=frozenset([entry["id"], *entry.get("aliases", ())]),
        max_batch=file.get("max_batch"),
    )

