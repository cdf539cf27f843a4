"""API keys in AWS: what is stored per key (a hash, never the key), the REQUEST
authorizer's decision as an IAM policy, and the DynamoDB adapter.

The core (``keys``, ``policy``, ``authorizer``) is pure; only ``store`` talks to AWS,
and it imports boto3 on first use."""

from ragserve.auth.authorizer import api_key_of, authorize
from ragserve.auth.keys import KeyRecord, generate_key, hash_key, new_key_id
from ragserve.auth.policy import allow_response, allowed_resources, deny_response

__all__ = [
    "KeyRecord",
    "allow_response",
    "allowed_resources",
    "api_key_of",
    "authorize",
    "deny_response",
    "generate_key",
    "hash_key",
    "new_key_id",
]
