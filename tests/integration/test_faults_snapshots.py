"""Snapshot faults on the ``s3`` store (moto in server mode, reached over HTTP by the
boto3 client of a real `ragserve serve`): a live version that cannot be read (its
manifest altered or missing, ``CURRENT`` garbage, a blob gone) is never served and
never published past; the old version keeps answering where one is loaded, a
collection with no usable version answers a clear 503, /health says degraded, writes
are accepted and held in the queue (never dead-lettered), and once the store is
repaired they land: every document answered 202 present exactly once, every deleted
one absent.

Where each fault of issue 6 is tested (all in tests/integration/ unless noted):

- Redis down (query cache): test_cache_faults.py::test_requests_succeed_with_redis_killed_and_dynamodb_unreachable
  (over HTTP), test_cache_redis.py::test_redis_killed_mid_run_degrades_to_misses_then_recovers and
  ::test_a_hung_redis_costs_at_most_the_timeout_then_nothing (the cache alone).
- DynamoDB unreachable (embedding cache, idempotency store): the same test_cache_faults.py test,
  test_cache_dynamodb.py, test_idempotency.py::test_an_unreachable_store_lets_the_write_through.
- Snapshot corrupted or missing: this module (s3); on the local store over HTTP,
  test_serve_collections.py::test_a_damaged_live_version_holds_writes_until_it_is_restored (a byte of a live
  segment's blob or of the live manifest),
  ::test_a_garbage_current_keeps_searches_on_the_loaded_version_and_holds_writes,
  ::test_a_next_version_with_an_altered_blob_is_refused_and_holds_writes_until_repaired;
  test_s3_store.py (both stores: blobs and manifests altered or missing).
- Model file missing or altered: test_faults_model.py (over HTTP: unhealthy, 503, accepted writes land once
  repaired), test_embed_handler.py::test_broken_model_still_imports_and_answers_503, tests/unit/test_manifest.py.
- Writer SIGKILLed mid-publish, compaction SIGKILLed mid-merge: test_serve_collections.py::
  test_a_writer_killed_mid_publish_loses_and_doubles_nothing,
  ::test_a_compaction_killed_mid_merge_loses_and_doubles_nothing.
- The local queue under storage faults (deferred, dead letters, redrive): tests/unit/test_local_queue.py.
- A burst above the rate limit: test_faults_rate_limit.py (over HTTP, reads and writes),
  test_local_server.py::test_token_bucket_answers_429_with_retry_after.
"""

from __future__ import annotations

import time

import pytest
from test_serve_collections import (
    WRITE_KEY,
    Server,
    assert_exactly_once,
    documents,
    held_back,
    hurry_deferred,
    queue_drained,
    queue_of,
    wait_until,
)

from ragserve.snapshots.s3 import S3SnapshotStore
from tests.corruption import flipped
from tests.integration.conftest import REGION

PREFIX = "ragserve/"
COLLECTION = "guarded"


def serve_on_s3(data_dir, moto_server: str, bucket: str, **env: str) -> Server:
    return Server(data_dir, demo=False, extra_env={
        "RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": bucket, "RAGSERVE_SNAPSHOT_PREFIX": PREFIX,
        "AWS_ENDPOINT_URL_S3": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, **env})


def key(name: str) -> str:
    """``CURRENT``, ``versions/v{N}.json`` or ``blobs/{sha256}`` of the collection."""
    return f"{PREFIX}collections/{COLLECTION}/{name}"


def get(s3, bucket: str, name: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key(name))["Body"].read()


def put(s3, bucket: str, name: str, data: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key(name), Body=data)


def ingest(server: Server, docs: list[dict]) -> list[dict]:
    status, body = server.request("POST", f"/v1/collections/{COLLECTION}/documents", {"documents": docs},
                                  key=WRITE_KEY)
    assert status == 202 and body["accepted"] == len(docs), body
    return docs


def delete(server: Server, doc_id: str) -> str:
    status, body = server.request("DELETE", f"/v1/collections/{COLLECTION}/documents/{doc_id}", key=WRITE_KEY)
    assert status == 202, body
    return doc_id


