"""Build the caches a function uses from ``CacheSettings`` (at init, once).

AWS: in-process LRU in front of DynamoDB (embeddings) / ElastiCache (queries), the
remote tier guarded (deadline, circuit breaker). Embedded default: the in-process LRU,
plus an optional SQLite file for embeddings.
"""

from __future__ import annotations

from typing import Any

from ragserve.cache.breaker import CircuitBreaker
from ragserve.cache.embeddings import (
    DynamoEmbeddingCache,
    EmbeddingCache,
    LruEmbeddingCache,
    SqliteEmbeddingCache,
    TieredEmbeddingCache,
)
from ragserve.cache.guard import Guard, GuardedEmbeddingCache, GuardedQueryCache
from ragserve.cache.queries import LruQueryCache, MeteredQueryCache, QueryCache, RedisQueryCache, TieredQueryCache
from ragserve.cache.stats import OnLookup
from ragserve.settings import CacheSettings


def _breaker(name: str, settings: CacheSettings, logger: Any) -> CircuitBreaker:
    return CircuitBreaker(name, settings.breaker_failures, settings.breaker_reset_seconds, logger=logger)


def build_embedding_cache(settings: CacheSettings, *, dynamodb_client: Any = None,
                          logger: Any = None) -> EmbeddingCache | None:
    """None when caching is off or no tier is configured. Counting hits is the job of
    ``CachingEncoder`` (``on_lookup`` there)."""
    if not settings.enabled:
        return None
    local = LruEmbeddingCache(settings.embedding_max_items) if settings.embedding_max_items else None
    remote: EmbeddingCache | None = None
    if settings.embedding_table:
        backend = DynamoEmbeddingCache(settings.embedding_table, dynamodb_client,
                                       ttl_seconds=settings.embedding_ttl_seconds)
        guard = Guard("embedding", backend.backend, timeout_seconds=settings.embedding_timeout_ms / 1000,
                      breaker=_breaker("embedding", settings, logger), logger=logger)
        remote = GuardedEmbeddingCache(backend, guard)
    elif settings.embedding_file is not None:
        backend = SqliteEmbeddingCache(settings.embedding_file, settings.embedding_ttl_seconds)
        guard = Guard("embedding", backend.backend, timeout_seconds=None,  # local file: inline
                      breaker=_breaker("embedding", settings, logger), logger=logger)
        remote = GuardedEmbeddingCache(backend, guard)
    if local is not None and remote is not None:
        return TieredEmbeddingCache(local, remote)
    return local if local is not None else remote  # (an empty LRU is falsy: it has a length)


def build_query_cache(settings: CacheSettings, *, on_lookup: OnLookup | None = None, redis_client: Any = None,
                      logger: Any = None) -> QueryCache | None:
    """None when caching is off or no tier is configured; else a ``MeteredQueryCache``
    (hits and misses counted, ``on_lookup`` called) with a ``health()``."""
    if not settings.enabled:
        return None
    ttl = float(settings.query_ttl_seconds)
    local = LruQueryCache(settings.query_max_items, ttl) if settings.query_max_items else None
    remote: QueryCache | None = None
    if settings.query_url:
        timeout = settings.query_timeout_ms / 1000
        socket_timeout = min(0.05, timeout)
        backend = RedisQueryCache(settings.query_url, ttl_seconds=ttl, socket_timeout=socket_timeout,
                                  connect_timeout=min(0.1, timeout), client=redis_client)
        guard = Guard("query", backend.backend, timeout_seconds=timeout,
                      breaker=_breaker("query", settings, logger), logger=logger)
        remote = GuardedQueryCache(backend, guard)
    if local is not None and remote is not None:
        cache: QueryCache = TieredQueryCache(local, remote)
    elif local is not None:
        cache = local
    elif remote is not None:
        cache = remote
    else:
        return None
    return MeteredQueryCache(cache, on_lookup=on_lookup)
