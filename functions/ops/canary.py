"""Canary setup: the CloudFormation custom resource (infra/constructs/health_canary.py)
that gives the Synthetics canary what a user has, an API key and a collection.

- **Create**: issues a read key limited to the canary collection on the canary tier's
  usage plan (``KeyManager.create``: the code behind ``ragserve keys create``), stores
  ``{"api_key", "key_id"}`` in the stack's secret, and queues the canary collection's
  documents (``ragserve.dependencies.canary``) to the ingest queue: the single writer
  embeds and publishes them like any write. The physical id is the key id.
- **Update**: queues the documents again (a no-op for the writer when nothing
  changed). A new tier, usage plan, secret, keys table or ``Generation`` (or a key that
  is no longer active) issues a new key: a new physical id, so CloudFormation then
  deletes the old resource, which revokes the old key.
- **Delete**: revokes the key (the API Gateway key is deleted: it stops at once).

The answer goes to CloudFormation by a PUT to the event's ``ResponseURL``; the handler
never raises (a custom resource that does not answer holds the stack for an hour) and
returns the same answer. Runs outside the VPC: it calls API Gateway's management API,
Secrets Manager, DynamoDB and SQS. The key is never logged nor put in the answer.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.observability.telemetry import Telemetry

telemetry = Telemetry("canary")
logger = telemetry.logger
KEY_ID = re.compile(r"^key-[0-9a-f]{12}$")
# a change of any of these properties issues a new key
KEY_PROPERTIES = ("KeysTable", "PlanId", "Tier", "SecretArn", "Collection", "Generation")


def _keys(props: dict) -> Any:
    from ragserve.auth.store import DynamoKeyStore
    from ragserve.keys.manager import KeyManager, UsagePlans

    return KeyManager(DynamoKeyStore(props["KeysTable"]), UsagePlans(), props.get("Stage", ""))


def _client(service: str) -> Any:
    from ragserve.auth.store import aws_client

    return aws_client(service, timeouts=(5.0, 10.0), attempts=4)


def issue_key(props: dict) -> str:
    """A new read key for the canary collection, stored in the secret; its key id."""
    issued = _keys(props).create("read", props["Tier"], (props["Collection"],), plan_id=props["PlanId"])
    _client("secretsmanager").put_secret_value(
        SecretId=props["SecretArn"],
        SecretString=json.dumps({"api_key": issued.key, "key_id": issued.record.key_id}))
    logger.info("canary key issued", extra={"key_id": issued.record.key_id, "tier": props["Tier"]})
    return issued.record.key_id


def key_is_active(props: dict, key_id: str) -> bool:
    if not KEY_ID.match(key_id or ""):
        return False
    return any(record.active for record in _keys(props).store.by_key_id(key_id))


def revoke_key(props: dict, key_id: str) -> None:
    """Revoke ``key_id``; a failure is the delete's failure (CloudFormation retries it)."""
    if not KEY_ID.match(key_id or ""):
        return  # a create that failed before a key existed
    keys = _keys(props)
    if not keys.store.by_key_id(key_id):
        return  # never written, or the table is gone
    keys.revoke(key_id)  # safe to repeat: revoked records only lose a left-over API Gateway key
    logger.info("canary key revoked", extra={"key_id": key_id})


def seed_collection(props: dict) -> str:
    from ragserve.dependencies.canary import CANARY_COLLECTION, seed_job
    from ragserve.ingest.queue import SqsJobQueue

    job = seed_job()
    if props["Collection"] != CANARY_COLLECTION:
        raise ValueError(f"the canary collection is {CANARY_COLLECTION!r}, not {props['Collection']!r}")
    SqsJobQueue(props["QueueUrl"], client=_client("sqs")).send(job)
    logger.info("canary documents queued", extra={"collection": job.collection, "job_id": job.job_id,
                                                  "documents": len(job.upserts)})
    return job.job_id


def handle(event: dict) -> tuple[str, dict]:
    """Do what the request asks: (physical id, data)."""
    kind, props = event["RequestType"], event.get("ResourceProperties") or {}
    physical = event.get("PhysicalResourceId", "")
    if kind == "Delete":
        revoke_key(props, physical)
        return physical, {}
    if kind == "Create":
        key_id = issue_key(props)
    elif kind == "Update":
        old = event.get("OldResourceProperties") or {}
        changed = any(old.get(name) != props.get(name) for name in KEY_PROPERTIES)
        key_id = issue_key(props) if changed or not key_is_active(props, physical) else physical
    else:
        raise ValueError(f"unknown RequestType {kind!r}")
    job_id = seed_collection(props)
    return key_id, {"KeyId": key_id, "SeedJobId": job_id}


def respond(event: dict, answer: dict) -> None:
    """PUT the answer to CloudFormation's presigned URL (an empty content type, as it expects)."""
    request = urllib.request.Request(event["ResponseURL"], data=json.dumps(answer).encode(), method="PUT",
                                     headers={"Content-Type": ""})
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - CloudFormation's URL
        response.read()


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    answer = {"StackId": event.get("StackId"), "RequestId": event.get("RequestId"),
              "LogicalResourceId": event.get("LogicalResourceId")}
    try:
        physical, data = handle(event)
        answer.update(Status="SUCCESS", PhysicalResourceId=physical or context.log_stream_name, Data=data)
    except Exception as exc:  # noqa: BLE001 - CloudFormation must hear of it, whatever it is
        reason = f"{type(exc).__name__}: {exc}"[:400]
        logger.error("canary setup failed", extra={"request": event.get("RequestType"), "reason": reason})
        answer.update(Status="FAILED", Reason=f"{reason} (see {context.log_stream_name})",
                      PhysicalResourceId=event.get("PhysicalResourceId") or context.log_stream_name)
    try:
        respond(event, answer)
    except Exception as exc:  # noqa: BLE001 - logged; nothing else can be done
        logger.error("could not answer CloudFormation", extra={"reason": f"{type(exc).__name__}: {exc}"[:300]})
    return answer
