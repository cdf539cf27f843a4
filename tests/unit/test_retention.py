"""Retention (``apply_retention``) on a local store holding real versions, written by
the real ``CollectionWriter`` with the real encoder: the live version, any newer one
(a publish in progress) and every version still live within the window are kept with
all their blobs; older manifests are deleted, and so are the blobs no kept version
references, unless they are young (a write in progress stores its blobs before its
manifest). When what the decision needs cannot be read, nothing is deleted.

Time is simulated: manifests take their ``created_at`` from a fake clock, retention
runs at ``now=``, and ``os.utime`` makes a blob young; nothing sleeps."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.segments.retention import apply_retention
from ragserve.settings import IndexSettings
from ragserve.snapshots import LocalSnapshotStore, SegmentEntry, VersionManifest
from ragserve.snapshots import manifest as manifest_module
from ragserve.snapshots.format import atomic_write_bytes
from tests.corruption import flip_byte

HOUR = 3600.0
WINDOW = HOUR
C = "docs"


class Clock:
    """What ``created_at`` says: set by the test, never read from the system clock."""

    def __init__(self, start: float) -> None:
        self.now = start

    def iso(self) -> str:
        return datetime.fromtimestamp(self.now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class History:
    """Four versions of ``docs``, each created at ``t0`` plus its offset:

    v1 (t0)          write a, b              s1-0 = {a, b}
    v2 (t0 + 10 h)   update a, write c       s2-0 = {a', c}; s1-0 deletes a
    v3 (t0 + 20 h)   delete b                s1-0 has nothing left: dropped
    v4 (t0 + 20.5 h) write d                 s4-0 = {d}     (live)

    s1-0's files and its deletion vector are referenced by v1 and v2 only."""

    store: LocalSnapshotStore
    root: Path
    t0: float

    def manifest(self, version: int) -> VersionManifest:
        return self.store.manifest(C, version)

    def blob_path(self, sha: str) -> Path:
        return self.root / "collections" / C / "blobs" / sha

    def stored_blobs(self) -> set[str]:
        return {b.sha256 for b in self.store.blobs(C)}

    def listing(self) -> set[str]:
        base = self.root / "collections" / C
        return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and p.name != ".lock"}

    def assert_whole(self, version: int) -> None:
        """Every blob of ``version`` is stored and verifies (sha256 and size)."""
        manifest = self.manifest(version)
        for segment in manifest.segments:
            for ref in segment.blobs():
                assert self.store.blob(C, ref).is_file()

    def age_all_blobs(self, when: float) -> None:
        for sha in self.stored_blobs():
            os.utime(self.blob_path(sha), (when, when))


def doc(doc_id: str, text: str) -> Document:
    return Document(doc_id, text, {"tag": doc_id})


@pytest.fixture
def history(tmp_path, encoder, monkeypatch) -> History:
    t0 = float(int(time.time()))  # created_at has whole seconds
    clock = Clock(t0)
    monkeypatch.setattr(manifest_module, "utc_now_iso", clock.iso)
    store = LocalSnapshotStore(tmp_path / "store")
    writer = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "scratch")

    def write(offset_hours: float, upserts=(), deletes=()) -> int:
        clock.now = t0 + offset_hours * HOUR
        result = writer.apply(C, [IngestJob(f"job-{offset_hours}", 0, C, tuple(upserts), tuple(deletes))])
        assert result.version is not None
        return result.version

    assert write(0, [doc("a", "The cat sat on the mat."), doc("b", "Invoices are sent monthly.")]) == 1
    assert write(10, [doc("a", "The cat sat on the sofa."), doc("c", "Lambda scales to zero.")]) == 2
    assert write(20, deletes=["b"]) == 3
    assert write(20.5, [doc("d", "HNSW graphs search fast.")]) == 4
    h = History(store, tmp_path / "store", t0)
    assert [s.id for s in h.manifest(2).segments] == ["s1-0", "s2-0"]
    assert [s.id for s in h.manifest(4).segments] == ["s2-0", "s4-0"]
    assert store.current(C) == 4
    return h


def only_in(h: History, *versions: int) -> set[str]:
    """Blobs referenced by these versions and by no other stored one."""
    mine = set().union(*(h.manifest(v).blobs() for v in versions))
    others = set().union(*(h.manifest(v).blobs() for v in h.store.versions(C) if v not in versions))
    return mine - others


