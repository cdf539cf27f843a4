"""The sample events in events/: each one, through the function that owns its route, answers the
status code listed in events/expected.json, and the files are what make_events.py
writes (so nobody edits them by hand and lets them drift)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
NOT_EVENTS = {"expected.json"}
EVENT_FILES = sorted(p.name for p in EVENTS_DIR.glob("*.json") if p.name not in NOT_EVENTS)


@pytest.fixture(scope="module")
def expected() -> dict[str, int]:
    return json.loads((EVENTS_DIR / "expected.json").read_text(encoding="utf-8"))


def load_make_events():
    spec = importlib.util.spec_from_file_location("make_events", EVENTS_DIR / "make_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_event_file_is_listed_in_expected_and_vice_versa(expected):
    assert EVENT_FILES, "no sample events found"
    assert sorted(expected) == EVENT_FILES


def test_files_are_what_make_events_writes():
    written = load_make_events().rendered_files()

    assert sorted(written) == sorted(EVENT_FILES + ["expected.json"])
    stale = [name for name, content in written.items()
             if (EVENTS_DIR / name).read_text(encoding="utf-8") != content]
    assert not stale, f"run `python events/make_events.py`: stale {stale}"


@pytest.mark.parametrize("name", EVENT_FILES)
def test_event_answers_the_expected_status(invoke_route, seeded_default_collection, expected, name):
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))

    response = invoke_route(event)

    assert response.status == expected[name], response.body
    assert response.status < 500
    request_id = event["requestContext"]["requestId"]
    assert request_id.startswith("evt-")
    if response.status >= 400:
        assert set(response.body) == {"error"}
        assert response.body["error"]["request_id"] == request_id
        assert response.body["error"]["code"] and response.body["error"]["message"]
    elif event["path"].startswith("/v1/embed"):
        assert response.content_type.startswith("application/json")
        assert response.body["model"] == "all-MiniLM-L6-v2"
    elif event["path"].startswith("/v1/"):
        assert response.content_type.startswith("application/json")


KEYLESS = {"apigw_health_get.json", "apigw_openapi_get.json"}  # the routes with scope None


@pytest.mark.parametrize("name", [n for n in EVENT_FILES if n not in KEYLESS])
def test_keyed_routes_carry_the_local_api_key(name):
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))

    assert event["headers"]["x-api-key"] == "local-dev-key"
    assert event["requestContext"]["identity"]["apiKey"] == "local-dev-key"
    assert event["requestContext"]["requestTimeEpoch"] == 1_767_225_600_000
    if event["httpMethod"] == "POST":
        assert event["headers"]["content-type"] == "application/json"


# ------------------------------------------------- events that come through no API route

FUNCTION_EVENT_FILES = sorted(str(p.relative_to(EVENTS_DIR)) for p in EVENTS_DIR.glob("*/*.json"))
REPO = EVENTS_DIR.parent


def test_function_event_files_are_what_make_events_writes():
    make_events = load_make_events()
    written = make_events.rendered_function_files()

    on_disk = sorted(str(p.relative_to(EVENTS_DIR)) for p in EVENTS_DIR.glob("*/*") if p.is_file())
    assert sorted(written) == on_disk
    stale = [name for name, content in written.items() if (EVENTS_DIR / name).read_text(encoding="utf-8") != content]
    assert not stale, f"run `python events/make_events.py`: stale {stale}"
    assert make_events.main(["--check"]) == 0


def test_every_function_of_the_stack_has_sample_events():
    from ragserve.cli import INVOKE_HANDLERS, invoke_handler_path

    make_events = load_make_events()
    covered = {make_events.function_of(name) for name in FUNCTION_EVENT_FILES}
    api = {"embed", "search", "ingest", "ops"}  # the top-level files: their routes
    assert covered | api == set(INVOKE_HANDLERS) | api
    assert {"authorizer", "ingest", "compact", "shard", "merge", "canary"} <= covered
    for function in covered:
        assert invoke_handler_path(function).startswith("functions.")


def run_invoke(function: str, event: str, env: dict[str, str], stdin: str | None = None):
    """``ragserve invoke FUNCTION EVENT`` in a fresh process (handlers read settings at import)."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSERVE_", "AWS_"))}
    base.update({"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
                 "AWS_EC2_METADATA_DISABLED": "true"}, **env)
    return subprocess.run([sys.executable, "-m", "ragserve.cli", "invoke", function, event], cwd=REPO, env=base,
                          input=stdin, capture_output=True, text=True, timeout=180, check=False)


