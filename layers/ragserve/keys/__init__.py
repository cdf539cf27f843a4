"""Key management for the AWS stack (``ragserve keys``): create, rotate, revoke, list.

Each key is stored as a hash in the keys table and as an API Gateway API key attached
to its tier's usage plan (``ragserve-<stage>-<tier>``)."""

from ragserve.keys.manager import IssuedKey, KeyManagementError, KeyManager, UsagePlans, usage_plan_name

__all__ = ["IssuedKey", "KeyManagementError", "KeyManager", "UsagePlans", "usage_plan_name"]
