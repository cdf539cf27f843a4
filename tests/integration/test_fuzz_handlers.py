"""Property tests: whatever the body (random bytes, base64 or not, random JSON of any
shape), every write and read route answers below 500, with the JSON error shape when
it refuses. Through the real handlers, routed as API Gateway routes them."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROUTES = [("POST", "/v1/embed"), ("POST", "/v1/embeddings"), ("POST", "/v1/search"),
          ("POST", "/v1/collections/fuzz/documents")]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)
field_names = st.sampled_from(["texts", "input", "query", "documents", "k", "offset", "filter", "encoding",
                               "normalize", "model", "collection", "include_text", "id", "text", "metadata"])
shaped = st.dictionaries(field_names, json_values, max_size=6)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(response, request_id):
    assert response.status < 500, response.body
    if response.status >= 400:
        assert set(response.body) == {"error"}
        assert response.body["error"]["request_id"] == request_id
        assert response.body["error"]["code"] and response.body["error"]["message"]


@pytest.mark.parametrize("method,path", ROUTES)
@FUZZ
@given(body=st.binary(max_size=300), as_base64=st.booleans())
def test_random_bytes_never_give_a_5xx(invoke_route, make_event, seeded_default_collection, method, path, body,
                                       as_base64):
    event = make_event(method, path, body=body, request_id="fuzz-bytes")
    if as_base64 and event["body"] is not None and not event["isBase64Encoded"]:
        event["body"] = base64.b64encode(event["body"].encode("utf-8", "surrogatepass")).decode()
        event["isBase64Encoded"] = True
    check(invoke_route(event), "fuzz-bytes")


@pytest.mark.parametrize("method,path", ROUTES)
@FUZZ
@given(payload=shaped | json_values)
def test_random_json_never_gives_a_5xx(invoke_route, make_event, seeded_default_collection, method, path, payload):
    event = make_event(method, path, body=json.dumps(payload), request_id="fuzz-json")
    check(invoke_route(event), "fuzz-json")
