"""Helpers for the moto-backed tests."""

from __future__ import annotations

from typing import Any


def create_keys_table(dynamodb: Any, name: str = "ragserve-test-keys") -> str:
    """The keys table exactly as the stack declares it (names from ragserve.auth.store)."""
    from ragserve.auth.store import CREATED_AT_ATTR, KEY_ID_ATTR, KEY_ID_INDEX, PARTITION_KEY

    dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"}
                              for a in (PARTITION_KEY, KEY_ID_ATTR, CREATED_AT_ATTR)],
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": KEY_ID_INDEX,
            "KeySchema": [{"AttributeName": KEY_ID_ATTR, "KeyType": "HASH"},
                          {"AttributeName": CREATED_AT_ATTR, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )
    return name
