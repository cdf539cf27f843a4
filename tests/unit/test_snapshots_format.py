"""The snapshot format: manifest.json round trip, sha256 and size verification, and the
errors that say which file is wrong. The data files are a few fake bytes: the format
hashes files and never parses them, so their content is beside the point here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ragserve.errors import InvalidInput, NotFound
from ragserve.model.manifest import sha256_file
from ragserve.snapshots import (
    MANIFEST,
    SNAPSHOT_FILES,
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotMeta,
    SnapshotMismatch,
    SnapshotMissing,
    VersionExists,
    verify_snapshot,
    write_manifest,
)
from ragserve.snapshots.format import Staging, clean_stale_staging, validate_collection
from tests.corruption import flip_byte

META = {"model_id": "all-MiniLM-L6-v2", "dimensions": 384, "dtype": "f16", "count": 3,
        "params": {"connectivity": 16, "expansion_search": 64, "metric": "cos"}}


def make_files(directory: Path, tag: str = "a") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.usearch").write_bytes(b"usearch-index-" + tag.encode() * 32)
    (directory / "vectors.f16.npy").write_bytes(b"\x93NUMPY-fake-" + tag.encode() * 64)
    (directory / "docs.jsonl").write_text(json.dumps({"id": tag, "text": "hello", "metadata": {}}) + "\n")
    return directory


def test_write_manifest_hashes_every_file_and_round_trips(tmp_path):
    directory = make_files(tmp_path / "snap")

    meta = write_manifest(directory, collection="docs", version=1, **META)

    assert meta.files == {name: sha256_file(directory / name) for name in SNAPSHOT_FILES}
    assert meta.sizes == {name: (directory / name).stat().st_size for name in SNAPSHOT_FILES}
    assert (meta.collection, meta.version, meta.format) == ("docs", 1, 1)
    assert meta.built_at.endswith("Z") and "T" in meta.built_at
    assert SnapshotMeta.from_json((directory / MANIFEST).read_text()) == meta
    assert SnapshotMeta.from_json(meta.to_json()) == meta
    assert verify_snapshot(directory) == meta
    assert not [p.name for p in directory.iterdir() if "tmp" in p.name]  # the temp manifest is gone


def test_write_manifest_needs_all_three_files(tmp_path):
    directory = make_files(tmp_path / "snap")
    (directory / "vectors.f16.npy").unlink()

    with pytest.raises(SnapshotMissing, match="vectors.f16.npy"):
        write_manifest(directory, collection="docs", version=1, **META)
    assert not (directory / MANIFEST).exists()


@pytest.mark.parametrize("name", SNAPSHOT_FILES)
def test_a_flipped_byte_is_refused_naming_the_file_and_both_hashes(tmp_path, name):
    directory = make_files(tmp_path / "snap")
    meta = write_manifest(directory, collection="docs", version=1, **META)
    flip_byte(directory / name)

    with pytest.raises(SnapshotCorrupt) as caught:
        verify_snapshot(directory)

    message = caught.value.message
    assert name in message
    assert meta.files[name] in message
    assert sha256_file(directory / name) in message
    assert caught.value.code == "snapshot_corrupt"


def test_a_truncated_file_is_refused_by_size(tmp_path):
    directory = make_files(tmp_path / "snap")
    write_manifest(directory, collection="docs", version=1, **META)
    (directory / "docs.jsonl").write_text("")

    with pytest.raises(SnapshotCorrupt, match=r"docs.jsonl is 0 bytes"):
        verify_snapshot(directory)


def test_a_directory_without_manifest_is_missing_not_corrupt(tmp_path):
    directory = make_files(tmp_path / "snap")

    with pytest.raises(SnapshotMissing, match="manifest.json"):
        verify_snapshot(directory)


def test_a_missing_data_file_is_reported(tmp_path):
    directory = make_files(tmp_path / "snap")
    write_manifest(directory, collection="docs", version=1, **META)
    (directory / "index.usearch").unlink()

    with pytest.raises(SnapshotMissing, match="index.usearch"):
        verify_snapshot(directory)


@pytest.mark.parametrize("edit", [
    lambda m: "not json{",
    lambda m: json.dumps([1, 2]),
    lambda m: json.dumps({**m, "format": 2}),
    lambda m: json.dumps({**m, "dtype": "f64"}),
    lambda m: json.dumps({k: v for k, v in m.items() if k != "files"}),
    lambda m: json.dumps({**m, "files": {"index.usearch": m["files"]["index.usearch"]}}),
])
def test_a_malformed_manifest_is_corrupt(tmp_path, edit):
    directory = make_files(tmp_path / "snap")
    write_manifest(directory, collection="docs", version=1, **META)
    manifest = json.loads((directory / MANIFEST).read_text())
    (directory / MANIFEST).write_text(edit(manifest))

    with pytest.raises(SnapshotCorrupt):
        verify_snapshot(directory)


def test_verify_can_insist_on_collection_and_version(tmp_path):
    directory = make_files(tmp_path / "snap")
    write_manifest(directory, collection="docs", version=3, **META)

    assert verify_snapshot(directory, collection="docs", version=3).version == 3
    with pytest.raises(SnapshotMismatch, match="'docs' v3"):
        verify_snapshot(directory, collection="docs", version=4)
    with pytest.raises(SnapshotMismatch):
        verify_snapshot(directory, collection="other", version=3)


@pytest.mark.parametrize("field,value", [("dtype", "f32"), ("version", 0), ("collection", "../etc"),
                                         ("collection", "Docs"), ("dimensions", 0)])
def test_write_manifest_rejects_bad_metadata(tmp_path, field, value):
    directory = make_files(tmp_path / "snap")
    args = {"collection": "docs", "version": 1, **META, field: value}

    with pytest.raises(InvalidInput):
        write_manifest(directory, **args)
    assert not (directory / MANIFEST).exists()


@pytest.mark.parametrize("name", ["default", "docs-2024", "a", "my_docs"])
def test_collection_names_that_are_accepted(name):
    assert validate_collection(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", "Docs", "x" * 64, "-lead", "sp ace"])
def test_collection_names_that_are_refused(name):
    with pytest.raises(InvalidInput):
        validate_collection(name)


def test_errors_have_stable_codes_and_the_right_parents():
    assert issubclass(CollectionNotFound, NotFound) and CollectionNotFound.code == "collection_not_found"
    assert issubclass(SnapshotMissing, NotFound) and SnapshotMissing.code == "snapshot_missing"
    assert issubclass(VersionExists, PointerConflict) and PointerConflict.code == "pointer_conflict"
    assert not issubclass(SnapshotCorrupt, NotFound)


def test_an_abandoned_staging_dir_is_cleaned_but_a_live_one_is_kept(tmp_path):
    live = Staging(tmp_path, "v1.tmp-")
    with Staging(tmp_path, "v2.tmp-") as dead:
        dead_path = dead.path
    dead_path.mkdir()  # as a crashed owner leaves it: a marker that nobody holds any more
    (dead_path / ".staging.lock").touch()
    young = tmp_path / "v3.tmp-young"  # no marker yet, but created a moment ago
    young.mkdir()
    for path in (live.path, dead_path):
        os.utime(path, (0, 0))
    try:
        removed = clean_stale_staging(tmp_path, "v*.tmp-*")

        assert removed == [dead_path]
        assert live.path.is_dir() and young.is_dir()
    finally:
        live.__exit__(None, None, None)
    assert not live.path.exists()
