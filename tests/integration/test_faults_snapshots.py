"""Snapshot faults on the ``s3`` store (moto in server mode, reached over HTTP by the
boto3 client of a real `ragserve serve`): a bad next version is refused while the old
one keeps answering, a collection with no usable version answers a clear 503, /health
says degraded, the single writer publishes past the bad version, and no document that
was answered 202 is lost.

Where each fault of issue 6 is tested (all in tests/integration/ unless noted):

- Redis down (query cache): test_cache_faults.py::test_requests_succeed_with_redis_killed_and_dynamodb_unreachable
  (over HTTP), test_cache_redis.py::test_redis_killed_mid_run_degrades_to_misses_then_recovers and
  ::test_a_hung_redis_costs_at_most_the_timeout_then_nothing (the cache alone).
- DynamoDB unreachable (embedding cache, idempotency store): the same test_cache_faults.py test,
  test_cache_dynamodb.py, test_idempotency.py::test_an_unreachable_store_lets_the_write_through.
- Snapshot corrupted or missing: this module (s3), test_serve_collections.py::
  test_a_snapshot_with_a_wrong_sha256_is_refused_and_the_writer_publishes_past_it (local, over HTTP),
  test_collections.py::test_a_corrupted_version_is_refused_and_the_old_one_stays_live,
  test_snapshot_stores.py (both stores: byte flipped, unfinished and missing versions).
- Model file missing or altered: test_faults_model.py (over HTTP: unhealthy, 503, accepted writes land once
  repaired), test_embed_handler.py::test_broken_model_still_imports_and_answers_503, tests/unit/test_manifest.py.
- Writer SIGKILLed mid-build: test_serve_collections.py::test_a_writer_killed_mid_build_loses_nothing.
- A burst above the rate limit: test_faults_rate_limit.py (over HTTP, reads and writes),
  test_local_server.py::test_token_bucket_answers_429_with_retry_after.
"""

from __future__ import annotations

import json
import time

import pytest
from test_serve_collections import WRITE_KEY, Server, documents

from ragserve.snapshots.s3 import S3SnapshotStore
from tests.corruption import flipped
from tests.integration.conftest import REGION, live_document_ids

PREFIX = "ragserve/"
COLLECTION = "guarded"


def serve_on_s3(data_dir, moto_server: str, bucket: str) -> Server:
    return Server(data_dir, demo=False, extra_env={
        "RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": bucket, "RAGSERVE_SNAPSHOT_PREFIX": PREFIX,
        "AWS_ENDPOINT_URL_S3": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION})


def key(version: int | None, name: str) -> str:
    base = f"{PREFIX}collections/{COLLECTION}/"
    return base + (name if version is None else f"v{version}/{name}")


def ingest(server: Server, docs: list[dict]) -> set[str]:
    status, body = server.request("POST", f"/v1/collections/{COLLECTION}/documents", {"documents": docs},
                                  key=WRITE_KEY)
    assert status == 202 and body["accepted"] == len(docs), body
    return {d["id"] for d in docs}


def forge_next_version(s3, bucket: str, damage: str) -> None:
    """v2 as a botched copy of the live v1 (a bad restore or replication), made live."""
    if damage != "no files":
        for name in ("index.usearch", "vectors.f16.npy", "docs.jsonl", "manifest.json"):
            data = s3.get_object(Bucket=bucket, Key=key(1, name))["Body"].read()
            if name == "manifest.json":
                data = json.dumps({**json.loads(data), "version": 2}).encode()
            elif name == "index.usearch" and damage == "index altered":
                data = flipped(data)
            elif name == "docs.jsonl" and damage == "docs deleted":
                continue
            s3.put_object(Bucket=bucket, Key=key(2, name), Body=data)
    s3.put_object(Bucket=bucket, Key=key(None, "CURRENT"), Body=b"2\n")


def wait_for_health(server: Server, status: str, timeout: float = 30.0) -> dict:
    """/health once it says ``status``; searches meanwhile trigger the pointer re-check."""
    deadline = time.monotonic() + timeout
    while True:
        _, health = server.request("GET", "/health", key="")
        if health["status"] == status:
            return health
        assert time.monotonic() < deadline, health
        server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        time.sleep(0.1)


