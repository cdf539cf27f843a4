"""Idempotency-Key through the real ingest function (in process, on the session's local
queue, SQLite idempotency store and snapshot store; the queue applied by the function's
own SQS consumer, as ``ragserve serve``'s poller does):

- a job id is never shared by two different requests: a key reused after its record
  expired is a new job whose documents land; with the idempotency store down, the same
  key with another body is a new job too (and a true retry of the same request still
  maps to the first job, which the queue deduplicates);
- a key reused for another request inside the window (another route, another document
  id, another body) is 409 ``idempotency_key_reused``, never a 202 that writes nothing;
- a replay of the same request answers the recorded job.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from ragserve.ingest.idempotency import IdempotentWrites, SqlitePersistenceLayer
from ragserve.ingest.queue import LocalJobQueue
from ragserve.local.events import LocalContext, rest_event
from ragserve.local.queue_poller import QueuePoller
from ragserve.snapshots.local import LocalSnapshotStore
from tests.conftest import SESSION_DATA_DIR, invoke_handler
from tests.integration.conftest import aws_client, live_records

PRINCIPAL = "key-idempotency-test"


@pytest.fixture(scope="module")
def ingest():
    import functions.ingest.handler as module

    return module


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def call(method: str, path: str, *, body=None, key: str | None = None, principal: str = PRINCIPAL):
    import json

    headers = {"x-api-key": "test", **({"Idempotency-Key": key} if key else {})}
    if body is not None:
        headers["content-type"] = "application/json"
        body = json.dumps(body)
    event = rest_event(method, path, headers=headers, body=body, api_key="test",
                       authorizer={"principalId": principal, "scope": "write", "collections": "*"})
    return invoke_handler(event, "ingest")


def post(collection: str, ids: list[str], *, key: str | None = None, text: str = "about {id}", **kwargs):
    docs = [{"id": i, "text": text.format(id=i)} for i in ids]
    return call("POST", f"/v1/collections/{collection}/documents", body={"documents": docs}, key=key, **kwargs)


def delete(collection: str, doc_id: str, *, key: str | None = None):
    return call("DELETE", f"/v1/collections/{collection}/documents/{doc_id}", key=key)


def apply_queued(ingest) -> None:
    """Everything queued, through the ingest function's SQS consumer (the local poller's loop)."""
    poller = QueuePoller(ingest.QUEUE, ingest.lambda_handler, SESSION_DATA_DIR / "writer.lock", retry_delay=0)
    for _ in range(200):
        if not poller.poll_once():
            return
    raise AssertionError("the queue never drained")


def live_ids(collection: str, tmp_path) -> set[str]:
    return set(live_records(LocalSnapshotStore(SESSION_DATA_DIR), collection, tmp_path / "check"))


def expire_idempotency_records() -> None:
    """What 24 hours do to every record of the local idempotency store."""
    with sqlite3.connect(SESSION_DATA_DIR / "idempotency.sqlite3") as db:
        db.execute("UPDATE records SET expiration = ?", (int(time.time()) - 1,))


def queued_parts(job_id: str) -> int:
    db = LocalJobQueue(SESSION_DATA_DIR / "queue.sqlite3")._connect()
    return db.execute("SELECT COUNT(*) FROM messages WHERE message_id LIKE ?", (job_id + ".%",)).fetchone()[0]


def unreachable_store() -> IdempotentWrites:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aws_client("dynamodb", f"http://127.0.0.1:{port}")
    return IdempotentWrites(DynamoDBPersistenceLayer(table_name="nowhere", boto3_client=client))


# -- a job id is never shared by two different requests -----------------------------------------


def test_a_key_reused_after_its_record_expired_is_a_new_job_and_its_documents_land(ingest, tmp_path):
    collection = unique("nightly")
    first = post(collection, ["night-1"], key="nightly-import")
    assert first.status == 202, first.body
    apply_queued(ingest)
    assert live_ids(collection, tmp_path) == {"night-1"}

    expire_idempotency_records()
    second = post(collection, ["night-2"], key="nightly-import")

    assert second.status == 202, second.body
    assert second.body["job_id"] != first.body["job_id"]
    assert queued_parts(second.body["job_id"]) == 1
    apply_queued(ingest)
    assert live_ids(collection, tmp_path) == {"night-1", "night-2"}


def test_the_same_request_after_the_window_is_a_new_job_too(ingest):
    collection = unique("nightly-same")
    first = post(collection, ["same-1"], key="nightly-import")
    expire_idempotency_records()
    again = post(collection, ["same-1"], key="nightly-import")
    assert first.status == again.status == 202
    assert again.body["job_id"] != first.body["job_id"] and queued_parts(again.body["job_id"]) == 1


def test_with_the_store_down_a_key_reused_with_another_body_is_a_new_job(ingest, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "IDEMPOTENCY", unreachable_store())
    collection = unique("outage")
    first = post(collection, ["out-1"], key="outage-key")
    second = post(collection, ["out-2"], key="outage-key")
    assert first.status == second.status == 202, (first.body, second.body)
    assert second.body["job_id"] != first.body["job_id"]
    # a true retry of the first request (same route, same body) maps to the first job:
    # the queue deduplicates it, so the write is not doubled while the store is down
    retry = post(collection, ["out-1"], key="outage-key")
    assert retry.status == 202 and retry.body["job_id"] == first.body["job_id"]
    assert queued_parts(first.body["job_id"]) == 1
    apply_queued(ingest)
    assert live_ids(collection, tmp_path) == {"out-1", "out-2"}


def test_without_a_key_every_request_is_a_new_job(ingest):
    collection = unique("nokey")
    ids = {post(collection, ["a"]).body["job_id"] for _ in range(3)}
    assert len(ids) == 3


# -- one key, one request ------------------------------------------------------------------------


def test_deleting_other_documents_with_the_same_key_is_409_not_a_silent_202(ingest, tmp_path):
    collection = unique("deletes")
    assert post(collection, ["a", "b", "c", "d"]).status == 202
    apply_queued(ingest)

    first = delete(collection, "a", key="K1")
    b = delete(collection, "b", key="K1")
    c = delete(collection, "c", key="K1")
    replay = delete(collection, "a", key="K1")

    assert first.status == 202, first.body
    for refused in (b, c):
        assert refused.status == 409, refused.body
        assert refused.body["error"]["code"] == "idempotency_key_reused"
    assert replay.status == 202 and replay.body == first.body  # the recorded answer
    assert queued_parts(first.body["job_id"]) == 1
    assert delete(collection, "b", key="K2").status == 202
    apply_queued(ingest)
    assert live_ids(collection, tmp_path) == {"c", "d"}


def test_a_key_reused_on_another_route_or_body_is_409_and_keys_are_per_collection(ingest):
    collection = unique("routes")
    assert post(collection, ["x"], key="K").status == 202
    for other in (delete(collection, "x", key="K"), post(collection, ["y"], key="K"),
                  post(collection, ["x"], key="K", text="another text for {id}")):
        assert other.status == 409 and other.body["error"]["code"] == "idempotency_key_reused", other.body
    elsewhere = post(unique("routes-other"), ["x"], key="K")  # the same key in another collection
    assert elsewhere.status == 202
    assert post(collection, ["x"], key="K", principal="key-someone-else").status == 202  # another caller


def test_a_replay_answers_the_recorded_job_and_queues_nothing_more(ingest):
    collection = unique("replay")
    first = post(collection, ["r1", "r2"], key="retry-me")
    again = post(collection, ["r1", "r2"], key="retry-me")
    assert first.status == again.status == 202 and again.body == first.body
    assert queued_parts(first.body["job_id"]) == 1


# -- the idempotency layer on its own --------------------------------------------------------------


def counting_write():
    calls: list[str] = []

    def write(job_id: str) -> dict:
        calls.append(job_id)
        return {"accepted": 1, "job_id": job_id}

    return write, calls


def run(writes: IdempotentWrites, write, *, key="K", body=b"{}", route="POST /v1/collections/{c}/documents"):
    return writes.run(principal="key-a", collection="docs", key=key, body=body, route=route, write=write,
                      context=LocalContext("ingest"))


def test_each_accepted_request_gets_a_fresh_job_id(tmp_path):
    writes = IdempotentWrites(SqlitePersistenceLayer(tmp_path / "idempotency.sqlite3"))
    write, calls = counting_write()
    run(writes, write, key="K1")
    run(writes, write, key="K2")
    run(writes, write, key=None)
    run(writes, write, key=None)
    assert len(set(calls)) == 4


def test_the_route_is_part_of_the_request_a_key_stands_for(tmp_path):
    writes = IdempotentWrites(SqlitePersistenceLayer(tmp_path / "idempotency.sqlite3"))
    write, calls = counting_write()
    run(writes, write, body=b"", route="DELETE /v1/collections/{c}/documents/{id} id=a")
    from ragserve.errors import Conflict

    with pytest.raises(Conflict) as raised:
        run(writes, write, body=b"", route="DELETE /v1/collections/{c}/documents/{id} id=b")
    assert raised.value.code == "idempotency_key_reused" and len(calls) == 1


def test_a_store_that_fails_after_the_write_does_not_run_it_twice(tmp_path):
    class FailsOnSuccess(SqlitePersistenceLayer):
        def _update_record(self, data_record):
            raise sqlite3.OperationalError("disk I/O error")

    writes = IdempotentWrites(FailsOnSuccess(tmp_path / "idempotency.sqlite3"))
    write, calls = counting_write()
    answer = run(writes, write)
    assert len(calls) == 1 and answer == {"accepted": 1, "job_id": calls[0]}
