"""``ragserve serve``: a threaded HTTP/1.1 server on loopback in front of the Gateway.

Each request becomes an API Gateway REST proxy event for the function that owns the
route, so what runs locally is exactly what runs in Lambda."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from ragserve.api.errors import error_body
from ragserve.local.gateway import API_GATEWAY_MAX_BODY, Gateway, GatewayResponse, Handler
from ragserve.local.logs import local_logger
from ragserve.local.swagger_ui import swagger_ui
from ragserve.routes import functions

log = local_logger()


def load_handlers(names: list[str] | None = None) -> dict[str, Handler]:
    """Import each function's handler module (its init loads models, as Lambda init does)."""
    return {name: importlib.import_module(f"functions.{name}.handler").lambda_handler
            for name in (names or functions())}


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ragserve"
    sys_version = ""
    gateway: Gateway  # set on the subclass made by make_server

    def _serve(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        response = self._read_and_handle(url.path or "/", parse_qs(url.query, keep_blank_values=True))
        self._send(response)
        log.info("request", extra={
            "method": self.command, "path": url.path, "status": response.status,
            "ms": round((time.perf_counter() - started) * 1000, 2), "client": self.client_address[0],
        })

    def _read_and_handle(self, path: str, query: Mapping[str, list[str]]) -> GatewayResponse:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            return _error(411, "length_required", "send a Content-Length (chunked bodies are not accepted)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return _error(400, "invalid_request", "Content-Length is not a number")
        if length < 0 or length > API_GATEWAY_MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            return _error(413, "body_too_large", f"request body is over {API_GATEWAY_MAX_BODY} bytes")
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        ui = swagger_ui(self.command, path)  # /docs: local only, not an API Gateway route
        if ui is not None:
            return ui
        return self.gateway.handle(self.command, path, query, headers, body, source_ip=self.client_address[0])

    def _send(self, response: GatewayResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args) -> None:
        """Silence http.server's own access log: ``_serve`` logs structured lines."""


def _error(status: int, code: str, message: str) -> GatewayResponse:
    return GatewayResponse(status, {"Content-Type": "application/json"}, orjson.dumps(error_body(code, message, "")))


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(gateway: Gateway, host: str = "127.0.0.1", port: int = 8080) -> LocalServer:
    handler_class = type("RequestHandler", (_RequestHandler,), {"gateway": gateway})
    return LocalServer((host, port), handler_class)


def serve_in_thread(server: LocalServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="ragserve-http", daemon=True)
    thread.start()
    return thread
