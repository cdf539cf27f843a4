"""The embedding cache: text -> (vector, tokens, truncated), keyed per model.

Key: ``sha256(model_key + "\\0" + text)`` hex, where ``model_key`` names the model id,
its variant and its weights (``model_key(spec)``), so a new or re-quantised model is a
new key space. Value (``encode_value``), little-endian, 8 + 2 x dims bytes::

    u8 version (1) | u8 flags (1 truncated, 2 unit length) | u16 dims | u32 tokens | dims x float16

A value that does not parse (wrong version, flags, length, non-finite numbers) is a
miss. Float16 keeps ~3 significant digits; unit-length vectors are re-normalised after
decoding, and stay within cosine 0.9999 of the float32 vector (tests/unit).

Normalisation: the cache holds what ``Encoder.encode(texts, normalize=True)`` returns
(unit vectors for this model). ``normalize=False`` requests bypass it entirely.

Backends: ``LruEmbeddingCache`` (in-process), ``SqliteEmbeddingCache`` (a local file),
``DynamoEmbeddingCache`` (AWS), ``TieredEmbeddingCache`` (local in front of remote).
Remote backends raise on failure; wrap them in ``cache.guard.GuardedEmbeddingCache``.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragserve.cache.stats import CacheStats, OnLookup, record_error
from ragserve.health import Check

CACHE_NAME = "embedding"
# DynamoDB attribute names; the table (infra/constructs/tables.py) is keyed by "key"
# with TTL attribute "expires_at".
KEY_ATTR = "key"
VALUE_ATTR = "value"
TTL_ATTR = "expires_at"

_HEADER = struct.Struct("<BBHI")
_VERSION = 1
_TRUNCATED = 1
_UNIT = 2
_F16 = np.dtype("<f2")
_UNIT_TOLERANCE = 1e-3
DAY = 86_400


@dataclass(frozen=True, slots=True, eq=False)
class CachedEmbedding:
    """One cached text: its vector (float32) and what embedding it cost."""

    vector: np.ndarray
    tokens: int
    truncated: bool
    data: bytes = field(default=b"", repr=False)  # the stored form, when read from a cache


def encode_value(entry: CachedEmbedding) -> bytes | None:
    """The stored form; None when the vector cannot be stored (non-finite, too large)."""
    if entry.data:
        return entry.data
    vector = np.asarray(entry.vector, dtype=np.float32).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        half = vector.astype(_F16)
    if not 0 < vector.size < 1 << 16 or not np.isfinite(half).all() or not 0 <= entry.tokens < 1 << 32:
        return None
    flags = (_TRUNCATED if entry.truncated else 0) | (
        _UNIT if abs(float(np.linalg.norm(vector)) - 1.0) <= _UNIT_TOLERANCE else 0)
    return _HEADER.pack(_VERSION, flags, vector.size, int(entry.tokens)) + half.tobytes()


def decode_value(data: Any) -> CachedEmbedding | None:
    """The entry, or None when ``data`` is not a value this module wrote."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return None
    data = bytes(data)
    if len(data) < _HEADER.size:
        return None
    version, flags, dims, tokens = _HEADER.unpack_from(data)
    if version != _VERSION or flags & ~(_TRUNCATED | _UNIT) or dims == 0 or len(data) != _HEADER.size + 2 * dims:
        return None
    vector = np.frombuffer(data, dtype=_F16, offset=_HEADER.size).astype(np.float32)
    if not np.isfinite(vector).all():
        return None
    if flags & _UNIT:
        norm = float(np.linalg.norm(vector))
        if not abs(norm - 1.0) <= 0.01:  # float16 rounding moves it by ~1e-4, never this far
            return None
        vector /= norm
    return CachedEmbedding(vector, tokens, bool(flags & _TRUNCATED), data)


def model_key(spec: Any) -> str:
    """What the cache key names of a model: id, variant and the weights' sha256."""
    weights = getattr(getattr(spec, "model_file", None), "sha256", "") or ""
    return f"{spec.id}:{getattr(spec, 'variant', '')}:{weights[:16]}"


def embedding_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, CachedEmbedding]: ...

    def put_many(self, items: Mapping[str, CachedEmbedding]) -> None: ...


