"""The embedding cache: value layout (float16 + usage), keys, the in-process LRU, the
SQLite file, tiers, and ``encode_with_cache`` in front of the real encoder."""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time

import numpy as np
import pytest

from ragserve.cache.embeddings import (
    CachedEmbedding,
    CachingEncoder,
    LruEmbeddingCache,
    SqliteEmbeddingCache,
    TieredEmbeddingCache,
    decode_value,
    embedding_key,
    encode_value,
    encode_with_cache,
    model_key,
)
from ragserve.cache.stats import ERRORS, HIT_RATIO, LOOKUPS


def entry(seed: int, dims: int = 384, tokens: int = 7, truncated: bool = False) -> CachedEmbedding:
    v = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return CachedEmbedding(v / np.linalg.norm(v), tokens, truncated)


# --------------------------------------------------------------------- layout


def test_value_is_a_fixed_header_and_float16_and_round_trips_usage():
    data = encode_value(entry(1, tokens=300, truncated=True))
    assert len(data) == 8 + 768  # 384 dims as float16 after an 8-byte header
    assert struct.unpack_from("<BBHI", data) == (1, 3, 384, 300)  # version, truncated|unit, dims, tokens
    back = decode_value(data)
    assert back.tokens == 300 and back.truncated is True and back.vector.dtype == np.float32


def test_float16_storage_stays_within_cosine_0_9999_and_unit_length(golden_vectors):
    # GIVEN the reference embeddings (float32, unit length)
    decoded = np.stack([decode_value(encode_value(CachedEmbedding(v, 1, False))).vector for v in golden_vectors])
    # THEN re-normalised after decoding, every vector is unit length ...
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-6)
    # ... and its worst cosine to the fresh vector is >= 0.9999 (measured: ~0.99999)
    cosines = np.sum(decoded * golden_vectors, axis=1)
    assert cosines.min() >= 0.9999
    assert np.abs(decoded - golden_vectors).max() < 1e-3


def test_a_vector_that_is_not_unit_length_is_stored_as_is():
    raw = CachedEmbedding(np.full(4, 3.0, dtype=np.float32), 2, False)
    np.testing.assert_array_equal(decode_value(encode_value(raw)).vector, raw.vector)


@pytest.mark.parametrize("garbage", [
    b"", b"\x01", b"not an embedding at all", None, "a string", 42,
    b"\x02" + encode_value(entry(1))[1:],  # unknown version
    encode_value(entry(1))[:1] + b"\x80" + encode_value(entry(1))[2:],  # unknown flag
    encode_value(entry(1))[:-2],  # truncated value
    encode_value(entry(1)) + b"\x00\x00",  # trailing bytes
    struct.pack("<BBHI", 1, 0, 2, 1) + np.array([np.nan, 1], dtype="<f2").tobytes(),  # NaN
    struct.pack("<BBHI", 1, 2, 2, 1) + np.array([5, 5], dtype="<f2").tobytes(),  # "unit" but norm 7
])
def test_garbage_does_not_decode(garbage):
    assert decode_value(garbage) is None


def test_vectors_float16_cannot_hold_are_not_stored():
    assert encode_value(CachedEmbedding(np.array([1e6, 0], dtype=np.float32), 1, False)) is None
    assert encode_value(CachedEmbedding(np.array([np.nan, 0], dtype=np.float32), 1, False)) is None


def test_key_is_sha256_of_model_nul_text(encoder):
    assert embedding_key("m", "hello") == hashlib.sha256(b"m\0hello").hexdigest()
    assert embedding_key("m", "hello") != embedding_key("m2", "hello")
    # the model key names the id, the variant and the weights: a new model is a new key space
    key = model_key(encoder.spec)
    assert key.startswith(f"{encoder.spec.id}:{encoder.spec.variant}:")
    assert encoder.spec.model_file.sha256.startswith(key.rsplit(":", 1)[1])


# --------------------------------------------------------------------- LRU


def test_lru_evicts_the_least_recently_used():
    cache = LruEmbeddingCache(max_items=3)
    cache.put_many({k: entry(i) for i, k in enumerate("abc")})
    cache.get_many(["a"])  # a is now the most recent
    cache.put_many({"d": entry(4)})
    assert set(cache.get_many(list("abcd"))) == {"a", "c", "d"}
    assert len(cache) == 3


def test_lru_round_trip_keeps_usage():
    cache = LruEmbeddingCache(10)
    cache.put_many({"k": entry(1, tokens=12, truncated=True)})
    got = cache.get_many(["k", "missing"])
    assert list(got) == ["k"] and got["k"].tokens == 12 and got["k"].truncated


# --------------------------------------------------------------------- SQLite


