"""`ragserve keys` and the authorizer against moto in server mode (DynamoDB + API
Gateway): a key is created, attached to its tier's usage plan, stored only as a hash,
accepted by the authorizer, rotated and revoked."""

from __future__ import annotations

import importlib
import json

import pytest
from aws_helpers import create_keys_table

from ragserve.auth.keys import hash_key
from ragserve.cli import main
from ragserve.local.events import LocalContext

TABLE = "ragserve-test-keys"
STAGE = "test"
CONTEXT = LocalContext(function_name="ragserve-authorizer")
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:api1/test/POST/v1/embed"


@pytest.fixture
def deployed(aws):
    """What the stack would have made: the keys table and one usage plan per tier."""
    create_keys_table(aws("dynamodb"), TABLE)
    apigw = aws("apigateway")
    plans = {tier: apigw.create_usage_plan(name=f"ragserve-{STAGE}-{tier}", throttle={"rateLimit": 5, "burstLimit": 10},
                                           quota={"limit": 1000, "period": "DAY"})["id"]
             for tier in ("free", "standard")}
    return {"dynamodb": aws("dynamodb"), "apigateway": apigw, "plans": plans}


def keys(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["keys", "--table", TABLE, "--stage", STAGE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def items(dynamodb) -> list[dict]:
    return dynamodb.scan(TableName=TABLE)["Items"]


def authorizer(monkeypatch):
    monkeypatch.setenv("RAGSERVE_KEYS_TABLE", TABLE)
    import functions.ops.authorizer as module

    return importlib.reload(module).lambda_handler


def authorize(handler, key: str) -> dict:
    return handler({"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {"x-api-key": key}}, CONTEXT)


def test_create_stores_only_a_hash_and_attaches_the_key_to_the_tier_plan(deployed, capsys, monkeypatch):
    # WHEN a read key for two collections is created on the free tier
    code, out, err = keys(capsys, "create", "--scope", "read", "--tier", "free", "--collections", "docs,faq")
    # THEN the key is printed once, alone on stdout
    assert code == 0, err
    key = out.strip()
    assert key.startswith("rsk") and "\n" not in key and key not in err
    # AND DynamoDB holds its hash and grants, never the key
    [item] = items(deployed["dynamodb"])
    assert item["key_hash"]["S"] == hash_key(key)
    assert key not in json.dumps(item)
    assert item["scope"]["S"] == "read" and item["tier"]["S"] == "free" and item["status"]["S"] == "active"
    assert [c["S"] for c in item["collections"]["L"]] == ["docs", "faq"]
    # AND API Gateway has the key (its value is the usage identifier) in the free plan only
    api_key_id = item["api_gateway_key_id"]["S"]
    assert deployed["apigateway"].get_api_key(apiKey=api_key_id, includeValue=True)["value"] == key
    in_plan = deployed["apigateway"].get_usage_plan_keys(usagePlanId=deployed["plans"]["free"])["items"]
    assert [k["id"] for k in in_plan] == [api_key_id]
    assert deployed["apigateway"].get_usage_plan_keys(usagePlanId=deployed["plans"]["standard"])["items"] == []
    # AND the authorizer (real handler, real DynamoDB API) allows it with the usage identifier
    response = authorize(authorizer(monkeypatch), key)
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert response["usageIdentifierKey"] == key
    assert response["context"]["collections"] == "docs,faq" and response["context"]["scope"] == "read"


def test_rotate_issues_a_new_secret_for_the_same_key_id_and_kills_the_old_one(deployed, capsys, monkeypatch):
    _, out, _ = keys(capsys, "--json", "create", "--scope", "write", "--tier", "standard")
    first = json.loads(out)
    code, out, err = keys(capsys, "--json", "rotate", first["key_id"])
    assert code == 0, err
    second = json.loads(out)
    # THEN same key id, scope, tier; a different secret
    assert second["key_id"] == first["key_id"] and second["scope"] == "write" and second["tier"] == "standard"
    assert second["api_key"] != first["api_key"]
    # AND the old secret is denied, the new one allowed
    handler = authorizer(monkeypatch)
    assert authorize(handler, first["api_key"])["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert authorize(handler, second["api_key"])["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    # AND the old API Gateway key is gone (usage plans stop it even while an Allow is cached)
    records = {i["key_hash"]["S"]: i for i in items(deployed["dynamodb"])}
    old = records[hash_key(first["api_key"])]
    assert old["status"]["S"] == "revoked" and "revoked_at" in old
    with pytest.raises(deployed["apigateway"].exceptions.NotFoundException):
        deployed["apigateway"].get_api_key(apiKey=old["api_gateway_key_id"]["S"])


def test_revoke_and_list_never_show_secrets_or_hashes(deployed, capsys, monkeypatch):
    _, key_a, _ = keys(capsys, "create", "--scope", "read", "--tier", "free")
    _, out, _ = keys(capsys, "--json", "create", "--scope", "write", "--tier", "free")
    b = json.loads(out)
    code, out, _ = keys(capsys, "revoke", b["key_id"])
    assert code == 0 and b["key_id"] in out
    assert authorize(authorizer(monkeypatch), b["api_key"])["policyDocument"]["Statement"][0]["Effect"] == "Deny"

    _, active, _ = keys(capsys, "list")
    _, everything, _ = keys(capsys, "--json", "list", "--all")
    listed = json.loads(everything)
    assert {r["status"] for r in listed} == {"active", "revoked"}
    assert b["key_id"] not in active and "key_id" in active.splitlines()[0]
    for text in (active, everything):
        assert key_a.strip() not in text and b["api_key"] not in text
        assert hash_key(key_a.strip()) not in text and hash_key(b["api_key"]) not in text
    # revoking twice is harmless
    assert keys(capsys, "revoke", b["key_id"])[0] == 0


def test_unknown_tier_or_key_id_is_a_clear_error(deployed, capsys):
    code, out, err = keys(capsys, "create", "--scope", "read", "--tier", "gold")
    assert code == 2 and out == ""
    assert "ragserve-test-gold" in err and "free, standard" in err
    assert items(deployed["dynamodb"]) == []
    assert deployed["apigateway"].get_api_keys()["items"] == []
    code, _, err = keys(capsys, "rotate", "key-000000000000")
    assert code == 2 and "no key" in err


def test_authorizer_without_a_key_answers_unauthorized(deployed, monkeypatch):
    handler = authorizer(monkeypatch)
    with pytest.raises(Exception, match="^Unauthorized$"):
        handler({"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {}}, CONTEXT)
    assert authorize(handler, "rsk" + "x" * 40)["policyDocument"]["Statement"][0]["Effect"] == "Deny"
