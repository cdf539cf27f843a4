"""``ragserve serve``: uvicorn (HTTP/1.1 with h11, asyncio) on loopback in front of the
Gateway, through the ASGI adapter of ``ragserve.local.asgi``.

Each request becomes an API Gateway REST proxy event for the function that owns the
route, so what runs locally is exactly what runs in Lambda. The server's own part:
strict parsing (h11: conflicting or malformed ``Content-Length``, unknown transfer
codings and bad request lines are 400 in the API's JSON error shape), keep-alive
(TCP_NODELAY, so an answer on a reused connection never waits for a delayed ACK), an
idle timeout between requests, a read timeout for a request's headers (here) and its
body (in the adapter), HEAD, graceful shutdown on SIGINT/SIGTERM (in-flight requests
finish), one structured log line per request and no tracebacks for clients that leave."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ragserve.api.errors import error_body
from ragserve.local.asgi import ANSWERED, MAX_HEADER_BYTES, RAW_HEADERS, GatewayApp
from ragserve.local.gateway import Gateway, Handler
from ragserve.local.logs import local_logger
from ragserve.routes import functions
from ragserve.settings import SettingsError

log = local_logger()

READ_TIMEOUT_ENV = "RAGSERVE_HTTP_READ_TIMEOUT"
IDLE_TIMEOUT_ENV = "RAGSERVE_HTTP_IDLE_TIMEOUT"
THREADS_ENV = "RAGSERVE_HTTP_THREADS"


def load_handlers(names: list[str] | None = None) -> dict[str, Handler]:
    """Import each function's handler module (its init loads models, as Lambda init does)."""
    return {name: importlib.import_module(f"functions.{name}.handler").lambda_handler
            for name in (names or functions())}


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP server's timeouts (seconds) and its handler threads."""

    read_timeout: float = 10.0  # a request's headers, from their first byte; its body, from the headers' end
    idle_timeout: float = 15.0  # a connection with no request under way (keep-alive; a fresh connection)
    threads: int = 32  # lambda_handler calls at once; further requests wait for a thread
    shutdown_timeout: float = 30.0  # in-flight requests get this long after SIGINT/SIGTERM

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> HttpLimits:
        def number(name: str, default: float, kind: type = float) -> float:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise SettingsError(f"{name}: expected a positive {kind.__name__}, got {raw!r}")
            return value

        return cls(read_timeout=number(READ_TIMEOUT_ENV, cls.read_timeout),
                   idle_timeout=number(IDLE_TIMEOUT_ENV, cls.idle_timeout),
                   threads=int(number(THREADS_ENV, cls.threads, int)))


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with what it leaves out: a deadline for a request's headers
    (uvicorn arms none, so a client that stalls mid-headers, or never sends a byte, would
    hold its connection forever), JSON protocol errors, a truncated body on a half-closed
    connection answered 400, and the client's header names kept for the event."""

    read_timeout: float  # set on the subclass made by LocalServer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._protocol_error: h11.RemoteProtocolError | None = None
        self._raw_headers: list[tuple[bytes, bytes]] | None = None
        self._request_started = 0.0
        parse = self.conn.next_event

        def next_event():  # remembers why h11 refused a request, and the header names as sent
            try:
                event = parse()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise
            if isinstance(event, h11.Request):
                self._raw_headers = list(event.headers.raw_items())
            return event

        self.conn.next_event = next_event

    # -- the deadline between requests ------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # an answer goes out in two writes (headers, body): with Nagle on, the second waits
            # for the ACK of the first, which a keep-alive client delays by ~40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and not self._busy():
            self._request_started = time.perf_counter()
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _busy(self) -> bool:
        """A request is being answered: the adapter reads its body under its own deadline."""
        return self.cycle is not None and not self.cycle.response_complete

    def _watch(self) -> None:
        """Arm the right timer for what the connection waits for: nothing (a request is being
        answered), the next request (idle timeout) or the rest of one (read timeout)."""
        if self.transport is None or self.transport.is_closing() or self._busy():
            self._cancel_read_timer()
            return
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._cancel_read_timer()  # between requests: uvicorn's keep-alive timer closes it quietly
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)
            return
        self._unset_keepalive_if_required()  # part of a request is here: the read timeout runs
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self._busy():
            return
        if self.conn.their_state is h11.IDLE:  # headers begun, never finished: 408, as nginx logs it
            message = f"the request headers were not received within {self.read_timeout:g} s"
            self._send_raw(408, "Request Timeout", "request_timeout", message)
        self.transport.close()  # else: the unread rest of a refused body never came

    # -- errors ------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request (uvicorn answers text/plain): the API's JSON error instead."""
        reason = str(self._protocol_error) if self._protocol_error else msg
        message = f"malformed HTTP request: {reason}"
        body = orjson.dumps(error_body("invalid_request", message, ""))
        headers = [*self.server_state.default_headers, (b"Content-Type", b"application/json"),
                   (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
        try:
            output = self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
            output += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
            self.transport.write(output)
        except h11.LocalProtocolError:  # an answer was already sent on this connection: just close
            pass
        if self._busy():  # the adapter is reading this request's body: it logs the line, sends nothing
            self.cycle.scope[ANSWERED] = 400  # type: ignore[index]
            self.cycle.disconnected = True  # as connection_lost will: receive() says http.disconnect
            self.cycle.message_event.set()
        else:
            self._log(400, reason)
        self.transport.close()

    def eof_received(self) -> bool | None:
        """The client half-closed. A request still being read was cut short: h11 refuses it
        (400). A request read in full is answered, then the connection closes."""
        if self._busy():
            if self.conn.their_state is h11.SEND_BODY:
                self.conn.receive_data(b"")
                self.handle_events()  # h11: "peer closed connection without sending complete message body"
                return None
            self.cycle.keep_alive = False
            return True
        return None

    def _send_raw(self, status: int, reason: str, code: str, message: str) -> None:
        """An answer outside h11's request cycle (no complete request to answer)."""
        body = orjson.dumps(error_body(code, message, ""))
        head = (f"HTTP/1.1 {status} {reason}\r\nDate: {formatdate(usegmt=True)}\r\nServer: ragserve\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self._log(status, message)

    def _log(self, status: int, reason: str) -> None:
        ms = round((time.perf_counter() - self._request_started) * 1000, 2) if self._request_started else 0.0
        log.info("request", extra={"method": None, "path": None, "status": status, "ms": ms,
                                   "client": self.client[0] if self.client else "", "reason": reason})

    # -- the client's header names -----------------------------------------------------------

    def handle_events(self) -> None:
        super().handle_events()
        if self._raw_headers is not None and self.scope is not None:
            # h11 pauses after each request until it is answered: this scope is that request's
            self.scope[RAW_HEADERS] = self._raw_headers  # type: ignore[literal-required]
            self._raw_headers = None


class _UvicornServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, without raising the caught signal again once stopped (which would kill
        the process with SIGTERM's default action): a stop by signal is a clean exit here."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _structured_library_logs() -> None:
    """uvicorn's and asyncio's own records (errors only) as JSON lines of the local logger;
    uvicorn's access log is off: the adapter writes one line per request."""
    handler = local_logger().registered_handler
    for name, level in (("uvicorn", logging.ERROR), ("asyncio", logging.WARNING)):
        library = logging.getLogger(name)
        library.handlers = [handler]
        library.setLevel(level)
        library.propagate = False


class LocalServer:
    """A bound, listening socket and the uvicorn server that will serve it."""

    def __init__(self, gateway: Gateway, host: str, port: int, limits: HttpLimits) -> None:
        self.limits = limits
        self.socket = _listen(host, port)  # OSError: the port is taken (reported before anything starts)
        self.server_address = self.socket.getsockname()
        self.executor = ThreadPoolExecutor(limits.threads, thread_name_prefix="ragserve-handler")
        self.app = GatewayApp(gateway, self.executor, read_timeout=limits.read_timeout)
        protocol = type("RagserveH11Protocol", (_Protocol,), {"read_timeout": limits.read_timeout})
        _structured_library_logs()
        config = uvicorn.Config(
            self.app, http=protocol, ws="none", lifespan="off", interface="asgi3", loop="asyncio",
            log_config=None, access_log=False, proxy_headers=False, server_header=False,
            headers=[("Server", "ragserve")], timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=limits.shutdown_timeout,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=MAX_HEADER_BYTES)
        self._server = _UvicornServer(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or ``shutdown``; in-flight
        requests finish first (up to ``shutdown_timeout``)."""
        try:
            asyncio.run(self._server.serve(sockets=[self.socket]))
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._stopped.wait(self.limits.shutdown_timeout + 5)

    def server_close(self) -> None:
        self.socket.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY for these
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def make_server(gateway: Gateway, host: str = "127.0.0.1", port: int = 8080,
                limits: HttpLimits | None = None) -> LocalServer:
    return LocalServer(gateway, host, port, limits or HttpLimits.from_env())


def serve_in_thread(server: LocalServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="ragserve-http", daemon=True)
    thread.start()
    return thread