def test_the_history_is_what_the_tests_assume(history):
    h = history
    s1 = h.manifest(2).segment("s1-0")

    assert (s1.rows, s1.deleted) == (2, 1) and s1.deletes is not None
    assert only_in(h, 1, 2) == {r.sha256 for r in s1.blobs()}  # 3 files and a deletion vector
    assert len(only_in(h, 1, 2)) == 4 and len(h.stored_blobs()) == 4 + 2 * 3
    assert [h.manifest(v).created_at for v in (1, 4)] == [
        datetime.fromtimestamp(h.t0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        datetime.fromtimestamp(h.t0 + 20.5 * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]


def test_old_versions_and_the_blobs_only_they_reference_are_deleted(history):
    h = history
    doomed_blobs = only_in(h, 1, 2, 3)
    live_blobs = h.manifest(4).blobs()
    sizes = {b.sha256: b.size for b in h.store.blobs(C)}
    now = h.t0 + 30 * HOUR  # v3 stopped being live at 20.5 h: everything but v4 is out of the window

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert result.skipped is None
    assert sorted(result.versions_deleted) == [1, 2, 3]
    assert h.store.versions(C) == [4] and h.store.current(C) == 4
    assert h.stored_blobs() == live_blobs
    assert result.blobs_deleted == len(doomed_blobs) == 4
    assert result.bytes_deleted == sum(sizes[s] for s in doomed_blobs)
    h.assert_whole(4)


def test_versions_live_within_the_window_are_kept_with_all_their_blobs(history):
    h = history
    before = h.stored_blobs()
    now = h.t0 + 20.5 * HOUR + 10 * 60  # cutoff at 19 h 40: v2 and v3 were live after it, v1 was not

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert result.skipped is None and result.versions_deleted == (1,)
    assert h.store.versions(C) == [2, 3, 4]
    for version in (2, 3, 4):
        h.assert_whole(version)
    assert h.stored_blobs() == before  # v1's blobs are all v2's too
    assert result.blobs_deleted == 0 and result.bytes_deleted == 0


def test_a_version_created_long_ago_but_replaced_a_moment_ago_is_kept(history):
    """v2 was created at 10 h and was live until v3 at 20 h: a reader that fetched it at
    19 h 59 must find all of it for the window after that, whatever its age."""
    h = history
    now = h.t0 + 20 * HOUR + 30 * 60  # cutoff at 19 h 30

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert result.skipped is None
    assert 2 in h.store.versions(C) and 2 not in result.versions_deleted
    h.assert_whole(2)


def test_a_window_of_zero_keeps_only_the_live_version(history):
    h = history
    now = h.t0 + 20.5 * HOUR + 1  # v3 was live until a second ago

    result = apply_retention(h.store, C, window_seconds=0, now=now)

    assert sorted(result.versions_deleted) == [1, 2, 3] and h.store.versions(C) == [4]
    h.assert_whole(4)


def test_a_young_unreferenced_blob_is_kept_and_an_old_one_deleted(history, tmp_path):
    h = history
    now = h.t0 + 30 * HOUR
    pending = tmp_path / "pending.bin"  # a write in progress: blob stored, manifest not yet
    pending.write_bytes(b"a segment file of a write in progress")
    young = h.store.put_blob(C, pending)
    os.utime(h.blob_path(young.sha256), (now - 60, now - 60))
    stray = tmp_path / "stray.bin"  # left by a write that crashed long ago
    stray.write_bytes(b"a segment file nobody ever published")
    old = h.store.put_blob(C, stray)
    os.utime(h.blob_path(old.sha256), (now - 2 * WINDOW, now - 2 * WINDOW))

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert young.sha256 in h.stored_blobs()
    assert old.sha256 not in h.stored_blobs()
    assert result.blobs_deleted == 4 + 1
    h.assert_whole(4)


def test_a_reused_blob_is_young_again_and_spared(history, tmp_path):
    """A write that stores a blob already there (same bytes) makes it young: it may be
    about to reference it, so retention must not delete it meanwhile."""
    h = history
    now = h.t0 + 30 * HOUR
    s1_docs = h.manifest(2).segment("s1-0").docs
    source = tmp_path / "again.jsonl"
    source.write_bytes(h.blob_path(s1_docs.sha256).read_bytes())
    h.age_all_blobs(now - 2 * WINDOW)

    h.store.put_blob(C, source)  # reused: stored already, so only its mtime changes
    os.utime(h.blob_path(s1_docs.sha256), (now - 30, now - 30))
    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert s1_docs.sha256 in h.stored_blobs()
    assert result.blobs_deleted == 3  # the rest of s1-0 and its deletion vector


def test_a_newer_version_being_published_keeps_its_blobs(history, tmp_path):
    h = history
    now = h.t0 + 30 * HOUR
    live = h.manifest(4)
    files = {}
    for role in ("vectors", "docs", "ids"):
        path = tmp_path / f"next-{role}"
        path.write_bytes(f"the {role} of a segment of v5".encode())
        files[role] = h.store.put_blob(C, path)
    h.age_all_blobs(now - 2 * WINDOW)  # a slow publisher: its blobs are older than the window
    pending = live.successor(5, [*live.segments, SegmentEntry(id="s5-0", rows=1, **files)], "write", parent=4)
    # the manifest is stored, CURRENT not yet swapped
    atomic_write_bytes(h.root / "collections" / C / "versions" / "v5.json", pending.to_json())

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert result.skipped is None and h.store.versions(C) == [4, 5]
    assert {r.sha256 for r in files.values()} <= h.stored_blobs()
    assert h.stored_blobs() == live.blobs() | pending.blobs()


def assert_nothing_deleted(h: History, result, before: set[str], reason: str) -> None:
    assert result.skipped is not None and reason in result.skipped
    assert (result.versions_deleted, result.blobs_deleted, result.bytes_deleted) == ((), 0, 0)
    assert h.listing() == before


@pytest.mark.parametrize("pointer", [b"garbage\n", b"", b"0\n", b"\xff\xfe\n"])
def test_a_corrupt_current_deletes_nothing(history, pointer):
    h = history
    (h.root / "collections" / C / "CURRENT").write_bytes(pointer)
    before = h.listing()

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 100 * HOUR)

    assert_nothing_deleted(h, result, before, "CURRENT unreadable")


def test_a_corrupt_live_manifest_deletes_nothing(history):
    h = history
    flip_byte(h.root / "collections" / C / "versions" / "v4.json")
    before = h.listing()

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 100 * HOUR)

    assert_nothing_deleted(h, result, before, "v4 unreadable")


