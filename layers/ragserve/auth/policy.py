"""The REQUEST authorizer's answer: an IAM policy over the routes a key may call.

API Gateway caches the answer per key (the identity source) for every route of the
stage, so the policy lists *every* route the key's scope permits, not just the one
being called. A key limited to some collections gets per-collection resources on the
routes that carry the collection in the path (``{c}``); routes that carry it in the
body (``POST /v1/search``) are checked by the function from the context."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ragserve.auth.keys import KeyRecord
from ragserve.routes import ROUTES, Route

COLLECTION_PARAM = "c"
COLLECTION_SEGMENT = "{" + COLLECTION_PARAM + "}"
_PARAM = re.compile(r"\{(\w+)\+?\}")


def api_arn_prefix(method_arn: str) -> str:
    """``arn:aws:execute-api:<region>:<account>:<api-id>/<stage>`` of a method ARN
    (``.../<stage>/<METHOD>/<path>``)."""
    head, sep, rest = method_arn.partition("/")
    stage = rest.split("/", 1)[0]
    if not sep or not stage or not head.startswith("arn:"):
        raise ValueError(f"not an API Gateway method ARN: {method_arn!r}")
    return f"{head}/{stage}"


def _paths(route: Route, collections: tuple[str, ...] | None) -> list[str]:
    params = _PARAM.findall(route.resource)
    if collections is not None and COLLECTION_PARAM in params:
        paths = [route.resource.replace(COLLECTION_SEGMENT, name) for name in collections]
    else:
        paths = [route.resource]
    return [_PARAM.sub("*", path) for path in paths]


def allowed_resources(record: KeyRecord, prefix: str, routes: Iterable[Route] = ROUTES) -> list[str]:
    """execute-api ARNs of every keyed route the record's scope and collections permit."""
    arns: list[str] = []
    for route in routes:
        if route.scope is None or not record.allows(route.scope):
            continue
        arns.extend(f"{prefix}/{route.method}{path}" for path in _paths(route, record.collections))
    return sorted(dict.fromkeys(arns))


def _policy(effect: str, resources: list[str]) -> dict:
    return {"Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resources}]}


def allow_response(record: KeyRecord, key: str, method_arn: str, routes: Iterable[Route] = ROUTES) -> dict:
    """Allow the key's routes; ``usageIdentifierKey`` is the key itself, which is also
    its API Gateway API key value, so the tier's usage plan meters and throttles it."""
    prefix = api_arn_prefix(method_arn)
    resources = allowed_resources(record, prefix, routes)
    if not resources:
        return deny_response(record.key_id, method_arn)
    return {
        "principalId": record.key_id,
        "policyDocument": _policy("Allow", resources),
        "usageIdentifierKey": key,
        "context": {"key_id": record.key_id, "scope": record.scope, "tier": record.tier,
                    "collections": record.collections_label},
    }


def deny_response(principal: str, method_arn: str) -> dict:
    """Deny every route of the stage (the answer is cached for the key)."""
    return {"principalId": principal, "policyDocument": _policy("Deny", [f"{api_arn_prefix(method_arn)}/*"])}
