"""The REQUEST authorizer's decision, from the event and a key store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ragserve.auth.keys import KeyRecord, hash_key
from ragserve.auth.policy import allow_response, deny_response
from ragserve.errors import Unauthorized
from ragserve.routes import ROUTES, Route

API_KEY_HEADER = "x-api-key"


class KeyLookup(Protocol):
    def get(self, key_hash: str) -> KeyRecord | None: ...


def api_key_of(event: Mapping) -> str | None:
    """The ``x-api-key`` header of a REQUEST authorizer event (any case), exactly as
    sent, or None when it is missing, empty or whitespace only. Never stripped: a key
    with whitespace around it is not the key (403, as the local gateway answers)."""
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == API_KEY_HEADER and isinstance(value, str) and value.strip():
            return value
    return None


def authorize(event: Mapping, store: KeyLookup, routes: Iterable[Route] = ROUTES) -> tuple[dict, KeyRecord | None]:
    """``(authorizer response, record)``. No key: ``Unauthorized`` (API Gateway 401).
    An unknown or revoked key: a Deny policy (403). Otherwise: Allow for the routes its
    scope and collections permit, with the usage identifier key and the context
    ``{key_id, scope, tier, collections}``."""
    key = api_key_of(event)
    if key is None:
        raise Unauthorized("missing x-api-key header")
    method_arn = event["methodArn"]
    record = store.get(hash_key(key))
    if record is None or not record.active:
        return deny_response(record.key_id if record else "unknown", method_arn), record
    return allow_response(record, key, method_arn, routes), record
