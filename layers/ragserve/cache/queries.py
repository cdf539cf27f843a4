"""The query cache: a search request -> its response body (JSON bytes).

Key: sha256 over a canonical JSON of (collection, index_version, normalised query, k,
offset, filter, include_text). The index version is part of the key, so publishing a
new version is a new key space: that is the event-based invalidation; old entries age
out by TTL. Query normalisation (``normalize_query``) only merges what the model cannot
tell apart: runs of whitespace (the tokenizer splits on them) and letter case (the
model's tokenizer lowercases; pass ``lowercase=False`` for a cased model). It does not
casefold (``"straße"`` and ``"strasse"`` tokenise differently) and leaves control
characters alone (the tokenizer drops them; collapsing them into a space would not).

Backends: ``LruQueryCache`` (in-process, TTL), ``RedisQueryCache`` (ElastiCache
Valkey / Redis OSS over TLS, via redis-py, short socket timeouts), ``TieredQueryCache``;
``MeteredQueryCache`` counts hits and misses. Remote backends raise on failure: wrap
them in ``cache.guard.GuardedQueryCache``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ragserve.cache.stats import CacheStats, OnLookup, record_error
from ragserve.health import Check

CACHE_NAME = "query"
KEY_PREFIX = "ragserve:q:"
KEY_FORMAT = 1  # bump when the response body's shape changes: a new key space
# BERT's whitespace: space, tab, newline, carriage return and the Unicode Zs characters
_WHITESPACE = re.compile("[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def normalize_query(query: str, *, lowercase: bool = True) -> str:
    query = _WHITESPACE.sub(" ", query).strip(" ")
    return query.lower() if lowercase else query


def query_cache_key(*, collection: str, index_version: int | str, query: str, k: int, offset: int = 0,
                    filter: Mapping[str, Any] | None = None, include_text: bool = True,
                    lowercase: bool = True) -> str:
    """The cache key of one search; ``filter`` None and ``{}`` are the same search."""
    canonical = json.dumps(
        {"v": KEY_FORMAT, "collection": collection, "index_version": index_version,
         "query": normalize_query(query, lowercase=lowercase), "k": k, "offset": offset,
         "filter": dict(filter or {}), "include_text": bool(include_text)},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class QueryCache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None: ...


class LruQueryCache:
    """In-process, thread-safe, bounded by entries; an entry expires after its TTL
    (``ttl_seconds`` of ``put``, else the cache's)."""

    backend = "lru"

    def __init__(self, max_items: int = 2_000, ttl_seconds: float = 3_600.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + ttl, bytes(value))
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def health(self) -> Check:
        return Check("healthy")


# Stored values carry a 4-byte magic/version and a CRC32 of the body, so a truncated or
# foreign value is a miss, never a corrupt response.
_MAGIC = b"rq1\0"
_CRC = struct.Struct(">I")


def frame(body: bytes) -> bytes:
    return _MAGIC + _CRC.pack(zlib.crc32(body)) + body


def unframe(data: Any) -> bytes | None:
    if not isinstance(data, bytes) or len(data) < 8 or not data.startswith(_MAGIC):
        return None
    body = data[8:]
    return body if _CRC.unpack_from(data, 4)[0] == zlib.crc32(body) else None


class RedisQueryCache:
    """Redis OSS / Valkey (ElastiCache Serverless speaks TLS only: ``rediss://``).

    ``url`` (``redis://`` or ``rediss://host:port``) or ``host``/``port``/``tls``.
    Socket timeouts are short (50 ms) and redis-py's own retries are off: the guard
    and its breaker decide what happens after a failure. ``client``: a ready client
    (tests). Keys are ``prefix + key``; values are framed (``frame``)."""

    backend = "redis"

    def __init__(self, url: str | None = None, *, host: str | None = None, port: int = 6379, tls: bool = False,
                 ttl_seconds: float = 3_600.0, socket_timeout: float = 0.05, connect_timeout: float = 0.05,
                 prefix: str = KEY_PREFIX, max_connections: int = 16, client: Any = None) -> None:
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        if client is None:
            client = redis_client(url, host=host, port=port, tls=tls, socket_timeout=socket_timeout,
                                  connect_timeout=connect_timeout, max_connections=max_connections)
        self.client = client

    def get(self, key: str) -> bytes | None:
        data = self.client.get(self.prefix + key)
        if data is None:
            return None
        body = unframe(data)
        if body is None:
            record_error(CACHE_NAME, self.backend, "garbage")
        return body

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl > 0:
            self.client.set(self.prefix + key, frame(bytes(value)), px=max(1, int(ttl * 1000)))


def redis_client(url: str | None = None, *, host: str | None = None, port: int = 6379, tls: bool = False,
                 socket_timeout: float = 0.05, connect_timeout: float = 0.05, max_connections: int = 16) -> Any:
    """A redis-py client with short timeouts and no retries (imported here, so the
    package imports without redis). Connects on first use, not here."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = dict(socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                   retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
                                   max_connections=max_connections)
    if url:
        if tls and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        return redis.Redis.from_url(url, **options)
    if not host:
        raise ValueError("a Redis url or host is required")
    return redis.Redis(host=host, port=port, ssl=tls, **options)


class TieredQueryCache:
    """``local`` first, then ``remote``; a remote hit fills ``local`` (with the local
    cache's own TTL); writes go to both."""

    def __init__(self, local: QueryCache, remote: QueryCache) -> None:
        self.local = local
        self.remote = remote

    def get(self, key: str) -> bytes | None:
        value = self.local.get(key)
        if value is None:
            value = self.remote.get(key)
            if value is not None:
                self.local.put(key, value)
        return value

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        self.local.put(key, value, ttl_seconds)
        self.remote.put(key, value, ttl_seconds)

    def health(self) -> Check:
        check = getattr(self.remote, "health", None)
        return check() if check is not None else Check("healthy")


class MeteredQueryCache:
    """Counts every ``get`` as a hit or a miss (``CacheStats``); the outermost layer."""

    def __init__(self, cache: QueryCache, *, on_lookup: OnLookup | None = None) -> None:
        self.cache = cache
        self.stats = CacheStats(CACHE_NAME, on_lookup)

    def get(self, key: str) -> bytes | None:
        value = self.cache.get(key)
        self.stats.record(int(value is not None), int(value is None))
        return value

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        self.cache.put(key, value, ttl_seconds)

    def health(self) -> Check:
        check = getattr(self.cache, "health", None)
        return check() if check is not None else Check("healthy")
