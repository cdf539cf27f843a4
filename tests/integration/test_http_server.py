"""The HTTP layer of `ragserve serve` (uvicorn with h11 under a thin ASGI adapter), over
real sockets on 127.0.0.1: keep-alive without a delayed-ACK stall, read and idle
timeouts (a stalled or idle client holds no thread and blocks nobody), strict parsing
(chunked, conflicting Content-Length, a short body on a half-closed connection: one
answer, never a second request), HEAD, structured access logs, no traceback when a
client goes away, and graceful shutdown (an in-flight request finishes on SIGTERM)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import pytest
import requests
from test_serve_collections import READ_KEY, Server

READ_TIMEOUT = 1.0  # RAGSERVE_HTTP_READ_TIMEOUT for these servers: the stall tests wait about this long
IDLE_TIMEOUT = 2.0  # RAGSERVE_HTTP_IDLE_TIMEOUT
ENV = {"RAGSERVE_HTTP_READ_TIMEOUT": str(READ_TIMEOUT), "RAGSERVE_HTTP_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("http-server"), demo=False, extra_env=ENV)
    yield server
    server.stop()


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``timeout`` passes (False)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionResetError:
        pass
    return b"".join(chunks), True


def read_for(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends within ``seconds`` (it may keep the connection open)."""
    deadline = time.monotonic() + seconds
    chunks = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def json_error(reply: bytes) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), reply[:500]
    return json.loads(body)["error"]


def process_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


# -- keep-alive ------------------------------------------------------------------------------


def test_keep_alive_requests_on_one_connection_are_not_delayed(server):
    # GIVEN one http.client connection WHEN 20 requests go over it one after another
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    times, socks = [], set()
    for _ in range(21):
        started = time.perf_counter()
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "healthy"
        times.append((time.perf_counter() - started) * 1000)
        socks.add(id(conn.sock))
    conn.close()
    # THEN they all used the one connection and none waited on a delayed ACK (~40 ms each)
    assert len(socks) == 1
    assert statistics.median(times[1:]) < 30, [round(t, 1) for t in times]


def test_keep_alive_posts_with_a_requests_session_are_not_delayed(server):
    session = requests.Session()
    url = f"http://127.0.0.1:{server.port}/v1/embed"
    payload = {"texts": ["keep me alive"], "encoding": "base64"}
    times = []
    for _ in range(21):
        started = time.perf_counter()
        response = session.post(url, json=payload, headers={"x-api-key": READ_KEY}, timeout=30)
        assert response.status_code == 200, response.text
        times.append((time.perf_counter() - started) * 1000)
    session.close()
    assert statistics.median(times[1:]) < 30, [round(t, 1) for t in times]


# -- timeouts ---------------------------------------------------------------------------------


def test_a_client_stalled_in_its_headers_is_disconnected_and_blocks_nobody(server):
    # GIVEN a client that sent half its headers and stalls
    stalled = connect(server)
    stalled.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-")
    started = time.monotonic()
    # THEN others are served meanwhile
    assert server.request("GET", "/health")[0] == 200
    # AND the stalled one is answered 408 and disconnected after the read timeout
    reply, closed = read_until_closed(stalled, timeout=READ_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    stalled.close()
    assert closed, f"still open after {elapsed:.1f} s"
    assert READ_TIMEOUT * 0.8 <= elapsed < READ_TIMEOUT + 3
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert json_error(reply)["code"] == "request_timeout"


def test_a_client_stalled_in_its_body_is_disconnected(server):
    stalled = connect(server)
    stalled.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"texts\": [")
    started = time.monotonic()
    assert server.request("GET", "/health")[0] == 200
    reply, closed = read_until_closed(stalled, timeout=READ_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    stalled.close()
    assert closed and elapsed < READ_TIMEOUT + 3
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert json_error(reply)["code"] == "request_timeout"


def test_idle_connections_hold_no_thread_block_nobody_and_are_closed(server):
    pid = server.proc.pid
    before = process_threads(pid)
    # GIVEN 50 connections that send nothing
    idle = [connect(server) for _ in range(50)]
    try:
        # THEN a new client is served at once, and the server did not start a thread per connection
        started = time.monotonic()
        assert server.request("GET", "/health")[0] == 200
        assert time.monotonic() - started < 2
        assert process_threads(pid) - before < 10
        # AND the idle connections are closed after the idle timeout
        deadline = time.monotonic() + IDLE_TIMEOUT + 5
        for sock in idle:
            _, closed = read_until_closed(sock, timeout=max(0.1, deadline - time.monotonic()))
            assert closed, "an idle connection outlived the idle timeout"
    finally:
        for sock in idle:
            sock.close()


# -- strict parsing -------------------------------------------------------------------------------

SMUGGLED = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def test_chunked_with_a_trailing_space_is_refused_once_never_answered_as_a_second_request(server):
    # GIVEN "Transfer-Encoding: chunked " (trailing space) and a chunk that reads like a request
    sock = connect(server)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + b"\r\nTransfer-Encoding: chunked \r\n\r\n"
                 + f"{len(SMUGGLED):x}\r\n".encode() + SMUGGLED + b"\r\n0\r\n\r\n")
    reply = read_for(sock, 1.5)
    # THEN one answer, a JSON 4xx, and the chunk is never served as a request of its own
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert reply.startswith(b"HTTP/1.1 411 ")
    assert json_error(reply)["code"] == "length_required"
    # AND the connection still frames requests correctly: the next one is answered once
    sock.sendall(SMUGGLED)
    again = read_for(sock, 1.0)
    sock.close()
    assert again.startswith(b"HTTP/1.1 200 ") and again.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("framing", [
    b"Content-Length: 16\r\nContent-Length: 50\r\n",
    b"Content-Length: 16, 50\r\n",
    b"Content-Length: 16\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: +16\r\n",
])
def test_ambiguous_framing_is_400_json_and_the_connection_closes(server, framing):
    body = b'{"texts": ["a"]}'  # 16 bytes: a valid request if the first Content-Length were taken
    sock = connect(server)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode() + b"\r\n"
                 + framing + b"\r\n" + body + SMUGGLED)
    reply, closed = read_until_closed(sock, timeout=5)
    sock.close()
    assert closed
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert json_error(reply)["code"] == "invalid_request"


