"""The SnapshotStore contract, run against both backends: ``local`` (a directory) and
``s3`` (a moto server in server mode, over HTTP, through a real boto3 client).

The snapshot files are a few fake bytes, not a real usearch index or numpy array: the
stores are content-agnostic (they copy, hash and verify files, never parse them), so a
real index would only slow the tests down without testing anything more."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragserve.snapshots import (
    MANIFEST,
    SNAPSHOT_FILES,
    CollectionNotFound,
    LocalSnapshotStore,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotMismatch,
    SnapshotMissing,
    SnapshotStore,
    VersionExists,
    verify_snapshot,
    write_manifest,
)
from tests.corruption import flip_byte, flipped

COLLECTION = "docs"


def build_snapshot(where: Path, collection: str, version: int, tag: str = "") -> Path:
    """A complete snapshot directory; ``tag`` makes its content (and hashes) distinct."""
    tag = tag or f"{collection}-v{version}"
    directory = where / f"build-{collection}-v{version}-{tag}"
    directory.mkdir(parents=True)
    (directory / "index.usearch").write_bytes(b"fake usearch index " + tag.encode() * 16)
    (directory / "vectors.f16.npy").write_bytes(b"fake f16 vectors " + tag.encode() * 32)
    (directory / "docs.jsonl").write_text(json.dumps({"id": "1", "text": tag, "metadata": {}}) + "\n")
    write_manifest(directory, collection=collection, version=version, model_id="all-MiniLM-L6-v2",
                   dimensions=384, dtype="f16", count=1, params={"connectivity": 16})
    return directory


@dataclass
class Backend:
    """A store plus raw access to what it stored, to break it the way disks and crashes do."""

    name: str
    store: SnapshotStore
    fetch_dir: Path
    tamper: Callable[[str, int, str], None]  # flip one byte of a stored file
    plant_unfinished: Callable[[str, int, Path], None]  # data files, no manifest: a crash mid-publish


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"

    def tamper(collection: str, version: int, name: str) -> None:
        path = root / "collections" / collection / f"v{version}" / name
        flip_byte(path)

    def plant_unfinished(collection: str, version: int, source: Path) -> None:
        target = root / "collections" / collection / f"v{version}"
        target.mkdir(parents=True)
        for name in SNAPSHOT_FILES:
            (target / name).write_bytes((source / name).read_bytes())

    return Backend("local", LocalSnapshotStore(root), tmp_path / "fetched", tamper, plant_unfinished)


def s3_backend(tmp_path: Path, client, bucket: str) -> Backend:
    from ragserve.snapshots.s3 import S3SnapshotStore

    prefix = "ragserve/"

    def key(collection: str, version: int, name: str) -> str:
        return f"{prefix}collections/{collection}/v{version}/{name}"

    def tamper(collection: str, version: int, name: str) -> None:
        data = client.get_object(Bucket=bucket, Key=key(collection, version, name))["Body"].read()
        client.put_object(Bucket=bucket, Key=key(collection, version, name), Body=flipped(data))

    def plant_unfinished(collection: str, version: int, source: Path) -> None:
        for name in SNAPSHOT_FILES:
            client.put_object(Bucket=bucket, Key=key(collection, version, name), Body=(source / name).read_bytes())

    store = S3SnapshotStore(bucket, prefix, client=client)
    return Backend("s3", store, tmp_path / "fetched", tamper, plant_unfinished)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(tmp_path, request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket"))


def publish(backend: Backend, tmp_path: Path, version: int, *, expected: int | None, collection: str = COLLECTION):
    return backend.store.publish(collection, version, build_snapshot(tmp_path, collection, version),
                                 expected_current=expected)


# -- publishing and the pointer ---------------------------------------------------------


def test_publish_the_first_version_from_none(backend, tmp_path):
    assert backend.store.current(COLLECTION) is None

    meta = publish(backend, tmp_path, 1, expected=None)

    assert (meta.collection, meta.version, meta.count) == (COLLECTION, 1, 1)
    assert backend.store.current(COLLECTION) == 1
    assert backend.store.versions(COLLECTION) == [1]
    assert backend.store.require_current(COLLECTION) == 1


def test_publish_the_second_version_from_the_first(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)

    publish(backend, tmp_path, 2, expected=1)

    assert backend.store.current(COLLECTION) == 2
    assert backend.store.versions(COLLECTION) == [1, 2]


@pytest.mark.parametrize("stale", [None, 1, 5])
def test_a_stale_expected_current_conflicts_and_leaves_current_alone(backend, tmp_path, stale):
    publish(backend, tmp_path, 1, expected=None)
    publish(backend, tmp_path, 2, expected=1)

    with pytest.raises(PointerConflict, match="is at version 2"):
        publish(backend, tmp_path, 3, expected=stale)

    assert backend.store.current(COLLECTION) == 2
    assert backend.store.versions(COLLECTION) == [1, 2]  # nothing of v3 left behind


def test_an_existing_version_number_is_never_published_again(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    publish(backend, tmp_path, 2, expected=1)

    with pytest.raises(VersionExists):
        backend.store.publish(COLLECTION, 2, build_snapshot(tmp_path, COLLECTION, 2, "again"), expected_current=2)
    with pytest.raises(VersionExists):
        backend.store.publish(COLLECTION, 1, build_snapshot(tmp_path, COLLECTION, 1, "again"), expected_current=2)

    assert backend.store.current(COLLECTION) == 2
    fetched = backend.store.fetch(COLLECTION, 2, backend.fetch_dir)
    assert COLLECTION + "-v2" in (fetched / "docs.jsonl").read_text()  # the first v2, untouched


def race(publishers: list[Callable[[], object]]) -> tuple[list[int], list[Exception]]:
    """Run the publishers in threads released at the same instant; (winners, errors)."""
    barrier = threading.Barrier(len(publishers))
    winners: list[int] = []
    errors: list[Exception] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            publishers[index]()
            winners.append(index)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(publishers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return winners, errors


def test_concurrent_publishers_of_the_same_version_exactly_one_wins(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    builds = [build_snapshot(tmp_path, COLLECTION, 2, f"writer{i}") for i in range(6)]

    winners, errors = race([
        lambda b=b: backend.store.publish(COLLECTION, 2, b, expected_current=1) for b in builds
    ])

    assert len(winners) == 1, errors
    assert len(errors) == 5 and all(isinstance(e, PointerConflict) for e in errors), errors
    assert backend.store.current(COLLECTION) == 2
    fetched = backend.store.fetch(COLLECTION, 2, backend.fetch_dir)  # one writer's files, not a mix
    assert f"writer{winners[0]}" in (fetched / "docs.jsonl").read_text()


@pytest.mark.parametrize("start", [None, 1])
def test_concurrent_publishers_of_different_versions_exactly_one_wins(backend, tmp_path, start):
    # the pointer swap itself decides: create-if-absent from None, compare-and-swap from 1
    if start is not None:
        publish(backend, tmp_path, start, expected=None)
    builds = {v: build_snapshot(tmp_path, COLLECTION, v) for v in range((start or 0) + 1, (start or 0) + 7)}

    winners, errors = race([
        lambda v=v, b=b: backend.store.publish(COLLECTION, v, b, expected_current=start) for v, b in builds.items()
    ])

    assert len(winners) == 1, errors
    assert all(isinstance(e, PointerConflict) for e in errors) and len(errors) == 5, errors
    winner = list(builds)[winners[0]]
    assert backend.store.current(COLLECTION) == winner
    assert backend.store.versions(COLLECTION) == sorted({start or winner, winner})  # losers left nothing


def test_a_manifest_naming_another_collection_or_version_is_refused(backend, tmp_path):
    with pytest.raises(SnapshotMismatch, match="'other' v1"):
        backend.store.publish(COLLECTION, 1, build_snapshot(tmp_path, "other", 1), expected_current=None)
    with pytest.raises(SnapshotMismatch, match="v2"):
        backend.store.publish(COLLECTION, 1, build_snapshot(tmp_path, COLLECTION, 2), expected_current=None)

    assert backend.store.current(COLLECTION) is None
    assert backend.store.versions(COLLECTION) == []


def test_a_corrupt_source_is_refused_before_anything_is_stored(backend, tmp_path):
    source = build_snapshot(tmp_path, COLLECTION, 1)
    flip_byte(source / "index.usearch")

    with pytest.raises(SnapshotCorrupt, match="index.usearch"):
        backend.store.publish(COLLECTION, 1, source, expected_current=None)

    assert backend.store.versions(COLLECTION) == []


# -- reading --------------------------------------------------------------------------


def test_fetch_returns_a_verified_copy_of_the_snapshot(backend, tmp_path):
    source = build_snapshot(tmp_path, COLLECTION, 1)
    backend.store.publish(COLLECTION, 1, source, expected_current=None)

    path = backend.store.fetch(COLLECTION, 1, backend.fetch_dir)

    assert verify_snapshot(path, collection=COLLECTION, version=1).version == 1
    for name in (*SNAPSHOT_FILES, MANIFEST):
        assert (path / name).read_bytes() == (source / name).read_bytes()


@pytest.mark.parametrize("name", ["vectors.f16.npy", "docs.jsonl"])
def test_a_byte_flipped_in_the_store_is_refused_on_fetch(backend, tmp_path, name):
    publish(backend, tmp_path, 1, expected=None)
    backend.tamper(COLLECTION, 1, name)

    with pytest.raises(SnapshotCorrupt, match=rf"{name} has sha256 [0-9a-f]{{64}}, manifest expects [0-9a-f]{{64}}"):
        backend.store.fetch(COLLECTION, 1, backend.fetch_dir)

    assert not (backend.fetch_dir / COLLECTION / "v1").exists()  # no corrupt copy left to be mistaken


def test_an_unfinished_version_is_never_current_and_never_fetched(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    backend.plant_unfinished(COLLECTION, 2, build_snapshot(tmp_path, COLLECTION, 2))

    assert backend.store.current(COLLECTION) == 1
    with pytest.raises(SnapshotMissing, match="manifest.json"):
        backend.store.fetch(COLLECTION, 2, backend.fetch_dir)
    assert backend.store.next_version(COLLECTION) == 3  # the crashed number is not reused
    with pytest.raises(VersionExists):
        backend.store.publish(COLLECTION, 2, build_snapshot(tmp_path, COLLECTION, 2, "retry"), expected_current=1)

    publish(backend, tmp_path, 3, expected=1)
    assert backend.store.current(COLLECTION) == 3


def test_an_unknown_collection_is_not_found(backend):
    assert backend.store.current("nope") is None
    assert backend.store.versions("nope") == []
    with pytest.raises(CollectionNotFound):
        backend.store.fetch("nope", 1, backend.fetch_dir)
    with pytest.raises(CollectionNotFound):
        backend.store.require_current("nope")


def test_a_version_that_does_not_exist_is_missing(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)

    with pytest.raises(SnapshotMissing):
        backend.store.fetch(COLLECTION, 9, backend.fetch_dir)


# -- housekeeping ---------------------------------------------------------------------


def test_next_version_counts_stored_and_live_versions(backend, tmp_path):
    assert backend.store.next_version(COLLECTION) == 1
    publish(backend, tmp_path, 1, expected=None)
    assert backend.store.next_version(COLLECTION) == 2
    backend.plant_unfinished(COLLECTION, 5, build_snapshot(tmp_path, COLLECTION, 5))
    assert backend.store.next_version(COLLECTION) == 6


def test_collections_lists_those_with_a_live_version(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None, collection="beta")
    publish(backend, tmp_path, 1, expected=None, collection="alpha")
    backend.plant_unfinished("gamma", 1, build_snapshot(tmp_path, "gamma", 1))

    assert backend.store.collections() == ["alpha", "beta"]


def test_prune_keeps_the_newest_and_the_current_version(backend, tmp_path):
    for version in range(1, 5):
        publish(backend, tmp_path, version, expected=version - 1 or None)

    assert backend.store.prune(COLLECTION, keep=2) == [1, 2]
    assert backend.store.versions(COLLECTION) == [3, 4]
    assert backend.store.fetch(COLLECTION, 4, backend.fetch_dir)

    # an unfinished v5 (perhaps being published right now) is newer than current: kept,
    # and it does not push the live v4 out
    backend.plant_unfinished(COLLECTION, 5, build_snapshot(tmp_path, COLLECTION, 5))
    assert backend.store.prune(COLLECTION, keep=1) == [3]
    assert backend.store.versions(COLLECTION) == [4, 5]
    assert backend.store.current(COLLECTION) == 4
    assert backend.store.fetch(COLLECTION, 4, backend.fetch_dir)
    with pytest.raises(SnapshotMissing):
        backend.store.fetch(COLLECTION, 3, backend.fetch_dir / "fresh")


def test_prune_needs_keep_of_at_least_one(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    with pytest.raises(ValueError):
        backend.store.prune(COLLECTION, keep=0)
    assert backend.store.prune("nope", keep=1) == []


def test_invalid_collection_names_are_refused(backend, tmp_path):
    from ragserve.errors import InvalidInput

    with pytest.raises(InvalidInput):
        backend.store.current("../escape")
    with pytest.raises(InvalidInput):
        backend.store.publish("a/b", 1, build_snapshot(tmp_path, COLLECTION, 1), expected_current=None)


# -- backend specifics ----------------------------------------------------------------


def test_local_layout_and_fetch_in_place(tmp_path):
    backend = local_backend(tmp_path)
    publish(backend, tmp_path, 1, expected=None)
    cdir = tmp_path / "store" / "collections" / COLLECTION

    assert (cdir / "CURRENT").read_text().strip() == "1"
    assert backend.store.fetch(COLLECTION, 1) == cdir / "v1"
    assert sorted(p.name for p in (cdir / "v1").iterdir()) == sorted((*SNAPSHOT_FILES, MANIFEST))


def test_local_publish_cleans_a_crashed_publishers_staging_dir(tmp_path):
    backend = local_backend(tmp_path)
    publish(backend, tmp_path, 1, expected=None)
    cdir = tmp_path / "store" / "collections" / COLLECTION
    crashed = cdir / "v2.tmp-crashed"
    crashed.mkdir()
    (crashed / "index.usearch").write_bytes(b"half")
    os.utime(crashed, (0, 0))  # long ago, and no live owner holds it

    assert backend.store.versions(COLLECTION) == [1]  # never taken for a version
    publish(backend, tmp_path, 2, expected=1)

    assert not crashed.exists()
    assert backend.store.versions(COLLECTION) == [1, 2]


def test_s3_layout(s3_client, s3_bucket, tmp_path):
    backend = s3_backend(tmp_path, s3_client, s3_bucket)
    publish(backend, tmp_path, 1, expected=None)

    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    base = f"ragserve/collections/{COLLECTION}/"
    assert keys == sorted([base + "CURRENT", *(f"{base}v1/{n}" for n in (*SNAPSHOT_FILES, MANIFEST, ".claim"))])
    assert s3_client.get_object(Bucket=s3_bucket, Key=base + "CURRENT")["Body"].read() == b"1\n"


def test_s3_fetch_reuses_a_verified_copy_and_replaces_a_corrupt_one(s3_client, s3_bucket, tmp_path):
    backend = s3_backend(tmp_path, s3_client, s3_bucket)
    publish(backend, tmp_path, 1, expected=None)
    path = backend.store.fetch(COLLECTION, 1, backend.fetch_dir)
    assert path == backend.fetch_dir / COLLECTION / "v1"

    backend.tamper(COLLECTION, 1, "docs.jsonl")  # the bucket copy goes bad...
    assert backend.store.fetch(COLLECTION, 1, backend.fetch_dir) == path  # ...the verified local copy is used

    (path / "index.usearch").write_bytes(b"bad")  # the local copy goes bad: downloaded again, and refused
    with pytest.raises(SnapshotCorrupt, match="docs.jsonl"):
        backend.store.fetch(COLLECTION, 1, backend.fetch_dir)
    assert not path.exists()
    assert not [p for p in path.parent.iterdir()]  # no staging or half copies left


def test_s3_store_does_not_import_boto3_with_the_package():
    import subprocess
    import sys

    code = "import sys, ragserve.snapshots; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": "layers"},
                   cwd=Path(__file__).resolve().parents[2])
