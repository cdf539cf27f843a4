"""A cache outage costs speed, never a request: `ragserve serve` with the Redis query
cache, the DynamoDB embedding cache and the DynamoDB idempotency store configured;
Redis is killed and DynamoDB is unreachable (a closed loopback port) during a burst, and
every request still answers 200 with the same results as before, every write 202 (an
Idempotency-Key replay included) and every accepted document lands exactly once;
/health says degraded, /metrics counts the errors."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from test_serve_collections import READ_KEY, WRITE_KEY, Server, documents

from ragserve.snapshots.local import LocalSnapshotStore
from tests.integration.conftest import live_document_ids

QUERIES = ["What is artificial intelligence?", "Tell me a joke", "Who wrote Hamlet?", "Do you like music?",
           "What is the capital of France?", "How old are you?", "What is a computer?", "Are you a robot?"]
TEXTS = ["the cache is down", "but the answers are not", "Serverless functions scale to zero."]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket closes


def test_requests_succeed_with_redis_killed_and_dynamodb_unreachable(tmp_path, disposable_redis):
    env = {"RAGSERVE_QUERY_CACHE_URL": disposable_redis.url,
           "RAGSERVE_EMBEDDING_CACHE_TABLE": "ragserve-embedding-cache",
           "RAGSERVE_IDEMPOTENCY_TABLE": "ragserve-idempotency",
           "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{closed_port()}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server = Server(tmp_path / "data", demo=True, extra_env=env)
    try:
        def search(query):
            status, body = server.request("POST", "/v1/search", {"query": query, "k": 5})
            return status, [hit["id"] for hit in body["results"]] if status == 200 else body

        def embed(i):  # a new text each call: a miss of the local tier, so DynamoDB is asked
            status, body = server.request("POST", "/v1/embed", {"texts": [*TEXTS, f"a new sentence, number {i}"]})
            return status, np.asarray(body["embeddings"], dtype=np.float32) if status == 200 else body

        baseline = {q: search(q)[1] for q in QUERIES}  # Redis up: these fill the query cache
        assert search(QUERIES[0]) == (200, baseline[QUERIES[0]])  # a hit
        reference = embed(-1)[1][:len(TEXTS)]

        disposable_redis.kill()
        fresh = [f"{q} Please answer briefly, variant {i}." for i, q in enumerate(QUERIES * 3)]  # miss locally
        with ThreadPoolExecutor(max_workers=8) as pool:
            searches = list(pool.map(search, QUERIES * 12))
            new_searches = list(pool.map(search, fresh))
            embeds = list(pool.map(embed, range(24)))
        def ingest(i):  # the idempotency store is down too: the write goes through
            return server.request("POST", "/v1/collections/outage/documents", {"documents": documents("out", 3, 3 * i)},
                                  key=WRITE_KEY, headers={"Idempotency-Key": f"outage-{i}"})

        with ThreadPoolExecutor(max_workers=4) as pool:
            writes = list(pool.map(ingest, [*range(8), 0, 1]))  # two replays of a key
        assert [status for status, _ in writes] == [202] * len(writes), writes
        assert writes[8][1]["job_id"] == writes[0][1]["job_id"] and writes[9][1]["job_id"] == writes[1][1]["job_id"]
        server.wait_for_documents("outage", 24, timeout=60)
        assert live_document_ids(LocalSnapshotStore(tmp_path / "data"), "outage", tmp_path / "check") == \
            {d["id"] for d in documents("out", 24)}

        statuses = [status for status, _ in searches + new_searches + embeds]
        assert statuses == [200] * len(statuses)
        assert [ids for _, ids in searches] == [baseline[q] for q in QUERIES * 12]
        assert all(len(ids) == 5 for _, ids in new_searches)
        for _, vectors in embeds:
            np.testing.assert_allclose(vectors[:len(TEXTS)], reference, atol=2e-4)

        status, health = server.request("GET", "/health", key="")
        assert status == 200 and health["status"] == "degraded"
        assert health["checks"]["query_cache"] != "ok" and health["checks"]["embedding_cache"] != "ok", health
        status, metrics = server.request("GET", "/metrics", key=READ_KEY)
        text = metrics.decode()
        assert 'ragserve_cache_errors_total{' in text and 'cache="query"' in text and 'cache="embedding"' in text
        assert '"message":"cache state"' in server.read_log()  # logged once per state change
    finally:
        server.stop()
