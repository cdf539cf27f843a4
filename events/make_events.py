"""Write the sample events: API Gateway REST proxy events (payload 1.0) of the routed
functions, and, in a folder each, the events that do not come through an API route.

Every API event is built by ``ragserve.local.events.rest_event``, so it has exactly the
shape the local server gives the handlers; request ids and the request time are fixed
so that the files are stable. ``expected.json`` maps each API event to the status code
the function owning its route must answer.

The other events (``FUNCTION_EVENTS``: folder -> the function that gets them):

- ``authorizer/``: API Gateway's REQUEST authorizer events (a key, an unknown key, no key);
- ``sqs/``: an SQS FIFO batch of ingest jobs, as the event source mapping hands it to
  the ingest function (the single writer);
- ``compact/``: the ingest function's asynchronous invoke after a publish
  (``collection.json``) and the EventBridge schedule (``scheduled.json``: every collection);
- ``bulk/``: what the bulk state machine sends the shard and merge functions, and
  ``shard-00.jsonl``, the shard that ``shard.json`` names (upload it first);
- ``canary/``: CloudFormation's custom resource requests to the canary setup.

    python events/make_events.py          # (re)write the files
    python events/make_events.py --check  # exit 1 if a file is missing or stale

Run one with ``ragserve invoke embed events/apigw_embed_post.json``,
``ragserve invoke compact events/compact/scheduled.json``,
``RAGSERVE_API_KEYS=local-dev-key:read ragserve invoke authorizer events/authorizer/request.json``
or ``ragserve invoke ingest events/sqs/ingest_batch.json`` (locally: the local store).
The bulk functions run against S3 (``RAGSERVE_STORE=s3``, ``RAGSERVE_SNAPSHOT_BUCKET`` =
the event's ``bucket``) and the canary setup against a deployed stack's resources
(its ``ResourceProperties``): docs/DEPLOY.md section 7.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from ragserve.dependencies.canary import CANARY_COLLECTION, seed_job
from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.local.events import rest_event, sqs_event
from ragserve.routes import find_route

EVENTS_DIR = Path(__file__).resolve().parent
EXPECTED_FILE = "expected.json"
API_KEY = "local-dev-key"
REQUEST_TIME_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
REQUEST_TIME = "01/Jan/2026:00:00:00 +0000"
EVENT_TIME = "2026-01-01T00:00:00Z"  # the same instant, as EventBridge writes it
ACCOUNT, REGION = "123456789012", "eu-west-1"
STAGE, API_ID = "dev", "abcdef1234"
SAMPLE_BUCKET = "ragserve-sample-snapshots"  # the stack's snapshots bucket (SnapshotBucketName)
BULK_JOB = "2026-01-01-events"
MAX_BODY_BYTES = 1_048_576  # Limits.max_body_bytes default (docs/ARCHITECTURE.md section 3)

TEXTS = [
    "How do I reset my password?",
    "Serverless functions scale to zero when nobody calls them.",
    "A vector database stores embeddings and answers nearest-neighbour queries.",
]


def _name_to_request_id(name: str) -> str:
    return "evt-" + name.removeprefix("apigw_").removesuffix(".json").replace("_", "-")


def _event(name: str, method: str, path: str, *, body: object = None, keyed: bool = True) -> dict:
    """``body``: a dict/list (sent as compact JSON), str or bytes (sent as is)."""
    headers = {"Accept": "application/json", "User-Agent": "ragserve-events/1"}
    if keyed:
        headers["x-api-key"] = API_KEY
    if body is not None:
        headers["content-type"] = "application/json"
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    found = find_route(method, path)
    resource, params = (found[0].resource, found[1]) if found else (path, None)
    event = rest_event(method, path, resource=resource, path_parameters=params, headers=headers, body=body,
                       api_key=API_KEY if keyed else None, request_id=_name_to_request_id(name))
    event["requestContext"]["requestTimeEpoch"] = REQUEST_TIME_EPOCH_MS
    event["requestContext"]["requestTime"] = REQUEST_TIME
    return event


def _base64_body(event: dict) -> dict:
    """Send the event's (UTF-8) body base64-encoded, as API Gateway does for binary media types."""
    event["body"] = base64.b64encode(event["body"].encode("utf-8")).decode("ascii")
    event["isBase64Encoded"] = True
    return event


