"""Property tests of event parsing: API Gateway REST proxy events in every shape API
Gateway may send (header names in any case, no headers, no body, base64 bodies, query
strings, path parameters, odd path segments) through the real handlers of every route
answer below 500 in the JSON error shape; and SQS batches of any bodies through the
ingest consumer (the real writer) never raise: every message is applied or reported
failed, none dropped."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragserve.local.events import rest_event
from ragserve.routes import ROUTES

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
API_KEY = "local-dev-key"
VALID_BODIES = {
    "embed": {"texts": ["hello"]}, "embeddings": {"input": "hello"}, "search": {"query": "password", "k": 2},
    "ingest": {"documents": [{"id": "e1", "text": "events fuzz"}]},
}

segment = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1, max_size=12)
header_name_case = st.sampled_from([str.lower, str.upper, str.title, lambda s: s])
query = st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), min_size=1, max_size=2), max_size=3)


@st.composite
def proxy_events(draw, route):
    params = {}
    path = route.resource
    for name in ("c", "id"):
        if "{" + name + "}" in path:
            value = draw(st.sampled_from(["default", "fuzz-events"]) | segment)
            params[name] = value
            path = path.replace("{" + name + "}", value)
    body = VALID_BODIES.get(route.operation)
    body_text = draw(st.sampled_from([None, "", json.dumps(body) if body else "{}"]) | st.text(max_size=60))
    headers = {}
    for name, value in (("x-api-key", API_KEY), ("content-type", "application/json"),
                        ("idempotency-key", draw(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                                         max_size=8)))):
        if draw(st.booleans()):
            headers[draw(header_name_case)(name)] = value
    event = rest_event(route.method, path, resource=route.resource, path_parameters=params or None,
                       headers=headers, query=draw(query), body=body_text, api_key=API_KEY,
                       request_id="fuzz-event", authorizer={"principalId": "fuzz", "collections": "*"})
    if draw(st.booleans()) and event["body"] is not None:  # API Gateway's binary media types
        event["body"] = base64.b64encode(event["body"].encode("utf-8", "surrogatepass")).decode()
        event["isBase64Encoded"] = True
    for key in draw(st.lists(st.sampled_from(["headers", "multiValueHeaders", "queryStringParameters",
                                              "multiValueQueryStringParameters", "pathParameters", "body"]),
                             unique=True, max_size=3)):
        event[key] = None  # API Gateway sends null, not {}, for what a request lacks
    return event


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.resource}")
@FUZZ
@given(data=st.data())
def test_any_proxy_event_shape_answers_below_500_in_the_error_shape(invoke_route, seeded_default_collection,
                                                                    route, data):
    event = data.draw(proxy_events(route))

    response = invoke_route(event)  # path segments hold no "/": the event stays on its route

    assert response.status < 500, (response.status, response.body)
    if response.status >= 400:
        assert set(response.body) == {"error"}
        assert response.body["error"]["request_id"] == "fuzz-event"
        assert response.body["error"]["code"] and response.body["error"]["message"]


# ------------------------------------------------------------------ SQS: the ingest consumer

job_like = st.fixed_dictionaries({}, optional={
    "job_id": st.text(max_size=8) | st.integers() | st.none(),
    "part": st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3) | st.none(),
    "collection": st.sampled_from(["fuzz-sqs"]) | st.text(max_size=8) | st.integers() | st.lists(st.text(max_size=3),
                                                                                                 max_size=2),
    "upserts": st.lists(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=5), "text": st.text(max_size=20)},
                                              optional={"metadata": st.dictionaries(st.text(max_size=3),
                                                                                     st.integers())})
                        | st.integers() | st.text(max_size=4), max_size=2) | st.integers(),
    "deletes": st.lists(st.text(max_size=5) | st.integers(), max_size=2) | st.text(max_size=4),
})
bodies = job_like.map(json.dumps) | st.text(max_size=40) | st.sampled_from(["", "null", "[]", "{}"])


@pytest.fixture(scope="module")
def writer(encoder, tmp_path_factory):
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.settings import IndexSettings
    from ragserve.snapshots.local import LocalSnapshotStore

    data_dir = tmp_path_factory.mktemp("fuzz-sqs")
    return CollectionWriter(LocalSnapshotStore(data_dir), encoder, IndexSettings(), data_dir / "scratch")


@FUZZ
@given(messages=st.lists(st.tuples(bodies, st.sampled_from(["fuzz-sqs", "other", "?"]),
                                   st.sampled_from([True, False])), min_size=1, max_size=4))
def test_any_sqs_batch_is_applied_or_reported_failed_never_raised(writer, messages):
    from ragserve.ingest.consumer import consume
    from ragserve.ingest.jobs import IngestJob
    from ragserve.local.events import sqs_event

    event = sqs_event([{"message_id": f"m{i}", "receipt": f"r{i}", "group": group, "body": body,
                        "receive_count": 1} for i, (body, group, _) in enumerate(messages)])
    for record, (_, _, keep_attributes) in zip(event["Records"], messages):
        if not keep_attributes:
            record["attributes"] = None

    outcome = consume(event["Records"], writer)

    ids = {r["messageId"] for r in event["Records"]}
    failed = set(outcome.failed_message_ids)
    assert failed <= ids
    assert outcome.poison == []  # first receive: retried, never set aside yet
    assert {r["messageId"] for r in outcome.deferred} <= failed  # a healthy store: no storage fault anyway
    applied = {r.collection for r in outcome.results}
    for record in event["Records"]:  # every message applied or reported failed: none dropped
        if not is_json_object(record["body"]):
            assert record["messageId"] in failed
        elif record["messageId"] not in failed:
            assert IngestJob.from_json(record["body"]).collection in applied
    assert outcome.response() == {"batchItemFailures": [{"itemIdentifier": m} for m in outcome.failed_message_ids]}


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
