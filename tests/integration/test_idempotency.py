"""Idempotent writes with Powertools' idempotency utility: locally on SQLite, in AWS on
DynamoDB (moto in server mode). A replay runs the write once and answers the first
response; a reused key with another body is a conflict; a store that is down lets the
write through (job ids still deduplicate in the queue)."""

from __future__ import annotations

import json
import time

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from ragserve.errors import Conflict
from ragserve.ingest.idempotency import IdempotentWrites, SqlitePersistenceLayer
from ragserve.local.events import LocalContext
from tests.integration.conftest import aws_client


def counting_write():
    calls = []

    def write(job_id: str):
        calls.append(job_id)
        return {"accepted": 2, "job_id": f"job-{len(calls)}"}

    return write, calls


def run(writes: IdempotentWrites, write, key="idem-1", body=b'{"documents": []}', principal="key-a"):
    return writes.run(principal=principal, collection="docs", key=key, body=body, write=write,
                      context=LocalContext("ingest"))


@pytest.fixture(params=["sqlite", "dynamodb"])
def writes(request, tmp_path, moto_server):
    if request.param == "sqlite":
        return IdempotentWrites(SqlitePersistenceLayer(tmp_path / "idempotency.sqlite3"))
    client = aws_client("dynamodb", moto_server)
    table = f"idempotency-{time.time_ns()}"
    client.create_table(TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    return IdempotentWrites(DynamoDBPersistenceLayer(table_name=table, boto3_client=client))


def test_a_replay_runs_the_write_once_and_answers_the_first_response(writes):
    write, calls = counting_write()
    first = run(writes, write)
    again = run(writes, write)
    assert first == again == {"accepted": 2, "job_id": "job-1"}
    assert len(calls) == 1


def test_keys_are_scoped_to_the_caller_and_the_collection(writes):
    write, calls = counting_write()
    run(writes, write)
    run(writes, write, principal="key-b")
    assert len(calls) == 2


def test_the_same_key_with_another_body_is_a_conflict(writes):
    write, _ = counting_write()
    run(writes, write)
    with pytest.raises(Conflict) as raised:
        run(writes, write, body=b'{"documents": [{"id": "other"}]}')
    assert raised.value.code == "idempotency_key_reused"


def test_no_key_means_no_idempotency(writes):
    write, calls = counting_write()
    run(writes, write, key=None)
    run(writes, write, key=None)
    assert len(calls) == 2


def test_a_replay_while_the_first_is_in_progress_is_a_conflict(tmp_path):
    persistence = SqlitePersistenceLayer(tmp_path / "idempotency.sqlite3")
    writes = IdempotentWrites(persistence)
    write, calls = counting_write()
    seen = []

    def slow_write(job_id: str):  # the replay arrives while the first write is still running
        with pytest.raises(Conflict) as raised:
            run(writes, write)
        seen.append(raised.value.code)
        return write(job_id)

    run(writes, slow_write)
    assert seen == ["idempotency_in_progress"] and len(calls) == 1


def test_an_unreachable_store_lets_the_write_through(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aws_client("dynamodb", f"http://127.0.0.1:{port}")
    writes = IdempotentWrites(DynamoDBPersistenceLayer(table_name="nowhere", boto3_client=client))
    write, calls = counting_write()
    assert run(writes, write) == {"accepted": 2, "job_id": "job-1"}
    assert len(calls) == 1


def test_sqlite_records_follow_dynamodbs_expiry_rule(tmp_path):
    persistence = SqlitePersistenceLayer(tmp_path / "idempotency.sqlite3")
    old = DataRecord("k", status="COMPLETED", expiry_timestamp=int(time.time()) - 1, response_data=json.dumps({}))
    persistence._put_record(old)
    fresh = DataRecord("k", status="INPROGRESS", expiry_timestamp=int(time.time()) + 60)
    persistence._put_record(fresh)  # an expired record may be replaced
    assert persistence._get_record("k").status == "INPROGRESS"


def expire_every_record(writes: IdempotentWrites) -> None:
    """What 24 hours do to the records (SQLite, or DynamoDB on moto)."""
    persistence = writes._persistence
    past = int(time.time()) - 1
    if isinstance(persistence, SqlitePersistenceLayer):
        persistence._db().execute("UPDATE records SET expiration = ?", (past,))
        return
    client, table = persistence.client, persistence.table_name
    for item in client.scan(TableName=table)["Items"]:
        client.update_item(TableName=table, Key={"id": item["id"]}, UpdateExpression="SET expiration = :e",
                           ExpressionAttributeValues={":e": {"N": str(past)}})


def test_a_key_reused_after_its_record_expired_is_a_new_request_with_a_new_job_id(writes):
    write, calls = counting_write()
    run(writes, write)
    run(writes, write)  # a replay inside the window: no second write
    expire_every_record(writes)
    run(writes, write, body=b'{"documents": [{"id": "tomorrow"}]}')  # another body: fine once expired
    assert len(calls) == 2 and calls[0] != calls[1]  # each write got its own job id
