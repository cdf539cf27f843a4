"""API Gateway REQUEST authorizer: ``x-api-key`` -> its hash -> the keys table ->
an IAM policy over the routes the key's scope and collections permit, the usage
identifier key (API key source AUTHORIZER: the tier's usage plan meters the key) and
the context ``{key_id, scope, tier, collections}`` the functions read.

No key: 401. Unknown or revoked key: 403 (a Deny policy, cached like an Allow). The
keys table unreachable: the function fails, and API Gateway answers 503 (the stack
maps AUTHORIZER_FAILURE). The key itself is never logged; its key id is.

Without a keys table (``ragserve invoke authorizer events/authorizer/request.json``) the
keys of ``RAGSERVE_API_KEYS`` (``KEY:read,KEY2:write``, as ``ragserve serve`` reads
them) are the table: every collection, tier ``local``. The stack sets the table and
never that variable.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.auth.authorizer import KeyLookup, authorize
from ragserve.auth.keys import KeyRecord, hash_key
from ragserve.auth.store import DynamoKeyStore
from ragserve.errors import Unauthorized
from ragserve.observability.telemetry import Telemetry
from ragserve.settings import GatewaySettings, KeysSettings

SETTINGS = KeysSettings.from_env()
telemetry = Telemetry("authorizer")
logger = telemetry.logger
NO_STORE = "RAGSERVE_KEYS_TABLE is not set (locally: RAGSERVE_API_KEYS, e.g. local-dev-key:read)"


class LocalKeyStore:
    """The keys of ``RAGSERVE_API_KEYS`` as active records (every collection, tier ``local``)."""

    def __init__(self, spec: str) -> None:
        from ragserve.local.gateway import parse_api_keys

        self.records = {hash_key(k.key): KeyRecord(
            key_hash=hash_key(k.key), key_id=k.key_id, scope=k.scope, tier="local", collections=None,
            api_gateway_key_id="", status="active", created_at="1970-01-01T00:00:00Z")
            for k in parse_api_keys(spec).values()}

    def get(self, key_hash: str) -> KeyRecord | None:
        return self.records.get(key_hash)


def open_store() -> KeyLookup | None:
    if SETTINGS.table:
        return DynamoKeyStore(SETTINGS.table)
    local = GatewaySettings.from_env().api_keys
    return LocalKeyStore(local) if local else None


STORE = open_store()


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if STORE is None:
        raise RuntimeError(NO_STORE)
    try:
        response, record = authorize(event, STORE)
    except Unauthorized:
        logger.info("no api key", extra={"method_arn": event.get("methodArn")})
        raise Exception("Unauthorized") from None  # the exact message API Gateway maps to 401  # noqa: B904
    effect = response["policyDocument"]["Statement"][0]["Effect"]
    logger.info("authorized", extra={"effect": effect, "key_id": response["principalId"],
                                     "scope": record.scope if record else None,
                                     "status": record.status if record else "unknown"})
    return response