def test_sqlite_round_trip_persists_in_a_wal_file(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    cache = SqliteEmbeddingCache(path, ttl_seconds=3600)
    items = {f"k{i}": entry(i, tokens=i) for i in range(1200)}  # > one SELECT chunk
    cache.put_many(items)
    cache.close()
    reopened = SqliteEmbeddingCache(path, ttl_seconds=3600)
    got = reopened.get_many(list(items) + ["nope"])
    assert set(got) == set(items)
    assert got["k7"].tokens == 7
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_entries_expire_and_are_purged(tmp_path):
    now = [1_000_000.0]
    cache = SqliteEmbeddingCache(tmp_path / "c.sqlite", ttl_seconds=60, clock=lambda: now[0])
    cache.put_many({"old": entry(1)})
    now[0] += 61
    assert cache.get_many(["old"]) == {}
    cache._PURGE_EVERY = 1
    cache.put_many({"new": entry(2)})
    rows = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT key FROM embeddings").fetchall()
    assert rows == [("new",)]


def test_sqlite_garbage_row_is_a_counted_miss(tmp_path):
    cache = SqliteEmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many({"good": entry(1)})
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("INSERT INTO embeddings VALUES ('bad', x'0102', 9999999999)")
    db.commit()
    before = ERRORS.value(cache="embedding", backend="sqlite", kind="garbage")
    assert set(cache.get_many(["good", "bad"])) == {"good"}
    assert ERRORS.value(cache="embedding", backend="sqlite", kind="garbage") == before + 1


# --------------------------------------------------------------------- tiers


class Recorder(LruEmbeddingCache):
    def __init__(self) -> None:
        super().__init__(100)
        self.gets: list[list[str]] = []

    def get_many(self, keys):
        self.gets.append(list(keys))
        return super().get_many(keys)


def test_tiered_reads_local_then_remote_for_the_misses_and_fills_local():
    local, remote = LruEmbeddingCache(10), Recorder()
    tiered = TieredEmbeddingCache(local, remote)
    local.put_many({"a": entry(1)})
    remote.put_many({"b": entry(2)})
    assert set(tiered.get_many(["a", "b", "c"])) == {"a", "b"}
    assert remote.gets == [["b", "c"]]  # only local's misses
    assert set(local.get_many(["b"])) == {"b"}  # filled
    tiered.put_many({"d": entry(4)})
    assert set(local.get_many(["d"])) == {"d"} and set(remote.get_many(["d"])) == {"d"}


# --------------------------------------------------------------------- encode_with_cache


class Spy:
    """The real encoder, recording what reaches ``encode``."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.calls: list[list[str]] = []

    def encode(self, texts, *, normalize=True):
        self.calls.append(list(texts))
        return self.encoder.encode(texts, normalize=normalize)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_only_misses_reach_the_encoder_and_order_and_usage_are_kept(encoder):
    spy, cache = Spy(encoder), LruEmbeddingCache(100)
    long_text = "word " * 400  # truncated at 256 tokens
    first = ["alpha beta", "gamma", long_text]
    encode_with_cache(spy, cache, first)
    assert spy.calls == [first]
    # WHEN a request repeats cached texts, in another order, with duplicates and new ones
    texts = ["gamma", "new one", long_text, "gamma", "alpha beta", "new one", "another new"]
    got = encode_with_cache(spy, cache, texts)
    # THEN only the distinct misses were embedded, once each, in one call
    assert spy.calls[1] == ["new one", "another new"]
    # AND vectors are in the caller's order and match a fresh embedding
    fresh = encoder.encode(texts)
    assert got.vectors.shape == fresh.vectors.shape
    assert cosines(got.vectors, fresh.vectors).min() >= 0.9999
    # AND usage is what the encoder reports for the same request, hits included
    assert (got.tokens, got.truncated) == (fresh.tokens, fresh.truncated)
    assert got.truncated == 1


def test_duplicates_within_one_request_are_embedded_once(encoder):
    spy = Spy(encoder)
    got = encode_with_cache(spy, LruEmbeddingCache(10), ["same", "same", "other", "same"])
    assert spy.calls == [["same", "other"]]
    np.testing.assert_array_equal(got.vectors[0], got.vectors[3])
    assert got.tokens == encoder.encode(["same", "same", "other", "same"]).tokens


def test_unnormalized_requests_bypass_the_cache(encoder):
    spy, cache = Spy(encoder), LruEmbeddingCache(10)
    encode_with_cache(spy, cache, ["text"], normalize=False)
    assert len(cache) == 0 and spy.calls == [["text"]]


def test_a_failing_cache_is_a_miss(encoder):
    class Failing:
        def get_many(self, keys):
            raise RuntimeError("down")

        put_many = get_many

    got = encode_with_cache(encoder, Failing(), ["still works"])
    # the answer has the stored form's float16 precision, as any miss does
    np.testing.assert_allclose(got.vectors, encoder.encode(["still works"]).vectors, atol=2e-4)


def test_1000_cached_texts_are_all_hits_and_10x_faster(encoder):
    texts = [f"document {i}: a short note about topic {i % 37} and item {i * 7919 % 1000}" for i in range(1000)]
    seen = []
    caching = CachingEncoder(Spy(encoder), LruEmbeddingCache(2000),
                             on_lookup=lambda cache, hits, misses: seen.append((cache, hits, misses)))
    hits_before = LOOKUPS.value(cache="embedding", result="hit")
    started = time.perf_counter()
    first = caching.encode(texts)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = caching.encode(texts)
    second_s = time.perf_counter() - started
    assert seen == [("embedding", 0, 1000), ("embedding", 1000, 0)]
    assert len(caching.encoder.calls) == 1  # the second pass never reached the encoder
    assert LOOKUPS.value(cache="embedding", result="hit") == hits_before + 1000
    assert 0 < HIT_RATIO.value(cache="embedding") <= 1
    assert cosines(first.vectors, second.vectors).min() >= 0.9999
    assert second.tokens == first.tokens
    assert second_s * 10 < first_s, (first_s, second_s)
    # the wrapper is a drop-in Encoder
    assert caching.model_id == encoder.model_id and caching.dimensions == encoder.dimensions


def test_a_miss_and_every_later_hit_answer_the_same_vector(encoder):
    cache = LruEmbeddingCache(100)
    first = encode_with_cache(encoder, cache, ["the same text, twice", "another"])
    again = encode_with_cache(encoder, cache, ["another", "the same text, twice"])
    np.testing.assert_array_equal(first.vectors, again.vectors[::-1])