def _decode_all(raw: Mapping[str, Any], backend: str) -> dict[str, CachedEmbedding]:
    out: dict[str, CachedEmbedding] = {}
    garbage = 0
    for key, data in raw.items():
        entry = decode_value(data)
        if entry is None:
            garbage += 1
        else:
            out[key] = entry
    if garbage:
        record_error(CACHE_NAME, backend, "garbage", garbage)
    return out


def _encode_all(items: Mapping[str, CachedEmbedding]) -> dict[str, bytes]:
    out = {}
    for key, entry in items.items():
        data = encode_value(entry)
        if data is not None:
            out[key] = data
    return out


# --------------------------------------------------------------------- in-process


class LruEmbeddingCache:
    """In-process, thread-safe, bounded by entries (~0.9 kB each at 384 dims)."""

    backend = "lru"

    def __init__(self, max_items: int = 10_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedEmbedding]:
        raw = {}
        with self._lock:
            for key in keys:
                data = self._items.get(key)
                if data is not None:
                    self._items.move_to_end(key)
                    raw[key] = data
        return _decode_all(raw, self.backend)

    def put_many(self, items: Mapping[str, CachedEmbedding]) -> None:
        encoded = _encode_all(items)
        with self._lock:
            for key, data in encoded.items():
                self._items[key] = data
                self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def health(self) -> Check:
        return Check("healthy")


# --------------------------------------------------------------------- SQLite file


class SqliteEmbeddingCache:
    """A local file (WAL), shared by the threads of one process; entries expire after
    ``ttl_seconds`` (expired rows are misses, and are purged now and then)."""

    backend = "sqlite"
    _CHUNK = 500  # bound parameters per SELECT
    _PURGE_EVERY = 1000  # puts

    def __init__(self, path: str | Path, ttl_seconds: float = 7 * DAY, *,
                 clock: Callable[[], float] = time.time, busy_timeout_seconds: float = 0.05) -> None:
        self.path = Path(path)
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_seconds, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()
        self._puts = 0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS embeddings "
                             "(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID")

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedEmbedding]:
        keys = list(dict.fromkeys(keys))
        now = int(self._clock())
        raw: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), self._CHUNK):
                chunk = keys[start:start + self._CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM embeddings WHERE key IN ({marks}) AND expires_at > ?", (*chunk, now))
                raw.update(rows.fetchall())
        return _decode_all(raw, self.backend)

    def put_many(self, items: Mapping[str, CachedEmbedding]) -> None:
        expires = int(self._clock() + self.ttl_seconds)
        rows = [(key, data, expires) for key, data in _encode_all(items).items()]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
                self._puts += len(rows)
                if self._puts >= self._PURGE_EVERY:
                    self._puts = 0
                    self._db.execute("DELETE FROM embeddings WHERE expires_at <= ?", (int(self._clock()),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------- DynamoDB


class DynamoEmbeddingCache:
    """DynamoDB: ``BatchGetItem`` in chunks of 100 keys, ``BatchWriteItem`` in chunks
    of 25 items; unprocessed keys and items are retried with exponential backoff and
    full jitter, at most ``max_attempts`` calls per chunk (what is left is a miss / is
    not written). Items: ``key`` (S), ``value`` (B), ``expires_at`` (N, epoch seconds:
    the table's TTL; DynamoDB deletes lazily, so expired items read are misses too).

    ``client`` None: a boto3 client with short timeouts and one retry, made here (at
    init, not within a request's deadline)."""

    backend = "dynamodb"
    GET_CHUNK = 100
    PUT_CHUNK = 25

    def __init__(self, table_name: str, client: Any = None, ttl_seconds: float = 7 * DAY, *,
                 max_attempts: int = 4, base_delay: float = 0.02, max_delay: float = 0.2,
                 connect_timeout: float = 0.2, read_timeout: float = 0.2, region_name: str | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.table_name = table_name
        self.ttl_seconds = ttl_seconds
        self.max_attempts = max(1, max_attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._sleep = sleep
        self.client = client if client is not None else dynamodb_client(
            connect_timeout=connect_timeout, read_timeout=read_timeout, region_name=region_name)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedEmbedding]:
        keys = list(dict.fromkeys(keys))  # BatchGetItem rejects repeated keys
        raw: dict[str, Any] = {}
        now = self._clock()
        for start in range(0, len(keys), self.GET_CHUNK):
            request = {self.table_name: {
                "Keys": [{KEY_ATTR: {"S": key}} for key in keys[start:start + self.GET_CHUNK]],
                "ProjectionExpression": "#k, #v, #t",
                "ExpressionAttributeNames": {"#k": KEY_ATTR, "#v": VALUE_ATTR, "#t": TTL_ATTR},
            }}
            for attempt in range(self.max_attempts):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    key = item.get(KEY_ATTR, {}).get("S")
                    if key is None:
                        continue
                    if _expired(item, now):
                        continue
                    raw[key] = item.get(VALUE_ATTR, {}).get("B")
                request = response.get("UnprocessedKeys") or {}
                if not request.get(self.table_name, {}).get("Keys"):
                    break
                if attempt + 1 < self.max_attempts:
                    self._backoff(attempt)
            else:
                record_error(CACHE_NAME, self.backend, "unprocessed",
                             len(request[self.table_name]["Keys"]))
        return _decode_all(raw, self.backend)

    def put_many(self, items: Mapping[str, CachedEmbedding]) -> None:
        expires = str(int(self._clock() + self.ttl_seconds))
        puts = [{"PutRequest": {"Item": {KEY_ATTR: {"S": key}, VALUE_ATTR: {"B": data}, TTL_ATTR: {"N": expires}}}}
                for key, data in _encode_all(items).items()]  # a dict: no repeated keys in a batch
        for start in range(0, len(puts), self.PUT_CHUNK):
            request = {self.table_name: puts[start:start + self.PUT_CHUNK]}
            for attempt in range(self.max_attempts):
                response = self.client.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
                if not request.get(self.table_name):
                    break
                if attempt + 1 < self.max_attempts:
                    self._backoff(attempt)
            else:
                record_error(CACHE_NAME, self.backend, "unprocessed", len(request[self.table_name]))

    def _backoff(self, attempt: int) -> None:
        self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt))))


