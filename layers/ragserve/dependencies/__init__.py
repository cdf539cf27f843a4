"""Health checks of the AWS dependencies a function can reach (for the ops function's
/health): each probe is one cheap read-only call with short timeouts, its result cached
for a few seconds, so that a public /health cannot turn into load on DynamoDB, S3 or SQS.

A dependency without which nothing works (the keys table: no key can be checked) is
``unhealthy`` when unreachable; the others make the service ``degraded``.

In AWS the ops function does not load the model, so it asks the functions that do
(``ServiceChecks``, docs/ARCHITECTURE.md section 3.6):

- ``embed_function``: the embed function's ``live`` alias, invoked directly with a
  ``GET /health`` event, reports its model (and the model id becomes /health's
  ``model``); unhealthy if it cannot answer or its model did not load;
- ``search_function``: the search function's ``live`` alias describes the canary
  collection (``GET /v1/collections/canary``): its model, the store and the index, in
  one call; unhealthy if it cannot answer, degraded while the collection is not seeded;
- ``index``: the canary collection's (and, if it has one, the default collection's)
  ``CURRENT`` and manifest are readable and verify in the bucket; the default
  collection's live version becomes /health's ``index_version``;
- ``query_cache``: a PING to Valkey, with a short timeout.

``refresh`` runs the expired probes of the registered checks in parallel, so /health
takes as long as the slowest probe, not their sum."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ragserve import health
from ragserve.dependencies.canary import CANARY_COLLECTION
from ragserve.settings import OpsSettings

# A probe raises when the dependency cannot be reached; it may return a Check of its
# own (what it found is not fine, or not only "ok").
Probe = Callable[[], "health.Check | None"]

# (connect, read) timeouts per service; a function may need a cold start to answer
TIMEOUTS: dict[str, tuple[float, float]] = {"lambda": (1.0, 10.0)}
DEFAULT_TIMEOUTS = (1.0, 2.0)
VALKEY_TIMEOUT_S = 0.5
HEALTH_PRINCIPAL = "ragserve-ops-health"  # the caller id the functions log for these probes


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
                found = self.probe()
                result = found if isinstance(found, health.Check) else health.Check("healthy")
            except Exception as exc:  # noqa: BLE001 - a failing probe is a finding
                result = health.Check(self.failure, f"unreachable: {_reason(exc)}")
            self._result = (now, result)
            return result


def refresh(checks: list[CachedCheck] | None = None) -> None:
    """Run the checks (by default every ``CachedCheck`` registered with ``ragserve.health``;
    each probes only if its result expired) in parallel."""
    if checks is None:
        checks = [c for c in health.registered().values() if isinstance(c, CachedCheck)]
    if len(checks) < 2:
        for check in checks:
            check()
        return
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="health") as pool:
        list(pool.map(lambda check: check(), checks))


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


# -- the service itself: functions, index, query cache -----------------------------


@dataclass(slots=True)
class Facts:
    """What the probes learnt that /health reports at its top level."""

    model: str | None = None
    index_version: int | None = None


def _invoke(client: Any, function: str, event: dict) -> tuple[int, dict]:
    """``function`` (``name`` or ``name:qualifier``) answers ``event``: (status, JSON body)."""
    name, _, qualifier = function.partition(":")
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    answer = client.invoke(FunctionName=name, InvocationType="RequestResponse",
                           Payload=json.dumps(event).encode(), **kwargs)
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        error = payload.get("errorType") if isinstance(payload, dict) else None
        raise FunctionFailed(str(error or answer["FunctionError"]))
    if not isinstance(payload, dict) or "statusCode" not in payload:
        raise FunctionFailed("not a proxy response")
    try:
        body = json.loads(payload.get("body") or "null")
    except ValueError:
        body = None
    return int(payload["statusCode"]), body if isinstance(body, dict) else {}


class FunctionFailed(Exception):
    """The function raised (Lambda's FunctionError) or answered something unexpected."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.response = {"Error": {"Code": f"function error: {what}"}}


def _event(method: str, path: str, collections: str | None = None) -> dict:
    from ragserve.local.events import rest_event

    authorizer = {"principalId": HEALTH_PRINCIPAL, "scope": "read", "collections": collections} \
        if collections else None
    return rest_event(method, path, authorizer=authorizer)


def embed_function(client: Any, function: str, facts: Facts) -> Probe:
    """The embed function's own /health: its model (and embedding cache)."""
    def probe() -> health.Check:
        facts.model = None  # unknown until the function answers
        status, body = _invoke(client, function, _event("GET", "/health"))
        facts.model = body.get("model") if isinstance(body.get("model"), str) else None
        found = body.get("status")
        if status >= 500 or found == "unhealthy" or found not in ("healthy", "degraded"):
            return health.Check("unhealthy", _summary(body) or f"answered {status}")
        return health.Check(found, _summary(body) or "ok")
    return probe


def search_function(client: Any, function: str, collection: str = CANARY_COLLECTION) -> Probe:
    """The search function describes ``collection``: model, store and index in one call."""
    def probe() -> health.Check:
        status, body = _invoke(client, function, _event("GET", f"/v1/collections/{collection}", collection))
        if status == 200:
            return health.Check("healthy")
        code = (body.get("error") or {}).get("code") if isinstance(body.get("error"), dict) else None
        if status == 404:
            return health.Check("degraded", f"{collection}: no version yet ({code or status})")
        return health.Check("unhealthy", f"{collection}: {code or 'error'} ({status})")
    return probe


def _summary(body: dict) -> str:
    """The checks of a function's /health that are not ok, as ``name: detail``."""
    checks = body.get("checks") if isinstance(body.get("checks"), dict) else {}
    return "; ".join(f"{name}: {detail}" for name, detail in sorted(checks.items()) if detail != "ok")


def index(store: Any, required: str, optional: str | None, facts: Facts) -> Probe:
    """``CURRENT`` and the live manifest (checksum verified) of ``required`` can be read,
    and those of ``optional`` if it has a ``CURRENT``. ``facts.index_version``: the live
    version of ``optional`` (the default collection), else of ``required``."""
    from ragserve.snapshots.errors import SnapshotError

    def live(collection: str) -> int | None:
        version = store.current(collection)
        if version is not None:
            store.manifest(collection, version)
        return version

    def probe() -> health.Check:
        problems: list[str] = []
        versions: dict[str, int | None] = {}
        for collection in filter(None, (required, optional)):
            try:
                versions[collection] = live(collection)
            except SnapshotError as exc:
                versions[collection] = None
                problems.append(f"{collection}: {exc.code}")
                continue
            if versions[collection] is None and collection == required:
                problems.append(f"{collection}: no version yet")
        facts.index_version = versions.get(optional or required)
        return health.Check("degraded", "; ".join(problems)) if problems else health.Check("healthy")
    return probe


def valkey(url: str) -> Probe:
    from ragserve.cache.queries import redis_client

    client = redis_client(url, socket_timeout=VALKEY_TIMEOUT_S, connect_timeout=VALKEY_TIMEOUT_S, max_connections=2)

    def probe() -> None:
        if not client.ping():
            raise RuntimeError("no PONG")
    return probe


@dataclass(frozen=True, slots=True)
class ServiceChecks:
    """What the ops function checks beyond the resources ``OpsSettings`` names: empty
    values are not checked."""

    embed_function: str = ""  # name[:qualifier] whose /health reports the model
    search_function: str = ""  # name[:qualifier] that describes the canary collection
    query_cache_url: str = ""  # Valkey (PING)
    index: bool = False  # the collections' CURRENT and manifests in OpsSettings' bucket
    snapshot_prefix: str = ""  # the S3 store's key prefix
    default_collection: str = "default"
    canary_collection: str = CANARY_COLLECTION

    @classmethod
    def from_env(cls, settings: OpsSettings) -> ServiceChecks:
        """In AWS (``RAGSERVE_METRICS_SOURCE=cloudwatch``: the ops function deployed apart
        from the others), the stage's functions by the stack's names,
        ``ragserve-<stage>-<name>:live``; the query cache and store of the settings.
        Locally nothing: the functions share the process, and check themselves."""
        if settings.metrics_source != "cloudwatch":
            return cls()
        from ragserve.settings import CacheSettings, SearchLimits, StoreSettings

        deployed = (lambda name: f"ragserve-{settings.stage}-{name}:live") if settings.stage else (lambda _: "")
        return cls(embed_function=deployed("embed"), search_function=deployed("search"),
                   query_cache_url=CacheSettings.from_env().query_url, index=True,
                   snapshot_prefix=StoreSettings.from_env().prefix,
                   default_collection=SearchLimits.from_env().default_collection)


def _default_clients(service: str) -> Any:
    from ragserve.auth.store import aws_client

    return aws_client(service, timeouts=TIMEOUTS.get(service, DEFAULT_TIMEOUTS), attempts=1)


def register_aws_checks(settings: OpsSettings, clients: Callable[[str], Any] | None = None, *,
                        service: ServiceChecks | None = None) -> list[str]:
    """Register a check per dependency the settings name (and per ``service`` target);
    the names registered."""
    clients = clients or _default_clients
    service = service or ServiceChecks()
    made: dict[str, Any] = {}
    facts = Facts()

    def client(name: str) -> Any:
        if name not in made:
            made[name] = clients(name)
        return made[name]

    def store() -> Any:
        from ragserve.snapshots.s3 import S3SnapshotStore

        return S3SnapshotStore(settings.snapshot_bucket, service.snapshot_prefix, client=client("s3"))

    optional = service.default_collection if service.default_collection != service.canary_collection else None
    plan: list[tuple[str, object, Callable[[], Probe], health.Status]] = [
        ("keys_table", settings.keys_table, lambda: dynamodb_table(client("dynamodb"), settings.keys_table),
         "unhealthy"),
        ("embedding_cache_table", settings.embedding_cache_table,
         lambda: dynamodb_table(client("dynamodb"), settings.embedding_cache_table), "degraded"),
        ("idempotency_table", settings.idempotency_table,
         lambda: dynamodb_table(client("dynamodb"), settings.idempotency_table), "degraded"),
        ("snapshot_bucket", settings.snapshot_bucket, lambda: s3_bucket(client("s3"), settings.snapshot_bucket),
         "degraded"),
        ("ingest_queue", settings.queue_url, lambda: sqs_queue(client("sqs"), settings.queue_url), "degraded"),
        ("embed_function", service.embed_function,
         lambda: embed_function(client("lambda"), service.embed_function, facts), "unhealthy"),
        ("search_function", service.search_function,
         lambda: search_function(client("lambda"), service.search_function, service.canary_collection), "unhealthy"),
        ("index", service.index and settings.snapshot_bucket,
         lambda: index(store(), service.canary_collection, optional, facts), "degraded"),
        ("query_cache", service.query_cache_url, lambda: valkey(service.query_cache_url), "degraded"),
    ]
    registered = []
    for name, configured, make_probe, failure in plan:
        if configured:
            check = CachedCheck(make_probe(), failure=failure, ttl=settings.health_cache_seconds)
            health.register(name, check)
            registered.append(name)
    if "embed_function" in registered:
        health.register_fact("model", lambda: facts.model)
    if "index" in registered:
        health.register_fact("index_version", lambda: facts.index_version)
    return registered
