"""Collections end to end in one process: the single writer publishes versions of
segments, the registry hot-swaps them by manifest diff, search filters and paginates
over every segment, a corrupted version is refused, a write that dies before its
commit loses nothing, and searches keep answering while writes land. Real model, real
usearch, real stores (a local directory, and S3 on moto in server mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import ragserve.ingest.writer as writer_module
from ragserve.documents import Document, metadata_key
from ragserve.ingest.consumer import MAX_ATTEMPTS, consume
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.local.events import sqs_event
from ragserve.search.collection import LoadedSegment
from ragserve.search.registry import CollectionRegistry
from ragserve.settings import IndexSettings
from ragserve.snapshots.errors import CollectionNotFound
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.manifest import SegmentEntry
from ragserve.snapshots.s3 import S3SnapshotStore
from tests.corruption import flip_byte
from tests.integration.conftest import live_records

TOPICS = ["cloud", "search", "cooking", "sport", "music", "history"]
SENTENCES = {
    "cloud": "Serverless function {i} scales to zero and starts cold in under a second.",
    "search": "Vector index {i} answers nearest-neighbour queries over embeddings.",
    "cooking": "Recipe {i}: stir the flour into the butter and bake for twenty minutes.",
    "sport": "Match report {i}: the home team scored twice in the second half.",
    "music": "Concert {i}: the orchestra played a symphony by Beethoven.",
    "history": "Chapter {i}: the empire expanded along the river valleys.",
}


def corpus(n: int, rare_topic_every: int = 0, start: int = 0) -> list[Document]:
    docs = []
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        rare = bool(rare_topic_every) and i % rare_topic_every == 0
        docs.append(Document(f"doc-{i:05d}", SENTENCES[topic].format(i=i), {"topic": topic, "rare": rare}))
    return docs


def job(collection: str, *, upserts=(), deletes=(), job_id="j") -> IngestJob:
    return IngestJob(job_id, 0, collection, tuple(upserts), tuple(deletes))


def message(body: str, *, message_id: str = "m1", group: str = "docs", receive_count: int = 1) -> dict:
    return {"message_id": message_id, "receipt": f"r-{message_id}", "group": group, "body": body,
            "receive_count": receive_count}


@pytest.fixture
def store(tmp_path):
    return LocalSnapshotStore(tmp_path / "data")


@pytest.fixture
def writer(store, encoder, tmp_path):
    return CollectionWriter(store, encoder, IndexSettings(), tmp_path / "scratch")


@pytest.fixture
def registry(store, encoder, tmp_path):
    return CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                              dimensions=encoder.dimensions)


def search(registry, encoder, collection, query, k=5, offset=0, where=None, include_text=True):
    return registry.get(collection).search(encoder.embed([query])[0], k=k, offset=offset, where=where,
                                           include_text=include_text)


def blob_path(store: LocalSnapshotStore, collection: str, sha: str) -> Path:
    return store.root / "collections" / collection / "blobs" / sha


def added_segment(store, collection: str, version: int) -> SegmentEntry:
    """The one segment ``version`` lists that its parent did not."""
    manifest = store.manifest(collection, version)
    before = {s.id for s in store.manifest(collection, manifest.parent).segments} if manifest.parent else set()
    [entry] = [s for s in manifest.segments if s.id not in before]
    return entry


def stored_blobs(store: LocalSnapshotStore, collection: str) -> dict[str, tuple[int, int]]:
    """Every stored blob: sha256 -> (size, mtime in ns)."""
    found = {}
    for blob in store.blobs(collection):
        stat = blob_path(store, collection, blob.sha256).stat()
        found[blob.sha256] = (stat.st_size, stat.st_mtime_ns)
    return found


def exact_ranking(encoder, documents: dict[str, Document], query: str, where=None) -> list[tuple[str, float]]:
    """The brute-force answer: every live document matching ``where``, scored as the
    index scores (float16 vectors, float64 dot product with the normalised query)."""
    wanted = {k: metadata_key(v) for k, v in (where or {}).items()}
    docs = [d for d in documents.values()
            if all(k in d.metadata and metadata_key(d.metadata[k]) == v for k, v in wanted.items())]
    if not docs:
        return []
    vectors = encoder.embed([d.text for d in docs]).astype(np.float16).astype(np.float64)
    q = encoder.embed([query])[0].astype(np.float32)
    q = q / np.float32(np.linalg.norm(q))
    scores = (vectors @ q.astype(np.float64)).astype(np.float32)
    return [(docs[i].id, round(float(scores[i]), 6)) for i in sorted(range(len(docs)), key=lambda i: -scores[i])]


# -- writes land: upsert, replace, delete, no-ops --------------------------------------------


def test_upsert_search_update_delete(writer, registry, encoder):
    result = writer.apply("docs", [job("docs", upserts=corpus(60))])
    assert (result.version, result.upserted, result.documents, result.segments) == (1, 60, 60, 1)

    page = search(registry, encoder, "docs", "which index answers nearest neighbour queries?")
    assert page.index_version == 1
    assert all(hit["metadata"]["topic"] == "search" for hit in page.results)
    assert page.results[0]["score"] >= page.results[-1]["score"]

    changed = Document("doc-00001", "A brand new text about sailing boats on the open sea.", {"topic": "sailing"})
    result = writer.apply("docs", [job("docs", upserts=[changed])])
    assert (result.version, result.upserted, result.documents, result.segments) == (2, 1, 60, 2)
    top = search(registry, encoder, "docs", "sailing boats at sea", k=1).results[0]
    assert (top["id"], top["text"]) == ("doc-00001", changed.text)
    ids = [h["id"] for h in search(registry, encoder, "docs", "sailing boats at sea", k=60).results]
    assert sorted(ids) == sorted(d.id for d in corpus(60))  # the replaced row is never returned

    result = writer.apply("docs", [job("docs", deletes=["doc-00001", "no-such-doc"])])
    assert (result.version, result.deleted) == (3, 1)
    assert result.segments == 1  # the replacement's segment lost its only row and left the version
    ids = {h["id"] for h in search(registry, encoder, "docs", "sailing boats at sea", k=60).results}
    assert "doc-00001" not in ids and len(ids) == 59
    assert registry.get("docs").describe()["documents"] == 59


def test_reingesting_the_same_documents_is_a_no_op(writer, store):
    docs = corpus(20)
    writer.apply("docs", [job("docs", upserts=docs)])
    again = writer.apply("docs", [job("docs", upserts=docs)])
    assert again.version is None and again.unchanged == 20
    assert store.current("docs") == 1
    # a restarted writer (no id map in memory) finds them unchanged too
    fresh = CollectionWriter(store, writer.encoder, IndexSettings(), writer.scratch_dir.parent / "fresh")
    assert fresh.apply("docs", [job("docs", upserts=docs)]).version is None
    # a delete of what is not there changes nothing either
    assert writer.apply("docs", [job("docs", deletes=["nope"])]).version is None
    assert store.versions("docs") == [1]


def test_jobs_apply_in_order_within_a_batch(writer, registry, encoder):
    first = Document("x", "first text about cooking pasta")
    second = Document("x", "second text about climbing mountains")
    writer.apply("docs", [job("docs", upserts=[first], job_id="a"), job("docs", deletes=["x"], job_id="b"),
                          job("docs", upserts=[second], job_id="c")])
    hit = search(registry, encoder, "docs", "mountains", k=1).results[0]
    assert (hit["id"], hit["text"]) == ("x", second.text)
    assert len(registry.get("docs")) == 1


def test_deletes_stay_deleted_across_later_writes(writer, store, registry, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(20))])
    writer.apply("docs", [job("docs", deletes=["doc-00004", "doc-00005"])])
    for round_ in range(3):  # later writes land in segments of their own; the deletes hold
        writer.apply("docs", [job("docs", upserts=corpus(5, start=100 + 5 * round_), job_id=f"w{round_}")])
    writer.apply("docs", [job("docs", upserts=[Document("doc-00005", "back again, about knitting")])])

    records = live_records(store, "docs", tmp_path / "check")
    assert "doc-00004" not in records and records["doc-00005"]["text"] == "back again, about knitting"
    assert len(records) == 20 - 2 + 15 + 1
    ids = [h["id"] for h in search(registry, encoder, "docs", "knitting", k=100).results]
    assert "doc-00004" not in ids and ids.count("doc-00005") == 1 and len(ids) == len(set(ids)) == len(records)


# -- a write costs what it changes --------------------------------------------------------------


def test_a_write_stores_one_segment_and_touches_no_other_segments_files(writer, store, monkeypatch):
    docs = corpus(180)
    for number in range(3):  # s1-0, s2-0, s3-0: 60 rows each
        writer.apply("docs", [job("docs", upserts=docs[60 * number:60 * (number + 1)], job_id=f"b{number}")])
    old = store.manifest("docs", 3)
    before = stored_blobs(store, "docs")
    read: list[str] = []  # files the writer parses (the store's own verification aside)
    for name in ("read_ids", "read_deletes"):
        real = getattr(writer_module, name)
        monkeypatch.setattr(writer_module, name, lambda path, *a, real=real: read.append(Path(path).name) or
                            real(path, *a))

    result = writer.apply("docs", [job("docs", upserts=[
        Document("doc-00005", "Replaced: a text about sailing boats."),  # s1-0 row 5
        Document("fresh", "A new document about gardening."),
        docs[130],  # unchanged (s3-0): a no-op
    ], deletes=["doc-00067"])])  # s2-0 row 7

    assert (result.version, result.upserted, result.deleted, result.unchanged) == (4, 2, 1, 1)
    new = store.manifest("docs", 4)
    assert [s.id for s in new.segments] == ["s1-0", "s2-0", "s3-0", "s4-0"]
    added = new.segment("s4-0")
    assert added.rows == 2 and added.index is None  # a small segment: searched exactly
    assert new.segment("s3-0") == old.segment("s3-0")  # untouched: the same entry
    for segment_id, row in (("s1-0", 5), ("s2-0", 7)):  # touched: same files, a new deletion vector
        entry = new.segment(segment_id)
        assert entry.files() == old.segment(segment_id).files()
        assert entry.deleted == 1 and old.segment(segment_id).deletes is None
        assert np.load(blob_path(store, "docs", entry.deletes.sha256)).tolist() == [row]

    after = stored_blobs(store, "docs")
    created = set(after) - set(before)
    assert created == {ref.sha256 for ref in added.files().values()} | \
        {new.segment("s1-0").deletes.sha256, new.segment("s2-0").deletes.sha256}
    assert {sha: after[sha] for sha in before} == before  # no other blob rewritten, nor even re-put
    assert read and set(read) <= created  # a warm writer reads no other segment's files either

    assert result.bytes_written == sum(after[sha][0] for sha in created) + len(new.to_json())
    assert result.bytes_written * 10 < sum(s.bytes for s in old.segments)


# -- search over several segments ----------------------------------------------------------------


def segmented_history(writer) -> dict[str, Document]:
    """Four writes (four segments) with documents replaced and deleted across them; the
    live documents, by id."""
    live: dict[str, Document] = {}

    def apply(upserts=(), deletes=()):
        writer.apply("docs", [job("docs", upserts=upserts, deletes=deletes)])
        live.update((d.id, d) for d in upserts)
        for doc_id in deletes:
            live.pop(doc_id, None)

    docs = corpus(60, rare_topic_every=7)
    apply(docs[:25])
    apply([*docs[25:45], Document("doc-00003", "Sailing boats cross the open sea at dawn.", {"topic": "sailing"})])
    apply([Document("doc-00035", "A regatta of sailing yachts in a storm.", {"topic": "sailing", "rare": True})],
          deletes=["doc-00010", "doc-00030", "doc-00014"])
    apply([*docs[45:], Document("doc-00003", "Concert 3 again: a string quartet plays Schubert.",
                                {"topic": "music", "rare": True})])
    return live


QUERIES = ["boats on the open sea", "a symphony by Beethoven", "serverless cold starts"]
FILTERS = [None, {"topic": "music"}, {"rare": True}, {"topic": "sailing"}, {"topic": "music", "rare": True}]


def test_search_over_several_segments_equals_an_exact_ranking_of_the_live_documents(writer, registry, encoder):
    live = segmented_history(writer)
    loaded = registry.get("docs")
    assert len(loaded.segments) == 4 and loaded.manifest.deleted == 6 and len(loaded) == len(live) == 57
    for query in QUERIES:
        vector = encoder.embed([query])[0]
        for where in FILTERS:
            expected = exact_ranking(encoder, live, query, where)
            page = loaded.search(vector, k=100, offset=0, where=where, include_text=True)
            assert [h["id"] for h in page.results] == [i for i, _ in expected], (query, where)
            assert [h["score"] for h in page.results] == pytest.approx([s for _, s in expected], abs=2e-6)
            assert page.next_offset is None
            for hit in page.results:  # the live row of each id: its latest text and metadata
                assert (hit["text"], hit["metadata"]) == (live[hit["id"]].text, dict(live[hit["id"]].metadata))

        expected = exact_ranking(encoder, live, query, {"rare": False})
        pages, offset = [], 0
        while offset is not None:
            page = loaded.search(vector, k=7, offset=offset, where={"rare": False}, include_text=False)
            assert len(page.results) == min(7, len(expected) - offset)
            assert page.next_offset == (offset + 7 if offset + 7 < len(expected) else None)
            pages += page.results
            offset = page.next_offset
        assert [h["id"] for h in pages] == [i for i, _ in expected]


def test_filters_return_k_results_when_k_documents_match(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(300, rare_topic_every=50))])  # 6 rare documents
    writer.apply("docs", [job("docs", upserts=corpus(300, rare_topic_every=50, start=300))])  # 6 more
    for k in (1, 10, 12):
        page = search(registry, encoder, "docs", "a concert of classical music", k=k, where={"rare": True})
        assert len(page.results) == k
        assert all(hit["metadata"]["rare"] is True for hit in page.results)
    page = search(registry, encoder, "docs", "anything", k=20, where={"rare": True})
    assert len(page.results) == 12 and page.next_offset is None
    both = search(registry, encoder, "docs", "anything", k=20, where={"rare": True, "topic": "cloud"})
    assert both.results and all(h["metadata"]["topic"] == "cloud" and h["metadata"]["rare"] for h in both.results)
    assert search(registry, encoder, "docs", "anything", where={"topic": "none"}).results == []


def test_pagination_is_stable_and_ends_with_null(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(20))])
    writer.apply("docs", [job("docs", upserts=corpus(20, start=20))])
    query = "a football match in the second half"
    whole = search(registry, encoder, "docs", query, k=40)
    assert whole.next_offset is None and len(whole.results) == 40
    pages, offset = [], 0
    while offset is not None:
        page = search(registry, encoder, "docs", query, k=7, offset=offset)
        pages += page.results
        offset = page.next_offset
    assert [h["id"] for h in pages] == [h["id"] for h in whole.results]
    assert search(registry, encoder, "docs", query, k=5, offset=40).results == []


def test_include_text_false_leaves_text_out(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(6))])
    hit = search(registry, encoder, "docs", "music", k=1, include_text=False).results[0]
    assert set(hit) == {"id", "score", "metadata"}


def test_unknown_collection_is_not_found(registry):
    with pytest.raises(CollectionNotFound):
        registry.get("nothing-here")


# -- the registry: sync by manifest diff, refusal of damaged versions -----------------------------


def test_the_registry_syncs_a_new_version_by_manifest_diff(writer, registry, store, encoder, monkeypatch):
    writer.apply("docs", [job("docs", upserts=corpus(20))])
    writer.apply("docs", [job("docs", upserts=corpus(20, start=20))])
    old = registry.get("docs")
    assert [s.entry.id for s in old.segments] == ["s1-0", "s2-0"]

    opened: list[str] = []
    read: list[str] = []
    real_open, real_blob = LoadedSegment.open.__func__, store.blob
    monkeypatch.setattr(LoadedSegment, "open",
                        classmethod(lambda cls, entry, *a: opened.append(entry.id) or real_open(cls, entry, *a)))
    monkeypatch.setattr(store, "blob", lambda c, ref, cache=None: read.append(ref.sha256) or real_blob(c, ref, cache))

    writer.apply("docs", [job("docs", upserts=corpus(5, start=40), deletes=["doc-00003"])])
    read.clear()  # what the registry reads, not the writer
    new = registry.get("docs")

    assert new.version == 3 and new is not old
    assert opened == ["s3-0"]  # only the new segment is opened...
    added = store.manifest("docs", 3).segment("s3-0")
    assert set(read) == {added.vectors.sha256, added.docs.sha256,  # ...and only it and a deletion vector read
                         store.manifest("docs", 3).segment("s1-0").deletes.sha256}
    assert new.segments[0] is old.segments[0] and new.segments[1] is old.segments[1]  # the others are shared
    assert new.segments[2].entry.id == "s3-0"

    query = encoder.embed(["Concert 3: the orchestra"])[0]
    old_ids = [h["id"] for h in old.search(query, k=100, offset=0, where=None, include_text=False).results]
    new_ids = [h["id"] for h in new.search(query, k=100, offset=0, where=None, include_text=False).results]
    assert "doc-00003" in old_ids and len(old_ids) == 40  # the old version keeps its own deletion masks
    assert "doc-00003" not in new_ids and len(new_ids) == 44

    # a delete-only write that empties a segment: nothing opened, the rest still shared
    writer.apply("docs", [job("docs", deletes=[d.id for d in corpus(20, start=20)])])
    newer = registry.get("docs")
    assert opened == ["s3-0"]
    assert [s.entry.id for s in newer.segments] == ["s1-0", "s3-0"]
    assert newer.segments[0] is old.segments[0] and newer.segments[1] is new.segments[2]
    assert len(newer) == 24


@pytest.mark.parametrize("damage", ["new segment vectors", "new segment docs", "deletion vector", "manifest"])
def test_a_corrupted_version_is_refused_and_the_old_one_stays_live(writer, registry, store, encoder, tmp_path,
                                                                   damage):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    assert registry.get("docs").version == 1
    writer.apply("docs", [job("docs", upserts=[Document("new", "a new document about tennis")],
                              deletes=["doc-00001"])])
    damaged = {
        "new segment vectors": lambda: blob_path(store, "docs", added_segment(store, "docs", 2).vectors.sha256),
        "new segment docs": lambda: blob_path(store, "docs", added_segment(store, "docs", 2).docs.sha256),
        "deletion vector": lambda: blob_path(store, "docs", store.manifest("docs", 2).segment("s1-0").deletes.sha256),
        "manifest": lambda: tmp_path / "data" / "collections" / "docs" / "versions" / "v2.json",
    }[damage]()
    flip_byte(damaged)

    live = registry.get("docs")
    assert live.version == 1  # v2 refused
    check = registry.health()
    assert check.status == "degraded" and "v2" in check.detail and "serving v1" in check.detail
    assert search(registry, encoder, "docs", "tennis", k=3).index_version == 1


def test_a_cold_instance_serves_the_newest_older_version_when_the_live_one_is_corrupt(
        writer, store, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    writer.apply("docs", [job("docs", upserts=[Document("new", "a new document about tennis")])])
    flip_byte(blob_path(store, "docs", added_segment(store, "docs", 2).vectors.sha256))

    # a new instance (nothing live yet) serves v1, degraded, instead of answering 503
    cold = CollectionRegistry(store, tmp_path / "cold", recheck_seconds=0, model_id=encoder.model_id,
                              dimensions=encoder.dimensions)
    assert cold.get("docs").version == 1
    check = cold.health()
    assert check.status == "degraded" and "v2 refused (snapshot_corrupt), serving v1" in check.detail


def test_a_refused_version_is_tried_again_after_the_back_off_and_heals(writer, store, encoder, tmp_path):
    now = [0.0]
    registry = CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions, clock=lambda: now[0], retry_refused_seconds=60)
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    assert registry.get("docs").version == 1
    writer.apply("docs", [job("docs", upserts=[Document("new", "a new document about tennis")])])
    damaged = blob_path(store, "docs", added_segment(store, "docs", 2).docs.sha256)
    original = flip_byte(damaged)
    assert registry.get("docs").version == 1  # v2 refused

    damaged.write_bytes(original)  # the store is repaired
    now[0] = 59.0
    assert registry.get("docs").version == 1  # still inside the back-off: not fetched again
    now[0] = 60.0
    assert registry.get("docs").version == 2  # tried again: it verifies now, and is swapped in
    assert registry.health().status == "healthy"


def test_a_snapshot_built_by_another_model_is_refused(writer, store, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(5))])
    registry = CollectionRegistry(store, tmp_path / "cache2", recheck_seconds=0, model_id="another-model",
                                  dimensions=encoder.dimensions)
    with pytest.raises(Exception, match="no usable version"):
        registry.get("docs")
    assert registry.health().status == "degraded"


# -- concurrency -----------------------------------------------------------------------------------


def test_in_flight_searches_keep_their_version_across_a_swap(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    old = registry.get("docs")
    writer.apply("docs", [job("docs", deletes=[d.id for d in corpus(30)[:10]])])
    new = registry.get("docs")
    assert (old.version, new.version) == (1, 2)
    # the old object still answers, from its own (immutable) files and deletion masks
    assert len(old.search(encoder.embed(["music"])[0], k=30, offset=0, where=None, include_text=False).results) == 30
    assert len(new.search(encoder.embed(["music"])[0], k=30, offset=0, where=None, include_text=False).results) == 20


def test_searches_keep_answering_while_writes_land(writer, registry, encoder, store, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(200))])
    query = encoder.embed(["a symphony concert"])[0]
    errors, answered, stop = [], [0], threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                page = registry.get("docs").search(query, k=5, offset=0, where=None, include_text=True)
                assert page.results
                answered[0] += 1
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for round_ in range(6):
            extra = [Document(f"extra-{round_}-{i}", f"extra document {i} of round {round_}") for i in range(10)]
            writer.apply("docs", [job("docs", upserts=extra, job_id=f"u{round_}")])
            writer.apply("docs", [job("docs", deletes=[f"doc-{round_:05d}"], job_id=f"d{round_}")])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert answered[0] > 0
    assert registry.get("docs").version == 13
    assert len(registry.get("docs")) == 200 + 60 - 6
    assert len(registry.get("docs").segments) == 7  # one per upsert write; deletes add none
    assert len(live_records(store, "docs", tmp_path / "check")) == 254


# -- the consumer and crash safety -------------------------------------------------------------------


def test_consumer_applies_an_sqs_batch_and_reports_failures(writer, store):
    good = job("docs", upserts=corpus(5), job_id="job-good")
    messages = [message(good.to_json(), message_id="m1"),
                message("{not json", message_id="m2", group="broken")]
    outcome = consume(sqs_event(messages)["Records"], writer)
    assert outcome.response() == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert outcome.poison == [] and outcome.deferred == []
    assert store.current("docs") == 1


def test_a_failed_write_leaves_the_live_version_and_fails_the_collections_messages(writer, store, monkeypatch):
    writer.apply("docs", [job("docs", upserts=corpus(5))])

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ragserve.ingest.writer.store_segment", explode)
    body = job("docs", upserts=[Document("new", "text")], job_id="job-x").to_json()
    outcome = consume(sqs_event([message(body)])["Records"], writer)
    assert outcome.failed_message_ids == ["m1"]
    assert [r["messageId"] for r in outcome.deferred] == ["m1"]  # a storage fault: retried, never poison
    assert store.current("docs") == 1


def break_current(store, tmp_path):
    (tmp_path / "data" / "collections" / "docs" / "CURRENT").write_bytes(b"\x00garbage\n")


def break_manifest(store, tmp_path):
    flip_byte(tmp_path / "data" / "collections" / "docs" / "versions" / "v1.json")


def break_segment_ids(store, tmp_path):
    flip_byte(blob_path(store, "docs", store.manifest("docs", 1).segment("s1-0").ids.sha256))


@pytest.mark.parametrize("damage", [break_current, break_manifest, break_segment_ids])
def test_an_unreadable_store_defers_the_messages_never_poisons_them(store, encoder, tmp_path, damage):
    CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s1").apply(
        "docs", [job("docs", upserts=corpus(5))])
    original = {p: p.read_bytes() for p in (tmp_path / "data" / "collections" / "docs").rglob("*") if p.is_file()}
    damage(store, tmp_path)
    writer = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s2")  # cold: reads every segment's ids
    body = job("docs", upserts=[Document("late", "a document waiting for the repair")], job_id="job-late").to_json()
    records = sqs_event([message(body, receive_count=MAX_ATTEMPTS + 3)])["Records"]

    outcome = consume(records, writer)

    assert outcome.failed_message_ids == ["m1"] and [r["messageId"] for r in outcome.deferred] == ["m1"]
    assert outcome.poison == [] and outcome.results == []
    assert outcome.fault and "docs" in outcome.fault

    for path, data in original.items():  # repaired: the same messages land
        path.write_bytes(data)
    outcome = consume(records, writer)
    assert outcome.failed_message_ids == [] and outcome.results[0].version == 2
    assert "late" in live_records(store, "docs", tmp_path / "check")


class BrokenEncoder:
    """An encoder with a bug: embedding raises (not a storage fault)."""

    def __init__(self, encoder) -> None:
        self.model_id, self.dimensions, self.threads = encoder.model_id, encoder.dimensions, encoder.threads

    def embed(self, texts):
        raise RuntimeError("a bug in the encoder")


def test_a_non_storage_error_is_retried_then_poison_after_max_attempts(writer, store, monkeypatch):
    writer.apply("docs", [job("docs", upserts=corpus(5))])
    monkeypatch.setattr(writer, "encoder", BrokenEncoder(writer.encoder))
    body = job("docs", upserts=[Document("new", "some text")], job_id="job-bug").to_json()

    retried = consume(sqs_event([message(body, receive_count=MAX_ATTEMPTS - 1)])["Records"], writer)
    assert retried.failed_message_ids == ["m1"] and retried.deferred == [] and retried.poison == []

    poisoned = consume(sqs_event([message(body, receive_count=MAX_ATTEMPTS)])["Records"], writer)
    assert poisoned.failed_message_ids == [] and poisoned.deferred == []
    assert [r["messageId"] for r in poisoned.poison] == ["m1"]
    assert store.current("docs") == 1


def test_a_writer_that_dies_before_its_commit_loses_nothing_and_doubles_nothing(store, encoder, tmp_path,
                                                                                monkeypatch):
    CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s1").apply("docs", [job("docs", upserts=corpus(10))])
    update = job("docs", upserts=[Document("doc-00002", "Replaced: a text about kayaks."),
                                  Document("added", "A document about rock climbing.")],
                 deletes=["doc-00007"], job_id="job-1")
    records = sqs_event([message(update.to_json())])["Records"]

    # killed after storing its blobs and its manifest, before swapping CURRENT
    import ragserve.snapshots.local as local

    real_write = local.atomic_write_text

    def die_at_the_swap(path, text):
        if path.name == "CURRENT":
            raise OSError("killed")
        real_write(path, text)

    monkeypatch.setattr(local, "atomic_write_text", die_at_the_swap)
    outcome = consume(records, CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s2"))
    assert outcome.failed_message_ids == ["m1"] and outcome.poison == []
    monkeypatch.undo()
    assert store.current("docs") == 1 and store.versions("docs") == [1, 2]  # v2 was never made live

    # the restarted writer applies the redelivered job on v1 (the crashed number is not reused)
    restarted = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s3")
    outcome = consume(records, restarted)
    assert outcome.failed_message_ids == [] and outcome.results[0].version == 3
    assert store.manifest("docs", 3).parent == 1
    live = live_records(store, "docs", tmp_path / "check")
    assert set(live) == {d.id for d in corpus(10)} - {"doc-00007"} | {"added"}
    assert live["doc-00002"]["text"] == "Replaced: a text about kayaks."

    # killed after the swap, before the acknowledgement: the redelivery is a no-op
    again = consume(records, CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s4"))
    assert again.failed_message_ids == [] and again.results[0].version is None
    assert again.results[0].unchanged == 2
    assert store.current("docs") == 3 and live_records(store, "docs", tmp_path / "check") == live


# -- the local layout, and S3 -------------------------------------------------------------------------


def test_local_layout(writer, store, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(5))])
    cdir = tmp_path / "data" / "collections" / "docs"
    manifest = store.manifest("docs", 1)

    assert (cdir / "CURRENT").read_text().strip() == "1"
    assert sorted(p.name for p in (cdir / "versions").iterdir()) == ["v1.json"]
    assert sorted(p.name for p in (cdir / "blobs").iterdir()) == sorted(manifest.blobs())
    assert store.blob("docs", manifest.segment("s1-0").docs) == cdir / "blobs" / manifest.segment("s1-0").docs.sha256


def test_s3_store_end_to_end(encoder, s3_client, s3_bucket, tmp_path):
    store = S3SnapshotStore(s3_bucket, "ragserve/", client=s3_client)
    writer = CollectionWriter(store, encoder, IndexSettings(dtype="i8", hnsw_min_rows=20), tmp_path / "scratch")
    writer.apply("docs", [job("docs", upserts=corpus(40))])
    registry = CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions)
    page = search(registry, encoder, "docs", "recipes with flour and butter", k=3)
    assert page.index_version == 1
    assert all(h["metadata"]["topic"] == "cooking" for h in page.results)
    assert registry.get("docs").manifest.dtype == "i8"
    assert registry.get("docs").segments[0].entry.index is not None  # 40 rows: an i8 HNSW graph

    cached = tmp_path / "cache" / "docs" / "blobs"
    before = set(os.listdir(cached))
    writer.apply("docs", [job("docs", deletes=["doc-00002"])])  # a cooking document
    assert registry.get("docs").version == 2
    ids = [h["id"] for h in search(registry, encoder, "docs", "recipes with flour and butter", k=40).results]
    assert "doc-00002" not in ids and len(ids) == 39
    # the new version downloaded nothing but its deletion vector
    assert set(os.listdir(cached)) - before == {store.manifest("docs", 2).segment("s1-0").deletes.sha256}
    assert set(live_records(store, "docs", tmp_path / "check")) == {d.id for d in corpus(40)} - {"doc-00002"}


def test_s3_store_is_not_imported_with_the_package():
    code = "import sys, ragserve.snapshots; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": "layers"},
                   cwd=Path(__file__).resolve().parents[2])


def test_dtypes_give_the_same_top_hits(encoder, tmp_path):
    docs = corpus(120)
    tops = {}
    for dtype in ("f16", "i8", "b1"):
        store = LocalSnapshotStore(tmp_path / dtype)
        CollectionWriter(store, encoder, IndexSettings(dtype=dtype, hnsw_min_rows=50), tmp_path / f"s-{dtype}").apply(
            "docs", [job("docs", upserts=docs)])
        registry = CollectionRegistry(store, tmp_path / f"c-{dtype}", recheck_seconds=0,
                                      model_id=encoder.model_id, dimensions=encoder.dimensions)
        assert registry.get("docs").segments[0].index.has_graph
        page = search(registry, encoder, "docs", "an orchestra playing Beethoven", k=5)
        tops[dtype] = [h["id"] for h in page.results]
        scores = np.array([h["score"] for h in page.results])
        assert np.all(np.diff(scores) <= 1e-6)
        shutil.rmtree(tmp_path / f"c-{dtype}", ignore_errors=True)
    assert tops["f16"] == tops["i8"] == tops["b1"]