def wait_for_health(server: Server, status: str, timeout: float = 60.0) -> dict:
    """/health once it says ``status``; searches meanwhile trigger the pointer re-check."""
    deadline = time.monotonic() + timeout
    while True:
        _, health = server.request("GET", "/health", key="")
        if health["status"] == status:
            return health
        assert time.monotonic() < deadline, health
        server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        time.sleep(0.1)


def land_once_repaired(server: Server, store, tmp_path, count: int, *, accepted, deleted=()) -> dict:
    """The held-back jobs land (tried again at once, not after the backoff), exactly once."""
    wait_until("the held-back jobs land", lambda: queue_drained(server, COLLECTION),
               meanwhile=lambda: hurry_deferred(server.data_dir, COLLECTION))
    info = server.wait_for_documents(COLLECTION, count, timeout=60)
    assert "dead" not in queue_of(server.data_dir).counts()
    assert_exactly_once(store, COLLECTION, accepted=accepted, deleted=deleted, cache_dir=tmp_path / "check")
    health = wait_for_health(server, "healthy")
    assert health["checks"]["collections"] == "ok" and health["checks"]["writer"] == "ok", health
    return info


def forge(s3, bucket: str, damage: str) -> bytes:
    """Make ``CURRENT`` name something unreadable (a bad restore or replication); returns
    ``CURRENT`` as it was."""
    current = get(s3, bucket, "CURRENT")
    if damage == "manifest altered":  # a v2 copied from v1 with its version changed: its checksum fails
        put(s3, bucket, "versions/v2.json", get(s3, bucket, "versions/v1.json").replace(b'"version": 1',
                                                                                        b'"version": 2'))
    if damage == "pointer garbage":
        put(s3, bucket, "CURRENT", b"\x00garbage\n")
    else:  # "manifest missing": a v2 that was never stored
        put(s3, bucket, "CURRENT", b"2\n")
    return current


@pytest.mark.parametrize("damage", ["manifest altered", "manifest missing", "pointer garbage"])
def test_an_unreadable_next_version_on_s3_is_refused_and_holds_writes_until_repaired(
        tmp_path, moto_server, s3_client, s3_bucket, damage):
    server = serve_on_s3(tmp_path / "data", moto_server, s3_bucket)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        accepted = ingest(server, documents("first", 6))
        server.wait_for_documents(COLLECTION, 6)

        # GIVEN CURRENT names a v2 that is corrupt or not there, or is not a number at all
        original = forge(s3_client, s3_bucket, damage)
        forged = get(s3_client, s3_bucket, "CURRENT")

        # THEN v1 keeps answering, /health says degraded and why
        health = wait_for_health(server, "degraded")
        problem = "CURRENT unreadable (snapshot_corrupt)" if damage == "pointer garbage" else \
            f"v2 refused ({'snapshot_corrupt' if damage == 'manifest altered' else 'snapshot_missing'})"
        assert f"{COLLECTION}: {problem}, serving v1" in health["checks"]["collections"], health
        status, page = server.request("POST", "/v1/search", {"query": "topic 3", "collection": COLLECTION, "k": 2})
        assert status == 200 and page["index_version"] == 1

        # WHEN more documents are accepted THEN they wait in the queue: nothing is
        # published past what CURRENT names, nothing is dead-lettered
        accepted += ingest(server, documents("after", 4))
        deleted = [delete(server, "first-0")]
        held_back(server, COLLECTION)
        assert get(s3_client, s3_bucket, "CURRENT") == forged
        assert f"{COLLECTION}: writes held back by a storage fault (" in wait_for_health(
            server, "degraded")["checks"]["writer"]

        # WHEN CURRENT is repaired (back to the version that verifies) THEN they land
        put(s3_client, s3_bucket, "CURRENT", original)
        info = land_once_repaired(server, store, tmp_path, 6 + 4 - 1, accepted=accepted, deleted=deleted)
        assert info["index_version"] == (3 if damage == "manifest altered" else 2)
    finally:
        server.stop()


