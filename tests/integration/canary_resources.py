"""What the stack makes for the canary setup (functions/ops/canary.py), made on a moto
server: the keys table, a tier's usage plan, the secret and the ingest queue."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.aws.aws_helpers import create_keys_table

REGION = "us-east-1"


def moto_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 (in a subprocess) at ``endpoint``."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}


def moto_client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def prepare_canary_resources(endpoint: str, stage: str = "test", tier: str = "premium") -> dict[str, str]:
    """The canary setup's ResourceProperties, for resources made now on ``endpoint``."""
    suffix = uuid.uuid4().hex[:8]
    table = create_keys_table(moto_client("dynamodb", endpoint), f"ragserve-{stage}-keys-{suffix}")
    plan = moto_client("apigateway", endpoint).create_usage_plan(
        name=f"ragserve-{stage}-{tier}-{suffix}", throttle={"rateLimit": 500, "burstLimit": 1000})["id"]
    secret = moto_client("secretsmanager", endpoint).create_secret(
        Name=f"ragserve-{stage}-canary-{suffix}", SecretString='{"placeholder": "until the setup runs"}')["ARN"]
    queue = moto_client("sqs", endpoint).create_queue(
        QueueName=f"ragserve-{stage}-ingest-{suffix}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"})["QueueUrl"]
    return {"Stage": stage, "KeysTable": table, "PlanId": plan, "Tier": tier, "SecretArn": secret, "QueueUrl": queue}
