"""DynamoDB: the embedding cache (TTL), the idempotency records (TTL) and the API keys;
on-demand, point-in-time recovery on.

Schemas: the keys table's names come from ``ragserve.auth.store`` (the code that reads
it); the idempotency table is Powertools' DynamoDB persistence layer's default (``id``,
TTL ``expiration``); the embedding cache is keyed by ``key`` = sha256(model id + text)
with TTL ``expires_at``."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from ragserve.auth.store import CREATED_AT_ATTR, KEY_ID_ATTR, KEY_ID_INDEX, PARTITION_KEY

EMBEDDING_CACHE_KEY = "key"
EMBEDDING_CACHE_TTL = "expires_at"
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL = "expiration"


@dataclass(frozen=True, slots=True)
class TablesProps:
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    deletion_protection: bool = True


class Tables(Construct):
    embedding_cache: dynamodb.Table
    idempotency: dynamodb.Table
    keys: dynamodb.Table

    def __init__(self, scope: Construct, construct_id: str, props: TablesProps) -> None:
        super().__init__(scope, construct_id)

        def table(name: str, key: str, ttl: str | None) -> dynamodb.Table:
            return dynamodb.Table(
                self, name,
                partition_key=dynamodb.Attribute(name=key, type=dynamodb.AttributeType.STRING),
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True),
                time_to_live_attribute=ttl,
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                deletion_protection=props.deletion_protection,
                removal_policy=props.removal_policy,
            )

        self.embedding_cache = table("EmbeddingCache", EMBEDDING_CACHE_KEY, EMBEDDING_CACHE_TTL)
        self.idempotency = table("Idempotency", IDEMPOTENCY_KEY, IDEMPOTENCY_TTL)
        self.keys = table("ApiKeys", PARTITION_KEY, None)
        self.keys.add_global_secondary_index(
            index_name=KEY_ID_INDEX,
            partition_key=dynamodb.Attribute(name=KEY_ID_ATTR, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=CREATED_AT_ATTR, type=dynamodb.AttributeType.STRING),
        )