def test_a_live_manifest_altered_on_s3_holds_writes_and_the_next_version_keeps_its_documents(
        tmp_path, moto_server, s3_client, s3_bucket):
    server = serve_on_s3(tmp_path / "data", moto_server, s3_bucket)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        accepted = ingest(server, documents("first", 4))
        server.wait_for_documents(COLLECTION, 4)
        accepted += ingest(server, documents("second", 3))  # these exist from v2 on
        server.wait_for_documents(COLLECTION, 7)
    finally:
        server.stop()

    # GIVEN one byte of the live v2's manifest altered in the bucket, and a fresh instance
    manifest = get(s3_client, s3_bucket, "versions/v2.json")
    put(s3_client, s3_bucket, "versions/v2.json", flipped(manifest))
    server = serve_on_s3(tmp_path / "fresh", moto_server, s3_bucket)
    try:
        # THEN readers refuse v2 and serve v1, which verifies
        health = wait_for_health(server, "degraded")
        assert f"{COLLECTION}: v2 refused (snapshot_corrupt), serving v1" in health["checks"]["collections"], health
        status, page = server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        assert status == 200 and page["index_version"] == 1

        # WHEN more documents are accepted THEN the writer holds them: a version built on
        # v1 would lose v2's documents
        accepted += ingest(server, documents("third", 2))
        held_back(server, COLLECTION)
        assert store.current(COLLECTION) == 2 and store.versions(COLLECTION) == [1, 2]
        assert "store_unreadable" in wait_for_health(server, "degraded")["checks"]["writer"]

        # WHEN the manifest is restored THEN v3 holds v2's documents too: nothing lost
        put(s3_client, s3_bucket, "versions/v2.json", manifest)
        info = land_once_repaired(server, store, tmp_path, 9, accepted=accepted)
        assert info["index_version"] == 3
    finally:
        server.stop()


def test_a_live_blob_deleted_on_s3_gives_a_clear_503_and_nothing_is_lost_once_restored(
        tmp_path, moto_server, s3_client, s3_bucket):
    # retention at 0 s: only the live version is kept, so a fresh instance has nothing to fall back to
    env = {"RAGSERVE_RETENTION_SECONDS": "0"}
    first = serve_on_s3(tmp_path / "first", moto_server, s3_bucket, **env)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        accepted = ingest(first, documents("first", 5))
        first.wait_for_documents(COLLECTION, 5)
        deleted = [delete(first, "first-0")]  # v2: the segment of v1 with a deletion vector
        first.wait_for_documents(COLLECTION, 4)
        wait_until("retention leaves v2 alone", lambda: store.versions(COLLECTION) == [2])
    finally:
        first.stop()

    # GIVEN the live version's deletion vector (read by readers and the writer) deleted from the bucket
    deletes = store.manifest(COLLECTION, 2).segments[0].deletes
    kept = get(s3_client, s3_bucket, f"blobs/{deletes.sha256}")
    s3_client.delete_object(Bucket=s3_bucket, Key=key(f"blobs/{deletes.sha256}"))

    # WHEN a fresh instance (nothing cached) starts
    server = serve_on_s3(tmp_path / "fresh", moto_server, s3_bucket, **env)
    try:
        # THEN the collection answers a clear 503 and /health says degraded
        status, body = server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        assert status == 503, body
        assert body["error"]["code"] == "collection_unavailable"
        assert "v2 refused (snapshot_missing)" in body["error"]["message"] and body["error"]["request_id"]
        assert str(tmp_path) not in str(body)
        assert wait_for_health(server, "degraded")["checks"]["collections"].startswith(f"{COLLECTION}: v2 refused")

        # AND a write is still accepted, but never published over v2 without v2's deletions
        accepted += ingest(server, documents("during", 3))
        held_back(server, COLLECTION)
        assert store.current(COLLECTION) == 2
        assert "is missing blob" in wait_for_health(server, "degraded")["checks"]["writer"]

        # WHEN the blob is restored THEN the queued write lands on top of v2: nothing lost
        s3_client.put_object(Bucket=s3_bucket, Key=key(f"blobs/{deletes.sha256}"), Body=kept)
        info = land_once_repaired(server, store, tmp_path, 7, accepted=accepted, deleted=deleted)
        assert info["index_version"] == 3
    finally:
        server.stop()
