"""The query cache on a real redis-server: round trips, TTL, garbage, and a server that
is killed or hangs mid-run (misses, no exceptions, the breaker opens and skips it, and
closes again once the server is back on the same port)."""

from __future__ import annotations

import time

import redis

from ragserve.cache import build_query_cache
from ragserve.cache.breaker import CircuitBreaker
from ragserve.cache.guard import Guard, GuardedQueryCache
from ragserve.cache.queries import (
    KEY_PREFIX,
    LruQueryCache,
    MeteredQueryCache,
    RedisQueryCache,
    TieredQueryCache,
    frame,
    query_cache_key,
)
from ragserve.cache.stats import ERRORS, LOOKUPS
from ragserve.settings import CacheSettings

BODY = b'{"results":[{"id":"a","score":0.9}],"index_version":3,"next_offset":null}'


def raw(server) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


def errors(kind: str) -> float:
    return ERRORS.value(cache="query", backend="redis", kind=kind)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def guarded(server, clock, *, threshold=3, timeout=0.1) -> GuardedQueryCache:
    backend = RedisQueryCache(server.url, ttl_seconds=60)
    return GuardedQueryCache(backend, Guard("query", "redis", timeout_seconds=timeout,
                                            breaker=CircuitBreaker("query", threshold, 10.0, clock=clock)))


def test_round_trip_with_prefix_ttl_and_framing(redis_server):
    cache = RedisQueryCache(redis_server.url, ttl_seconds=60)
    key = query_cache_key(collection="c", index_version=1, query="hello", k=5)
    assert cache.get(key) is None
    cache.put(key, BODY)
    assert cache.get(key) == BODY
    client = raw(redis_server)
    assert client.get(KEY_PREFIX + key) == frame(BODY)
    assert 0 < client.pttl(KEY_PREFIX + key) <= 60_000
    cache.put(key, BODY, ttl_seconds=2)
    assert 0 < client.pttl(KEY_PREFIX + key) <= 2_000


def test_an_expired_entry_is_a_miss(redis_server):
    cache = RedisQueryCache(redis_server.url)
    cache.put("short", BODY, ttl_seconds=0.05)
    time.sleep(0.15)
    assert cache.get("short") is None


def test_garbage_and_wrong_types_are_misses(redis_server):
    client = raw(redis_server)
    client.set(KEY_PREFIX + "garbage", b'{"results": [truncated')
    client.rpush(KEY_PREFIX + "a-list", b"x")
    cache = GuardedQueryCache(RedisQueryCache(redis_server.url), Guard("query", "redis", timeout_seconds=0.5))
    before_garbage, before_error = errors("garbage"), errors("error")
    assert cache.get("garbage") is None
    assert cache.get("a-list") is None  # WRONGTYPE: an error, not an exception
    assert (errors("garbage"), errors("error")) == (before_garbage + 1, before_error + 1)


def test_tiered_over_redis_fills_a_fresh_local_tier(redis_server):
    first = TieredQueryCache(LruQueryCache(10, 60), RedisQueryCache(redis_server.url))
    second = TieredQueryCache(LruQueryCache(10, 60), RedisQueryCache(redis_server.url))  # another instance
    first.put("shared", BODY)
    assert second.local.get("shared") is None
    assert second.get("shared") == BODY
    assert second.local.get("shared") == BODY


def test_factory_builds_lru_in_front_of_guarded_redis(redis_server):
    cache = build_query_cache(CacheSettings(query_url=redis_server.url))
    assert isinstance(cache, MeteredQueryCache) and isinstance(cache.cache.remote, GuardedQueryCache)
    hits = LOOKUPS.value(cache="query", result="hit")
    cache.put("factory", BODY)
    assert cache.get("factory") == BODY
    assert LOOKUPS.value(cache="query", result="hit") == hits + 1
    assert cache.health().status == "healthy"


def test_redis_killed_mid_run_degrades_to_misses_then_recovers(disposable_redis):
    clock = Clock()
    cache = guarded(disposable_redis, clock, threshold=3)
    cache.put("k", BODY)
    assert cache.get("k") == BODY
    # WHEN the server is killed mid-run
    disposable_redis.kill()
    before = errors("error")
    # THEN gets are misses and puts no-ops, with no exception
    assert cache.get("k") is None
    cache.put("k", BODY)
    assert cache.get("k") is None
    # AND after three consecutive failures the circuit is open: the backend is skipped
    assert errors("error") == before + 3
    assert cache.guard.breaker.state == "open"
    assert cache.health().status == "degraded"
    # AND while open, calls are skipped without reaching Redis
    skipped = errors("circuit_open")
    for _ in range(50):
        assert cache.get("k") is None
    assert errors("circuit_open") == skipped + 50 and errors("error") == before + 3
    # WHEN the server is back on the same port and reset_seconds have passed
    disposable_redis.start()
    clock.now += 10
    # THEN one trial call closes the circuit again (the killed server lost its data)
    assert cache.guard.breaker.state == "half_open"
    assert cache.get("k") is None
    assert cache.guard.breaker.state == "closed"
    cache.put("k", BODY)
    assert cache.get("k") == BODY
    assert cache.health().status == "healthy"


def test_a_hung_redis_costs_at_most_the_timeout_then_nothing(disposable_redis):
    clock = Clock()
    cache = guarded(disposable_redis, clock, threshold=3, timeout=0.1)
    cache.put("k", BODY)
    assert cache.get("k") == BODY
    disposable_redis.pause()  # accepts nothing, answers nothing
    try:
        before = {kind: errors(kind) for kind in ("error", "timeout", "circuit_open")}
        for _ in range(6):
            assert cache.get("k") is None
        # the first three are cut by the socket timeout (50 ms) or the guard's deadline (100 ms) ...
        assert errors("error") + errors("timeout") == before["error"] + before["timeout"] + 3
        # ... then the circuit is open and the rest never reach the hung server
        assert cache.guard.breaker.state == "open"
        assert errors("circuit_open") == before["circuit_open"] + 3
    finally:
        disposable_redis.resume()
    clock.now += 10
    assert cache.get("k") == BODY
    assert cache.guard.breaker.state == "closed"


def test_an_unreachable_redis_never_raises():
    cache = GuardedQueryCache(RedisQueryCache("redis://127.0.0.1:1/0"), Guard("query", "redis", timeout_seconds=0.2))
    assert cache.get("k") is None
    cache.put("k", BODY)