@pytest.mark.parametrize("damage", ["index altered", "docs deleted", "no files"])
def test_a_bad_next_version_on_s3_is_refused_and_the_writer_publishes_past_it(
        tmp_path, moto_server, s3_client, s3_bucket, damage):
    server = serve_on_s3(tmp_path / "data", moto_server, s3_bucket)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        accepted = ingest(server, documents("first", 6))
        server.wait_for_documents(COLLECTION, 6)

        # GIVEN CURRENT names a v2 that is corrupt, incomplete or not there at all
        forge_next_version(s3_client, s3_bucket, damage)

        # THEN v2 is refused, v1 keeps answering, /health says degraded and why
        health = wait_for_health(server, "degraded")
        assert f"{COLLECTION}: v2 refused" in health["checks"]["collections"], health
        assert "serving v1" in health["checks"]["collections"]
        status, page = server.request("POST", "/v1/search", {"query": "topic 3", "collection": COLLECTION, "k": 2})
        assert status == 200 and page["index_version"] == 1

        # WHEN more documents are accepted, THEN the writer publishes v3 past the bad v2
        accepted |= ingest(server, documents("after", 4))
        info = server.wait_for_documents(COLLECTION, 10, timeout=60)
        assert info["index_version"] == 3
        assert live_document_ids(store, COLLECTION, tmp_path / "check") == accepted
        assert wait_for_health(server, "healthy")["checks"]["collections"] == "ok"
        # The writer rebuilds the index from the documents and vectors, so only a version
        # whose data is damaged is skipped; an altered index alone is built upon.
        skipped = '"message":"live version unreadable' in server.read_log()
        assert skipped == (damage != "index altered")
    finally:
        server.stop()


def test_a_live_version_whose_index_is_altered_keeps_its_documents_in_the_next_one(
        tmp_path, moto_server, s3_client, s3_bucket):
    server = serve_on_s3(tmp_path / "data", moto_server, s3_bucket)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        accepted = ingest(server, documents("first", 4))
        server.wait_for_documents(COLLECTION, 4)
        accepted |= ingest(server, documents("second", 3))  # these exist in v2 only
        server.wait_for_documents(COLLECTION, 7)

        # GIVEN the live v2's index file is altered in the bucket, and a fresh instance reads it
        data = s3_client.get_object(Bucket=s3_bucket, Key=key(2, "index.usearch"))["Body"].read()
        s3_client.put_object(Bucket=s3_bucket, Key=key(2, "index.usearch"), Body=flipped(data))
    finally:
        server.stop()
    server = serve_on_s3(tmp_path / "fresh", moto_server, s3_bucket)
    try:
        # THEN readers refuse v2 and serve v1, which verifies
        health = wait_for_health(server, "degraded")
        assert "v2 refused (snapshot_corrupt), serving v1" in health["checks"]["collections"], health
        status, page = server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        assert status == 200 and page["index_version"] == 1

        # WHEN more documents are accepted, THEN v3 holds v2's documents too: nothing lost
        accepted |= ingest(server, documents("third", 2))
        info = server.wait_for_documents(COLLECTION, 9, timeout=60)
        assert info["index_version"] == 3
        assert live_document_ids(store, COLLECTION, tmp_path / "check") == accepted
        assert wait_for_health(server, "healthy")["checks"]["collections"] == "ok"
    finally:
        server.stop()


def test_a_live_file_deleted_on_s3_gives_a_clear_503_and_nothing_is_lost_once_restored(
        tmp_path, moto_server, s3_client, s3_bucket):
    first = serve_on_s3(tmp_path / "first", moto_server, s3_bucket)
    try:
        accepted = ingest(first, documents("first", 5))
        first.wait_for_documents(COLLECTION, 5)
    finally:
        first.stop()
    # GIVEN the live version's docs file is deleted from the bucket
    kept = s3_client.get_object(Bucket=s3_bucket, Key=key(1, "docs.jsonl"))["Body"].read()
    s3_client.delete_object(Bucket=s3_bucket, Key=key(1, "docs.jsonl"))

    # WHEN a fresh instance (nothing cached) starts
    server = serve_on_s3(tmp_path / "fresh", moto_server, s3_bucket)
    store = S3SnapshotStore(s3_bucket, PREFIX, client=s3_client)
    try:
        # THEN the collection answers a clear 503 and /health says degraded
        status, body = server.request("POST", "/v1/search", {"query": "notes", "collection": COLLECTION})
        assert status == 503, body
        assert body["error"]["code"] == "collection_unavailable"
        assert "v1 refused (snapshot_missing)" in body["error"]["message"] and body["error"]["request_id"]
        assert wait_for_health(server, "degraded")["checks"]["collections"].startswith(f"{COLLECTION}: v1 refused")

        # AND a write is still accepted, but never published over v1 without v1's documents
        accepted |= ingest(server, documents("during", 3))
        server.wait_for_log('"message":"write failed"', timeout=30)
        assert store.current(COLLECTION) == 1

        # WHEN the file is restored, THEN the queued write lands on top of v1: nothing lost
        s3_client.put_object(Bucket=s3_bucket, Key=key(1, "docs.jsonl"), Body=kept)
        info = server.wait_for_documents(COLLECTION, 8, timeout=60)
        assert info["index_version"] == 2
        assert live_document_ids(store, COLLECTION, tmp_path / "check") == accepted
        assert wait_for_health(server, "healthy")["checks"]["collections"] == "ok"
    finally:
        server.stop()
