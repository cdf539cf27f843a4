"""API Gateway REST proxy events (payload format 1.0) and a Lambda context, built the
way API Gateway and the Lambda runtime build them, for local serving and invoking."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

STAGE = "local"


def rest_event(
    method: str,
    path: str,
    *,
    resource: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, list[str]] | None = None,
    body: bytes | str | None = None,
    api_key: str | None = None,
    authorizer: Mapping[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
) -> dict:
    """An API Gateway REST proxy event. A body that is not UTF-8 is sent base64-encoded
    with ``isBase64Encoded`` (as API Gateway does for binary payloads)."""
    headers = dict(headers or {})
    query = {k: list(v) for k, v in (query or {}).items()}
    is_base64 = False
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            body, is_base64 = base64.b64encode(body).decode("ascii"), True
    request_id = request_id or str(uuid.uuid4())
    now = time.time()
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource or path,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "protocol": "HTTP/1.1",
            "accountId": "000000000000",
            "apiId": "local",
            "identity": {"sourceIp": source_ip, "apiKey": api_key, "userAgent": headers.get("User-Agent")},
            "authorizer": dict(authorizer) if authorizer else None,
        },
        "body": body if body not in ("", None) else None,
        "isBase64Encoded": is_base64,
    }


def sqs_event(messages: list[dict], queue_arn: str = "arn:aws:sqs:local:000000000000:ragserve-ingest.fifo") -> dict:
    """An SQS event (the Lambda event source mapping's shape) for FIFO ``messages``:
    dicts with message_id, receipt, group, body, receive_count."""
    now = str(int(time.time() * 1000))
    return {"Records": [{
        "messageId": m["message_id"],
        "receiptHandle": m["receipt"],
        "body": m["body"],
        "attributes": {"ApproximateReceiveCount": str(m["receive_count"]), "SentTimestamp": now,
                       "MessageGroupId": m["group"], "MessageDeduplicationId": m["message_id"],
                       "ApproximateFirstReceiveTimestamp": now},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(m["body"].encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "local",
    } for m in messages]}


@dataclass
class LocalContext:
    """The fields of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 2048
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
