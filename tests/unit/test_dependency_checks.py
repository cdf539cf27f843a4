"""Dependency probes for /health: cached for their TTL, failures named by error code
only, and the severity set per dependency."""

from __future__ import annotations

from ragserve.dependencies import CachedCheck, register_aws_checks
from ragserve.settings import OpsSettings


class ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"{code}: arn:aws:dynamodb:...:table/secret-name")
        self.response = {"Error": {"Code": code}}


def test_probe_result_is_cached_for_its_ttl():
    calls, now = [], [0.0]
    check = CachedCheck(lambda: calls.append(1), failure="degraded", ttl=30, clock=lambda: now[0])
    assert check().status == "healthy" and check().detail == "ok"
    now[0] = 29.9
    check()
    assert len(calls) == 1
    now[0] = 30.0
    check()
    assert len(calls) == 2


def test_failure_reports_the_error_code_with_its_severity_and_no_resource_names():
    def probe():
        raise ClientError("ResourceNotFoundException")

    result = CachedCheck(probe, failure="unhealthy", ttl=0)()
    assert result.status == "unhealthy"
    assert result.detail == "unreachable: ResourceNotFoundException"

    def plain():
        raise TimeoutError("connect to 10.0.0.1 timed out")

    assert CachedCheck(plain, failure="degraded", ttl=0)().detail == "unreachable: TimeoutError"


def test_only_configured_dependencies_are_registered(monkeypatch):
    from ragserve import health

    registered: dict = {}
    monkeypatch.setattr(health, "register", lambda name, check: registered.__setitem__(name, check))
    made = []
    names = register_aws_checks(OpsSettings(keys_table="k", queue_url="https://sqs/q"),
                                clients=lambda service: made.append(service) or object())
    assert names == ["keys_table", "ingest_queue"] == list(registered)
    assert registered["keys_table"].failure == "unhealthy" and registered["ingest_queue"].failure == "degraded"
    assert sorted(made) == ["dynamodb", "sqs"]
    assert register_aws_checks(OpsSettings(), clients=lambda s: object()) == []
