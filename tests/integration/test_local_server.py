"""The local API over real HTTP on 127.0.0.1: routing, keys and scopes, the per-key
token bucket, bad input, concurrency, and the `ragserve serve` / `invoke` commands."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ragserve.embedding.encodings import from_base64
from ragserve.local.gateway import ApiKey, Gateway, TokenBucket, parse_api_keys
from ragserve.local.server import load_handlers, make_server, serve_in_thread
from ragserve.routes import ROUTES
from ragserve.settings import GatewaySettings, SettingsError

REPO = Path(__file__).resolve().parents[2]
READ_KEY, WRITE_KEY = "test-read-key", "test-write-key"


def start(settings: GatewaySettings, routes=ROUTES):
    handlers = load_handlers(["embed", "ops", "ingest"])
    keys = {READ_KEY: ApiKey(READ_KEY, "read"), WRITE_KEY: ApiKey(WRITE_KEY, "write")}
    server = make_server(Gateway(settings, handlers, keys, routes), "127.0.0.1", 0)
    serve_in_thread(server)
    return server


@pytest.fixture(scope="module")
def encoder():
    """The embed function's own encoder (already loaded at its import)."""
    from functions.embed import handler

    return handler.ENCODER.get()


@pytest.fixture(scope="module")
def server():
    server = start(GatewaySettings(rate_limit_rps=1000, rate_limit_burst=1000))
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, key=None, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    hdrs = dict(headers or {})
    if key:
        hdrs["x-api-key"] = key
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def assert_error(status, headers, data, expected_status, code=None):
    assert status == expected_status, data
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(data)["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def test_health_needs_no_key(server):
    status, _, data = request(server, "GET", "/health")
    assert status == 200
    assert json.loads(data)["status"] == "healthy"


def test_embed_over_http_matches_the_encoder(server, encoder):
    texts = ["the cat sat on the mat", "a serverless vector search"]
    status, _, data = request(server, "POST", "/v1/embed", {"texts": texts, "encoding": "base64"}, READ_KEY)
    assert status == 200, data
    body = json.loads(data)
    got = np.stack([from_base64(e) for e in body["embeddings"]])
    want = encoder.embed(texts)
    assert got.shape == (2, 384)
    assert np.min(np.sum(got * want, axis=1)) > 0.999
    assert body["usage"]["tokens"] > 0


def test_openai_route_over_http(server):
    status, _, data = request(server, "POST", "/v1/embeddings",
                              {"input": ["hello", "world"], "model": "all-MiniLM-L6-v2"}, READ_KEY)
    assert status == 200
    body = json.loads(data)
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 384


def test_missing_key_is_401_and_unknown_key_is_403(server):
    assert_error(*request(server, "POST", "/v1/embed", {"texts": ["x"]}), 401, "unauthorized")
    assert_error(*request(server, "POST", "/v1/embed", {"texts": ["x"]}, "nope"), 403, "forbidden")
    assert_error(*request(server, "GET", "/metrics", key="nope"), 403)


def test_read_key_on_write_route_is_403_and_write_key_passes(server):
    path = "/v1/collections/docs/documents"
    error = assert_error(*request(server, "POST", path, {"documents": []}, READ_KEY), 403, "forbidden")
    assert "write" in error["message"]
    status, _, data = request(server, "POST", path, {"documents": [{"id": "a", "text": "hello"}]}, WRITE_KEY)
    assert status == 202 and json.loads(data)["accepted"] == 1


def test_write_key_includes_read(server):
    status, _, _ = request(server, "POST", "/v1/embed", {"texts": ["x"]}, WRITE_KEY)
    assert status == 200


def test_unknown_route_404_and_wrong_method_405(server):
    assert_error(*request(server, "GET", "/v2/nothing", key=READ_KEY), 404, "not_found")
    assert_error(*request(server, "GET", "/v1/embed", key=READ_KEY), 405, "method_not_allowed")


@pytest.mark.parametrize("body,status,code", [
    (b"\xff\xfe{not utf8", 400, "invalid_utf8"),
    (b"{\"texts\": [", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[1,2]", 400, "invalid_request"),
    (json.dumps({"texts": ["x" * 400] * 3000}).encode(), 413, "body_too_large"),
    (json.dumps({"texts": ["ok"] * 101}).encode(), 413, "too_many_texts"),
    (json.dumps({"texts": ["x" * 8193]}).encode(), 413, "text_too_long"),
    (json.dumps({"texts": ["   "]}).encode(), 400, "empty_text"),
])
def test_bad_bodies_get_documented_status(server, body, status, code):
    assert_error(*request(server, "POST", "/v1/embed", body, READ_KEY), status, code)


def test_content_length_over_gateway_limit_is_refused_without_reading(server):
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + b"\r\nContent-Length: 99999999\r\n\r\n")
    chunks = []
    while chunk := sock.recv(65536):  # the server answers, then closes
        chunks.append(chunk)
    sock.close()
    reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert '"code":"body_too_large"' in reply


def test_chunked_body_is_411_and_the_connection_stays_in_step(server):
    # raw socket: the whole request is sent before the server answers; it reads the chunks
    # it refused (h11 frames them) and the connection serves the next request
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + b"\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\"texts\":[\"a\"]}\r\n0\r\n\r\n")
    reader = sock.makefile("rb")
    for request, status, code in ((None, b"411", b'"code":"length_required"'),
                                  (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"200", b'"status":"healthy"')):
        if request:
            sock.sendall(request)
        head = [reader.readline()]
        while head[-1] not in (b"\r\n", b""):
            head.append(reader.readline())
        length = next(int(line.split(b":")[1]) for line in head if line.lower().startswith(b"content-length:"))
        body = reader.read(length)
        assert head[0].split()[1] == status, head
        assert code in body
    sock.close()


