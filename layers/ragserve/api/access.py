"""What the authorizer (API Gateway's, or the local gateway's) says about the caller:
its id and the collections its key may use."""

from __future__ import annotations

from collections.abc import Mapping

from ragserve.documents import shorten
from ragserve.errors import Forbidden


def _authorizer(event: Mapping) -> Mapping:
    return (event.get("requestContext") or {}).get("authorizer") or {}


def principal(event: Mapping) -> str:
    """A stable, non-secret id of the caller (the key id), for idempotency and logs."""
    return str(_authorizer(event).get("principalId") or "anonymous")


def check_collection_access(event: Mapping, collection: str) -> None:
    """Forbidden (403) unless the key may use ``collection`` ("*" or a comma list)."""
    allowed = _authorizer(event).get("collections")
    if allowed is None or allowed == "*":
        return
    names = allowed if isinstance(allowed, list) else str(allowed).split(",")
    if collection not in {n.strip() for n in names}:
        raise Forbidden(f"this key may not use collection {shorten(collection)!r}", code="forbidden_collection")
