"""The segmented SnapshotStore contract, run against both backends: ``local`` (a
directory) and ``s3`` (a moto server in server mode, over HTTP, through a real boto3
client); then what only the S3 store does (its cache, its conditional writes, its
retried requests).

Manifests are built by hand from a few fake bytes per blob: the stores are
content-agnostic (they copy, hash and verify blobs, never parse them)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragserve.errors import InvalidInput
from ragserve.model.manifest import sha256_file
from ragserve.snapshots.errors import (
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotMissing,
    VersionExists,
)
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.manifest import BlobRef, SegmentEntry, VersionManifest
from ragserve.snapshots.store import SnapshotStore
from tests.corruption import flip_byte, flipped

COLLECTION = "docs"
PREFIX = "ragserve/"


# -- backends ---------------------------------------------------------------------------


@dataclass
class Backend:
    """A store plus raw access to what it stored, to break it the way disks and crashes do."""

    name: str
    store: SnapshotStore
    cache_dir: Path
    tamper_blob: Callable[[str, str], None]  # flip one byte of a stored blob
    tamper_manifest: Callable[[str, int], None]  # flip one byte of a stored manifest
    write_raw: Callable[[str, str, bytes], None]  # (collection, "CURRENT" or "versions/v3.json", bytes)
    remove_raw: Callable[[str, str], None]


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"

    def path(collection: str, name: str) -> Path:
        return root / "collections" / collection / name

    def write_raw(collection: str, name: str, data: bytes) -> None:
        path(collection, name).parent.mkdir(parents=True, exist_ok=True)
        path(collection, name).write_bytes(data)

    return Backend(
        "local", LocalSnapshotStore(root), tmp_path / "cache",
        tamper_blob=lambda c, sha: flip_byte(path(c, f"blobs/{sha}")),
        tamper_manifest=lambda c, v: flip_byte(path(c, f"versions/v{v}.json")),
        write_raw=write_raw,
        remove_raw=lambda c, name: path(c, name).unlink())


def s3_backend(tmp_path: Path, client: Any, bucket: str) -> Backend:
    from ragserve.snapshots.s3 import S3SnapshotStore

    def key(collection: str, name: str) -> str:
        return f"{PREFIX}collections/{collection}/{name}"

    def tamper(collection: str, name: str) -> None:
        data = client.get_object(Bucket=bucket, Key=key(collection, name))["Body"].read()
        client.put_object(Bucket=bucket, Key=key(collection, name), Body=flipped(data))

    return Backend(
        "s3", S3SnapshotStore(bucket, PREFIX, client=client), tmp_path / "cache",
        tamper_blob=lambda c, sha: tamper(c, f"blobs/{sha}"),
        tamper_manifest=lambda c, v: tamper(c, f"versions/v{v}.json"),
        write_raw=lambda c, name, data: client.put_object(Bucket=bucket, Key=key(c, name), Body=data),
        remove_raw=lambda c, name: client.delete_object(Bucket=bucket, Key=key(c, name)))


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(tmp_path, request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket"))


# -- building versions by hand ----------------------------------------------------------

_files = iter(range(1_000_000))


def blob_file(where: Path, content: bytes) -> Path:
    path = where / "sources" / f"blob-{next(_files)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def segment(store: SnapshotStore, where: Path, segment_id: str, tag: str, *, collection: str = COLLECTION,
            stored: bool = True) -> SegmentEntry:
    """A one-row segment whose three files are stored (or, ``stored=False``, only named)."""
    def ref(role: str) -> BlobRef:
        path = blob_file(where, f"{role} of {segment_id} ({tag})\n".encode() * 8)
        if stored:
            return store.put_blob(collection, path)
        return BlobRef(sha256_file(path), path.stat().st_size)

    return SegmentEntry(id=segment_id, rows=1, vectors=ref("vectors"), docs=ref("docs"), ids=ref("ids"))


def version(collection: str, number: int, segments: tuple[SegmentEntry, ...], *, parent: int | None,
            operation: str = "write") -> VersionManifest:
    return VersionManifest(collection=collection, version=number, model_id="all-MiniLM-L6-v2", dimensions=384,
                           dtype="f16", params={"connectivity": 16}, segments=segments, parent=parent,
                           operation=operation)


def build(backend: Backend, where: Path, number: int, *, parent: int | None, tag: str = "",
          collection: str = COLLECTION, keep: tuple[SegmentEntry, ...] = ()) -> VersionManifest:
    """Version ``number``: the segments in ``keep`` plus one new one, its blobs stored."""
    new = segment(backend.store, where, f"s{number}-0", tag or f"{collection}-v{number}", collection=collection)
    return version(collection, number, (*keep, new), parent=parent)


def publish(backend: Backend, where: Path, number: int, *, expected: int | None, tag: str = "",
            collection: str = COLLECTION) -> VersionManifest:
    parent = None
    keep: tuple[SegmentEntry, ...] = ()
    if expected is not None:
        parent, keep = expected, backend.store.manifest(collection, expected).segments
    manifest = build(backend, where, number, parent=parent, tag=tag, collection=collection, keep=keep)
    backend.store.publish(manifest, expected_current=expected)
    return manifest


def no_path_in(message: str, *paths: Path) -> bool:
    return all(str(p) not in message for p in paths) and "/tmp" not in message


# -- blobs ------------------------------------------------------------------------------


def test_put_blob_then_blob_returns_the_same_bytes(backend, tmp_path):
    source = blob_file(tmp_path, b"segment bytes " * 100)

    ref = backend.store.put_blob(COLLECTION, source)
    path = backend.store.blob(COLLECTION, ref, backend.cache_dir)

    assert ref == BlobRef(sha256_file(source), source.stat().st_size)
    assert path.read_bytes() == source.read_bytes()
    assert backend.store.blob(COLLECTION, ref, backend.cache_dir) == path  # again: the same file
    assert [(b.sha256, b.size) for b in backend.store.blobs(COLLECTION)] == [(ref.sha256, ref.size)]


def test_putting_the_same_bytes_twice_stores_one_blob(backend, tmp_path):
    first = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"same"))
    second = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"same"))

    assert first == second
    assert [b.sha256 for b in backend.store.blobs(COLLECTION)] == [first.sha256]


def test_putting_a_damaged_blob_again_repairs_it(backend, tmp_path):
    source = blob_file(tmp_path, b"repairable " * 20)
    ref = backend.store.put_blob(COLLECTION, source)
    backend.tamper_blob(COLLECTION, ref.sha256)

    assert backend.store.put_blob(COLLECTION, source) == ref
    assert sha256_file(backend.store.blob(COLLECTION, ref, backend.cache_dir)) == ref.sha256


def test_blobs_are_kept_per_collection(backend, tmp_path):
    ref = backend.store.put_blob("alpha", blob_file(tmp_path, b"alpha's"))

    assert backend.store.blobs("beta") == []
    with pytest.raises(SnapshotMissing):
        backend.store.blob("beta", ref, backend.cache_dir)


def test_a_blob_altered_in_the_store_is_refused(backend, tmp_path):
    ref = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"will be damaged " * 10))
    backend.tamper_blob(COLLECTION, ref.sha256)

    with pytest.raises(SnapshotCorrupt, match=rf"blob {ref.sha256[:12]} of collection 'docs'") as caught:
        backend.store.blob(COLLECTION, ref, backend.cache_dir)

    assert no_path_in(str(caught.value), tmp_path)
    if backend.name == "s3":  # no damaged copy left in the cache to be mistaken for a good one
        cached = backend.cache_dir / COLLECTION / "blobs"
        assert not cached.exists() or list(cached.iterdir()) == []


def test_a_blob_that_is_not_stored_is_missing(backend, tmp_path):
    backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"another one"))  # the collection exists
    source = blob_file(tmp_path, b"never stored")
    ref = BlobRef(sha256_file(source), source.stat().st_size)

    with pytest.raises(SnapshotMissing, match=rf"'docs' is missing blob {ref.sha256[:12]}") as caught:
        backend.store.blob(COLLECTION, ref, backend.cache_dir)

    assert no_path_in(str(caught.value), tmp_path)


# -- publishing and the pointer ---------------------------------------------------------


def test_publish_the_first_version_stores_its_manifest_and_makes_it_current(backend, tmp_path):
    assert backend.store.current(COLLECTION) is None

    manifest = publish(backend, tmp_path, 1, expected=None)

    assert backend.store.current(COLLECTION) == 1
    assert backend.store.require_current(COLLECTION) == 1
    assert backend.store.versions(COLLECTION) == [1]
    assert backend.store.manifest(COLLECTION, 1) == manifest
    assert backend.store.live_manifest(COLLECTION) == manifest
    assert backend.store.collections() == [COLLECTION]


def test_publish_the_second_version_on_the_first(backend, tmp_path):
    first = publish(backend, tmp_path, 1, expected=None)

    second = publish(backend, tmp_path, 2, expected=1)

    assert backend.store.current(COLLECTION) == 2
    assert backend.store.versions(COLLECTION) == [1, 2]
    assert backend.store.manifest(COLLECTION, 1) == first  # versions are immutable
    assert backend.store.manifest(COLLECTION, 2) == second
    assert second.blobs() > first.blobs()
    for entry in second.segments:  # every blob of the live version readable and intact
        for ref in entry.blobs():
            assert sha256_file(backend.store.blob(COLLECTION, ref, backend.cache_dir)) == ref.sha256


@pytest.mark.parametrize("stale", [None, 1, 5])
def test_a_stale_expected_current_conflicts_and_leaves_current_alone(backend, tmp_path, stale):
    publish(backend, tmp_path, 1, expected=None)
    publish(backend, tmp_path, 2, expected=1)
    third = build(backend, tmp_path, 3, parent=stale)

    with pytest.raises(PointerConflict, match="is at version 2"):
        backend.store.publish(third, expected_current=stale)

    assert backend.store.current(COLLECTION) == 2
    assert backend.store.versions(COLLECTION) == [1, 2]  # nothing of v3 left behind


def test_an_existing_version_number_is_never_published_again(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    second = publish(backend, tmp_path, 2, expected=1)

    with pytest.raises(VersionExists):  # the live one
        backend.store.publish(build(backend, tmp_path, 2, parent=2, tag="again"), expected_current=2)
    with pytest.raises(VersionExists):  # an older one
        backend.store.publish(build(backend, tmp_path, 1, parent=2, tag="again"), expected_current=2)
    # a manifest a crashed publisher left (stored, never made live): its number is taken too
    crashed = build(backend, tmp_path, 3, parent=2, tag="crashed")
    backend.write_raw(COLLECTION, "versions/v3.json", crashed.to_json())
    assert backend.store.next_version(COLLECTION) == 4
    with pytest.raises(VersionExists):
        backend.store.publish(build(backend, tmp_path, 3, parent=2, tag="retry"), expected_current=2)

    assert backend.store.current(COLLECTION) == 2
    assert backend.store.manifest(COLLECTION, 2) == second  # untouched
    assert backend.store.manifest(COLLECTION, 3) == crashed  # not removed by the refused publish
    publish(backend, tmp_path, 4, expected=2)
    assert backend.store.current(COLLECTION) == 4


def test_a_manifest_naming_an_unstored_blob_is_refused(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    kept = backend.store.manifest(COLLECTION, 1).segments
    unstored = segment(backend.store, tmp_path, "s2-0", "not stored", stored=False)

    with pytest.raises(SnapshotMissing, match=rf"blob {unstored.vectors.sha256[:12]}|is not stored") as caught:
        backend.store.publish(version(COLLECTION, 2, (*kept, unstored), parent=1), expected_current=1)

    assert no_path_in(str(caught.value), tmp_path)
    assert backend.store.current(COLLECTION) == 1
    assert backend.store.versions(COLLECTION) == [1]


def test_the_first_version_naming_an_unstored_blob_is_refused(backend, tmp_path):
    unstored = segment(backend.store, tmp_path, "s1-0", "not stored", stored=False)

    with pytest.raises(SnapshotMissing):
        backend.store.publish(version(COLLECTION, 1, (unstored,), parent=None), expected_current=None)

    assert backend.store.current(COLLECTION) is None
    assert backend.store.versions(COLLECTION) == []
    assert backend.store.collections() == []


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
        thread.join(timeout=60)
    return winners, errors


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_publishers_of_the_same_version_exactly_one_wins(backend, tmp_path, writers):
    first = publish(backend, tmp_path, 1, expected=None)
    builds = [build(backend, tmp_path, 2, parent=1, tag=f"writer{i}", keep=first.segments) for i in range(writers)]

    winners, errors = race([lambda m=m: backend.store.publish(m, expected_current=1) for m in builds])

    assert len(winners) == 1, errors
    assert len(errors) == writers - 1 and all(isinstance(e, PointerConflict) for e in errors), errors
    assert backend.store.current(COLLECTION) == 2
    assert backend.store.manifest(COLLECTION, 2) == builds[winners[0]]  # the winner's, whole
    assert backend.store.versions(COLLECTION) == [1, 2]


@pytest.mark.parametrize("start", [None, 1])
def test_concurrent_publishers_of_different_versions_exactly_one_wins(backend, tmp_path, start):
    # the pointer swap itself decides: create-if-absent from None, compare-and-swap from 1
    base = 0
    if start is not None:
        publish(backend, tmp_path, start, expected=None)
        base = start
    builds = [build(backend, tmp_path, v, parent=start) for v in range(base + 1, base + 5)]

    winners, errors = race([lambda m=m: backend.store.publish(m, expected_current=start) for m in builds])

    assert len(winners) == 1, errors
    assert len(errors) == 3 and all(isinstance(e, PointerConflict) for e in errors), errors
    winner = builds[winners[0]]
    assert backend.store.current(COLLECTION) == winner.version
    assert backend.store.manifest(COLLECTION, winner.version) == winner
    assert backend.store.versions(COLLECTION) == sorted({start or winner.version, winner.version})  # losers: gone


# -- reading ----------------------------------------------------------------------------


def test_a_garbage_current_pointer_is_corrupt(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    backend.write_raw(COLLECTION, "CURRENT", b"not a number\n")

    with pytest.raises(SnapshotCorrupt, match="CURRENT pointer of collection 'docs'"):
        backend.store.current(COLLECTION)
    with pytest.raises(SnapshotCorrupt):  # and nothing is published past it
        backend.store.publish(build(backend, tmp_path, 2, parent=1), expected_current=1)


@pytest.mark.parametrize("text", [b"0\n", b"-3", b"", b"1.5"])
def test_a_pointer_that_is_no_version_number_is_corrupt(backend, tmp_path, text):
    backend.write_raw(COLLECTION, "CURRENT", text)

    with pytest.raises(SnapshotCorrupt):
        backend.store.current(COLLECTION)


def test_a_manifest_altered_in_the_store_is_corrupt(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    backend.tamper_manifest(COLLECTION, 1)

    with pytest.raises(SnapshotCorrupt, match=r"the manifest of 'docs' v1 is not a valid manifest") as caught:
        backend.store.manifest(COLLECTION, 1)

    assert no_path_in(str(caught.value), tmp_path)


def test_a_manifest_stored_under_another_version_is_corrupt(backend, tmp_path):
    first = publish(backend, tmp_path, 1, expected=None)
    backend.write_raw(COLLECTION, "versions/v2.json", first.to_json())  # v1's manifest as v2

    with pytest.raises(SnapshotCorrupt, match=r"stored as 'docs' v2 names 'docs' v1"):
        backend.store.manifest(COLLECTION, 2)


def test_an_unknown_collection_is_not_found(backend):
    assert backend.store.current("nope") is None
    assert backend.store.versions("nope") == []
    assert backend.store.blobs("nope") == []
    assert backend.store.live_manifest("nope") is None
    assert backend.store.next_version("nope") == 1
    with pytest.raises(CollectionNotFound):
        backend.store.manifest("nope", 1)
    with pytest.raises(CollectionNotFound):
        backend.store.require_current("nope")


def test_a_version_that_does_not_exist_is_missing(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)

    with pytest.raises(SnapshotMissing, match="'docs' has no version 9"):
        backend.store.manifest(COLLECTION, 9)


def test_versions_and_collections_are_listed(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None, collection="beta")
    publish(backend, tmp_path, 1, expected=None, collection="alpha")
    publish(backend, tmp_path, 2, expected=1, collection="alpha")
    backend.store.put_blob("gamma", blob_file(tmp_path, b"gamma has blobs but no version"))
    backend.write_raw("delta", "versions/v1.json", build(backend, tmp_path, 1, parent=None,
                                                         collection="delta").to_json())
    backend.write_raw("alpha", "versions/notes.txt", b"not a manifest")

    assert backend.store.collections() == ["alpha", "beta"]  # those with a CURRENT
    assert backend.store.versions("alpha") == [1, 2]
    assert backend.store.versions("beta") == [1]
    assert backend.store.versions("gamma") == []
    assert backend.store.versions("delta") == [1]
    assert backend.store.next_version("delta") == 2


def test_blobs_lists_sizes_and_when_they_were_written(backend, tmp_path):
    before = time.time() - 5
    refs = {backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"x" * n)) for n in (1, 10, 100)}

    listed = backend.store.blobs(COLLECTION)

    assert {(b.sha256, b.size) for b in listed} == {(r.sha256, r.size) for r in refs}
    assert all(before <= b.modified <= time.time() + 5 for b in listed)


def test_invalid_collection_names_are_refused(backend, tmp_path):
    with pytest.raises(InvalidInput):
        backend.store.current("../escape")
    with pytest.raises(InvalidInput):
        backend.store.put_blob("a/b", blob_file(tmp_path, b"x"))
    with pytest.raises(InvalidInput):
        backend.store.versions("Upper")


# -- repair and retention ---------------------------------------------------------------


def test_set_current_points_at_a_stored_version_only(backend, tmp_path):
    publish(backend, tmp_path, 1, expected=None)
    publish(backend, tmp_path, 2, expected=1)

    backend.store.set_current(COLLECTION, 1)  # a repair: back to v1
    assert backend.store.current(COLLECTION) == 1

    with pytest.raises(SnapshotMissing):
        backend.store.set_current(COLLECTION, 7)
    backend.tamper_manifest(COLLECTION, 2)
    with pytest.raises(SnapshotCorrupt):
        backend.store.set_current(COLLECTION, 2)
    assert backend.store.current(COLLECTION) == 1

    backend.write_raw(COLLECTION, "CURRENT", b"garbage")  # and it repairs a damaged pointer
    backend.store.set_current(COLLECTION, 1)
    assert backend.store.current(COLLECTION) == 1


def test_delete_versions_refuses_the_live_one(backend, tmp_path):
    for number in (1, 2, 3):
        publish(backend, tmp_path, number, expected=number - 1 or None)

    with pytest.raises(ValueError, match="live version 3"):
        backend.store.delete_versions(COLLECTION, [3])
    backend.store.delete_versions(COLLECTION, [1, 2])

    assert backend.store.versions(COLLECTION) == [3]
    assert backend.store.current(COLLECTION) == 3
    assert backend.store.manifest(COLLECTION, 3).version == 3
    with pytest.raises(SnapshotMissing):
        backend.store.manifest(COLLECTION, 1)
    backend.store.delete_versions(COLLECTION, [1])  # gone already: nothing to do


def test_delete_blobs_spares_blobs_written_since_the_cutoff(backend, tmp_path):
    # S3 keeps LastModified to the second: a second between each write and the cutoff
    old = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"old and unreferenced"))
    reused = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"old, but a write reuses it"))
    time.sleep(1.1)
    cutoff = time.time()
    time.sleep(1.1)
    young = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"young"))
    assert backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"old, but a write reuses it")) == reused

    deleted = backend.store.delete_blobs(COLLECTION, [old.sha256, reused.sha256, young.sha256, "0" * 64],
                                         older_than=cutoff)

    assert deleted == [old.sha256]
    assert {b.sha256 for b in backend.store.blobs(COLLECTION)} == {reused.sha256, young.sha256}
    with pytest.raises(SnapshotMissing):
        backend.store.blob(COLLECTION, old, backend.cache_dir / "fresh")
    assert backend.store.delete_blobs(COLLECTION, [reused.sha256, young.sha256], older_than=time.time() + 5) \
        == [reused.sha256, young.sha256]
    assert backend.store.blobs(COLLECTION) == []


def test_delete_blobs_ignores_what_is_not_a_blob_name(backend, tmp_path):
    ref = backend.store.put_blob(COLLECTION, blob_file(tmp_path, b"kept"))

    assert backend.store.delete_blobs(COLLECTION, ["../CURRENT", "CURRENT", ref.sha256.upper()],
                                      older_than=time.time() + 5) == []
    assert [b.sha256 for b in backend.store.blobs(COLLECTION)] == [ref.sha256]


# -- the S3 store ------------------------------------------------------------------------


class RecordingClient:
    """A boto3 client that records the calls made through it; ``put_twice`` replays the
    conditional puts whose key ends so, as a retry of a request whose answer was lost."""

    def __init__(self, client: Any, put_twice: tuple[str, ...] = ()) -> None:
        self._client = client
        self.put_twice = put_twice
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith("_") or name in ("get_paginator", "put_object"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return attribute(*args, **kwargs)

        return call

    def put_object(self, **kwargs: Any) -> Any:
        self.calls.append(("put_object", kwargs))
        response = self._client.put_object(**kwargs)
        conditional = "IfNoneMatch" in kwargs or "IfMatch" in kwargs
        if conditional and kwargs["Key"].endswith(self.put_twice):
            return self._client.put_object(**kwargs)  # the retry: fails its condition
        return response

    def keys(self, name: str) -> list[str]:
        return [str(kwargs.get("Key")) for called, kwargs in self.calls if called == name]


@pytest.fixture()
def s3(s3_client, s3_bucket, tmp_path) -> Backend:
    return s3_backend(tmp_path, s3_client, s3_bucket)


def test_s3_layout(s3, s3_client, s3_bucket, tmp_path):
    manifest = publish(s3, tmp_path, 1, expected=None)

    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    base = f"{PREFIX}collections/{COLLECTION}/"
    assert keys == sorted([base + "CURRENT", base + "versions/v1.json",
                           *(f"{base}blobs/{sha}" for sha in manifest.blobs())])
    assert s3_client.get_object(Bucket=s3_bucket, Key=base + "CURRENT")["Body"].read() == b"1\n"
    assert s3_client.get_object(Bucket=s3_bucket, Key=base + "versions/v1.json")["Body"].read() == manifest.to_json()


def test_s3_put_blob_has_s3_check_the_sha256_it_computed(s3, s3_client, tmp_path):
    # moto does not verify the checksum it is sent (S3 does): check that it is sent
    import base64

    sent: list[dict] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append(dict(request.headers))

    s3_client.meta.events.register("before-send.s3.PutObject", capture)
    try:
        ref = s3.store.put_blob(COLLECTION, blob_file(tmp_path, b"checked in transit " * 30))
    finally:
        s3_client.meta.events.unregister("before-send.s3.PutObject", capture)

    assert len(sent) == 1
    assert base64.b64decode(sent[0]["x-amz-checksum-sha256"]).hex() == ref.sha256


def test_s3_deletes_in_batches_of_a_thousand(s3, s3_client, s3_bucket, tmp_path):
    from ragserve.snapshots.s3 import S3SnapshotStore

    publish(s3, tmp_path, 1, expected=None)
    recording = RecordingClient(s3_client)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=recording)

    store.delete_versions(COLLECTION, range(2, 1503))

    batches = [kwargs["Delete"]["Objects"] for name, kwargs in recording.calls if name == "delete_objects"]
    assert [len(b) for b in batches] == [1000, 501]
    assert store.versions(COLLECTION) == [1]


def test_s3_blob_reuses_its_verified_cached_copy(s3, tmp_path):
    ref = s3.store.put_blob(COLLECTION, blob_file(tmp_path, b"cached " * 50))
    path = s3.store.blob(COLLECTION, ref, s3.cache_dir)
    assert path == s3.cache_dir / COLLECTION / "blobs" / ref.sha256

    s3.tamper_blob(COLLECTION, ref.sha256)  # the bucket copy goes bad...
    assert s3.store.blob(COLLECTION, ref, s3.cache_dir) == path  # ...the verified local copy is used
    assert sha256_file(path) == ref.sha256


def test_s3_blob_downloads_again_over_a_damaged_cached_copy(s3, s3_client, s3_bucket, tmp_path):
    ref = s3.store.put_blob(COLLECTION, blob_file(tmp_path, b"cached " * 50))
    path = s3.store.blob(COLLECTION, ref, s3.cache_dir)

    flip_byte(path)  # the local copy goes bad: downloaded again
    assert s3.store.blob(COLLECTION, ref, s3.cache_dir) == path
    assert sha256_file(path) == ref.sha256

    path.write_bytes(b"truncated")  # again, and this time the bucket copy is bad too: refused
    s3.tamper_blob(COLLECTION, ref.sha256)
    with pytest.raises(SnapshotCorrupt):
        s3.store.blob(COLLECTION, ref, s3.cache_dir)
    assert list(path.parent.iterdir()) == []  # neither the damaged copy nor a temporary file left


def test_s3_a_fresh_store_verifies_a_cached_copy_once(s3, s3_client, s3_bucket, tmp_path):
    from ragserve.snapshots.s3 import S3SnapshotStore

    ref = s3.store.put_blob(COLLECTION, blob_file(tmp_path, b"shared cache " * 20))
    path = s3.store.blob(COLLECTION, ref, s3.cache_dir)
    recording = RecordingClient(s3_client)
    other = S3SnapshotStore(s3_bucket, PREFIX, client=recording)  # another process, the same cache dir

    assert other.blob(COLLECTION, ref, s3.cache_dir) == path
    assert other.blob(COLLECTION, ref, s3.cache_dir) == path
    assert recording.calls == []  # served from the cache: nothing downloaded


def test_s3_publish_checks_only_the_blobs_it_adds_to_its_parent(s3, s3_client, s3_bucket, tmp_path):
    from ragserve.snapshots.s3 import S3SnapshotStore

    first = publish(s3, tmp_path, 1, expected=None)
    recording = RecordingClient(s3_client)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=recording)
    second = version(COLLECTION, 2, (*first.segments, segment(store, tmp_path, "s2-0", "new")), parent=1)
    recording.calls.clear()

    store.publish(second, expected_current=1)

    headed = {k.rsplit("/", 1)[1] for k in recording.keys("head_object")}
    assert headed == second.blobs() - first.blobs()
    assert store.current(COLLECTION) == 2


def test_s3_publish_refuses_a_blob_stored_with_another_size(s3, s3_client, s3_bucket, tmp_path):
    entry = segment(s3.store, tmp_path, "s1-0", "resized")
    s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}collections/{COLLECTION}/blobs/{entry.docs.sha256}",
                         Body=b"short")

    with pytest.raises(SnapshotCorrupt, match=entry.docs.sha256[:12]):
        s3.store.publish(version(COLLECTION, 1, (entry,), parent=None), expected_current=None)
    assert s3.store.versions(COLLECTION) == []


@pytest.mark.parametrize("expected", [None, 1])
def test_s3_a_retried_request_that_lost_to_its_own_first_attempt_succeeds(s3, s3_client, s3_bucket, tmp_path,
                                                                            expected):
    from ragserve.snapshots.s3 import S3SnapshotStore

    if expected is not None:
        publish(s3, tmp_path, expected, expected=None)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=RecordingClient(s3_client, put_twice=(".json", "CURRENT")))
    number = (expected or 0) + 1
    manifest = build(s3, tmp_path, number, parent=expected,
                     keep=s3.store.manifest(COLLECTION, expected).segments if expected else ())

    store.publish(manifest, expected_current=expected)

    assert s3.store.current(COLLECTION) == number
    assert s3.store.manifest(COLLECTION, number) == manifest


class StalePointerClient(RecordingClient):
    """A client whose first read of ``CURRENT`` answers what was there before: a writer
    that read the pointer just before another writer swapped it."""

    def __init__(self, client: Any, body: bytes, etag: str) -> None:
        super().__init__(client)
        self.stale: dict | None = {"Body": io.BytesIO(body), "ETag": etag}

    def get_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("/CURRENT") and self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return self._client.get_object(**kwargs)


def stale_store(s3_client: Any, bucket: str) -> Any:
    from ragserve.snapshots.s3 import S3SnapshotStore

    pointer = s3_client.get_object(Bucket=bucket, Key=f"{PREFIX}collections/{COLLECTION}/CURRENT")
    client = StalePointerClient(s3_client, pointer["Body"].read(), pointer["ETag"])
    return S3SnapshotStore(bucket, PREFIX, client=client)


def test_s3_a_writer_that_loses_the_swap_removes_its_manifest(s3, s3_client, s3_bucket, tmp_path):
    first = publish(s3, tmp_path, 1, expected=None)
    late = stale_store(s3_client, s3_bucket)  # reads CURRENT = 1...
    publish(s3, tmp_path, 2, expected=1)  # ...another writer moves it to 2...

    with pytest.raises(PointerConflict, match="moved from version 1 to 2"):  # ...so its swap fails
        late.publish(build(s3, tmp_path, 3, parent=1, keep=first.segments), expected_current=1)

    assert s3.store.current(COLLECTION) == 2
    assert s3.store.versions(COLLECTION) == [1, 2]


def test_s3_the_same_manifest_bytes_from_another_writer_are_not_its_own(s3, s3_client, s3_bucket, tmp_path):
    # Two writers building the same version from the same parent in the same second can
    # produce identical manifests; only the one that created the object owns the version
    # (the other must neither report success nor delete the winner's manifest).
    first = publish(s3, tmp_path, 1, expected=None)
    late = stale_store(s3_client, s3_bucket)
    second = build(s3, tmp_path, 2, parent=1, keep=first.segments)
    s3.store.publish(second, expected_current=1)

    with pytest.raises(VersionExists):
        late.publish(second, expected_current=1)

    assert s3.store.current(COLLECTION) == 2
    assert s3.store.manifest(COLLECTION, 2) == second


def test_s3_the_client_is_created_on_first_use(monkeypatch, s3_client, s3_bucket):
    import boto3

    from ragserve.snapshots.s3 import S3SnapshotStore

    made = []
    monkeypatch.setattr(boto3, "client", lambda service, **kw: made.append(service) or s3_client)
    store = S3SnapshotStore(s3_bucket, "p")
    assert made == [] and repr(store) == f"S3SnapshotStore(bucket={s3_bucket!r}, prefix='p/')"

    assert store.current(COLLECTION) is None
    assert store.current(COLLECTION) is None
    assert made == ["s3"]


def test_s3_errors_name_the_bucket_never_a_local_path(s3, tmp_path):
    ref = s3.store.put_blob(COLLECTION, blob_file(tmp_path, b"x" * 64))
    s3.tamper_blob(COLLECTION, ref.sha256)
    missing = BlobRef("f" * 64, 3)

    for call in (lambda: s3.store.blob(COLLECTION, ref, s3.cache_dir),
                 lambda: s3.store.blob(COLLECTION, missing, s3.cache_dir),
                 lambda: s3.store.manifest(COLLECTION, 4)):
        with pytest.raises((SnapshotCorrupt, SnapshotMissing)) as caught:
            call()
        assert "s3://" in str(caught.value) and no_path_in(str(caught.value), tmp_path, s3.cache_dir)