def test_concurrent_requests_all_succeed_with_correct_results(server, encoder):
    texts = [f"concurrent request number {i} about topic {i % 7}" for i in range(48)]
    want = encoder.embed(texts)

    def call(i):
        status, _, data = request(server, "POST", "/v1/embed", {"texts": [texts[i]], "encoding": "base64"}, READ_KEY)
        return i, status, data

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(call, range(len(texts))))
    assert [s for _, s, _ in results] == [200] * len(texts)
    for i, _, data in results:
        got = from_base64(json.loads(data)["embeddings"][0])
        # batch invariant: alone == in a batch (answers carry the embedding cache's float16 precision)
        np.testing.assert_allclose(got, want[i], atol=2e-4)


def test_metrics_route_counts_requests(server):
    request(server, "POST", "/v1/embed", {"texts": ["count me"]}, READ_KEY)
    status, headers, data = request(server, "GET", "/metrics", key=READ_KEY)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = data.decode()
    series = 'ragserve_requests_total{operation="embed",status="2xx"}'
    line = next(ln for ln in text.splitlines() if ln.startswith(series))
    assert float(line.split()[-1]) >= 1


def test_server_timing_header_carries_the_handler_time(server):
    # GIVEN a routed request WHEN it is answered THEN Server-Timing says how long lambda_handler ran
    status, headers, data = request(server, "POST", "/v1/embed", {"texts": ["time me"]}, READ_KEY)
    assert status == 200, data
    name, _, duration = headers["Server-Timing"].partition(";dur=")
    assert name == "handler" and 0 < float(duration) < 10_000
    # a request the gateway refuses never reached a handler: no timing
    status, headers, _ = request(server, "POST", "/v1/embed", {"texts": ["x"]})
    assert status == 401 and "Server-Timing" not in headers


