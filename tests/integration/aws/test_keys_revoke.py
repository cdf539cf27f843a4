"""`ragserve keys revoke` is safe to retry, against moto in server mode (DynamoDB + API
Gateway): the API Gateway key is deleted before the record is marked revoked, so a
delete that fails leaves the key active and listed, and a rerun finishes; a rerun also
deletes the API Gateway key of a record an interrupted revoke already marked revoked.
And the authorizer refuses a key with whitespace around it, as the local gateway does."""

from __future__ import annotations

import importlib
import json

import pytest
from aws_helpers import create_keys_table
from botocore.exceptions import ClientError

from ragserve.auth.keys import hash_key
from ragserve.auth.store import DynamoKeyStore
from ragserve.cli import main
from ragserve.keys.manager import UsagePlans
from ragserve.local.events import LocalContext

TABLE = "ragserve-test-keys"
STAGE = "test"
CONTEXT = LocalContext(function_name="ragserve-authorizer")
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:api1/test/POST/v1/embed"


@pytest.fixture
def deployed(aws):
    create_keys_table(aws("dynamodb"), TABLE)
    apigw = aws("apigateway")
    plan = apigw.create_usage_plan(name=f"ragserve-{STAGE}-free", throttle={"rateLimit": 5, "burstLimit": 10})
    return {"dynamodb": aws("dynamodb"), "apigateway": apigw, "plan": plan["id"]}


def keys(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["keys", "--table", TABLE, "--stage", STAGE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def create(capsys) -> dict:
    code, out, err = keys(capsys, "--json", "create", "--scope", "write", "--tier", "free")
    assert code == 0, err
    return json.loads(out)


def record_of(deployed, key: str) -> dict:
    return deployed["dynamodb"].get_item(TableName=TABLE, Key={"key_hash": {"S": hash_key(key)}})["Item"]


def api_key_exists(deployed, api_key_id: str) -> bool:
    try:
        deployed["apigateway"].get_api_key(apiKey=api_key_id)
    except deployed["apigateway"].exceptions.NotFoundException:
        return False
    return True


def effect(monkeypatch, key: str) -> str:
    monkeypatch.setenv("RAGSERVE_KEYS_TABLE", TABLE)
    import functions.ops.authorizer as module

    handler = importlib.reload(module).lambda_handler
    response = handler({"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {"x-api-key": key}}, CONTEXT)
    return response["policyDocument"]["Statement"][0]["Effect"]


def failing_deletes(monkeypatch, times: int) -> list[str]:
    """API Gateway refuses the next ``times`` deletes (throttling); the rest go through."""
    attempts: list[str] = []
    real = UsagePlans.delete_key

    def delete_key(self, api_key_id: str) -> None:
        attempts.append(api_key_id)
        if len(attempts) <= times:
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Too Many Requests"}},
                              "DeleteApiKey")
        real(self, api_key_id)

    monkeypatch.setattr(UsagePlans, "delete_key", delete_key)
    return attempts


def test_a_revoke_whose_api_gateway_delete_fails_can_be_rerun_to_finish(deployed, capsys, monkeypatch):
    issued = create(capsys)
    api_key_id = record_of(deployed, issued["api_key"])["api_gateway_key_id"]["S"]
    attempts = failing_deletes(monkeypatch, times=1)

    code, out, err = keys(capsys, "revoke", issued["key_id"])

    # THEN the failure is one clear line, and nothing claims the key is revoked
    assert code == 2 and out == "" and err.count("\n") == 1 and "revoke " + issued["key_id"] in err
    assert api_key_exists(deployed, api_key_id)
    assert record_of(deployed, issued["api_key"])["status"]["S"] == "active"
    _, listed, _ = keys(capsys, "list")
    assert issued["key_id"] in listed  # still listed as active: the operator sees it is not done

    # WHEN revoke is run again
    code, out, err = keys(capsys, "revoke", issued["key_id"])

    # THEN the API Gateway key is gone, the record revoked, the authorizer denies it
    assert code == 0, err
    assert len(attempts) == 2 and not api_key_exists(deployed, api_key_id)
    assert record_of(deployed, issued["api_key"])["status"]["S"] == "revoked"
    assert effect(monkeypatch, issued["api_key"]) == "Deny"


def test_a_rerun_deletes_the_api_gateway_key_a_halfway_revoke_left_behind(deployed, capsys, monkeypatch):
    # GIVEN a record marked revoked whose API Gateway key still exists (what revoke left
    # behind when it marked the record first and its delete then failed)
    issued = create(capsys)
    item = record_of(deployed, issued["api_key"])
    api_key_id = item["api_gateway_key_id"]["S"]
    from ragserve.auth.keys import KeyRecord

    DynamoKeyStore(TABLE, deployed["dynamodb"]).mark_revoked(KeyRecord.from_item(item))
    assert api_key_exists(deployed, api_key_id)

    # WHEN revoke is run again
    code, out, err = keys(capsys, "revoke", issued["key_id"])

    # THEN it deletes the API Gateway key (usage plans stop the key at once)
    assert code == 0, err
    assert not api_key_exists(deployed, api_key_id)
    assert record_of(deployed, issued["api_key"])["status"]["S"] == "revoked"
    assert keys(capsys, "revoke", issued["key_id"])[0] == 0  # and again: harmless


def test_rotate_prints_the_new_secret_even_when_the_old_one_cannot_be_revoked(deployed, capsys, monkeypatch):
    issued = create(capsys)
    failing_deletes(monkeypatch, times=1)

    code, out, err = keys(capsys, "--json", "rotate", issued["key_id"])

    assert code == 1
    rotated = json.loads(out)
    assert rotated["api_key"] != issued["api_key"] and effect(monkeypatch, rotated["api_key"]) == "Allow"
    assert "previous secret was not revoked" in err and f"rotate {issued['key_id']}" in err
    assert record_of(deployed, issued["api_key"])["status"]["S"] == "active"


def test_the_authorizer_refuses_a_key_with_whitespace_around_it(deployed, capsys, monkeypatch):
    issued = create(capsys)
    assert effect(monkeypatch, issued["api_key"]) == "Allow"
    for sent in (issued["api_key"] + " ", " " + issued["api_key"], issued["api_key"] + "\t"):
        assert effect(monkeypatch, sent) == "Deny", repr(sent)
