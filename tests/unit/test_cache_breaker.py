"""The circuit breaker of the cache backends: closed -> open -> half-open -> closed,
one log line when a cache goes down and one when it recovers."""

from __future__ import annotations

import logging

import pytest

from ragserve.cache.breaker import CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def log() -> logging.Logger:
    logger = logging.getLogger("ragserve.tests.breaker")
    logger.setLevel(logging.DEBUG)
    return logger


def boom():
    raise ConnectionError("refused")


def test_opens_after_n_consecutive_failures_only(clock, log):
    breaker = CircuitBreaker("query", failure_threshold=3, reset_seconds=10, clock=clock, logger=log)
    # GIVEN two failures, a success, then two more failures: never three in a row
    for outcome in ("fail", "fail", "ok", "fail", "fail"):
        breaker.allow()
        breaker.record_failure("ConnectionError") if outcome == "fail" else breaker.record_success()
    assert breaker.state == "closed"
    # WHEN a third consecutive failure comes
    breaker.record_failure("ConnectionError")
    # THEN it is open, calls are skipped and health is degraded
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.health().status == "degraded"
    assert "ConnectionError" in breaker.health().detail


def test_call_skips_the_function_while_open(clock, log):
    breaker = CircuitBreaker("query", failure_threshold=1, reset_seconds=10, clock=clock, logger=log)
    with pytest.raises(ConnectionError):
        breaker.call(boom)
    calls = []
    with pytest.raises(CircuitOpen):
        breaker.call(calls.append, 1)
    assert calls == []


def test_half_open_allows_one_trial_then_closes_on_success(clock, log):
    breaker = CircuitBreaker("query", failure_threshold=1, reset_seconds=10, clock=clock, logger=log)
    breaker.record_failure("timeout")
    clock.now += 9.9
    assert breaker.state == "open" and not breaker.allow()
    # WHEN reset_seconds have passed
    clock.now += 0.2
    assert breaker.state == "half_open"
    # THEN exactly one caller gets the trial
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()
    assert breaker.health().status == "healthy"


def test_a_failed_trial_reopens_for_another_reset_period(clock, log):
    breaker = CircuitBreaker("query", failure_threshold=2, reset_seconds=5, clock=clock, logger=log)
    breaker.record_failure("timeout")
    breaker.record_failure("timeout")
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure("ConnectionError")
    assert breaker.state == "open"
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_trial_never_reported_does_not_wedge_it(clock, log):
    breaker = CircuitBreaker("query", failure_threshold=1, reset_seconds=5, clock=clock, logger=log)
    breaker.record_failure("timeout")
    clock.now += 5
    assert breaker.allow()  # the trial's caller vanishes
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()


def test_logs_once_when_it_goes_down_and_once_when_it_recovers(clock, log, caplog):
    breaker = CircuitBreaker("query", failure_threshold=3, reset_seconds=10, clock=clock, logger=log)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        # a long outage: many failures and three failed trials
        for _ in range(10):
            breaker.record_failure("ConnectionError")
        for _ in range(3):
            clock.now += 10
            assert breaker.allow()
            breaker.record_failure("ConnectionError")
        clock.now += 10
        assert breaker.allow()
        breaker.record_success()
    records = [r for r in caplog.records if r.name == log.name]
    loud = [r for r in records if r.levelno >= logging.INFO]
    assert [(r.levelname, r.state) for r in loud] == [("WARNING", "open"), ("INFO", "closed")]
    assert loud[0].cache == "query" and loud[0].reason == "ConnectionError"
    assert loud[1].down_seconds == pytest.approx(40.0)
    # each state change is logged once; the trials only at debug level
    assert [r.state for r in records] == ["open"] + ["half_open", "open"] * 3 + ["half_open", "closed"]


def test_rejects_a_threshold_below_one():
    with pytest.raises(ValueError):
        CircuitBreaker("query", failure_threshold=0)
