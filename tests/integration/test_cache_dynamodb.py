"""The embedding cache on DynamoDB (moto in server mode, real boto3 clients): chunked
batch calls, retries of unprocessed keys and items, the TTL attribute, garbage, and an
unreachable endpoint (misses, no exceptions, the breaker skips it)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ragserve.cache import CachingEncoder, build_embedding_cache
from ragserve.cache.breaker import CircuitBreaker
from ragserve.cache.embeddings import (
    KEY_ATTR,
    TTL_ATTR,
    VALUE_ATTR,
    CachedEmbedding,
    DynamoEmbeddingCache,
    LruEmbeddingCache,
    TieredEmbeddingCache,
    dynamodb_client,
    encode_value,
)
from ragserve.cache.guard import Guard, GuardedEmbeddingCache
from ragserve.cache.stats import ERRORS
from ragserve.settings import CacheSettings

REGION = "us-east-1"
TABLES = Path(__file__).resolve().parents[2] / "infra" / "constructs" / "tables.py"


def client_for(endpoint: str, **timeouts):
    return dynamodb_client(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                           aws_secret_access_key="testing", **({"connect_timeout": 2, "read_timeout": 5} | timeouts))


@pytest.fixture(scope="module")
def dynamodb(moto_server):
    return client_for(moto_server)


@pytest.fixture()
def table(dynamodb) -> str:
    """A fresh embedding cache table, declared as infra/constructs/tables.py does."""
    name = f"ragserve-embeddings-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": KEY_ATTR, "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": KEY_ATTR, "KeyType": "HASH"}])
    return name


class CallCounter:
    """Counts the API calls a real client makes (botocore event hooks)."""

    def __init__(self, client) -> None:
        self.calls: dict[str, int] = {}
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model, **kwargs) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1


def entry(seed: int, tokens: int = 5) -> CachedEmbedding:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return CachedEmbedding(v / np.linalg.norm(v), tokens, seed % 2 == 0)


def test_attribute_names_match_the_table_the_stack_declares():
    source = TABLES.read_text(encoding="utf-8")
    assert re.search(rf'EMBEDDING_CACHE_KEY = "{KEY_ATTR}"', source)
    assert re.search(rf'EMBEDDING_CACHE_TTL = "{TTL_ATTR}"', source)


def test_250_keys_take_3_batch_gets_and_10_batch_writes(moto_server, table):
    client = client_for(moto_server)
    counter = CallCounter(client)
    cache = DynamoEmbeddingCache(table, client, ttl_seconds=3600)
    items = {f"k{i:03d}": entry(i, tokens=i) for i in range(250)}
    cache.put_many(items)
    assert counter.calls == {"BatchWriteItem": 10}
    got = cache.get_many(list(items) + ["k000", "absent"])  # a repeated key, an absent one
    assert counter.calls == {"BatchWriteItem": 10, "BatchGetItem": 3}
    assert set(got) == set(items)
    assert got["k123"].tokens == 123 and got["k124"].truncated
    np.testing.assert_allclose(got["k042"].vector, items["k042"].vector, atol=1e-3)


def test_items_carry_a_numeric_ttl_and_a_binary_value(dynamodb, table):
    cache = DynamoEmbeddingCache(table, dynamodb, ttl_seconds=86_400)
    cache.put_many({"k": entry(1)})
    item = dynamodb.get_item(TableName=table, Key={KEY_ATTR: {"S": "k"}})["Item"]
    assert abs(int(item[TTL_ATTR]["N"]) - (time.time() + 86_400)) < 60
    assert item[VALUE_ATTR]["B"] == encode_value(entry(1)) and len(item[VALUE_ATTR]["B"]) == 776


def test_expired_items_not_yet_deleted_are_misses(dynamodb, table):
    now = [1_700_000_000.0]
    cache = DynamoEmbeddingCache(table, dynamodb, ttl_seconds=60, clock=lambda: now[0])
    cache.put_many({"k": entry(1)})
    assert set(cache.get_many(["k"])) == {"k"}
    now[0] += 61  # DynamoDB deletes expired items lazily
    assert cache.get_many(["k"]) == {}


def test_garbage_values_are_counted_misses(dynamodb, table):
    dynamodb.put_item(TableName=table, Item={KEY_ATTR: {"S": "bad"}, VALUE_ATTR: {"B": b"\x01\x02garbage"}})
    dynamodb.put_item(TableName=table, Item={KEY_ATTR: {"S": "string"}, VALUE_ATTR: {"S": "not binary"}})
    dynamodb.put_item(TableName=table, Item={KEY_ATTR: {"S": "no-value"}})
    cache = DynamoEmbeddingCache(table, dynamodb)
    cache.put_many({"good": entry(1)})
    before = ERRORS.value(cache="embedding", backend="dynamodb", kind="garbage")
    assert set(cache.get_many(["bad", "string", "no-value", "good"])) == {"good"}
    assert ERRORS.value(cache="embedding", backend="dynamodb", kind="garbage") == before + 3


class Partial:
    """The real client, except that the first ``stingy`` calls of each batch API
    process only half the request and hand the rest back as unprocessed (moto never
    does this by itself)."""

    def __init__(self, client, table: str, stingy: int = 1) -> None:
        self.client, self.table, self.stingy = client, table, stingy
        self.get_sizes: list[int] = []
        self.write_sizes: list[int] = []

    def batch_get_item(self, RequestItems):
        keys = RequestItems[self.table]["Keys"]
        self.get_sizes.append(len(keys))
        if len(self.get_sizes) > self.stingy:
            return self.client.batch_get_item(RequestItems=RequestItems)
        half = len(keys) // 2
        request = dict(RequestItems[self.table], Keys=keys[:half])
        response = self.client.batch_get_item(RequestItems={self.table: request})
        return {**response, "UnprocessedKeys": {self.table: dict(RequestItems[self.table], Keys=keys[half:])}}

    def batch_write_item(self, RequestItems):
        writes = RequestItems[self.table]
        self.write_sizes.append(len(writes))
        if len(self.write_sizes) > self.stingy:
            return self.client.batch_write_item(RequestItems=RequestItems)
        half = len(writes) // 2
        self.client.batch_write_item(RequestItems={self.table: writes[:half]})
        return {"UnprocessedItems": {self.table: writes[half:]}}


def test_unprocessed_keys_and_items_are_retried_with_backoff(dynamodb, table):
    sleeps: list[float] = []
    wrapper = Partial(dynamodb, table, stingy=2)
    cache = DynamoEmbeddingCache(table, wrapper, max_attempts=4, base_delay=0.02, max_delay=0.2,
                                 sleep=sleeps.append)
    items = {f"k{i}": entry(i) for i in range(20)}
    cache.put_many(items)
    assert wrapper.write_sizes == [20, 10, 5]  # half, then half of the rest, then the rest
    got = cache.get_many(list(items))
    assert set(got) == set(items)
    assert wrapper.get_sizes == [20, 10, 5]
    # full jitter: each pause within base * 2**attempt
    assert len(sleeps) == 4
    assert all(0 <= s <= 0.02 * 2 ** (i % 2) for i, s in enumerate(sleeps))


def test_retries_are_bounded_and_what_is_left_is_a_miss(dynamodb, table):
    wrapper = Partial(dynamodb, table, stingy=100)
    cache = DynamoEmbeddingCache(table, wrapper, max_attempts=3, sleep=lambda s: None)
    before = ERRORS.value(cache="embedding", backend="dynamodb", kind="unprocessed")
    cache.put_many({f"k{i}": entry(i) for i in range(8)})
    # 3 attempts write 4 + 2 + 1 items; the last one is given up
    assert wrapper.write_sizes == [8, 4, 2]
    assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 7
    # 3 attempts read 4 + 2 + 1 keys; the last one (never written anyway) is a miss
    got = cache.get_many([f"k{i}" for i in range(8)])
    assert wrapper.get_sizes == [8, 4, 2]
    assert set(got) == {f"k{i}" for i in range(7)}
    assert ERRORS.value(cache="embedding", backend="dynamodb", kind="unprocessed") == before + 2


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_dynamodb_is_a_miss_and_then_skipped():
    client = client_for(f"http://127.0.0.1:{closed_port()}", connect_timeout=0.1, read_timeout=0.1)
    clock = [0.0]
    cache = GuardedEmbeddingCache(DynamoEmbeddingCache("t", client),
                                  Guard("embedding", "dynamodb", timeout_seconds=0.25,
                                        breaker=CircuitBreaker("embedding", 3, 10.0, clock=lambda: clock[0])))
    def count(kind: str) -> float:
        return ERRORS.value(cache="embedding", backend="dynamodb", kind=kind)

    before = {kind: count(kind) for kind in ("error", "timeout", "circuit_open")}
    for _ in range(3):
        assert cache.get_many(["a", "b"]) == {}
    cache.put_many({"a": entry(1)})
    # three failed calls (refused, or late on a busy machine) open the breaker ...
    assert count("error") + count("timeout") == before["error"] + before["timeout"] + 3
    assert cache.guard.breaker.state == "open" and cache.health().status == "degraded"
    # ... after which calls are skipped without reaching DynamoDB at all
    for _ in range(50):
        assert cache.get_many(["a"]) == {}
    assert count("circuit_open") == before["circuit_open"] + 1 + 50  # the put above, then the 50 gets
    assert count("error") + count("timeout") == before["error"] + before["timeout"] + 3


class Spy:
    def __init__(self, encoder) -> None:
        self.encoder, self.calls = encoder, []

    def encode(self, texts, *, normalize=True):
        self.calls.append(list(texts))
        return self.encoder.encode(texts, normalize=normalize)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


def test_a_second_instance_is_served_from_dynamodb_and_an_outage_changes_no_vector(encoder, dynamodb, table):
    texts = [f"cached sentence number {i}" for i in range(30)]

    def instance(client) -> CachingEncoder:
        cache = build_embedding_cache(CacheSettings(embedding_table=table, embedding_timeout_ms=5000),
                                      dynamodb_client=client)
        assert isinstance(cache, TieredEmbeddingCache) and isinstance(cache.local, LruEmbeddingCache)
        return CachingEncoder(encoder, cache)

    fresh = instance(dynamodb).encode(texts)
    # GIVEN another function instance (empty in-process tier) in front of the same table
    other = instance(dynamodb)
    other.encoder = spy = Spy(encoder)
    warm = other.encode(texts)
    assert spy.calls == []  # every text came from DynamoDB
    assert np.sum(warm.vectors * fresh.vectors, axis=1).min() >= 0.9999 and warm.tokens == fresh.tokens
    # AND with DynamoDB unreachable, the same request still answers, with the same vectors
    down = instance(client_for(f"http://127.0.0.1:{closed_port()}", connect_timeout=0.1, read_timeout=0.1))
    cold = down.encode(texts)
    np.testing.assert_allclose(cold.vectors, fresh.vectors, atol=1e-6)
    assert cold.tokens == fresh.tokens
