"""API keys and the record kept for each.

A key is ``rsk`` + 40 random letters and digits (about 238 bits). Only its SHA-256 is
stored: with that much entropy a pepper or a slow hash adds nothing against guessing,
and a plain digest lets the authorizer look a key up in one GetItem. The key itself is
also the value of its API Gateway API key (usage plans meter by that value), so it is
shown once, at creation, and kept nowhere else by ragserve."""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

Scope = Literal["read", "write"]
Status = Literal["active", "revoked"]
SCOPES: tuple[Scope, ...] = ("read", "write")
KEY_PREFIX = "rsk"
KEY_RANDOM_CHARS = 40
_ALPHABET = string.ascii_letters + string.digits
ALL_COLLECTIONS = "*"


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_RANDOM_CHARS))


def new_key_id() -> str:
    """A public, stable name for a key (kept across rotations; safe in logs)."""
    return "key-" + secrets.token_hex(6)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def scope_allows(granted: str, needed: str | None) -> bool:
    """``write`` includes ``read``; a route with no scope needs no key."""
    return needed is None or needed == "read" or granted == "write"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One item of the keys table (partition key ``key_hash``)."""

    key_hash: str
    key_id: str
    scope: Scope
    tier: str
    collections: tuple[str, ...] | None  # None: every collection ("*")
    api_gateway_key_id: str
    status: Status
    created_at: str  # ISO 8601, UTC
    revoked_at: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be read or write, not {self.scope!r}")
        if self.status not in ("active", "revoked"):
            raise ValueError(f"status must be active or revoked, not {self.status!r}")

    @property
    def active(self) -> bool:
        return self.status == "active"

    def allows(self, needed: str | None) -> bool:
        return scope_allows(self.scope, needed)

    def allows_collection(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    @property
    def collections_label(self) -> str:
        """``*`` or ``a,b`` (the authorizer context and ``keys list``)."""
        return ALL_COLLECTIONS if self.collections is None else ",".join(self.collections)

    def revoked(self, at: str | None = None) -> KeyRecord:
        return replace(self, status="revoked", revoked_at=at or now_iso())

    # DynamoDB (low-level attribute values) -----------------------------------------
    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "key_hash": {"S": self.key_hash},
            "key_id": {"S": self.key_id},
            "scope": {"S": self.scope},
            "tier": {"S": self.tier},
            "collections": ({"S": ALL_COLLECTIONS} if self.collections is None
                            else {"L": [{"S": c} for c in self.collections]}),
            "api_gateway_key_id": {"S": self.api_gateway_key_id},
            "status": {"S": self.status},
            "created_at": {"S": self.created_at},
        }
        if self.revoked_at:
            item["revoked_at"] = {"S": self.revoked_at}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> KeyRecord:
        collections = item["collections"]
        return cls(
            key_hash=item["key_hash"]["S"],
            key_id=item["key_id"]["S"],
            scope=item["scope"]["S"],
            tier=item["tier"]["S"],
            collections=None if "S" in collections else tuple(c["S"] for c in collections["L"]),
            api_gateway_key_id=item.get("api_gateway_key_id", {}).get("S", ""),
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            revoked_at=item.get("revoked_at", {}).get("S"),
        )


def parse_collections(spec: str | None) -> tuple[str, ...] | None:
    """``a,b`` -> ("a", "b"); empty, None or ``*`` -> None (every collection).

    A list with an empty item (``,``, ``a,,b``, ``a,``) is an error (InvalidInput), never
    every collection."""
    from ragserve.errors import InvalidInput
    from ragserve.snapshots.format import validate_collection as check_collection_name

    if spec is None or spec.strip() in ("", ALL_COLLECTIONS):
        return None
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise InvalidInput(f"--collections {spec!r} lists an empty collection name; "
                           f"give names separated by commas, or {ALL_COLLECTIONS!r} for every collection")
    return tuple(dict.fromkeys(check_collection_name(part) for part in parts))
