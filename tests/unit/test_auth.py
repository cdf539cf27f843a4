"""The authorizer's core, pure: keys and their hashes, the record's DynamoDB shape, and
the IAM policy a key's scope and collections produce."""

from __future__ import annotations

import re

import pytest

from ragserve.auth import KeyRecord, allowed_resources, authorize, generate_key, hash_key
from ragserve.auth.keys import parse_collections
from ragserve.auth.policy import api_arn_prefix
from ragserve.errors import InvalidInput, Unauthorized
from ragserve.routes import Route

PREFIX = "arn:aws:execute-api:eu-west-1:123456789012:abc123"
METHOD_ARN = f"{PREFIX}/prod/POST/v1/embed"
ROUTES = (
    Route("POST", "/v1/embed", "embed", "embed", "read"),
    Route("POST", "/v1/search", "search", "search", "read"),
    Route("GET", "/v1/collections/{c}", "search", "collection", "read"),
    Route("POST", "/v1/collections/{c}/documents", "ingest", "upsert", "write"),
    Route("DELETE", "/v1/collections/{c}/documents/{id}", "ingest", "delete", "write"),
    Route("GET", "/health", "ops", "health", None),
    Route("GET", "/metrics", "ops", "metrics", "read"),
)


def record(key: str = "rskkey", *, scope="read", collections=None, status="active") -> KeyRecord:
    return KeyRecord(key_hash=hash_key(key), key_id="key-0123456789ab", scope=scope, tier="free",
                     collections=collections, api_gateway_key_id="apikey1", status=status,
                     created_at="2026-01-01T00:00:00Z")


class Store:
    def __init__(self, *records: KeyRecord) -> None:
        self.records = {r.key_hash: r for r in records}

    def get(self, key_hash: str) -> KeyRecord | None:
        return self.records.get(key_hash)


def event(key: str | None, header: str = "x-api-key") -> dict:
    return {"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {header: key} if key is not None else {}}


def test_generated_keys_are_long_random_alphanumerics_and_only_their_hash_is_kept():
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"rsk[A-Za-z0-9]{40}", key)  # a valid API Gateway key value (20..128 chars)
    digest = hash_key("rskabc")
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and digest == hash_key("rskabc") != hash_key("rskabd")
    item = record("rsksecret").to_item()
    assert "rsksecret" not in str(item)


@pytest.mark.parametrize("collections", [None, ("a", "b")])
def test_record_round_trips_through_its_dynamodb_item(collections):
    original = record(collections=collections)
    assert KeyRecord.from_item(original.to_item()) == original
    revoked = original.revoked("2026-02-02T00:00:00Z")
    assert KeyRecord.from_item(revoked.to_item()) == revoked
    assert not revoked.active and revoked.revoked_at == "2026-02-02T00:00:00Z"


def test_collections_parse_and_are_checked():
    assert parse_collections(None) is None and parse_collections("*") is None and parse_collections(" ") is None
    assert parse_collections("a, b,a") == ("a", "b")
    with pytest.raises(InvalidInput):
        parse_collections("ok,../etc")


def test_read_key_gets_every_read_route_and_no_write_or_public_route():
    arns = allowed_resources(record(scope="read"), f"{PREFIX}/prod", ROUTES)
    assert arns == sorted([
        f"{PREFIX}/prod/GET/metrics",
        f"{PREFIX}/prod/GET/v1/collections/*",
        f"{PREFIX}/prod/POST/v1/embed",
        f"{PREFIX}/prod/POST/v1/search",
    ])


def test_write_key_also_gets_the_write_routes_with_path_parameters_as_wildcards():
    arns = allowed_resources(record(scope="write"), f"{PREFIX}/prod", ROUTES)
    assert f"{PREFIX}/prod/POST/v1/collections/*/documents" in arns
    assert f"{PREFIX}/prod/DELETE/v1/collections/*/documents/*" in arns
    assert len(arns) == 6  # every keyed route; /health needs no key and is never listed


def test_collection_limited_key_gets_those_collections_only_on_collection_routes():
    arns = allowed_resources(record(scope="write", collections=("docs", "faq")), f"{PREFIX}/prod", ROUTES)
    assert f"{PREFIX}/prod/POST/v1/collections/docs/documents" in arns
    assert f"{PREFIX}/prod/DELETE/v1/collections/faq/documents/*" in arns
    assert f"{PREFIX}/prod/GET/v1/collections/docs" in arns
    assert not any("/collections/*" in a for a in arns)
    # the collection of POST /v1/search is in the body: the route is allowed, the function checks
    assert f"{PREFIX}/prod/POST/v1/search" in arns


def test_active_key_is_allowed_with_usage_identifier_and_context():
    key = generate_key()
    response, found = authorize(event(key, "X-Api-Key"), Store(record(key, collections=("docs",))), ROUTES)
    assert found is not None
    assert response["principalId"] == "key-0123456789ab"
    assert response["usageIdentifierKey"] == key  # the API Gateway key value: the usage plan meters it
    statement = response["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    assert response["context"] == {"key_id": "key-0123456789ab", "scope": "read", "tier": "free",
                                   "collections": "docs"}
    assert all(isinstance(v, str) for v in response["context"].values())


@pytest.mark.parametrize("stored", ["none", "revoked"])
def test_unknown_or_revoked_key_is_denied_on_the_whole_stage(stored):
    key = generate_key()
    store = Store() if stored == "none" else Store(record(key, status="revoked"))
    response, _ = authorize(event(key), store, ROUTES)
    statement = response["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Resource"] == [f"{PREFIX}/prod/*"]
    assert "usageIdentifierKey" not in response and "context" not in response


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_is_unauthorized(value):
    with pytest.raises(Unauthorized):
        authorize(event(value), Store(), ROUTES)


def test_method_arn_prefix():
    assert api_arn_prefix(f"{PREFIX}/prod/GET/v1/collections/x") == f"{PREFIX}/prod"
    for bad in ("", "not-an-arn/prod/GET/x", PREFIX):
        with pytest.raises(ValueError):
            api_arn_prefix(bad)