def invoked(done) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


class CloudFormationResponses:
    """What CloudFormation's presigned ResponseURL would receive (a local HTTP server)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        answers = self.answers = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802 - http.server's naming
                answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/response"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_every_non_api_event_runs_through_its_handler(moto_server, tmp_path):
    """Each file of events/<folder>/ through ``ragserve invoke`` and the function that
    gets it: locally (the authorizer on RAGSERVE_API_KEYS, the SQS batch and compaction on
    the local store) or against moto (the bulk steps on S3, the canary setup on DynamoDB,
    API Gateway, Secrets Manager and SQS)."""
    from canary_resources import moto_env, prepare_canary_resources

    make_events = load_make_events()
    ran: set[str] = set()
    local = {"RAGSERVE_DATA_DIR": str(tmp_path / "data")}

    def run(name: str, env: dict[str, str], stdin: str | None = None):
        ran.add(name)
        return run_invoke(make_events.function_of(name), "-" if stdin else f"events/{name}", env, stdin)

    # the single writer applies the SQS batch: doc-1 and doc-3 (doc-2 added, then deleted)
    assert invoked(run("sqs/ingest_batch.json", local)) == {"batchItemFailures": []}
    from ragserve.snapshots.local import LocalSnapshotStore

    store = LocalSnapshotStore(tmp_path / "data")
    assert store.manifest("events", store.current("events")).count == 2
    for name in ("compact/collection.json", "compact/scheduled.json"):
        result = invoked(run(name, local))
        assert result["enabled"] and result["errors"] == [] and result["collections"][0]["collection"] == "events"
    # the authorizer, on local keys
    keys = {"RAGSERVE_API_KEYS": "local-dev-key:read"}
    allowed = invoked(run("authorizer/request.json", keys))
    assert allowed["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert allowed["usageIdentifierKey"] == "local-dev-key" and allowed["context"]["scope"] == "read"
    denied = invoked(run("authorizer/request_unknown_key.json", keys))
    assert denied["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    no_key = run("authorizer/request_no_key.json", keys)
    assert no_key.returncode == 1 and no_key.stdout == "" and "Traceback" not in no_key.stderr
    assert no_key.stderr.strip().splitlines()[-1] == \
        "ragserve: authorizer: Unauthorized (no x-api-key: API Gateway answers 401)"
    # the bulk steps, against S3 (moto): the shard the event names, then the merge
    aws = moto_env(moto_server)
    s3 = boto3_client("s3", moto_server)
    shard_event = json.loads((EVENTS_DIR / "bulk/shard.json").read_text())
    s3.create_bucket(Bucket=shard_event["bucket"])
    s3.put_object(Bucket=shard_event["bucket"], Key=shard_event["key"],
                  Body=(EVENTS_DIR / "bulk/shard-00.jsonl").read_bytes())
    bulk = {**aws, "RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": shard_event["bucket"],
            "RAGSERVE_DATA_DIR": str(tmp_path / "bulk")}
    assert invoked(run("bulk/shard.json", bulk)) == {"shard": shard_event["key"], "documents": 3}
    merged = invoked(run("bulk/merge.json", bulk))
    assert (merged["collection"], merged["documents"], merged["segments"]) == ("events", 3, 1)
    # the canary setup: create, update (a new generation: a new key), delete, each answered to CloudFormation
    responses = CloudFormationResponses()
    try:
        resources = prepare_canary_resources(moto_server)
        answers = {}
        for name in ("canary/create.json", "canary/update.json", "canary/delete.json"):
            event = json.loads((EVENTS_DIR / name).read_text())
            event["ResponseURL"] = responses.url
            event["ResourceProperties"].update(resources)
            if "OldResourceProperties" in event:
                event["OldResourceProperties"].update(resources, Generation="0")
            if "PhysicalResourceId" in event:
                event["PhysicalResourceId"] = answers["canary/create.json"]["PhysicalResourceId"]
            answers[name] = invoked(run(name, aws, json.dumps(event)))
            assert answers[name]["Status"] == "SUCCESS", answers[name]
        assert responses.answers == list(answers.values())
    finally:
        responses.close()
    created, updated = answers["canary/create.json"], answers["canary/update.json"]
    assert created["PhysicalResourceId"].startswith("key-") and created["Data"]["KeyId"] == created[
        "PhysicalResourceId"]
    assert updated["PhysicalResourceId"] != created["PhysicalResourceId"]  # CloudFormation then deletes the old one
    assert ran == set(FUNCTION_EVENT_FILES)


def boto3_client(service: str, endpoint: str):
    from canary_resources import moto_client

    return moto_client(service, endpoint)


def test_bulk_steps_and_the_authorizer_without_configuration_fail_in_one_line(tmp_path):
    for function, name, needs in (("shard", "bulk/shard.json", "RAGSERVE_SNAPSHOT_BUCKET"),
                                  ("merge", "bulk/merge.json", "RAGSERVE_SNAPSHOT_BUCKET"),
                                  ("authorizer", "authorizer/request.json", "RAGSERVE_KEYS_TABLE")):
        done = run_invoke(function, f"events/{name}", {"RAGSERVE_DATA_DIR": str(tmp_path)})
        assert done.returncode == 2 and done.stdout == ""
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"ragserve: {function}: ") and needs in line
    done = run_invoke("shard", "events/bulk/shard.json", {"RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": "other"})
    assert done.returncode == 2 and "the event's bucket 'ragserve-sample-snapshots'" in done.stderr
    done = run_invoke("nosuch", "events/bulk/shard.json", {})
    assert done.returncode == 2 and done.stderr.strip().startswith("ragserve: no function 'nosuch' (expected ")


# --------------------------------------------- bodies that are not UTF-8 (no binary media types)

BODY_ROUTES = [("POST", "/v1/embed"), ("POST", "/v1/embeddings"), ("POST", "/v1/search"),
               ("POST", "/v1/collections/events/documents")]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_base64_body_that_is_not_utf8_is_a_400_json_error(invoke_route, seeded_default_collection, make_event,
                                                           method, path):
    import base64

    event = make_event(method, path, body='{"texts": ["x"]}', request_id="bad-utf8")
    event["body"] = base64.b64encode(b'{"query": "caf\xe9 \xff\xfe", "texts": ["\xff"]}').decode()
    event["isBase64Encoded"] = True

    response = invoke_route(event)

    assert response.status == 400 and response.content_type.startswith("application/json")
    assert response.body == {"error": {"code": "invalid_utf8", "message": response.body["error"]["message"],
                                       "request_id": "bad-utf8"}}
    assert "not valid UTF-8" in response.body["error"]["message"]


def test_a_text_body_is_taken_as_api_gateway_passes_it_without_binary_media_types(invoke_route, encoder, make_event):
    """No binary media types: API Gateway hands the function text (isBase64Encoded false);
    bytes that were not UTF-8 arrive already replaced (U+FFFD), so the function embeds
    what it was given, as any other text."""
    text = "caf\ufffd \ufffd\ufffd"
    event = make_event("POST", "/v1/embed", body=json.dumps({"texts": [text]}, ensure_ascii=False))
    assert event["isBase64Encoded"] is False

    response = invoke_route(event)

    assert response.status == 200
    import numpy as np

    got = np.asarray(response.body["embeddings"][0], dtype=np.float32)
    assert float(got @ encoder.embed([text])[0]) > 0.999
    sample = json.loads((EVENTS_DIR / "apigw_embed_post_replacement_char.json").read_text(encoding="utf-8"))
    assert sample["isBase64Encoded"] is False and "\ufffd" in sample["body"]