@pytest.mark.parametrize("sliced", [False, True])
def test_headers_over_16_kib_are_400_json(server, sliced):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    sock = connect(server)
    if sliced:  # h11's receive buffer limit
        for start in range(0, len(request), 4096):
            try:
                sock.sendall(request[start:start + 4096])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.01)
    else:  # the whole block in one read: measured by the adapter
        sock.sendall(request)
    reply, closed = read_until_closed(sock, timeout=5)
    sock.close()
    assert closed and reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert json_error(reply)["code"] == "invalid_request"


def test_a_short_body_on_a_half_closed_connection_is_not_processed(server):
    # GIVEN Content-Length 100, a 20-byte body that is complete JSON, then the client's FIN
    sock = connect(server)
    body = b'{"texts": ["short"]}'
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + b"\r\nContent-Length: 100\r\n\r\n" + body)
    sock.shutdown(socket.SHUT_WR)
    reply, closed = read_until_closed(sock, timeout=5)
    sock.close()
    # THEN the truncated request never reaches the function: a JSON 400, and the connection closes
    assert closed
    assert b"embeddings" not in reply and reply.count(b"HTTP/1.1 ") == 1
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert "without sending complete message body" in json_error(reply)["message"]


def test_a_complete_request_on_a_half_closed_connection_is_answered(server):
    sock = connect(server)
    body = b'{"texts": ["whole"]}'
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    sock.shutdown(socket.SHUT_WR)
    reply, closed = read_until_closed(sock, timeout=10)
    sock.close()
    assert closed and reply.startswith(b"HTTP/1.1 200 ") and b'"embeddings"' in reply


def test_head_health_is_200_with_get_headers_and_no_body(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    get = conn.getresponse()
    get_body = get.read()
    conn.request("HEAD", "/health")
    head = conn.getresponse()
    assert head.read() == b""
    assert head.status == 200
    assert head.getheader("Content-Type") == get.getheader("Content-Type") == "application/json"
    assert int(head.getheader("Content-Length")) == len(get_body)
    # the connection is still in step: a HEAD answer carried no body
    conn.request("GET", "/health")
    again = conn.getresponse()
    assert again.status == 200 and json.loads(again.read())["status"] == "healthy"
    conn.close()


def test_head_on_a_post_only_route_is_405_json(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("HEAD", "/v1/embed", headers={"x-api-key": READ_KEY})
    response = conn.getresponse()
    assert response.status == 405 and response.read() == b""
    assert response.getheader("Content-Type") == "application/json"
    conn.close()


# -- logs -----------------------------------------------------------------------------------------


def test_each_request_is_one_structured_access_log_line(server):
    marker = f"/v1/nothing-{time.monotonic_ns()}"
    assert server.request("GET", marker)[0] == 404
    server.wait_for_log(marker, timeout=5)
    lines = [json.loads(line) for line in server.read_log().splitlines() if marker in line]
    assert len(lines) == 1
    record = lines[0]
    assert record["message"] == "request" and record["method"] == "GET" and record["path"] == marker
    assert record["status"] == 404 and record["client"] == "127.0.0.1" and record["ms"] >= 0
    # no access log of uvicorn's own ("GET /... HTTP/1.1" 404)
    assert not [line for line in server.read_log().splitlines() if '" 404' in line]


def test_clients_that_go_away_mid_response_leave_no_traceback(server):
    # GIVEN clients that ask for a 1.4 MB asset and reset the connection after a few bytes
    for _ in range(10):
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        sock.close()
    # AND clients that leave before their (slow) answer is ready
    for _ in range(3):
        sock = connect(server)
        texts = json.dumps({"texts": [f"leave early {i} " * 40 for i in range(50)]}).encode()
        sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                     + f"\r\nContent-Length: {len(texts)}\r\n\r\n".encode() + texts)
        sock.close()
    time.sleep(1.5)
    # THEN the server answers as before, and stderr holds JSON lines only, no traceback
    assert server.request("GET", "/health")[0] == 200
    log = server.read_log()
    for word in ("Traceback", "BrokenPipe", "ConnectionReset"):
        assert word not in log, "\n".join(line for line in log.splitlines() if word in line)[:4000]
    banner = ("No RAGSERVE_API_KEYS", "export RAGSERVE_KEY", "ragserve listening on")
    for line in log.splitlines():
        if line.strip() and not any(b in line for b in banner):
            assert line.startswith("{"), line


# -- shutdown -------------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_request_finish_then_stops(tmp_path):
    server = Server(tmp_path / "data", demo=False, extra_env=ENV)
    result: dict = {}
    texts = [f"an in-flight request, text number {i}, " * 30 for i in range(100)]

    def slow_request():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/v1/embed", body=json.dumps({"texts": texts}), headers={"x-api-key": READ_KEY})
        response = conn.getresponse()
        result["status"] = response.status
        result["embeddings"] = len(json.loads(response.read())["embeddings"])

    try:
        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.3)  # the request is being embedded
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        server.proc.wait(timeout=60)
    finally:
        server.stop()
    assert result == {"status": 200, "embeddings": 100}
    assert server.proc.returncode == 0
    assert server.logged("stopped") == 1
    assert "Traceback" not in server.read_log()
