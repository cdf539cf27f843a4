"""Graceful degradation around a remote cache backend.

Every call goes through a ``Guard``: skipped while the circuit breaker is open (no
time spent at all), otherwise run with an overall deadline on a small worker pool. An
exception, a timeout or a value that does not decode is a miss (``get``) or a no-op
(``put``), counted in ``ragserve_cache_errors_total{cache,backend,kind}``; nothing
here raises. The deadline caps what the backends' own client timeouts (redis socket
timeouts, botocore connect/read timeouts and attempts) may still add up to: retries,
a slow DNS answer, a batch of several round trips. A call past its deadline keeps its
worker until the client's timeout ends it; the caller has long moved on.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ragserve.cache.breaker import CircuitBreaker
from ragserve.cache.stats import record_error
from ragserve.health import Check

T = TypeVar("T")


class Guard:
    """Runs one backend's calls with a deadline, behind a circuit breaker.

    ``timeout_seconds`` None: no worker thread, the call runs inline and only the
    client's own timeouts bound it (fine for a local SQLite file).
    """

    def __init__(self, cache: str, backend: str, *, timeout_seconds: float | None = 0.1,
                 breaker: CircuitBreaker | None = None, max_workers: int = 4, logger: Any = None) -> None:
        self.cache = cache
        self.backend = backend
        self.timeout_seconds = timeout_seconds
        self.breaker = breaker if breaker is not None else CircuitBreaker(cache, logger=logger)
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._log = logger if logger is not None else logging.getLogger("ragserve.cache")

    def run(self, fn: Callable[..., T], *args: Any, default: T) -> T:
        """``fn(*args)``, or ``default`` when skipped, failed or late. Never raises."""
        if not self.breaker.allow():
            record_error(self.cache, self.backend, "circuit_open")
            return default
        try:
            if self.timeout_seconds is None:
                result = fn(*args)
            else:
                context = contextvars.copy_context()  # the request's log/trace context
                future = self._executor().submit(context.run, fn, *args)
                result = future.result(timeout=self.timeout_seconds)
        except FutureTimeout:
            self._failed("timeout", None)
            return default
        except Exception as exc:  # noqa: BLE001 - a cache failure is a miss, never a failed request
            self._failed("error", exc)
            return default
        self.breaker.record_success()
        return result

    def health(self) -> Check:
        return self.breaker.health()

    def _failed(self, kind: str, exc: Exception | None) -> None:
        record_error(self.cache, self.backend, kind)
        self.breaker.record_failure("timeout" if exc is None else type(exc).__name__)
        if exc is not None:
            self._log.debug("cache call failed", extra={"cache": self.cache, "backend": self.backend,
                                                        "error": type(exc).__name__, "detail": str(exc)[:200]})

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._max_workers,
                                                    thread_name_prefix=f"ragserve-cache-{self.cache}")
        return self._pool


class GuardedEmbeddingCache:
    """An ``EmbeddingCache`` whose backend calls never raise, never overrun the deadline,
    and are skipped while the backend's circuit is open."""

    def __init__(self, backend, guard: Guard) -> None:
        self.backend = backend
        self.guard = guard

    def get_many(self, keys: Sequence[str]) -> dict:
        if not keys:
            return {}
        return self.guard.run(self.backend.get_many, list(keys), default={})

    def put_many(self, items: Mapping) -> None:
        if items:
            self.guard.run(self.backend.put_many, dict(items), default=None)

    def health(self) -> Check:
        return self.guard.health()


class GuardedQueryCache:
    """A ``QueryCache`` with the same promises as ``GuardedEmbeddingCache``."""

    def __init__(self, backend, guard: Guard) -> None:
        self.backend = backend
        self.guard = guard

    def get(self, key: str) -> bytes | None:
        return self.guard.run(self.backend.get, key, default=None)

    def put(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        self.guard.run(self.backend.put, key, value, ttl_seconds, default=None)

    def health(self) -> Check:
        return self.guard.health()
