"""The guard around remote cache backends: failures, timeouts and an open circuit are
misses or no-ops, counted, never raised, and an open circuit costs ~nothing."""

from __future__ import annotations

import threading
import time

from ragserve.cache.breaker import CircuitBreaker
from ragserve.cache.guard import Guard, GuardedEmbeddingCache, GuardedQueryCache
from ragserve.cache.stats import ERRORS


def errors(kind: str, cache: str = "guardtest", backend: str = "fake") -> float:
    return ERRORS.value(cache=cache, backend=backend, kind=kind)


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def get(self, key):
        self.calls += 1
        raise ConnectionError("refused")

    put = get_many = put_many = get


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.release = threading.Event()

        self.finished = threading.Event()

    def get(self, key):
        self.release.wait(self.seconds)
        self.finished.set()
        return b"late"


def guard(timeout=0.05, threshold=3, reset=60.0) -> Guard:
    return Guard("guardtest", "fake", timeout_seconds=timeout,
                 breaker=CircuitBreaker("guardtest", threshold, reset))


def test_an_exception_is_the_default_and_is_counted():
    g, before = guard(), errors("error")
    assert g.run(Broken().get, "k", default="miss") == "miss"
    assert errors("error") == before + 1


def test_a_slow_call_is_cut_at_the_deadline():
    g, before = guard(timeout=0.05), errors("timeout")
    slow = Slow(30.0)
    assert g.run(slow.get, "k", default=None) is None
    assert not slow.finished.is_set()  # the caller got its default while the call was still running
    slow.release.set()
    assert errors("timeout") == before + 1


def test_an_open_circuit_skips_the_backend_and_costs_nothing():
    backend, g = Broken(), guard(threshold=3)
    cache = GuardedQueryCache(backend, g)
    for _ in range(3):
        assert cache.get("k") is None
    assert backend.calls == 3 and g.breaker.state == "open"
    before = errors("circuit_open")
    started = time.perf_counter()
    for _ in range(100):
        assert cache.get("k") is None
        cache.put("k", b"v")
    per_call = (time.perf_counter() - started) / 200
    assert backend.calls == 3
    assert per_call < 0.002
    assert errors("circuit_open") == before + 200
    assert cache.health().status == "degraded"


def test_guarded_embedding_cache_never_raises():
    backend = Broken()
    cache = GuardedEmbeddingCache(backend, guard(timeout=None))
    assert cache.get_many(["a", "b"]) == {}
    cache.put_many({"a": object()})
    assert cache.get_many([]) == {} and backend.calls == 2  # empty lookups never reach it


def test_success_closes_a_half_open_circuit():
    clock = [0.0]
    g = Guard("guardtest", "fake", timeout_seconds=0.5,
              breaker=CircuitBreaker("guardtest", 1, 10.0, clock=lambda: clock[0]))
    assert g.run(Broken().get, "k", default=None) is None
    assert g.breaker.state == "open"
    clock[0] += 10
    assert g.run(lambda key: b"v", "k", default=None) == b"v"
    assert g.breaker.state == "closed" and g.health().status == "healthy"
