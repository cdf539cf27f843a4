"""Health checks of the AWS dependencies a function can reach (for the ops function's
/health): each probe is one cheap read-only call with short timeouts, its result cached
for a few seconds, so that a public /health cannot turn into load on DynamoDB, S3 or SQS.

A dependency without which nothing works (the keys table: no key can be checked) is
``unhealthy`` when unreachable; the others make the service ``degraded``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ragserve import health
from ragserve.settings import OpsSettings

Probe = Callable[[], None]


class CachedCheck:
    """A probe turned into a health check; the result is kept for ``ttl`` seconds."""

    def __init__(self, probe: Probe, *, failure: health.Status, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.failure = failure
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._result: tuple[float, health.Check] | None = None

    def __call__(self) -> health.Check:
        with self._lock:
            now = self._clock()
            if self._result is not None and now - self._result[0] < self.ttl:
                return self._result[1]
            try:
                self.probe()
                result = health.Check("healthy")
            except Exception as exc:  # noqa: BLE001 - a failing probe is a finding
                result = health.Check(self.failure, f"unreachable: {_reason(exc)}")
            self._result = (now, result)
            return result


def _reason(exc: Exception) -> str:
    """A short reason that names no resource (safe on a public route)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def dynamodb_table(client: Any, table: str) -> Probe:
    def probe() -> None:
        status = client.describe_table(TableName=table)["Table"]["TableStatus"]
        if status not in ("ACTIVE", "UPDATING"):
            raise RuntimeError(f"table {status}")
    return probe


def s3_bucket(client: Any, bucket: str) -> Probe:
    return lambda: client.head_bucket(Bucket=bucket) and None


def sqs_queue(client: Any, queue_url: str) -> Probe:
    return lambda: client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]) and None


def register_aws_checks(settings: OpsSettings, clients: Callable[[str], Any] | None = None) -> list[str]:
    """Register a check per dependency the settings name; the names registered."""
    if clients is None:
        from ragserve.auth.store import aws_client

        def clients(service: str) -> Any:
            return aws_client(service, timeouts=(1.0, 2.0), attempts=1)

    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = clients(service)
        return made[service]

    plan: list[tuple[str, str, Callable[[], Probe], health.Status]] = [
        ("keys_table", settings.keys_table, lambda: dynamodb_table(client("dynamodb"), settings.keys_table),
         "unhealthy"),
        ("embedding_cache_table", settings.embedding_cache_table,
         lambda: dynamodb_table(client("dynamodb"), settings.embedding_cache_table), "degraded"),
        ("idempotency_table", settings.idempotency_table,
         lambda: dynamodb_table(client("dynamodb"), settings.idempotency_table), "degraded"),
        ("snapshot_bucket", settings.snapshot_bucket, lambda: s3_bucket(client("s3"), settings.snapshot_bucket),
         "degraded"),
        ("ingest_queue", settings.queue_url, lambda: sqs_queue(client("sqs"), settings.queue_url), "degraded"),
    ]
    registered = []
    for name, configured, make_probe, failure in plan:
        if configured:
            health.register(name, CachedCheck(make_probe(), failure=failure, ttl=settings.health_cache_seconds))
            registered.append(name)
    return registered