def _expired(item: Mapping[str, Any], now: float) -> bool:
    try:
        return float(item[TTL_ATTR]["N"]) <= now
    except (KeyError, TypeError, ValueError):
        return False


def dynamodb_client(*, connect_timeout: float = 0.2, read_timeout: float = 0.2, total_max_attempts: int = 2,
                    region_name: str | None = None, endpoint_url: str | None = None, **kwargs: Any) -> Any:
    """A DynamoDB client for the cache: short timeouts, few attempts (imported here, so
    the package imports without boto3)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout, max_pool_connections=8,
                    retries={"total_max_attempts": total_max_attempts, "mode": "standard"})
    return boto3.client("dynamodb", region_name=region_name, endpoint_url=endpoint_url, config=config, **kwargs)


# --------------------------------------------------------------------- tiers


class TieredEmbeddingCache:
    """``local`` first, ``remote`` for the rest; remote hits fill ``local``; writes go
    to both. Either may be a guarded cache."""

    def __init__(self, local: EmbeddingCache, remote: EmbeddingCache) -> None:
        self.local = local
        self.remote = remote

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedEmbedding]:
        found = self.local.get_many(keys)
        missing = [key for key in keys if key not in found]
        if missing:
            remote = self.remote.get_many(missing)
            if remote:
                self.local.put_many(remote)
                found.update(remote)
        return found

    def put_many(self, items: Mapping[str, CachedEmbedding]) -> None:
        self.local.put_many(items)
        self.remote.put_many(items)

    def health(self) -> Check:
        check = getattr(self.remote, "health", None)
        return check() if check is not None else Check("healthy")


# --------------------------------------------------------------------- the encoder


def token_usage(fresh: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-text (tokens, truncated) of an ``Encoder.encode`` result."""
    if fresh.token_counts is None or fresh.truncated_flags is None:
        raise TypeError("the encoder must report per-text token counts (Embeddings.token_counts)")
    return (np.asarray(fresh.token_counts, dtype=np.int64)[:count],
            np.asarray(fresh.truncated_flags, dtype=bool)[:count])


