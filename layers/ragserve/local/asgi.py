"""The ASGI side of ``ragserve serve``: turns one HTTP request into the Gateway's inputs
(method, path, query, headers, body, client address) and the GatewayResponse into ASGI
messages. Routing, keys, rate limits, the REST proxy event and the call of the function's
``lambda_handler`` stay in ``Gateway``; the synchronous handlers run on a bounded thread
pool so requests are served concurrently. The HTTP framing itself (parsing, keep-alive,
timeouts between requests) is uvicorn's, with h11: see ``ragserve.local.server``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from urllib.parse import parse_qs, urlsplit

import orjson

from ragserve.api.errors import error_body
from ragserve.local.gateway import API_GATEWAY_MAX_BODY, Gateway, GatewayResponse
from ragserve.local.logs import local_logger
from ragserve.local.swagger_ui import swagger_ui
from ragserve.routes import find_route

log = local_logger()

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

# Scope keys shared with ragserve.local.server's protocol: the request's header names as
# the client spelled them (ASGI lowercases them; API Gateway passes them as sent), and
# the status the protocol answered itself when the connection broke mid-request.
RAW_HEADERS = "ragserve.raw_headers"
ANSWERED = "ragserve.answered"
CLIENT_GONE = 499  # logged (never sent) when the client left before its answer: nginx's convention

HOP_BY_HOP = ("content-length", "connection", "transfer-encoding", "keep-alive")
# The request line and headers. h11 refuses more only while they are incomplete (its
# receive buffer), so a block that arrives whole is measured here as well.
MAX_HEADER_BYTES = 16 * 1024


class _Refusal(Exception):
    def __init__(self, response: GatewayResponse, close: bool) -> None:
        self.response = response
        self.close = close


class _Gone(Exception):
    """The client disconnected before the request was read."""


def json_error(status: int, code: str, message: str) -> GatewayResponse:
    """A refusal before routing (no request id yet), in the API's error shape."""
    return GatewayResponse(status, {"Content-Type": "application/json"}, orjson.dumps(error_body(code, message, "")))


class GatewayApp:
    """An ASGI 3 application in front of ``gateway``."""

    def __init__(self, gateway: Gateway, executor: Executor, *, read_timeout: float,
                 max_body: int = API_GATEWAY_MAX_BODY) -> None:
        self.gateway = gateway
        self.executor = executor
        self.read_timeout = read_timeout
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off, websockets are not served
            return
        started = time.perf_counter()
        method = scope["method"]
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        url = urlsplit(target)  # also takes an absolute-form target apart
        path = url.path or "/"
        client = (scope.get("client") or ("", 0))[0]
        close = False
        try:
            headers = _headers(scope)
            raw = scope.get(RAW_HEADERS) or scope["headers"]
            if len(target) + sum(len(name) + len(value) + 4 for name, value in raw) > MAX_HEADER_BYTES:
                raise _Refusal(json_error(400, "invalid_request",
                                          f"request line and headers are over {MAX_HEADER_BYTES} bytes"), close=True)
            body = await self._read_body(headers, receive)
            response = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._dispatch, method, path, parse_qs(url.query, keep_blank_values=True),
                headers, body, client)
        except _Refusal as refusal:
            response, close = refusal.response, refusal.close
        except _Gone:  # nothing to answer: the protocol did (ANSWERED), or nobody is listening
            response = GatewayResponse(scope.get(ANSWERED, CLIENT_GONE))
        except Exception:  # a bug here, not in a function (the Gateway answers 502 for those)
            log.exception("local server failed", extra={"method": method, "path": path})
            response, close = json_error(500, "internal_error", "the local server failed; see its log"), True
        if ANSWERED not in scope and response.status != CLIENT_GONE:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": _response_headers(response, close)})
            await send({"type": "http.response.body", "body": response.body})
        log.info("request", extra={"method": method, "path": path, "status": response.status,
                                   "ms": round((time.perf_counter() - started) * 1000, 2), "client": client})

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        """The whole body, read within the read timeout; h11 has already refused malformed
        framing (a bad or conflicting Content-Length, a transfer coding other than chunked)."""
        names = {name.lower(): value for name, value in headers.items()}
        if "transfer-encoding" in names:
            if "content-length" in names:  # RFC 9112 6.3: refuse, and close the connection
                raise _Refusal(json_error(400, "invalid_request",
                                          "both Transfer-Encoding and Content-Length are set"), close=True)
            # h11 reads (and discards) the chunks after the answer: the connection stays in step
            raise _Refusal(json_error(411, "length_required",
                                      "send a Content-Length (chunked bodies are not accepted)"), close=False)
        length = int(names.get("content-length") or 0)
        if length > self.max_body:  # not read: the connection cannot be reused
            raise _Refusal(json_error(413, "body_too_large", f"request body is over {self.max_body} bytes"),
                           close=True)
        if not length:
            return b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        chunks = []
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _Refusal(json_error(408, "request_timeout",
                                          f"the request body was not received within {self.read_timeout:g} s"),
                               close=True) from None
            if message["type"] == "http.disconnect":
                raise _Gone
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _dispatch(self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str],
                  body: bytes, client: str) -> GatewayResponse:
        """On a pool thread: /docs (local only), else the Gateway and the function."""
        ui = swagger_ui(method, path)
        if ui is not None:
            return ui
        if method == "HEAD" and find_route("GET", path, self.gateway.routes) is not None:
            method = "GET"  # HEAD is GET without the body (uvicorn sends none for HEAD)
        return self.gateway.handle(method, path, query, headers, body, source_ip=client)


def _headers(scope: dict) -> dict[str, str]:
    """Request headers as the client sent them (names in its case; a repeated header:
    the last value, as before)."""
    raw = scope.get(RAW_HEADERS) or scope["headers"]
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


def _response_headers(response: GatewayResponse, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [(name.encode("latin-1"), str(value).encode("latin-1")) for name, value in response.headers.items()
               if name.lower() not in HOP_BY_HOP]
    headers.append((b"Content-Length", str(len(response.body)).encode()))
    if close:
        headers.append((b"Connection", b"close"))
    return headers