def build_events() -> tuple[dict[str, dict], dict[str, int]]:
    """(file name -> event, file name -> expected status code)."""
    events: dict[str, dict] = {}
    expected: dict[str, int] = {}

    def add(name: str, status: int, event: dict) -> None:
        events[name] = event
        expected[name] = status

    def embed(name: str, status: int, body: object) -> None:
        add(name, status, _event(name, "POST", "/v1/embed", body=body))

    def embeddings(name: str, status: int, body: object) -> None:
        add(name, status, _event(name, "POST", "/v1/embeddings", body=body))

    # POST /v1/embed
    embed("apigw_embed_post.json", 200, {"texts": TEXTS, "normalize": True, "encoding": "float"})
    embed("apigw_embed_post_too_many.json", 413, {"texts": [f"text number {i}" for i in range(101)]})
    embed("apigw_embed_post_text_too_long.json", 413, {"texts": ["a" * 8193]})
    embed("apigw_embed_post_empty_text.json", 400, {"texts": ["hello", ""]})
    embed("apigw_embed_post_whitespace_text.json", 400, {"texts": [" \t\n  "]})
    embed("apigw_embed_post_empty_list.json", 400, {"texts": []})
    embed("apigw_embed_post_wrong_type.json", 400, {"texts": "a string instead of a list of strings"})
    embed("apigw_embed_post_malformed_json.json", 400, '{"texts": ["hello world"')
    # rest_event sends a body that is not UTF-8 base64-encoded with isBase64Encoded
    embed("apigw_embed_post_invalid_utf8_base64.json", 400, b'{"texts": ["caf\xe9 \xff\xfe"]}')
    # the same bytes as API Gateway passes them with no binary media types: text, its
    # invalid bytes already replaced by U+FFFD (docs/ARCHITECTURE.md section 3.1)
    embed("apigw_embed_post_replacement_char.json", 200, '{"texts": ["caf\ufffd \ufffd\ufffd"]}')
    name = "apigw_embed_post_base64_body.json"
    add(name, 200, _base64_body(_event(name, "POST", "/v1/embed", body={"texts": ["sent base64-encoded"]})))
    embed("apigw_embed_post_encoding_base64.json", 200, {"texts": TEXTS[:2], "encoding": "base64"})
    embed("apigw_embed_post_encoding_int8.json", 200, {"texts": TEXTS[:2], "encoding": "int8"})
    embed("apigw_embed_post_encoding_binary.json", 200, {"texts": TEXTS[:2], "encoding": "binary"})
    embed("apigw_embed_post_bad_encoding.json", 400, {"texts": ["hello"], "encoding": "float16"})
    # one byte over the 1 MiB body limit: a single long string (compresses to ~1 KB in git)
    prefix, suffix = '{"texts":["', '"]}'
    filler = "x" * (MAX_BODY_BYTES + 1 - len(prefix) - len(suffix))
    embed("apigw_embed_post_body_too_large.json", 413, prefix + filler + suffix)

    # POST /v1/embeddings (OpenAI shape)
    embeddings("apigw_embeddings_post.json", 200,
               {"input": TEXTS, "model": "all-MiniLM-L6-v2", "encoding_format": "float"})
    embeddings("apigw_embeddings_post_string_input.json", 200,
               {"input": "What is the capital of Australia?", "model": "sentence-transformers/all-MiniLM-L6-v2"})
    embeddings("apigw_embeddings_post_base64.json", 200, {"input": TEXTS[:2], "encoding_format": "base64"})
    embeddings("apigw_embeddings_post_unknown_model.json", 404,
               {"input": "hello", "model": "text-embedding-3-small"})
    embeddings("apigw_embeddings_post_token_ids.json", 400, {"input": [101, 7592, 2088, 102]})

    # POST /v1/search (the tests seed a small "default" collection first)
    def search(name: str, status: int, body: object) -> None:
        add(name, status, _event(name, "POST", "/v1/search", body=body))

    search("apigw_search_post.json", 200, {"query": "How do I reset my password?", "k": 3})
    search("apigw_search_post_filter.json", 200,
           {"query": "vector search", "k": 2, "filter": {"topic": "search"}, "include_text": False})
    search("apigw_search_post_page_two.json", 200, {"query": "cloud functions", "k": 2, "offset": 2})
    search("apigw_search_post_empty_query.json", 400, {"query": "   "})
    search("apigw_search_post_query_too_long.json", 413, {"query": "q" * 501})
    search("apigw_search_post_bad_k.json", 400, {"query": "hello", "k": 101})
    search("apigw_search_post_negative_offset.json", 400, {"query": "hello", "offset": -1})
    search("apigw_search_post_unknown_collection.json", 404, {"query": "hello", "collection": "nosuch"})
    search("apigw_search_post_bad_collection_name.json", 400, {"query": "hello", "collection": "../etc"})
    search("apigw_search_post_nested_filter.json", 400, {"query": "hello", "filter": {"a": {"b": 1}}})

    # GET /v1/collections/{c}
    add("apigw_collections_get.json", 200, _event("apigw_collections_get.json", "GET", "/v1/collections/default"))
    add("apigw_collections_get_unknown.json", 404,
        _event("apigw_collections_get_unknown.json", "GET", "/v1/collections/nosuch"))

    # POST /v1/collections/{c}/documents (202: durable in the queue), DELETE one document
    def documents(name: str, status: int, body: object, collection: str = "events") -> None:
        add(name, status, _event(name, "POST", f"/v1/collections/{collection}/documents", body=body))

    documents("apigw_documents_post.json", 202, {"documents": [
        {"id": "doc-1", "text": "Serverless functions scale to zero.", "metadata": {"topic": "cloud"}},
        {"id": "doc-2", "text": "HNSW graphs answer nearest-neighbour queries.", "metadata": {"topic": "search"}},
    ]})
    documents("apigw_documents_post_too_many.json", 413,
              {"documents": [{"id": f"d{i}", "text": f"text {i}"} for i in range(101)]})
    documents("apigw_documents_post_empty_text.json", 400, {"documents": [{"id": "d1", "text": " "}]})
    documents("apigw_documents_post_duplicate_id.json", 400,
              {"documents": [{"id": "d1", "text": "a"}, {"id": "d1", "text": "b"}]})
    documents("apigw_documents_post_text_too_long.json", 413, {"documents": [{"id": "d1", "text": "a" * 8193}]})
    documents("apigw_documents_post_bad_collection_name.json", 400, {"documents": [{"id": "d1", "text": "a"}]},
              collection="Bad.Name")
    add("apigw_documents_delete.json", 202,
        _event("apigw_documents_delete.json", "DELETE", "/v1/collections/events/documents/doc-1"))

    # GET /health and GET /v1/openapi.json (no key), GET /metrics, and a route that does not exist
    add("apigw_health_get.json", 200, _event("apigw_health_get.json", "GET", "/health", keyed=False))
    add("apigw_openapi_get.json", 200, _event("apigw_openapi_get.json", "GET", "/v1/openapi.json", keyed=False))
    add("apigw_metrics_get.json", 200, _event("apigw_metrics_get.json", "GET", "/metrics"))
    add("apigw_unknown_route.json", 404, _event("apigw_unknown_route.json", "GET", "/v1/does-not-exist"))
    return events, expected


