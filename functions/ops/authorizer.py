"""API Gateway REQUEST authorizer: ``x-api-key`` -> its hash -> the keys table ->
an IAM policy over the routes the key's scope and collections permit, the usage
identifier key (API key source AUTHORIZER: the tier's usage plan meters the key) and
the context ``{key_id, scope, tier, collections}`` the functions read.

No key: 401. Unknown or revoked key: 403 (a Deny policy, cached like an Allow). The
keys table unreachable: the function fails, and API Gateway answers 503 (the stack
maps AUTHORIZER_FAILURE). The key itself is never logged; its key id is.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.auth.authorizer import authorize
from ragserve.auth.store import DynamoKeyStore
from ragserve.errors import Unauthorized
from ragserve.observability.telemetry import Telemetry
from ragserve.settings import KeysSettings

SETTINGS = KeysSettings.from_env()
telemetry = Telemetry("authorizer")
logger = telemetry.logger
STORE = DynamoKeyStore(SETTINGS.table) if SETTINGS.table else None


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if STORE is None:
        raise RuntimeError("RAGSERVE_KEYS_TABLE is not set")
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
