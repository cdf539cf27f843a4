"""Compaction end to end: the compactor merges the segments the policy picks into one,
drops their deleted rows, and commits with the same conditional swap of ``CURRENT`` as
a write; search answers the same before and after; the registry opens only the merged
segment; and a writer racing a compactor loses and doubles nothing. Real model, real
usearch, a local store."""

from __future__ import annotations

import random
import threading

import pytest

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.search.collection import LoadedSegment
from ragserve.search.registry import CollectionRegistry
from ragserve.segments.compactor import Compactor
from ragserve.segments.policy import MergePolicy
from ragserve.settings import IndexSettings
from ragserve.snapshots.errors import PointerConflict
from ragserve.snapshots.local import LocalSnapshotStore
from tests.integration.conftest import live_records

HNSW_MIN_ROWS = 30  # writes of 13 rows are searched exactly; merges get a graph
# Tiny segments count as 10 rows; two per tier: eight small writes make work for it.
POLICY = MergePolicy(segments_per_tier=2, max_merge_at_once=4, max_segment_rows=10_000, floor_rows=10,
                     deletes_pct_allowed=20.0)
TOPICS = ["astronomy", "gardening", "finance", "football", "music", "sailing"]


def note(i: int, version: str = "") -> Document:
    topic = TOPICS[i % len(TOPICS)]
    text = f"Note {i}{version} about {topic}: " + ("a rare remark." if i % 9 == 0 else "an everyday remark.")
    return Document(f"n{i}", text, {"topic": topic, "rare": i % 9 == 0})


def job(collection: str, *, upserts=(), deletes=(), job_id="j") -> IngestJob:
    return IngestJob(job_id, 0, collection, tuple(upserts), tuple(deletes))


@pytest.fixture
def store(tmp_path):
    return LocalSnapshotStore(tmp_path / "data")


@pytest.fixture
def writer(store, encoder, tmp_path):
    return CollectionWriter(store, encoder, IndexSettings(hnsw_min_rows=HNSW_MIN_ROWS), tmp_path / "scratch")


@pytest.fixture
def compactor(tmp_path):
    # a store object of its own, as the compaction function has
    return Compactor(LocalSnapshotStore(tmp_path / "data"), POLICY, tmp_path / "compaction",
                     hnsw_min_rows=HNSW_MIN_ROWS)


@pytest.fixture
def registry(store, encoder, tmp_path):
    return CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                              dimensions=encoder.dimensions)


def eight_writes(writer) -> dict[str, Document]:
    """Eight writes of 12 notes (eight segments), replacing and deleting notes of the
    earlier ones; the live notes by id."""
    live: dict[str, Document] = {}
    for w in range(8):
        upserts = [note(i) for i in range(12 * w, 12 * w + 12)]
        deletes = []
        if w:
            upserts.append(note(12 * (w - 1) + 1, f" (rewritten in write {w})"))
            deletes = [f"n{12 * (w - 1) + 5}", f"n{12 * (w - 1) + 7}"]
        writer.apply("notes", [job("notes", upserts=upserts, deletes=deletes, job_id=f"w{w}")])
        live.update((d.id, d) for d in upserts)
        for doc_id in deletes:
            live.pop(doc_id)
    return live


QUERIES = ["the stars and planets", "a football match", "a rare remark about money"]
FILTERS = [None, {"topic": "music"}, {"rare": True}]


def answers(collection, encoder) -> list:
    out = []
    for query in QUERIES:
        vector = encoder.embed([query])[0]
        for where in FILTERS:
            page = collection.search(vector, k=100, offset=0, where=where, include_text=True)
            out.append([(h["id"], h["score"], h["text"]) for h in page.results])
            paged, offset = [], 0
            while offset is not None:
                page = collection.search(vector, k=9, offset=offset, where=where, include_text=False)
                paged += [h["id"] for h in page.results]
                offset = page.next_offset
            assert paged == [i for i, _, _ in out[-1]]
    return out


