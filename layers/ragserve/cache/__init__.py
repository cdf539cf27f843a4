"""Caches (docs/ARCHITECTURE.md section 6): the embedding cache (text -> vector, per model) and the
query cache (search request -> response body, per index version).

A cache that is down, slow or returns garbage is a miss: remote backends run behind a
``Guard`` (deadline + circuit breaker) that never raises. Hits and misses are counted
in ``ragserve_cache_lookups_total{cache,result}`` and passed to an ``on_lookup`` hook
(EMF ``CacheHit`` / ``CacheMiss``). No environment is read here: ``CacheSettings``
comes from ``ragserve.settings``; boto3 and redis are imported only by the adapters.
"""

from ragserve.cache.breaker import CircuitBreaker, CircuitOpen
from ragserve.cache.embeddings import (
    CachedEmbedding,
    CachingEncoder,
    DynamoEmbeddingCache,
    EmbeddingCache,
    LruEmbeddingCache,
    SqliteEmbeddingCache,
    TieredEmbeddingCache,
    embedding_key,
    encode_with_cache,
    model_key,
)
from ragserve.cache.factory import build_embedding_cache, build_query_cache
from ragserve.cache.guard import Guard, GuardedEmbeddingCache, GuardedQueryCache
from ragserve.cache.queries import (
    LruQueryCache,
    MeteredQueryCache,
    QueryCache,
    RedisQueryCache,
    TieredQueryCache,
    normalize_query,
    query_cache_key,
)
from ragserve.cache.stats import CacheStats, OnLookup

__all__ = [
    "CacheStats", "CachedEmbedding", "CachingEncoder", "CircuitBreaker", "CircuitOpen", "DynamoEmbeddingCache",
    "EmbeddingCache", "Guard", "GuardedEmbeddingCache", "GuardedQueryCache", "LruEmbeddingCache",
    "LruQueryCache", "MeteredQueryCache", "OnLookup", "QueryCache", "RedisQueryCache", "SqliteEmbeddingCache",
    "TieredEmbeddingCache", "TieredQueryCache", "build_embedding_cache", "build_query_cache", "embedding_key",
    "encode_with_cache", "model_key", "normalize_query", "query_cache_key",
]