def test_a_missing_live_manifest_deletes_nothing(history):
    """CURRENT names v4, whose manifest is gone: the older versions are what a repair
    points CURRENT back at, so they and their blobs must stay."""
    h = history
    (h.root / "collections" / C / "versions" / "v4.json").unlink()
    before = h.listing()

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 100 * HOUR)

    assert_nothing_deleted(h, result, before, "v4 unreadable")


def test_a_corrupt_older_manifest_deletes_nothing(history):
    h = history
    flip_byte(h.root / "collections" / C / "versions" / "v2.json")
    before = h.listing()

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 100 * HOUR)

    assert_nothing_deleted(h, result, before, "v2 unreadable")


def test_a_corrupt_newer_manifest_protects_nothing_but_is_not_deleted(history):
    """A newer manifest that does not verify was never made live: retention goes on as if
    it were not there, and leaves it for a repair to look at."""
    h = history
    live = h.manifest(4)
    newer = h.root / "collections" / C / "versions" / "v5.json"
    atomic_write_bytes(newer, live.successor(5, live.segments, "write", parent=4).to_json())
    flip_byte(newer)

    result = apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 30 * HOUR)

    assert result.skipped is None and sorted(result.versions_deleted) == [1, 2, 3]
    assert h.store.versions(C) == [4, 5] and newer.is_file()
    assert h.stored_blobs() == live.blobs()


def test_a_collection_without_a_live_version_is_left_alone(tmp_path):
    store = LocalSnapshotStore(tmp_path)

    result = apply_retention(store, "nothing", window_seconds=WINDOW, now=time.time() + 100 * HOUR)

    assert result.skipped == "no live version" and result.versions_deleted == ()


def test_retention_twice_deletes_nothing_more(history):
    h = history
    now = h.t0 + 30 * HOUR
    apply_retention(h.store, C, window_seconds=WINDOW, now=now)
    after = h.listing()

    again = apply_retention(h.store, C, window_seconds=WINDOW, now=now)

    assert (again.versions_deleted, again.blobs_deleted, again.skipped) == ((), 0, None)
    assert h.listing() == after


def test_the_writer_goes_on_after_retention(history, encoder, tmp_path):
    h = history
    apply_retention(h.store, C, window_seconds=WINDOW, now=h.t0 + 30 * HOUR)
    writer = CollectionWriter(h.store, encoder, IndexSettings(), tmp_path / "scratch-2")  # a cold writer

    result = writer.apply(C, [IngestJob("after", 0, C, (doc("e", "Fresh text after retention."),), ("c",))])

    assert result.version == 5 and result.documents == 3  # a', d, e
    ids = writer.id_map(C, h.manifest(5))
    assert set(ids.where) == {"a", "d", "e"}


def test_temporary_files_of_a_crashed_write_are_removed_once_old(tmp_path):
    store = LocalSnapshotStore(tmp_path)
    blob = tmp_path / "seed.bin"
    blob.write_bytes(b"rows")
    ref = store.put_blob("docs", blob)
    store.publish(VersionManifest(collection="docs", version=1, model_id="m", dimensions=4, dtype="f16", params={},
                                  segments=(SegmentEntry(id="s1-0", rows=1, vectors=ref, docs=ref, ids=ref),)),
                  expected_current=None)
    blobs = tmp_path / "collections" / "docs" / "blobs"
    old = blobs / f".{'a' * 64}.tmp-123-deadbeef"
    young = blobs / f".{'b' * 64}.tmp-124-deadbeef"
    old.write_bytes(b"half a blob")
    young.write_bytes(b"a blob being written")
    os.utime(old, (1, 1))

    result = apply_retention(store, "docs", window_seconds=3600)

    assert result.leftovers == 1
    assert not old.exists() and young.exists()
    assert (blobs / ref.sha256).is_file()
