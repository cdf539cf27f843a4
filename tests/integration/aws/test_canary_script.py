"""The Synthetics canary's script (infra/constructs/health_canary.py, Node.js) run by
node against ``ragserve serve``: the Synthetics library, its logger and the Secrets
Manager client are stand-ins that do what the canary runtime's do (an HTTP step calls
the callback with the response; the secret is the JSON the canary setup writes); the
API, the canary collection (seeded from the same ingest job the stack queues) and the
model are real."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.constructs.health_canary import CANARY_SCRIPT
from ragserve.dependencies.canary import CANARY_COLLECTION, CANARY_DOCUMENTS, CANARY_QUERY, CANARY_TOP_HIT, seed_job

READ_KEY, WRITE_KEY = "canary-read-key", "canary-write-key"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:canary"

SYNTHETICS = r"""
const http = require('http');
const https = require('https');
const steps = [];
module.exports = {
  steps,
  getCanaryUserAgentString: () => 'CloudWatchSynthetics/test',
  executeHttpStep: (name, options, callback, stepConfig) => new Promise((resolve, reject) => {
    const lib = options.protocol === 'https:' ? https : http;
    const request = lib.request({ hostname: options.hostname, port: options.port, path: options.path,
                                  method: options.method, headers: options.headers }, (response) => {
      Promise.resolve(callback(response)).then(() => {
        steps.push({ name, ok: true, status: response.statusCode, headers: options.headers, stepConfig });
        resolve();
      }, (error) => {
        steps.push({ name, ok: false, status: response.statusCode, error: String(error.message || error) });
        reject(error);
      });
    });
    request.on('error', reject);
    if (options.body !== undefined) request.write(options.body);
    request.end();
  }),
};
"""
LOGGER = r"""
const lines = [];
module.exports = { lines, info: (m) => lines.push(['info', m]), warn: (m) => lines.push(['warn', m]),
                   error: (m) => lines.push(['error', m]) };
"""
SECRETS = r"""
class GetSecretValueCommand { constructor(input) { this.input = input; } }
class SecretsManagerClient {
  async send(command) {
    if (command.input.SecretId !== process.env.EXPECTED_SECRET_ARN) throw new Error('AccessDenied');
    return { SecretString: process.env.STUB_SECRET_STRING };
  }
}
module.exports = { SecretsManagerClient, GetSecretValueCommand };
"""
RUNNER = r"""
const fs = require('fs');
const synthetics = require('Synthetics');
const logger = require('SyntheticsLogger');
const done = (result) => fs.writeFileSync(process.env.RESULT_FILE,
  JSON.stringify(Object.assign(result, { steps: synthetics.steps, log: logger.lines })));
require('./index.js').handler().then(() => done({ ok: true }),
                                       (error) => { done({ ok: false, error: String(error.message || error) }); });
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """`ragserve serve` with the canary collection written by the stack's seed job."""
    from ragserve.ingest.queue import LocalJobQueue

    data = tmp_path_factory.mktemp("canary-serve")
    LocalJobQueue(data / "queue.sqlite3").send(seed_job())  # what the canary setup sends to SQS
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAGSERVE_")},
           "RAGSERVE_DATA_DIR": str(data), "RAGSERVE_API_KEYS": f"{READ_KEY}:read,{WRITE_KEY}:write",
           "RAGSERVE_DEMO_COLLECTION": "", "RAGSERVE_RECHECK_SECONDS": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 120
    try:
        while True:  # until the single writer has published the canary collection
            assert proc.poll() is None, "".join(log)[-3000:]
            assert time.monotonic() < deadline, "the canary collection was never published"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", f"/v1/collections/{CANARY_COLLECTION}", headers={"x-api-key": READ_KEY})
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if response.status == 200 and json.loads(body)["documents"] == len(CANARY_DOCUMENTS):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def canary_dir(tmp_path_factory) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the canary runtime is Node.js)")
    root = tmp_path_factory.mktemp("canary-script")
    for module, source in (("Synthetics", SYNTHETICS), ("SyntheticsLogger", LOGGER),
                           ("@aws-sdk/client-secrets-manager", SECRETS)):
        (root / "node_modules" / module).mkdir(parents=True)
        (root / "node_modules" / module / "index.js").write_text(source)
    (root / "index.js").write_text(CANARY_SCRIPT)  # exactly what the stack deploys
    (root / "run.js").write_text(RUNNER)
    return root


