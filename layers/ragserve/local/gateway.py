"""An API Gateway emulator: routes each request to the function that owns it (the
routes table), checks ``x-api-key`` and its scope, applies a per-key token bucket as
a usage plan would, and calls the real ``lambda_handler`` with a REST proxy event."""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import orjson

from ragserve.api.errors import error_body
from ragserve.local.events import LocalContext, rest_event
from ragserve.local.logs import local_logger
from ragserve.routes import ROUTES, Route, find_route, path_exists
from ragserve.settings import GatewaySettings, SettingsError

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit
SCOPES = ("read", "write")
Handler = Callable[[dict, object], dict]
log = local_logger()


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    scope: str

    @property
    def key_id(self) -> str:
        """A non-secret name for the key, safe for logs and usage records."""
        return "key-" + hashlib.sha256(self.key.encode()).hexdigest()[:12]

    def allows(self, scope: str | None) -> bool:
        return scope is None or scope == "read" or self.scope == "write"


def parse_api_keys(spec: str) -> dict[str, ApiKey]:
    """``KEY:read,KEY2:write`` (scope defaults to read)."""
    keys: dict[str, ApiKey] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, _, scope = item.rpartition(":") if ":" in item else (item, "", "read")
        scope = scope or "read"
        if not key or scope not in SCOPES:
            raise SettingsError(f"RAGSERVE_API_KEYS: expected KEY:read or KEY:write, got {item.split(':')[-1]!r}")
        keys[key] = ApiKey(key, scope)
    return keys


def dev_key() -> ApiKey:
    return ApiKey("rs-dev-" + secrets.token_urlsafe(18), "write")


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` answers 0 or the wait in seconds."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass(slots=True)
class GatewayResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json_error(status: int, code: str, message: str, request_id: str,
                headers: Mapping[str, str] | None = None) -> GatewayResponse:
    return GatewayResponse(status, {"Content-Type": "application/json", **(headers or {})},
                           orjson.dumps(error_body(code, message, request_id)))


class Gateway:
    def __init__(self, settings: GatewaySettings, handlers: Mapping[str, Handler],
                 keys: Mapping[str, ApiKey] | None = None, routes: tuple[Route, ...] = ROUTES) -> None:
        self.settings = settings
        self.routes = routes
        self.handlers = dict(handlers)
        self.keys = dict(keys) if keys is not None else parse_api_keys(settings.api_keys)
        self._buckets: dict[str, TokenBucket] = {}
        self._buckets_lock = threading.Lock()

    def _bucket(self, key: ApiKey) -> TokenBucket:
        with self._buckets_lock:
            bucket = self._buckets.get(key.key)
            if bucket is None:
                bucket = self._buckets[key.key] = TokenBucket(self.settings.rate_limit_rps,
                                                              self.settings.rate_limit_burst)
            return bucket

    def handle(self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str],
               body: bytes, source_ip: str = "127.0.0.1") -> GatewayResponse:
        request_id = str(uuid.uuid4())
        found = find_route(method, path, self.routes)
        if found is None:
            if path_exists(path, self.routes):
                return _json_error(405, "method_not_allowed", f"{method} is not allowed on {path}", request_id)
            return _json_error(404, "not_found", f"no route for {method} {path}", request_id)
        route, raw_params = found
        # API Gateway (REST) hands the function decoded path parameters and the path as sent.
        path_params = {name: unquote(value) for name, value in raw_params.items()}
        if len(body) > API_GATEWAY_MAX_BODY:
            return _json_error(413, "body_too_large", f"request body is over {API_GATEWAY_MAX_BODY} bytes",
                               request_id)
        key, denied = self._authorize(route, headers, request_id)
        if denied is not None:
            return denied
        event = rest_event(
            method, path, resource=route.resource, path_parameters=path_params, headers=headers, query=query,
            body=body, api_key=key.key if key else None, request_id=request_id, source_ip=source_ip,
            authorizer={"principalId": key.key_id, "scope": key.scope, "collections": "*"} if key else None,
        )
        return self._invoke(route, event, request_id)

    def _authorize(self, route: Route, headers: Mapping[str, str],
                   request_id: str) -> tuple[ApiKey | None, GatewayResponse | None]:
        if route.scope is None:
            return None, None
        given = next((v for k, v in headers.items() if k.lower() == "x-api-key"), None)
        if not given:
            return None, _json_error(401, "unauthorized", "missing x-api-key header", request_id)
        key = self.keys.get(given)
        if key is None:
            return None, _json_error(403, "forbidden", "unknown API key", request_id)
        if not key.allows(route.scope):
            return key, _json_error(403, "forbidden", f"this key's scope is {key.scope}; {route.scope} is needed",
                                    request_id)
        wait = self._bucket(key).take()
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            return key, _json_error(429, "rate_limited", "rate limit exceeded for this API key", request_id,
                                    {"Retry-After": str(retry_after)})
        return key, None

    def _invoke(self, route: Route, event: dict, request_id: str) -> GatewayResponse:
        handler = self.handlers.get(route.function)
        if handler is None:
            return _json_error(503, "not_ready", f"function {route.function} is not loaded", request_id)
        started = time.perf_counter()
        try:
            result = handler(event, LocalContext(function_name=route.function))
        except Exception:  # a handler that raises is a Lambda error: API Gateway answers 502
            log.exception("function raised", extra={"function": route.function, "request_id": request_id})
            return _json_error(502, "bad_gateway", "the function failed; see the server log", request_id)
        response = to_gateway_response(result)
        # Local only (API Gateway adds no such header): the time inside lambda_handler, i.e. the
        # billed duration a warm Lambda invocation would see, apart from the gateway's own work.
        response.headers["Server-Timing"] = f"handler;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response


def to_gateway_response(result: dict) -> GatewayResponse:
    """A Lambda proxy result (headers and multiValueHeaders) as status, headers, bytes."""
    headers: dict[str, str] = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(v) for v in values)
    for name, value in (result.get("headers") or {}).items():
        headers[name] = str(value)
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    return GatewayResponse(int(result.get("statusCode", 502)), headers, data)