def test_token_bucket_answers_429_with_retry_after():
    server = start(GatewaySettings(rate_limit_rps=0.5, rate_limit_burst=3))
    try:
        statuses = []
        for _ in range(5):
            status, headers, data = request(server, "GET", "/metrics", key=READ_KEY)
            statuses.append(status)
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        error = assert_error(status, headers, data, 429, "rate_limited")
        assert int(headers["Retry-After"]) >= 1
        assert error["request_id"]
        # another key has its own bucket
        assert request(server, "GET", "/metrics", key=WRITE_KEY)[0] == 200
        # /health is not metered
        assert request(server, "GET", "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_token_bucket_refills():
    bucket = TokenBucket(rate=1000.0, burst=1)
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert 0 < wait <= 0.001
    time.sleep(0.01)
    assert bucket.take() == 0.0


def test_parse_api_keys():
    keys = parse_api_keys("alpha:read, beta:write,gamma")
    assert {k: v.scope for k, v in keys.items()} == {"alpha": "read", "beta": "write", "gamma": "read"}
    assert keys["beta"].allows("write") and keys["beta"].allows("read")
    assert not keys["alpha"].allows("write")
    assert keys["alpha"].key_id.startswith("key-") and "alpha" not in keys["alpha"].key_id
    with pytest.raises(SettingsError, match="RAGSERVE_API_KEYS"):
        parse_api_keys("delta:admin")


# --- the commands, as a user runs them -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def ragserve_command() -> list[str]:
    return [sys.executable, "-m", "ragserve.cli"]


def test_serve_command_with_configured_keys():
    port = free_port()
    env = {**os.environ, "RAGSERVE_API_KEYS": "cli-key:read"}
    proc = subprocess.Popen([*ragserve_command(), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_health(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/embed", body=json.dumps({"texts": ["hello"]}), headers={"x-api-key": "cli-key"})
        response = conn.getresponse()
        assert response.status == 200
        assert len(json.loads(response.read())["embeddings"][0]) == 384
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "cli-key" not in err  # the key itself is never logged
    assert '"message":"listening"' in err


def test_serve_command_makes_a_dev_key_when_none_is_set():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAGSERVE_API_KEYS"}
    proc = subprocess.Popen([*ragserve_command(), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "RAGSERVE_KEY=" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        key = line.strip().split("RAGSERVE_KEY=", 1)[1]
        wait_for_health(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/embed", body=json.dumps({"texts": ["hi"]}), headers={"x-api-key": key})
        assert conn.getresponse().status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_invoke_command_prints_the_handler_result_as_json(tmp_path):
    event = {"httpMethod": "POST", "path": "/v1/embed", "resource": "/v1/embed",
             "headers": {"x-api-key": "k"}, "requestContext": {"requestId": "invoke-1"},
             "body": json.dumps({"texts": ["invoke me"]}), "isBase64Encoded": False}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    done = subprocess.run([*ragserve_command(), "invoke", "embed", str(path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["statusCode"] == 200
    assert len(json.loads(result["body"])["embeddings"][0]) == 384


def test_invoke_command_rejects_unknown_function(tmp_path):
    path = tmp_path / "event.json"
    path.write_text("{}")
    done = subprocess.run([*ragserve_command(), "invoke", "nosuch", str(path)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2
    assert "no function 'nosuch'" in done.stderr


def test_serve_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([*ragserve_command(), "serve", "--port", str(port)], capture_output=True, text=True,
                              check=False, timeout=60, env={**os.environ, "RAGSERVE_API_KEYS": "k:read"})
    assert done.returncode == 1
    assert "cannot listen" in done.stderr


def test_server_survives_a_client_that_disconnects_mid_body(server):
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    sock.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nx-api-key: " + READ_KEY.encode()
                 + b"\r\nContent-Length: 1000\r\n\r\n{\"texts\":")
    sock.close()
    time.sleep(0.1)
    assert request(server, "GET", "/health")[0] == 200
    assert threading.active_count() < 200


def test_path_parameters_reach_the_function_decoded_as_api_gateway_sends_them(server):
    status, _, data = request(server, "DELETE", "/v1/collections/no%20such%2Bthing/documents/d1", key=WRITE_KEY)
    assert status == 400, data
    message = json.loads(data)["error"]["message"]
    assert "no such+thing" in message and "%20" not in message


def test_the_event_carries_headers_as_sent_the_raw_path_and_the_query():
    # GIVEN a gateway whose ops function records the event it is given
    events = []

    def ops(event, context):
        events.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    server = make_server(Gateway(GatewaySettings(), {"ops": ops}, {}), "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        # WHEN a request carries mixed-case header names, a query string, and comes as HEAD
        assert request(server, "GET", "/health?a=1&a=2&b=", headers={"User-Agent": "probe/1",
                                                                      "X-Mixed-Case": "v"})[0] == 200
        status, headers, data = request(server, "HEAD", "/health", headers={"User-Agent": "probe/2"})
    finally:
        server.shutdown()
        server.server_close()
    # THEN the function sees the names as sent (API Gateway passes them so) and the query parsed
    event = events[0]
    assert event["headers"]["X-Mixed-Case"] == "v" and event["headers"]["User-Agent"] == "probe/1"
    assert event["requestContext"]["identity"]["userAgent"] == "probe/1"
    assert event["path"] == "/health" and event["httpMethod"] == "GET"
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}
    # AND HEAD reaches the GET route as GET, answered without a body
    assert events[1]["httpMethod"] == "GET" and status == 200 and data == b""
    assert headers["Content-Length"] == "2"