def run_canary(canary_dir: Path, api_url: str, *, secret: object = None, **overrides: str) -> dict:
    secret = {"api_key": READ_KEY, "key_id": "key-000000000000"} if secret is None else secret
    result_file = canary_dir / "result.json"
    result_file.unlink(missing_ok=True)
    env = {"PATH": os.environ["PATH"], "API_URL": api_url, "HEALTH_URL": api_url + "health",
           "CANARY_SECRET_ARN": SECRET_ARN, "EXPECTED_SECRET_ARN": SECRET_ARN,
           "STUB_SECRET_STRING": secret if isinstance(secret, str) else json.dumps(secret),
           "CANARY_COLLECTION": CANARY_COLLECTION, "CANARY_QUERY": CANARY_QUERY, "CANARY_TOP_HIT": CANARY_TOP_HIT,
           "CANARY_DIMENSIONS": "384", "RESULT_FILE": str(result_file), **overrides}
    done = subprocess.run(["node", "run.js"], cwd=canary_dir, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and result_file.exists(), done.stderr[-3000:]
    return json.loads(result_file.read_text())


def test_the_canary_embeds_and_searches_like_a_user(canary_dir, serve):
    result = run_canary(canary_dir, serve)

    assert result["ok"], result
    steps = {s["name"]: s for s in result["steps"]}
    assert list(steps) == ["GET /health", "POST /v1/embed", "POST /v1/search"]
    assert all(s["ok"] and s["status"] == 200 for s in steps.values())
    # the key goes to the API routes only, and never into a step report
    assert "x-api-key" not in steps["GET /health"]["headers"]
    assert steps["POST /v1/embed"]["headers"]["x-api-key"] == READ_KEY
    assert steps["POST /v1/search"]["stepConfig"]["restrictedHeaders"] == ["x-api-key"]
    assert steps["POST /v1/search"]["stepConfig"]["includeRequestHeaders"] is False
    messages = [m for _, m in result["log"]]
    assert "embed: all-MiniLM-L6-v2, 384 dimensions" in messages
    assert any(m.startswith(f"search: {CANARY_TOP_HIT} first") for m in messages)


def test_the_canary_fails_on_a_wrong_answer(canary_dir, serve):
    # the expected document is not first
    result = run_canary(canary_dir, serve, CANARY_TOP_HIT="canary-violin")
    assert not result["ok"]
    assert result["error"].startswith("search: expected canary-violin first, got canary-lighthouse")
    # another model's dimensions
    result = run_canary(canary_dir, serve, CANARY_DIMENSIONS="768")
    assert not result["ok"] and result["error"].startswith("embed: expected one vector of 768 dimensions")
    # a collection the service does not have
    result = run_canary(canary_dir, serve, CANARY_COLLECTION="nosuch")
    assert not result["ok"] and result["error"].startswith("POST /v1/search answered 404")


def test_the_canary_fails_without_a_valid_key(canary_dir, serve):
    result = run_canary(canary_dir, serve, secret={"api_key": "revoked-key"})
    assert not result["ok"] and result["error"].startswith("POST /v1/embed answered 403")
    assert [s["name"] for s in result["steps"] if s["ok"]] == ["GET /health"]
    result = run_canary(canary_dir, serve, secret='{"placeholder": "x"}')
    assert not result["ok"] and "holds no api_key" in result["error"]


def test_the_canary_fails_when_the_service_does_not_answer(canary_dir):
    result = run_canary(canary_dir, f"http://127.0.0.1:{free_port()}/")
    assert not result["ok"] and "ECONNREFUSED" in result["error"]
