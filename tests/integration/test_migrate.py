"""A local collection written by an older ragserve (format 1: one directory per version)
is refused with a message that names the fix, and `ragserve collections migrate` turns
its live version into one segment: same documents, same search results, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from ragserve.documents import Document
from ragserve.search.registry import CollectionRegistry
from ragserve.snapshots.errors import SnapshotMissing
from ragserve.snapshots.local import LocalSnapshotStore

REPO = Path(__file__).resolve().parents[2]


def write_format_1(root: Path, collection: str, version: int, records: list[dict], vectors: np.ndarray,
                   model_id: str) -> None:
    """What ragserve wrote before segments: v{N}/ with docs.jsonl, vectors.f16.npy, manifest.json."""
    directory = root / "collections" / collection / f"v{version}"
    directory.mkdir(parents=True)
    (directory / "docs.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    with (directory / "vectors.f16.npy").open("wb") as f:
        np.save(f, vectors.astype(np.float16))
    (directory / "index.usearch").write_bytes(b"old graph, not read by the migration")
    (directory / "manifest.json").write_text(json.dumps({
        "format": 1, "collection": collection, "version": version, "model_id": model_id,
        "dimensions": int(vectors.shape[1]), "dtype": "f16", "count": len(records),
        "built_at": "2026-11-01T00:00:00Z", "params": {"connectivity": 16, "expansion_add": 128,
                                                      "expansion_search": 64, "rescore_candidates": 100},
        "files": {}, "sizes": {}}))
    (root / "collections" / collection / "CURRENT").write_text(f"{version}\n")


@pytest.fixture
def old_collection(tmp_path, encoder):
    docs = [Document(f"d{i}", f"note {i} about {topic}", {"topic": topic})
            for i, topic in enumerate(["tides", "bread", "orbits", "moss", "glaciers"] * 4)]
    vectors = encoder.embed([d.text for d in docs])
    write_format_1(tmp_path, "notes", 3, [d.to_record(encoder.model_id) for d in docs], vectors, encoder.model_id)
    return tmp_path, docs


def test_an_old_collection_is_refused_with_the_fix_named(old_collection):
    root, _ = old_collection

    with pytest.raises(SnapshotMissing) as info:
        LocalSnapshotStore(root).manifest("notes", 3)

    assert "ragserve collections migrate --collection notes" in info.value.message
    assert str(root) not in info.value.message


def test_migrate_keeps_every_document_and_the_ranking(old_collection, encoder):
    root, docs = old_collection
    env = {**os.environ, "RAGSERVE_DATA_DIR": str(root)}

    run = subprocess.run([sys.executable, "-m", "ragserve.cli", "collections", "migrate", "--collection", "notes"],
                         env=env, capture_output=True, text=True, cwd=REPO, timeout=120)

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"collection": "notes", "version": 4, "documents": len(docs)}
    store = LocalSnapshotStore(root)
    manifest = store.manifest("notes", 4)
    assert manifest.parent == 3 and len(manifest.segments) == 1 and manifest.count == len(docs)
    registry = CollectionRegistry(store, root / "cache", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions)
    query = encoder.embed(["ocean tides"])[0]
    page = registry.get("notes").search(query, k=len(docs), offset=0, where=None, include_text=True)
    assert sorted(h["id"] for h in page.results) == sorted(d.id for d in docs)
    expected = encoder.embed([d.text for d in docs]).astype(np.float16).astype(np.float64) @ query.astype(np.float64)
    assert page.results[0]["id"] == docs[int(np.argmax(expected))].id
    assert (root / "collections" / "notes" / "v3" / "docs.jsonl").is_file()  # the old version is left as it was


def test_migrating_twice_is_refused(old_collection):
    root, _ = old_collection
    env = {**os.environ, "RAGSERVE_DATA_DIR": str(root)}
    command = [sys.executable, "-m", "ragserve.cli", "collections", "migrate", "--collection", "notes"]
    assert subprocess.run(command, env=env, capture_output=True, cwd=REPO, timeout=120).returncode == 0

    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)

    assert again.returncode == 2
    assert "no live format-1 version" in again.stderr