def test_compaction_merges_segments_purges_deletes_and_answers_the_same(writer, compactor, registry, store,
                                                                        encoder, tmp_path, monkeypatch):
    live = eight_writes(writer)
    before = store.live_manifest("notes")
    assert (len(before.segments), before.deleted, before.count) == (8, 21, len(live))
    old = registry.get("notes")
    expected = answers(old, encoder)
    records = live_records(store, "notes", tmp_path / "check")
    opened: list[str] = []
    real_open = LoadedSegment.open.__func__
    monkeypatch.setattr(LoadedSegment, "open",
                        classmethod(lambda cls, entry, *a: opened.append(entry.id) or real_open(cls, entry, *a)))

    results = compactor.compact("notes")

    after = store.live_manifest("notes")
    assert results and after.version == before.version + len(results)
    assert all(m.operation == "compact" for m in (store.manifest("notes", r.version) for r in results))
    assert len(after.segments) < len(before.segments) and POLICY.find_merge(after.segments) is None
    merged = {r.segment for r in results}
    assert after.count == before.count and sum(r.purged for r in results) > 0
    assert after.deleted < before.deleted
    assert all(s.deleted == 0 for s in after.segments if s.id in merged)  # their deleted rows are gone
    assert any(s.index is not None for s in after.segments)  # a merged segment large enough gets a graph
    assert live_records(store, "notes", tmp_path / "check") == records

    new = registry.get("notes")
    assert new.version == after.version and answers(new, encoder) == expected
    assert set(opened) <= merged  # only merged segments opened; the others shared with the old version
    for segment in new.segments:
        if segment.entry.id not in merged:
            assert any(segment is s for s in old.segments)

    # the writer goes on over the merged segments: a rewrite lands once, a repeat is a no-op
    assert writer.apply("notes", [job("notes", upserts=[live["n3"]])]).version is None
    result = writer.apply("notes", [job("notes", upserts=[note(3, " (after compaction)")], deletes=["n4"])])
    assert result.version == after.version + 1
    records = live_records(store, "notes", tmp_path / "check")
    assert records["n3"]["text"] == note(3, " (after compaction)").text and "n4" not in records
    fresh = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "fresh")  # a cold writer agrees
    assert fresh.apply("notes", [job("notes", upserts=[Document.from_record(r) for r in records.values()])]) \
        .version is None


def test_a_segment_over_the_deletion_allowance_is_purged_on_its_own(writer, compactor, store, tmp_path):
    writer.apply("notes", [job("notes", upserts=[note(i) for i in range(40)])])
    writer.apply("notes", [job("notes", deletes=[f"n{i}" for i in range(0, 40, 3)])])  # 14 of 40: 35 %
    assert compactor.compact("notes") != []
    manifest = store.live_manifest("notes")
    assert [(s.rows, s.deleted) for s in manifest.segments] == [(26, 0)]
    assert set(live_records(store, "notes", tmp_path / "check")) == {f"n{i}" for i in range(40) if i % 3}
    assert compactor.compact("notes") == []  # in shape now


def test_nothing_to_compact(writer, compactor, store):
    assert compactor.compact("absent") == []
    writer.apply("notes", [job("notes", upserts=[note(i) for i in range(5)])])
    writer.apply("notes", [job("notes", upserts=[note(i) for i in range(5, 10)])])
    assert compactor.compact("notes") == []  # two segments: within the policy's budget
    assert store.current("notes") == 2


