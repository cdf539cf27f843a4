"""The keys table in DynamoDB (boto3 is imported on first use).

Schema (the CDK stack builds the table from these names): partition key ``key_hash``;
a global secondary index ``KEY_ID_INDEX`` on ``key_id`` / ``created_at`` to find a key's
records (a rotated key has one record per secret). Point-in-time recovery is on."""

from __future__ import annotations

from typing import Any

from ragserve.auth.keys import KeyRecord

PARTITION_KEY = "key_hash"
KEY_ID_INDEX = "by_key_id"
KEY_ID_ATTR = "key_id"
CREATED_AT_ATTR = "created_at"


def aws_client(service: str, *, timeouts: tuple[float, float] = (2.0, 3.0), attempts: int = 2):
    """A boto3 client with short timeouts (a slow dependency must not hold a request)."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(connect_timeout=timeouts[0], read_timeout=timeouts[1],
                                               retries={"max_attempts": attempts, "mode": "standard"}))


class DynamoKeyStore:
    def __init__(self, table: str, client: Any = None) -> None:
        if not table:
            raise ValueError("the keys table is not set (RAGSERVE_KEYS_TABLE, or --table)")
        self.table = table
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws_client("dynamodb")
        return self._client

    def get(self, key_hash: str) -> KeyRecord | None:
        item = self.client.get_item(TableName=self.table, Key={PARTITION_KEY: {"S": key_hash}}).get("Item")
        return KeyRecord.from_item(item) if item else None

    def put_new(self, record: KeyRecord) -> None:
        self.client.put_item(TableName=self.table, Item=record.to_item(),
                             ConditionExpression="attribute_not_exists(#h)",
                             ExpressionAttributeNames={"#h": PARTITION_KEY})

    def mark_revoked(self, record: KeyRecord) -> KeyRecord:
        revoked = record.revoked()
        self.client.update_item(
            TableName=self.table, Key={PARTITION_KEY: {"S": record.key_hash}},
            UpdateExpression="SET #s = :revoked, revoked_at = :at",
            ConditionExpression="attribute_exists(#h)",
            ExpressionAttributeNames={"#s": "status", "#h": PARTITION_KEY},
            ExpressionAttributeValues={":revoked": {"S": "revoked"}, ":at": {"S": revoked.revoked_at}},
        )
        return revoked

    def by_key_id(self, key_id: str) -> list[KeyRecord]:
        records: list[KeyRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": KEY_ID_INDEX,
            "KeyConditionExpression": "#k = :k", "ExpressionAttributeNames": {"#k": KEY_ID_ATTR},
            "ExpressionAttributeValues": {":k": {"S": key_id}},
        }
        while True:
            page = self.client.query(**kwargs)
            records += [KeyRecord.from_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda r: r.created_at)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def all(self) -> list[KeyRecord]:
        records: list[KeyRecord] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            page = self.client.scan(**kwargs)
            records += [KeyRecord.from_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda r: (r.key_id, r.created_at))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
