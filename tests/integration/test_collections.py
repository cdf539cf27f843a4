"""Collections end to end in one process: the single writer publishes versions, the
registry hot-swaps them, search filters and paginates, a corrupted version is refused,
and searches keep answering while writes land. Real model, real usearch, real stores
(a local directory, and S3 on moto in server mode)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from ragserve.documents import Document
from ragserve.ingest.consumer import consume
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.local.events import sqs_event
from ragserve.search.registry import CollectionRegistry
from ragserve.settings import IndexSettings
from ragserve.snapshots.errors import CollectionNotFound
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.s3 import S3SnapshotStore
from tests.corruption import flip_byte

TOPICS = ["cloud", "search", "cooking", "sport", "music", "history"]
SENTENCES = {
    "cloud": "Serverless function {i} scales to zero and starts cold in under a second.",
    "search": "Vector index {i} answers nearest-neighbour queries over embeddings.",
    "cooking": "Recipe {i}: stir the flour into the butter and bake for twenty minutes.",
    "sport": "Match report {i}: the home team scored twice in the second half.",
    "music": "Concert {i}: the orchestra played a symphony by Beethoven.",
    "history": "Chapter {i}: the empire expanded along the river valleys.",
}


def corpus(n: int, rare_topic_every: int = 0) -> list[Document]:
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rare = bool(rare_topic_every) and i % rare_topic_every == 0
        docs.append(Document(f"doc-{i:05d}", SENTENCES[topic].format(i=i), {"topic": topic, "rare": rare}))
    return docs


def job(collection: str, *, upserts=(), deletes=(), job_id="j") -> IngestJob:
    return IngestJob(job_id, 0, collection, tuple(upserts), tuple(deletes))


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


def test_upsert_search_update_delete(writer, registry, encoder):
    result = writer.apply("docs", [job("docs", upserts=corpus(60))])
    assert (result.version, result.upserted, result.documents) == (1, 60, 60)

    page = search(registry, encoder, "docs", "which index answers nearest neighbour queries?")
    assert page.index_version == 1
    assert all(hit["metadata"]["topic"] == "search" for hit in page.results)
    assert page.results[0]["score"] >= page.results[-1]["score"]

    changed = Document("doc-00001", "A brand new text about sailing boats on the open sea.", {"topic": "sailing"})
    assert writer.apply("docs", [job("docs", upserts=[changed])]).version == 2
    top = search(registry, encoder, "docs", "sailing boats at sea", k=1).results[0]
    assert (top["id"], top["text"]) == ("doc-00001", changed.text)

    assert writer.apply("docs", [job("docs", deletes=["doc-00001", "no-such-doc"])]).version == 3
    ids = {h["id"] for h in search(registry, encoder, "docs", "sailing boats at sea", k=60).results}
    assert "doc-00001" not in ids and len(ids) == 59
    assert registry.get("docs").describe()["documents"] == 59


def test_reingesting_the_same_documents_is_a_no_op(writer, store):
    docs = corpus(20)
    writer.apply("docs", [job("docs", upserts=docs)])
    again = writer.apply("docs", [job("docs", upserts=docs)])
    assert again.version is None and again.unchanged == 20
    assert store.current("docs") == 1


def test_jobs_apply_in_order_within_a_batch(writer, registry, encoder):
    first = Document("x", "first text about cooking pasta")
    second = Document("x", "second text about climbing mountains")
    writer.apply("docs", [job("docs", upserts=[first], job_id="a"), job("docs", deletes=["x"], job_id="b"),
                          job("docs", upserts=[second], job_id="c")])
    hit = search(registry, encoder, "docs", "mountains", k=1).results[0]
    assert (hit["id"], hit["text"]) == ("x", second.text)


def test_filters_return_k_results_when_k_documents_match(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(600, rare_topic_every=50))])  # 12 rare documents
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
    writer.apply("docs", [job("docs", upserts=corpus(40))])
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


def test_a_corrupted_version_is_refused_and_the_old_one_stays_live(writer, registry, store, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    assert registry.get("docs").version == 1
    writer.apply("docs", [job("docs", upserts=[Document("new", "a new document about tennis")])])
    flip_byte(tmp_path / "data" / "collections" / "docs" / "v2" / "index.usearch")

    live = registry.get("docs")
    assert live.version == 1  # v2 refused
    check = registry.health()
    assert check.status == "degraded" and "v2" in check.detail and "serving v1" in check.detail
    assert search(registry, encoder, "docs", "tennis", k=3).index_version == 1


def test_a_cold_instance_serves_the_newest_older_version_when_the_live_one_is_corrupt(
        writer, store, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    writer.apply("docs", [job("docs", upserts=[Document("new", "a new document about tennis")])])
    flip_byte(tmp_path / "data" / "collections" / "docs" / "v2" / "index.usearch")

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
    index_file = tmp_path / "data" / "collections" / "docs" / "v2" / "index.usearch"
    original = flip_byte(index_file)
    assert registry.get("docs").version == 1  # v2 refused

    index_file.write_bytes(original)  # the store is repaired
    now[0] = 59.0
    assert registry.get("docs").version == 1  # still inside the back-off: not fetched again
    now[0] = 60.0
    assert registry.get("docs").version == 2  # tried again: it verifies now, and is swapped in
    assert registry.health().status == "healthy"


def test_in_flight_searches_keep_their_version_across_a_swap(writer, registry, encoder):
    writer.apply("docs", [job("docs", upserts=corpus(30))])
    old = registry.get("docs")
    writer.apply("docs", [job("docs", deletes=[d.id for d in corpus(30)[:10]])])
    new = registry.get("docs")
    assert (old.version, new.version) == (1, 2)
    # the old object still answers, from its own (immutable) files
    assert len(old.search(encoder.embed(["music"])[0], k=30, offset=0, where=None, include_text=False).results) == 30
    assert len(new.search(encoder.embed(["music"])[0], k=30, offset=0, where=None, include_text=False).results) == 20


def test_searches_keep_answering_while_writes_land(writer, registry, encoder):
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


def test_consumer_applies_an_sqs_batch_and_reports_failures(writer, store):
    good = job("docs", upserts=corpus(5), job_id="job-good")
    messages = [
        {"message_id": "m1", "receipt": "r1", "group": "docs", "body": good.to_json(), "receive_count": 1},
        {"message_id": "m2", "receipt": "r2", "group": "broken", "body": "{not json", "receive_count": 1},
    ]
    outcome = consume(sqs_event(messages)["Records"], writer)
    assert outcome.response() == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert store.current("docs") == 1


def test_a_failed_write_leaves_the_live_version_and_fails_the_collections_messages(writer, store, monkeypatch):
    writer.apply("docs", [job("docs", upserts=corpus(5))])

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ragserve.ingest.writer.write_snapshot", explode)
    body = job("docs", upserts=[Document("new", "text")], job_id="job-x").to_json()
    outcome = consume(sqs_event([{"message_id": "m1", "receipt": "r", "group": "docs", "body": body,
                                  "receive_count": 1}])["Records"], writer)
    assert outcome.failed_message_ids == ["m1"]
    assert store.current("docs") == 1


def test_s3_store_end_to_end(encoder, s3_client, s3_bucket, tmp_path):
    store = S3SnapshotStore(s3_bucket, "ragserve/", client=s3_client)
    writer = CollectionWriter(store, encoder, IndexSettings(dtype="i8"), tmp_path / "scratch")
    writer.apply("docs", [job("docs", upserts=corpus(40))])
    registry = CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions)
    page = search(registry, encoder, "docs", "recipes with flour and butter", k=3)
    assert page.index_version == 1
    assert all(h["metadata"]["topic"] == "cooking" for h in page.results)
    assert registry.get("docs").meta.dtype == "i8"
    writer.apply("docs", [job("docs", deletes=["doc-00002"])])  # a cooking document
    assert registry.get("docs").version == 2
    ids = [h["id"] for h in search(registry, encoder, "docs", "recipes with flour and butter", k=40).results]
    assert "doc-00002" not in ids and len(ids) == 39


def test_a_snapshot_built_by_another_model_is_refused(writer, store, encoder, tmp_path):
    writer.apply("docs", [job("docs", upserts=corpus(5))])
    registry = CollectionRegistry(store, tmp_path / "cache2", recheck_seconds=0, model_id="another-model",
                                  dimensions=encoder.dimensions)
    with pytest.raises(Exception, match="no usable version"):
        registry.get("docs")
    assert registry.health().status == "degraded"


def test_dtypes_give_the_same_top_hits(encoder, tmp_path):
    docs = corpus(120)
    tops = {}
    for dtype in ("f16", "i8", "b1"):
        store = LocalSnapshotStore(tmp_path / dtype)
        CollectionWriter(store, encoder, IndexSettings(dtype=dtype), tmp_path / f"s-{dtype}").apply(
            "docs", [job("docs", upserts=docs)])
        registry = CollectionRegistry(store, tmp_path / f"c-{dtype}", recheck_seconds=0,
                                      model_id=encoder.model_id, dimensions=encoder.dimensions)
        page = search(registry, encoder, "docs", "an orchestra playing Beethoven", k=5)
        tops[dtype] = [h["id"] for h in page.results]
        scores = np.array([h["score"] for h in page.results])
        assert np.all(np.diff(scores) <= 1e-6)
        shutil.rmtree(tmp_path / f"c-{dtype}", ignore_errors=True)
    assert tops["f16"] == tops["i8"] == tops["b1"]
