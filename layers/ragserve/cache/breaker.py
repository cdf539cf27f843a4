"""A circuit breaker for one cache backend.

closed --N consecutive failures--> open --reset_seconds--> half-open (one trial call)
half-open --trial succeeds--> closed;  half-open --trial fails--> open again.

While open, callers skip the backend entirely, so a dead cache costs nothing but a
lock, not a timeout per request. Logging: one warning when the cache goes down
(closed -> open) and one info line when it recovers (half-open -> closed); the
periodic trials of a long outage log at debug level only, so an outage is two lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from ragserve.health import Check
from ragserve.observability.prometheus import REGISTRY

State = Literal["closed", "open", "half_open"]
T = TypeVar("T")

_open_gauge = REGISTRY.gauge("ragserve_cache_circuit_open",
                             "1 while a cache backend's circuit breaker is open or half-open.")


class CircuitOpen(Exception):
    """Raised by ``CircuitBreaker.call`` when the call was not attempted."""


class CircuitBreaker:
    """Thread-safe. Use ``call(fn, *args)``, or ``allow()`` then ``record_success()`` /
    ``record_failure(reason)`` around the call (what ``cache.guard`` does)."""

    def __init__(self, name: str, failure_threshold: int = 3, reset_seconds: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic, logger: Any = None) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("ragserve.cache")
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0  # when it last opened (or re-opened after a failed trial)
        self._down_since = 0.0  # when the outage began (first open)
        self._trial_started: float | None = None  # a half-open trial in flight
        self.reason = ""  # the failure that opened it (an exception type name, "timeout")
        _open_gauge.set(0, cache=name)

    @property
    def state(self) -> State:
        """``open`` becomes ``half_open`` once ``reset_seconds`` have passed."""
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_seconds:
                return "half_open"
            return self._state

    def allow(self) -> bool:
        """May the caller try the backend now? In half-open, only one caller may."""
        with self._lock:
            now = self._clock()
            if self._state == "closed":
                return True
            if self._state == "open":
                if now - self._opened_at < self.reset_seconds:
                    return False
                self._transition("half_open", self.reason)
            # half-open: one trial at a time; a trial never reported counts as lost
            if self._trial_started is None or now - self._trial_started >= self.reset_seconds:
                self._trial_started = now
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state != "closed":
                self._trial_started = None
                self._transition("closed", "")

    def record_failure(self, reason: str) -> None:
        with self._lock:
            if self._state == "closed":
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._down_since = self._clock()
                    self._open(reason)
            elif self._state == "half_open":
                self._trial_started = None
                self._open(reason)
            # open: a call that began before it opened; nothing changes

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` through the breaker: ``CircuitOpen`` when skipped; the function's
        own exceptions are recorded as failures and re-raised."""
        if not self.allow():
            raise CircuitOpen(f"{self.name}: circuit open ({self.reason})")
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self.record_failure(type(exc).__name__)
            raise
        self.record_success()
        return result

    def health(self) -> Check:
        state = self.state
        if state == "closed":
            return Check("healthy")
        return Check("degraded", f"circuit {state.replace('_', '-')}: {self.reason}; served as misses")

    # ------------------------------------------------------------------ internals

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock()
        self.reason = reason
        self._transition("open", reason)

    def _transition(self, state: State, reason: str) -> None:
        previous, self._state = self._state, state
        if previous == state:
            return
        _open_gauge.set(0 if state == "closed" else 1, cache=self.name)
        extra = {"cache": self.name, "state": state, "previous": previous, "reason": reason}
        if previous == "closed":  # the outage begins
            self._log.warning("cache state", extra={**extra, "threshold": self.failure_threshold})
        elif state == "closed":  # it is over
            self._log.info("cache state", extra={**extra, "down_seconds": round(self._clock() - self._down_since, 3)})
        else:  # the trials of a continuing outage
            self._log.debug("cache state", extra=extra)
