"""Create, rotate, revoke and list API keys: DynamoDB holds the hash and the grants,
API Gateway holds the key (its value is the usage identifier) in a tier's usage plan.

Order matters: a key is attached to its usage plan *before* its record is written, so
the authorizer never approves a key that usage plans would refuse. Revoking deletes the
API Gateway key first, which stops metering (and so every request) at once even while
an authorizer answer is still cached, and only then marks the record revoked: a delete
that fails leaves the record active, so the key stays listed and a rerun of ``revoke``
finishes the job. A rerun also deletes the API Gateway key of a record already marked
revoked (left behind by a revoke that failed halfway before this order), so revoking is
always safe to retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ragserve.auth.keys import KeyRecord, Scope, generate_key, hash_key, new_key_id, now_iso
from ragserve.auth.store import DynamoKeyStore, aws_client

PLAN_PREFIX = "ragserve"


class KeyManagementError(Exception):
    """A key operation that cannot be done (unknown key id or tier); the message says why."""


def usage_plan_name(stage: str, tier: str) -> str:
    """The name the CDK stack gives each tier's usage plan."""
    return f"{PLAN_PREFIX}-{stage}-{tier}"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str  # shown once
    record: KeyRecord
    problems: tuple[str, ...] = ()  # rotate: old secrets that could not be revoked (still active)


class UsagePlans:
    """The API Gateway side: API keys and usage plans (boto3 imported on first use)."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("apigateway", timeouts=(5.0, 10.0), attempts=4)
        return self._client

    def plans(self) -> dict[str, str]:
        """name -> id of every usage plan in the account and region."""
        found: dict[str, str] = {}
        kwargs: dict[str, Any] = {"limit": 500}
        while True:
            page = self.client.get_usage_plans(**kwargs)
            found.update({p["name"]: p["id"] for p in page.get("items", [])})
            if not page.get("position"):
                return found
            kwargs["position"] = page["position"]

    def plan_id(self, stage: str, tier: str) -> str:
        name = usage_plan_name(stage, tier)
        plans = self.plans()
        if name not in plans:
            prefix = usage_plan_name(stage, "")
            tiers = sorted(n[len(prefix):] for n in plans if n.startswith(prefix))
            raise KeyManagementError(f"no usage plan {name!r} (tier {tier!r} of stage {stage!r}); "
                            f"tiers of that stage: {', '.join(tiers) or 'none - is the stack deployed here?'}")
        return plans[name]

    def create_key(self, value: str, *, name: str, description: str, tags: dict[str, str]) -> str:
        return self.client.create_api_key(name=name, description=description, enabled=True, value=value,
                                          tags=tags)["id"]

    def attach(self, api_key_id: str, plan_id: str) -> None:
        self.client.create_usage_plan_key(usagePlanId=plan_id, keyId=api_key_id, keyType="API_KEY")

    def delete_key(self, api_key_id: str) -> None:
        try:
            self.client.delete_api_key(apiKey=api_key_id)
        except self.client.exceptions.NotFoundException:
            pass  # already gone: revoking is idempotent



class KeyManager:
    def __init__(self, store: DynamoKeyStore, plans: UsagePlans, stage: str) -> None:
        self.store = store
        self.plans = plans
        self.stage = stage

    def create(self, scope: Scope, tier: str, collections: tuple[str, ...] | None = None, *,
               key_id: str | None = None, plan_id: str | None = None) -> IssuedKey:
        if plan_id is None:
            if not self.stage:
                raise KeyManagementError("the stage is not set (RAGSERVE_STAGE, or --stage): "
                                         "it names the usage plans")
            plan_id = self.plans.plan_id(self.stage, tier)
        key, key_id = generate_key(), key_id or new_key_id()
        api_key_id = self.plans.create_key(
            key, name=f"{PLAN_PREFIX}-{self.stage}-{key_id}-{now_iso().replace(':', '')}",
            description=f"ragserve {self.stage} {key_id} ({scope}, tier {tier})",
            tags={"project": PLAN_PREFIX, "stage": self.stage, "key_id": key_id, "tier": tier},
        )
        record = KeyRecord(key_hash=hash_key(key), key_id=key_id, scope=scope, tier=tier, collections=collections,
                           api_gateway_key_id=api_key_id, status="active", created_at=now_iso())
        try:
            self.plans.attach(api_key_id, plan_id)
            self.store.put_new(record)
        except Exception:
            self.plans.delete_key(api_key_id)  # leave nothing half-made behind
            raise
        return IssuedKey(key, record)

    def active(self, key_id: str) -> list[KeyRecord]:
        records = self.store.by_key_id(key_id)
        if not records:
            raise KeyManagementError(f"no key {key_id!r}")
        return [r for r in records if r.active]

    def rotate(self, key_id: str) -> IssuedKey:
        """A new secret for the same key id, scope, tier and collections; the old
        secret stops working now."""
        active = self.active(key_id)
        if not active:
            raise KeyManagementError(f"key {key_id!r} is revoked; create a new one")
        current = active[-1]
        issued = self.create(current.scope, current.tier, current.collections, key_id=key_id)
        problems = []
        for record in active:  # the new secret is issued: report what fails, never lose the new key
            try:
                self._revoke(record, retry=f"ragserve keys rotate {key_id}")
            except KeyManagementError as exc:
                problems.append(str(exc))
        return IssuedKey(issued.key, issued.record, tuple(problems))

    def revoke(self, key_id: str) -> list[KeyRecord]:
        """Revoke every active secret of ``key_id`` (the records revoked now), and delete
        any API Gateway key an earlier, interrupted revoke left behind. Safe to rerun."""
        records = self.store.by_key_id(key_id)
        if not records:
            raise KeyManagementError(f"no key {key_id!r}")
        for record in records:
            if not record.active:
                self._delete_api_key(record)  # gone already: a no-op
        return [self._revoke(record) for record in records if record.active]

    def _revoke(self, record: KeyRecord, *, retry: str = "") -> KeyRecord:
        """The API Gateway key first (the key stops at once), then the record."""
        self._delete_api_key(record, retry=retry)
        return self.store.mark_revoked(record)

    def _delete_api_key(self, record: KeyRecord, *, retry: str = "") -> None:
        if not record.api_gateway_key_id:
            return
        try:
            self.plans.delete_key(record.api_gateway_key_id)
        except Exception as exc:  # botocore's errors: throttling, access denied, network
            state = "still active" if record.active else "revoked, but its API Gateway key still exists"
            raise KeyManagementError(
                f"could not delete API Gateway key {record.api_gateway_key_id} of {record.key_id} "
                f"({type(exc).__name__}: {exc}); the secret is {state}: run "
                f"`{retry or 'ragserve keys revoke ' + record.key_id}` again") from exc

    def list(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        return [r for r in self.store.all() if include_revoked or r.active]