def scheduled_event(rule: str) -> dict:
    """What an EventBridge schedule (``rate(...)``) sends its Lambda target."""
    return {
        "version": "0",
        "id": "00000000-0000-4000-8000-000000000001",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": EVENT_TIME,
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


# folder -> the function its events go to (``ragserve invoke <function> <file>``)
FUNCTION_EVENTS = {"authorizer": "authorizer", "sqs": "ingest", "compact": "compact", "bulk": None,
                   "canary": "canary"}


def function_of(path: str) -> str:
    """The function that gets the event ``path`` (relative to events/)."""
    folder, _, name = path.partition("/")
    return FUNCTION_EVENTS[folder] or name.removesuffix(".json")  # bulk/shard.json -> shard


def authorizer_event(name: str, method: str, path: str, key: str | None) -> dict:
    """API Gateway's REQUEST authorizer event (REST API): the request without its body,
    ``type`` and the ``methodArn`` the policy answers for."""
    event = _event(name, method, path, keyed=key is not None)
    if key is not None and key != API_KEY:
        event["headers"]["x-api-key"], event["multiValueHeaders"]["x-api-key"] = key, [key]
        event["requestContext"]["identity"]["apiKey"] = key
    for field in ("body", "isBase64Encoded"):
        event.pop(field)
    event["requestContext"].update(stage=STAGE, apiId=API_ID, accountId=ACCOUNT, path=f"/{STAGE}{path}")
    return {"type": "REQUEST", "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}",
            **event}


def ingest_batch() -> dict:
    """Two jobs of collection ``events`` (upserts, then an upsert and a delete), as the
    SQS event source mapping delivers them (FIFO: one message group per collection)."""
    jobs = [
        IngestJob("job-events-sqs-1", 0, "events", (
            Document("doc-1", "Serverless functions scale to zero.", {"topic": "cloud"}),
            Document("doc-2", "HNSW graphs answer nearest-neighbour queries.", {"topic": "search"}))),
        IngestJob("job-events-sqs-2", 0, "events", (
            Document("doc-3", "A queue keeps writes durable until the writer applies them.", {"topic": "cloud"}),),
            ("doc-2",)),
    ]
    event = sqs_event([{"message_id": f"00000000-0000-4000-8000-00000000000{i}", "receipt": f"sample-receipt-{i}",
                        "group": job.collection, "body": job.to_json(), "receive_count": 1}
                       for i, job in enumerate(jobs, start=1)],
                      queue_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:ragserve-{STAGE}-ingest.fifo")
    for record in event["Records"]:
        record["attributes"]["SentTimestamp"] = str(REQUEST_TIME_EPOCH_MS)
        record["attributes"]["ApproximateFirstReceiveTimestamp"] = str(REQUEST_TIME_EPOCH_MS)
        record["attributes"]["MessageDeduplicationId"] = IngestJob.from_json(record["body"]).message_id
        record["awsRegion"] = REGION
    return event


BULK_SHARD = [  # bulk/shard-00.jsonl: {"id", "text", "metadata"} per line
    {"id": "bulk-1", "text": "Bulk loads embed every shard in parallel.", "metadata": {"topic": "bulk"}},
    {"id": "bulk-2", "text": "The merge step commits all shards with one manifest.", "metadata": {"topic": "bulk"}},
    {"id": "bulk-3", "text": "A lighthouse guides ships along the coast at night.", "metadata": {"topic": "sea"}},
]


def canary_event(request: str) -> dict:
    """CloudFormation's custom resource request to the canary setup. The ResponseURL is
    a presigned S3 URL in AWS; here a closed local port, so that a local invoke sends
    its answer nowhere (the handler logs that and returns it)."""
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/Ragserve-{STAGE}/00000000-0000-4000-8000-000000000000"
    properties = {
        "ServiceToken": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ragserve-{STAGE}-canary",
        "Stage": STAGE, "KeysTable": f"Ragserve-{STAGE}-TablesApiKeysSAMPLE", "PlanId": "sample1234",
        "Tier": "premium", "SecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:HealthCanaryKeySAMPLE",
        "QueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/Ragserve-{STAGE}-IngestQueueSAMPLE.fifo",
        "Collection": CANARY_COLLECTION, "Generation": "1", "SeedJobId": seed_job().job_id,
    }
    event = {
        "RequestType": request, "ServiceToken": properties["ServiceToken"],
        "ResponseURL": "http://127.0.0.1:9/cloudformation-response", "StackId": stack_id,
        "RequestId": f"00000000-0000-4000-8000-0000000000{ {'Create': 11, 'Update': 12, 'Delete': 13}[request]}",
        "LogicalResourceId": "HealthCanarySetupSAMPLE", "ResourceType": "Custom::RagserveCanary",
        "ResourceProperties": properties,
    }
    if request != "Create":
        event["PhysicalResourceId"] = "key-0123456789ab"
    if request == "Update":
        event["OldResourceProperties"] = {**properties, "Generation": "0"}
    return event


def build_function_events() -> dict[str, dict]:
    """Events of the functions outside the API: relative path -> event."""
    return {
        "authorizer/request.json": authorizer_event("request", "POST", "/v1/embed", API_KEY),
        "authorizer/request_unknown_key.json": authorizer_event("request-unknown-key", "POST", "/v1/search",
                                                                "rsk" + "0" * 40),
        "authorizer/request_no_key.json": authorizer_event("request-no-key", "GET", "/v1/collections/docs", None),
        "sqs/ingest_batch.json": ingest_batch(),
        # what Maintenance.trigger sends after a publish that leaves a merge to do
        "compact/collection.json": {"collection": "events"},
        # the stack's schedule (infra/constructs/compaction.py): every collection
        "compact/scheduled.json": scheduled_event("ragserve-dev-compact"),
        # infra/constructs/bulk_pipeline.py: the Distributed Map's item, then the merge
        "bulk/shard.json": {"bucket": SAMPLE_BUCKET, "key": f"bulk/{BULK_JOB}/shards/shard-00.jsonl",
                            "collection": "events", "job_id": BULK_JOB, "replace": False},
        "bulk/merge.json": {"bucket": SAMPLE_BUCKET, "collection": "events", "job_id": BULK_JOB,
                            "prefix": f"bulk/{BULK_JOB}/shards/", "replace": False},
        "canary/create.json": canary_event("Create"),
        "canary/update.json": canary_event("Update"),
        "canary/delete.json": canary_event("Delete"),
    }


def render(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def rendered_files() -> dict[str, str]:
    """The API events and expected.json (the files directly in events/), name -> content."""
    events, expected = build_events()
    files = {name: render(event) for name, event in events.items()}
    files[EXPECTED_FILE] = render(dict(sorted(expected.items())))
    return files


def rendered_function_files() -> dict[str, str]:
    """The events that come through no API route (a folder each), and the bulk shard
    they name: path -> content."""
    files = {path: render(event) for path, event in build_function_events().items()}
    files["bulk/shard-00.jsonl"] = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in BULK_SHARD)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale or missing files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, content in {**rendered_files(), **rendered_function_files()}.items():
        path = EVENTS_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print("stale or missing: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("stale: " if args.check else "written: ") + (", ".join(stale) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