def test_a_write_that_lands_while_a_merge_is_built_is_kept(writer, store, encoder, tmp_path):
    live = eight_writes(writer)
    racing = LocalSnapshotStore(tmp_path / "data")
    compactor = Compactor(racing, POLICY, tmp_path / "compaction", hnsw_min_rows=HNSW_MIN_ROWS)
    planned = racing.live_manifest("notes")
    chosen = POLICY.find_merge(planned.segments)
    victims = [f"n{12 * int(s.split('-')[0][1:]) - 12 + 2}" for s in chosen[:2]]  # row 2 of two chosen writes
    real_publish = racing.publish
    writes = []

    def publish_after_a_write(manifest, *, expected_current):
        if not writes:  # the write commits first: the merge's swap fails, and it commits again on top
            writes.append(writer.apply("notes", [job("notes", upserts=[
                note(2, " (rewritten during the merge)"), note(500)], deletes=[victims[1]])]))
        return real_publish(manifest, expected_current=expected_current)

    racing.publish = publish_after_a_write
    result = compactor.compact_once("notes")

    assert result is not None and writes[0].version == planned.version + 1
    assert result.version == planned.version + 2
    manifest = store.live_manifest("notes")
    assert len({s.id for s in manifest.segments}) == len(manifest.segments)
    merged = manifest.segment(result.segment)
    assert merged.deleted == 2  # the rows the write superseded, marked in the merged segment
    live["n2"] = note(2, " (rewritten during the merge)")
    live["n500"] = note(500)
    live.pop(victims[1])
    records = live_records(store, "notes", tmp_path / "check")
    assert {i: r["text"] for i, r in records.items()} == {i: d.text for i, d in live.items()}


def test_a_writer_and_a_compactor_racing_lose_nothing_and_double_nothing(writer, compactor, store, registry,
                                                                         encoder, tmp_path):
    rng = random.Random(20261130)
    expected: dict[str, Document] = {}
    gone: set[str] = set()
    first = [note(i) for i in range(20)]
    writer.apply("race", [job("race", upserts=first)])
    expected.update((d.id, d) for d in first)

    stop = threading.Event()
    merges, errors, lost = [], [], [0]

    def compact_in_a_loop():
        while not stop.is_set():
            try:
                merges.extend(compactor.compact("race"))
            except PointerConflict:
                lost[0] += 1  # beaten five times in a row by the writer: the next run tries again
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return

    thread = threading.Thread(target=compact_in_a_loop)
    thread.start()
    try:
        for round_ in range(40):
            ids = sorted(expected)
            rewritten = rng.sample(ids, 2)
            deleted = rng.choice([i for i in ids if i not in rewritten])
            upserts = [note(1000 + 3 * round_ + k) for k in range(3)]
            upserts += [note(int(i[1:]), f" (round {round_})") for i in rewritten]
            write = job("race", upserts=upserts, deletes=[deleted], job_id=f"r{round_}")
            for _ in range(10):  # a conflict lost five times over: the message stays queued, and is retried
                try:
                    writer.apply("race", [write])
                    break
                except PointerConflict:
                    continue
            else:
                pytest.fail("a write lost every retry")
            expected.update((d.id, d) for d in upserts)
            expected.pop(deleted)
            gone.add(deleted)
            gone -= {d.id for d in upserts}
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert not errors, errors[:3]
    assert merges, "the compactor never merged: no race was run"
    merges += compactor.compact("race")  # alone now: the policy gets its way

    records = live_records(store, "race", tmp_path / "check")  # every id live exactly once
    assert {i: r["text"] for i, r in records.items()} == {i: d.text for i, d in expected.items()}
    assert not gone & set(records)
    manifest = store.live_manifest("race")
    assert len({s.id for s in manifest.segments}) == len(manifest.segments)
    assert POLICY.find_merge(manifest.segments) is None

    collection = registry.get("race")
    page = collection.search(encoder.embed(["a rare remark"])[0], k=len(records), offset=0, where=None,
                             include_text=True)
    assert sorted((h["id"], h["text"]) for h in page.results) == sorted((i, d.text) for i, d in expected.items())
    # a cold writer reading the compacted segments finds every document unchanged
    fresh = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "fresh")
    assert fresh.apply("race", [job("race", upserts=list(expected.values()))]).version is None