def encode_with_cache(encoder: Any, cache: EmbeddingCache | None, texts: Sequence[str], *,
                      normalize: bool = True, model: str | None = None,
                      stats: CacheStats | None = None) -> Any:
    """``encoder.encode(texts, normalize=normalize)``, served from ``cache`` where it can.

    Repeated texts are looked up and embedded once; every distinct text is looked up
    in one ``get_many``; the misses go to the encoder in one ``encode`` call and are
    written back in one ``put_many``; vectors come back in the caller's order. Usage
    (tokens, truncated) counts every text given, hits included, exactly as the encoder
    would have. ``cache`` should not raise (guard remote backends; if it does, that is
    a miss). Bypassed: ``normalize=False``. Hits and misses count distinct texts.
    """
    if not texts or cache is None or not normalize:
        return encoder.encode(texts, normalize=normalize)
    from ragserve.model.encoder import Embeddings

    slots: dict[str, int] = {}
    inverse = np.fromiter((slots.setdefault(t, len(slots)) for t in texts), dtype=np.intp, count=len(texts))
    unique = list(slots)
    namespace = model if model is not None else model_key(encoder.spec)
    keys = [embedding_key(namespace, text) for text in unique]
    dims = encoder.dimensions
    try:
        found = cache.get_many(keys)
    except Exception:  # noqa: BLE001 - an unguarded cache still never fails the request
        record_error(CACHE_NAME, "unguarded", "error")
        found = {}
    vectors = np.empty((len(unique), dims), dtype=np.float32)
    tokens = np.zeros(len(unique), dtype=np.int64)
    truncated = np.zeros(len(unique), dtype=bool)
    misses: list[int] = []
    for i, key in enumerate(keys):
        entry = found.get(key)
        if entry is not None and entry.vector.shape == (dims,):
            vectors[i], tokens[i], truncated[i] = entry.vector, entry.tokens, entry.truncated
        else:
            if entry is not None:
                record_error(CACHE_NAME, "lookup", "garbage")  # wrong dimensions
            misses.append(i)
    if stats is not None:
        stats.record(len(unique) - len(misses), len(misses))
    if misses:
        miss_texts = [unique[i] for i in misses]
        fresh = encoder.encode(miss_texts, normalize=True)
        counted, flagged = token_usage(fresh, len(miss_texts))
        tokens[misses], truncated[misses] = counted, flagged
        entries = {}
        for j, i in enumerate(misses):
            # answer with the stored (float16) form, so a text's vector is the same on a
            # miss and on every later hit
            entry = CachedEmbedding(fresh.vectors[j], int(counted[j]), bool(flagged[j]))
            data = encode_value(entry)
            stored = decode_value(data) if data is not None else None
            vectors[i] = stored.vector if stored is not None else fresh.vectors[j]
            if stored is not None:
                entries[keys[i]] = stored
        try:
            cache.put_many(entries)
        except Exception:  # noqa: BLE001
            record_error(CACHE_NAME, "unguarded", "error")
    counts, flags = tokens[inverse], truncated[inverse]
    return Embeddings(vectors[inverse], int(counts.sum()), int(flags.sum()), counts, flags)


class CachingEncoder:
    """An ``Encoder`` with an embedding cache in front: ``encode`` and ``embed`` go
    through ``encode_with_cache``; everything else (``model_id``, ``dimensions``,
    ``spec``...) is the wrapped encoder's. ``model`` None: ``model_key(encoder.spec)``.
    ``on_lookup(cache, hits, misses)`` receives the hit counts (for EMF)."""

    def __init__(self, encoder: Any, cache: EmbeddingCache | None, *, model: str | None = None,
                 on_lookup: OnLookup | None = None) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model = model if model is not None else model_key(encoder.spec)
        self.stats = CacheStats(CACHE_NAME, on_lookup)

    def encode(self, texts: Sequence[str], *, normalize: bool = True) -> Any:
        return encode_with_cache(self.encoder, self.cache, texts, normalize=normalize, model=self.model,
                                 stats=self.stats)

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        return self.encode(texts, normalize=normalize).vectors

    def health(self) -> Check:
        check = getattr(self.cache, "health", None)
        return check() if check is not None else Check("healthy")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)
