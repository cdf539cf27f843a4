"""The query cache: canonical keys, the in-process LRU with TTL, value framing, tiers,
hit/miss metrics, and the factories built from CacheSettings."""

from __future__ import annotations

import pytest

from ragserve.cache import build_embedding_cache, build_query_cache
from ragserve.cache.embeddings import LruEmbeddingCache, SqliteEmbeddingCache, TieredEmbeddingCache
from ragserve.cache.queries import (
    LruQueryCache,
    MeteredQueryCache,
    TieredQueryCache,
    frame,
    normalize_query,
    query_cache_key,
    unframe,
)
from ragserve.cache.stats import HIT_RATIO, LOOKUPS
from ragserve.observability.prometheus import REGISTRY
from ragserve.settings import CacheSettings, Env, SettingsError

BASE = dict(collection="default", index_version=3, query="How do I reset my password?", k=10, offset=0,
            filter={"lang": "en", "tier": 2}, include_text=True)


def key(**changes) -> str:
    return query_cache_key(**{**BASE, **changes})


# --------------------------------------------------------------------- keys


def test_key_ignores_what_the_model_cannot_see():
    assert key() == key(query="  how do I   RESET my\tpassword?\n")  # whitespace runs, case
    assert key() == key(filter={"tier": 2, "lang": "en"})  # filter order
    assert key(filter=None) == key(filter={})
    assert len(key()) == 64 and int(key(), 16) >= 0


@pytest.mark.parametrize("change", [
    {"collection": "other"}, {"index_version": 4}, {"query": "how do I reset my passwords?"}, {"k": 11},
    {"offset": 10}, {"filter": {"lang": "de", "tier": 2}}, {"filter": {}}, {"include_text": False},
])
def test_every_part_of_the_request_is_in_the_key(change):
    assert key(**change) != key()


def test_a_new_index_version_is_a_new_key_space():
    assert {key(index_version=v) for v in range(1, 50)}.isdisjoint({key(index_version=v) for v in range(50, 99)})


def test_normalisation_matches_the_uncased_tokenizer_and_no_more():
    assert normalize_query(" Hello\u00a0 World\u3000") == "hello world"
    assert normalize_query("Straße") == "straße"  # lowercase, not casefold ("strasse" tokenises differently)
    assert normalize_query("a\x1cb") == "a\x1cb"  # the tokenizer drops control characters; no space here
    assert normalize_query("Keep Case", lowercase=False) == "Keep Case"
    assert key(lowercase=False) != key(lowercase=False, query=BASE["query"].lower())


# --------------------------------------------------------------------- LRU


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lru_entries_expire_after_their_ttl():
    clock = Clock()
    cache = LruQueryCache(max_items=10, ttl_seconds=60, clock=clock)
    cache.put("a", b"1")
    cache.put("b", b"2", ttl_seconds=5)
    cache.put("c", b"3", ttl_seconds=0)  # not stored
    clock.now = 4.9
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", b"2", None)
    clock.now = 5.0
    assert cache.get("b") is None and cache.get("a") == b"1"
    clock.now = 60.0
    assert cache.get("a") is None and len(cache) == 0


def test_lru_evicts_the_least_recently_used():
    cache = LruQueryCache(max_items=2, ttl_seconds=60)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.get("a")
    cache.put("c", b"3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")


# --------------------------------------------------------------------- framing, tiers, metrics


@pytest.mark.parametrize("garbage", [None, b"", b"{}", "text", frame(b'{"a":1}')[:-1], frame(b"x") + b"y",
                                     b"rq1\0" + b"\0\0\0\0" + b"body"])
def test_garbage_is_not_unframed(garbage):
    assert unframe(garbage) is None


def test_frame_round_trips():
    assert unframe(frame(b'{"results":[]}')) == b'{"results":[]}'
    assert unframe(frame(b"")) == b""


def test_tiered_fills_local_from_remote_and_writes_both():
    local, remote = LruQueryCache(10, 60), LruQueryCache(10, 60)
    tiered = TieredQueryCache(local, remote)
    remote.put("k", b"body")
    assert tiered.get("k") == b"body" and local.get("k") == b"body"
    tiered.put("j", b"other")
    assert local.get("j") == remote.get("j") == b"other"
    assert tiered.get("none") is None


def test_metered_cache_counts_hits_and_misses_and_calls_the_hook():
    seen = []
    cache = MeteredQueryCache(LruQueryCache(10, 60), on_lookup=lambda *a: seen.append(a))
    hits, misses = LOOKUPS.value(cache="query", result="hit"), LOOKUPS.value(cache="query", result="miss")
    cache.get("k")
    cache.put("k", b"v")
    cache.get("k")
    cache.get("k")
    assert seen == [("query", 0, 1), ("query", 1, 0), ("query", 1, 0)]
    assert LOOKUPS.value(cache="query", result="hit") == hits + 2
    assert LOOKUPS.value(cache="query", result="miss") == misses + 1
    ratio = HIT_RATIO.value(cache="query")
    total_hits = LOOKUPS.value(cache="query", result="hit")
    assert ratio == pytest.approx(total_hits / (total_hits + LOOKUPS.value(cache="query", result="miss")))
    text = REGISTRY.render()
    assert 'ragserve_cache_lookups_total{cache="query",result="hit"}' in text
    assert 'ragserve_cache_hit_ratio{cache="query"}' in text


def test_a_failing_hook_does_not_fail_the_lookup():
    def hook(*args):
        raise RuntimeError("emf down")

    assert MeteredQueryCache(LruQueryCache(10, 60), on_lookup=hook).get("k") is None


# --------------------------------------------------------------------- settings and factories


def test_cache_settings_from_env():
    settings = CacheSettings.from_env({Env.QUERY_CACHE_URL: "rediss://cache.example:6379",
                                       Env.QUERY_CACHE_TTL_SECONDS: "7200", Env.CACHE_ENABLED: "true",
                                       Env.EMBEDDING_CACHE_TABLE: "t", Env.CACHE_BREAKER_FAILURES: "5"})
    assert (settings.query_url, settings.query_ttl_seconds, settings.embedding_table,
            settings.breaker_failures) == ("rediss://cache.example:6379", 7200, "t", 5)
    assert CacheSettings.from_env({}).embedding_ttl_seconds == 7 * 86_400
    with pytest.raises(SettingsError, match=Env.QUERY_CACHE_URL):
        CacheSettings.from_env({Env.QUERY_CACHE_URL: "http://nope"})


def test_embedded_defaults_are_in_process():
    query = build_query_cache(CacheSettings())
    assert isinstance(query, MeteredQueryCache) and isinstance(query.cache, LruQueryCache)
    assert query.health().status == "healthy"
    assert isinstance(build_embedding_cache(CacheSettings()), LruEmbeddingCache)
    assert build_query_cache(CacheSettings(enabled=False)) is None
    assert build_embedding_cache(CacheSettings(enabled=False)) is None
    assert build_query_cache(CacheSettings(query_max_items=0)) is None


def test_embedded_sqlite_tier(tmp_path):
    cache = build_embedding_cache(CacheSettings(embedding_file=tmp_path / "e.sqlite"))
    assert isinstance(cache, TieredEmbeddingCache) and isinstance(cache.remote.backend, SqliteEmbeddingCache)
    assert cache.health().status == "healthy"
