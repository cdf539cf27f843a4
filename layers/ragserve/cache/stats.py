"""Cache metrics: lookups (hits and misses) and backend errors, always counted into the
process's Prometheus registry, and passed to an optional hook for EMF.

The hook is ``on_lookup(cache_name, hits, misses)``; the handlers route it to the
``CacheHit`` / ``CacheMiss`` EMF metrics with dimension ``Cache``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ragserve.observability.prometheus import REGISTRY

OnLookup = Callable[[str, int, int], None]

LOOKUPS = REGISTRY.counter("ragserve_cache_lookups_total", "Cache lookups, by cache and result (hit or miss).")
HIT_RATIO = REGISTRY.gauge("ragserve_cache_hit_ratio", "Hits / lookups since the process started, by cache.")
ERRORS = REGISTRY.counter(
    "ragserve_cache_errors_total",
    "Cache backend calls served as a miss or skipped: kind = error, timeout, garbage or circuit_open.")

_log = logging.getLogger("ragserve.cache")
_lock = threading.Lock()


class CacheStats:
    """Counts the lookups of one logical cache (``embedding`` or ``query``)."""

    def __init__(self, name: str, on_lookup: OnLookup | None = None) -> None:
        self.name = name
        self.on_lookup = on_lookup

    def record(self, hits: int, misses: int) -> None:
        if hits == 0 and misses == 0:
            return
        with _lock:  # the ratio is written from the two counters it is made of
            LOOKUPS.inc(hits, cache=self.name, result="hit")
            LOOKUPS.inc(misses, cache=self.name, result="miss")
            total_hits = LOOKUPS.value(cache=self.name, result="hit")
            total = total_hits + LOOKUPS.value(cache=self.name, result="miss")
            HIT_RATIO.set(total_hits / total if total else 0.0, cache=self.name)
        if self.on_lookup is not None:
            try:
                self.on_lookup(self.name, hits, misses)
            except Exception:  # noqa: BLE001 - metrics never fail a request
                _log.debug("cache metrics hook failed", exc_info=True)


def record_error(cache: str, backend: str, kind: str, count: int = 1) -> None:
    ERRORS.inc(count, cache=cache, backend=backend, kind=kind)
