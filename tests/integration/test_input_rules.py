"""Input rules at the edges of what looks valid, in the core and through the real
handlers (routed as API Gateway routes them):

- a text, query or document text with no visible character (only zero-width, control,
  BOM, combining or separator characters) is empty: 400 ``empty_text`` / ``empty_query``
  on embed, the OpenAI route, search and ingest (they once all embedded to the same
  [CLS][SEP] vector);
- numbers in metadata and filters beyond 2^53 - 1 are refused (400 ``invalid_request``),
  and filters compare the integers already stored exactly;
- ``"collection": ""`` in a search is an invalid collection (400), not the default one;
- names and ids the caller sent are cut in error messages;
- a key with whitespace around it is not the key, for the AWS authorizer as locally;
- ``ragserve keys create --collections ","`` is an error, never every collection.
"""

from __future__ import annotations

import json

import pytest

from ragserve.api.access import check_collection_access
from ragserve.api.body import parse_body
from ragserve.api.errors import status_of
from ragserve.api.requests import DocumentsRequest, EmbedRequest, OpenAIEmbeddingsRequest, SearchRequest
from ragserve.auth import KeyRecord, authorize, hash_key
from ragserve.auth.keys import parse_collections
from ragserve.documents import MAX_SAFE_INTEGER, has_visible_text, metadata_key
from ragserve.embedding.service import validate_texts
from ragserve.errors import InvalidInput, PayloadTooLarge, RagserveError
from ragserve.ingest.service import validate_documents
from ragserve.search.service import validate_search
from ragserve.settings import Limits, SearchLimits
from ragserve.snapshots.format import validate_collection

LIMITS = Limits()
SEARCH = SearchLimits()
INVISIBLE = ["\u200b", "\u0000", "\ufeff", "\u0301", "\u200c\u200d", " \u200b\t\u2028\u00a0", "\u0301\u20dd\x7f",
             "\u2060\u00ad\u034f"]
VISIBLE = ["a", "e\u0301", "\u200bhi\u200b", "\u4e2d", "\U0001f642", "\u0627", "1", "."]
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/POST/v1/embed"


def event(payload: object) -> dict:
    return {"httpMethod": "POST", "headers": {"content-type": "application/json"}, "body": json.dumps(payload)}


def refused(call, *args) -> tuple[int, str, str]:
    with pytest.raises((InvalidInput, PayloadTooLarge)) as caught:
        call(*args)
    return status_of(caught.value), caught.value.code, caught.value.message


def read(model, payload):
    return parse_body(event(payload), model, LIMITS.max_body_bytes)


# -- no visible character: empty -------------------------------------------------------------------


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_text_with_no_visible_character_is_empty_everywhere(text):
    assert not has_visible_text(text)
    assert refused(validate_texts, [text], LIMITS)[:2] == (400, "empty_text")
    assert refused(validate_texts, ["fine", text], LIMITS)[:2] == (400, "empty_text")
    embeddings = read(OpenAIEmbeddingsRequest, {"input": text})
    assert refused(validate_texts, embeddings.texts, LIMITS)[:2] == (400, "empty_text")
    search = read(SearchRequest, {"query": text})
    assert refused(validate_search, search, LIMITS, SEARCH)[:2] == (400, "empty_query")
    documents = read(DocumentsRequest, {"documents": [{"id": "d1", "text": text}]}).documents
    assert refused(validate_documents, documents, LIMITS, 100)[:2] == (400, "empty_text")


@pytest.mark.parametrize("text", VISIBLE)
def test_a_text_with_a_visible_character_is_accepted(text):
    assert has_visible_text(text)
    validate_texts(read(EmbedRequest, {"texts": [text]}).texts, LIMITS)
    validate_search(read(SearchRequest, {"query": text}), LIMITS, SEARCH)
    validate_documents(read(DocumentsRequest, {"documents": [{"id": "d", "text": text}]}).documents, LIMITS, 100)


def test_an_over_long_invisible_query_is_still_too_long_first():
    request = read(SearchRequest, {"query": "\u200b" * (LIMITS.max_query_chars + 1)})
    assert refused(validate_search, request, LIMITS, SEARCH)[:2] == (413, "query_too_long")


# -- numbers in metadata and filters --------------------------------------------------------------


@pytest.mark.parametrize("number", [2**53, -(2**53), 2**53 + 1, 2**63, 2**64, -(2**64), 10**30, 1e300, -1.5e16])
def test_numbers_beyond_2_53_are_refused_in_metadata_and_filters(number):
    literal = json.dumps(number)  # the JSON text: 2^64 and beyond are integers here, floats once parsed
    documents = '{"documents": [{"id": "d", "text": "t", "metadata": {"n": ' + literal + '}}]}'
    search = '{"query": "q", "filter": {"n": ' + literal + '}}'
    for model, payload in ((DocumentsRequest, documents), (SearchRequest, search)):
        status, code, message = refused(parse_body, {"body": payload}, model, LIMITS.max_body_bytes)
        assert (status, code) == (400, "invalid_request")
        assert "2^53 - 1" in message and len(message) < 200


@pytest.mark.parametrize("number", [0, 1, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 1.5, 2.0**52, True, False])
def test_numbers_within_2_53_are_kept_exactly(number):
    documents = read(DocumentsRequest, {"documents": [{"id": "d", "text": "t", "metadata": {"n": number}}]})
    assert documents.documents[0].metadata["n"] == number
    assert type(documents.documents[0].metadata["n"]) is type(number)
    assert read(SearchRequest, {"query": "q", "filter": {"n": number}}).filter == {"n": number}


def test_filters_compare_integers_exactly_even_beyond_2_53():
    # refused at the door today, but a collection may hold them from before
    assert metadata_key(2**53) != metadata_key(2**53 + 1)
    assert metadata_key(2**64) == metadata_key(float(2**64))  # equal values
    assert metadata_key(10**400) != metadata_key(10**400 + 1)
    assert metadata_key(1) == metadata_key(1.0) and metadata_key("1") != metadata_key(1)
    assert metadata_key(True) != metadata_key(1)


# -- collection names ---------------------------------------------------------------------------


def test_an_empty_collection_in_a_search_is_invalid_not_the_default():
    status, code, _ = refused(read, SearchRequest, {"query": "q", "collection": ""})
    assert (status, code) == (400, "invalid_request")
    assert read(SearchRequest, {"query": "q", "collection": None}).collection is None
    assert validate_search(read(SearchRequest, {"query": "q"}), LIMITS, SEARCH) == SEARCH.default_collection


# -- long names are cut in messages -------------------------------------------------------------


def assert_cut(message: str, sent: str) -> None:
    assert sent not in message and sent[:64] + "..." in message and len(message) < 300, message


def test_a_long_collection_name_is_cut_in_the_invalid_name_message():
    name = "X" * 5000
    with pytest.raises(RagserveError) as caught:
        validate_collection(name)
    assert_cut(caught.value.message, name)


def test_a_long_collection_name_is_cut_in_the_forbidden_collection_message():
    name = "x" * 5000
    with pytest.raises(RagserveError) as caught:
        check_collection_access({"requestContext": {"authorizer": {"collections": "docs"}}}, name)
    assert caught.value.code == "forbidden_collection"
    assert_cut(caught.value.message, name)


def test_a_long_document_id_is_cut_in_the_duplicate_id_message():
    long_id = "i" * 256
    documents = read(DocumentsRequest, {"documents": [{"id": long_id, "text": "a"}, {"id": long_id, "text": "b"}]})
    status, code, message = refused(validate_documents, documents.documents, LIMITS, 100)
    assert (status, code) == (400, "duplicate_id")
    assert_cut(message, long_id)


def test_a_long_metadata_key_is_cut_in_a_validation_message():
    long_key = "k" * 3000
    status, code, message = refused(read, DocumentsRequest,
                                    {"documents": [{"id": "d", "text": "t", "metadata": {long_key: [1]}}]})
    assert (status, code) == (400, "invalid_request")
    assert_cut(message, long_key)


# -- keys --------------------------------------------------------------------------------------


class Store:
    def __init__(self, *records: KeyRecord) -> None:
        self.records = {r.key_hash: r for r in records}

    def get(self, key_hash: str) -> KeyRecord | None:
        return self.records.get(key_hash)


@pytest.mark.parametrize("sent", ["{key} ", " {key}", "{key}\t", "{key}\n", "\u00a0{key}"])
def test_a_key_with_whitespace_around_it_is_not_the_key_for_the_aws_authorizer(sent):
    key = "rsk" + "A" * 40
    record = KeyRecord(key_hash=hash_key(key), key_id="key-0123456789ab", scope="write", tier="free",
                       collections=None, api_gateway_key_id="apikey1", status="active",
                       created_at="2026-01-01T00:00:00Z")
    event = {"type": "REQUEST", "methodArn": METHOD_ARN, "headers": {"x-api-key": sent.format(key=key)}}
    response, _ = authorize(event, Store(record))
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Deny"  # 403, as the local gateway
    assert "usageIdentifierKey" not in response
    exact = {**event, "headers": {"x-api-key": key}}
    assert authorize(exact, Store(record))[0]["policyDocument"]["Statement"][0]["Effect"] == "Allow"


@pytest.mark.parametrize("sent", ["{key} ", " {key}", "{key}\t", "\u00a0{key}"])
def test_a_key_with_whitespace_around_it_is_not_the_key_locally(sent):
    from ragserve.local.gateway import ApiKey, Gateway
    from ragserve.settings import GatewaySettings

    key = "local-key-1"
    gateway = Gateway(GatewaySettings(api_keys=f"{key}:write"), handlers={}, keys={key: ApiKey(key, "write")})
    response = gateway.handle("POST", "/v1/embed", {}, {"x-api-key": sent.format(key=key)}, b"{}")
    assert response.status == 403 and json.loads(response.body)["error"]["code"] == "forbidden"


@pytest.mark.parametrize("spec", [",", " , ", ",,", "a,", ",a", "a,,b"])
def test_a_collections_list_with_an_empty_name_is_an_error(spec):
    with pytest.raises(InvalidInput):
        parse_collections(spec)
    assert parse_collections("a, b") == ("a", "b") and parse_collections("*") is None


def test_keys_create_with_collections_comma_exits_2_with_one_line_and_creates_nothing(monkeypatch, capsys):
    import ragserve.keys.cli as keys_cli
    from ragserve.cli import main

    created = []

    class Manager:
        def create(self, *args, **kwargs):
            created.append((args, kwargs))
            raise AssertionError("no key may be created")

    monkeypatch.setattr(keys_cli, "_manager", lambda args: Manager())
    code = main(["keys", "--table", "t", "--stage", "s", "create", "--scope", "read", "--tier", "free",
                 "--collections", ","])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and created == []
    assert err.startswith("ragserve keys: ") and err.count("\n") == 1 and "empty collection name" in err


# -- through the handlers ------------------------------------------------------------------------


@pytest.fixture
def refusal(invoke_route, make_event, seeded_default_collection):
    """``refusal(method, path, body) -> (status, code, message)`` of the function owning the route."""

    def call(method: str, path: str, body=None) -> tuple[int, str, str]:
        answer = invoke_route(make_event(method, path, body=body, headers={"x-api-key": "k"}))
        assert answer.status >= 400, answer.body
        return answer.status, answer.body["error"]["code"], answer.body["error"]["message"]

    return call


@pytest.mark.parametrize("text", INVISIBLE[:5])
def test_invisible_texts_are_empty_on_every_route(refusal, text):
    assert refusal("POST", "/v1/embed", {"texts": ["ok", text]})[:2] == (400, "empty_text")
    assert refusal("POST", "/v1/embeddings", {"input": text})[:2] == (400, "empty_text")
    assert refusal("POST", "/v1/search", {"query": text})[:2] == (400, "empty_query")
    assert refusal("POST", "/v1/collections/rules/documents",
                   {"documents": [{"id": "a", "text": text}]})[:2] == (400, "empty_text")


def test_a_visible_text_with_invisible_characters_around_it_still_works(invoke_route, make_event):
    answer = invoke_route(make_event("POST", "/v1/embed", body={"texts": ["\u200bpassword\u200b"]}))
    assert answer.status == 200 and len(answer.body["embeddings"][0]) == 384


@pytest.mark.parametrize("number", [2**53, 2**64, -(2**63)])
def test_unsafe_numbers_are_400_in_metadata_and_filters(refusal, number):
    metadata = {"documents": [{"id": "a", "text": "t", "metadata": {"n": number}}]}
    assert refusal("POST", "/v1/collections/rules/documents", metadata)[:2] == (400, "invalid_request")
    assert refusal("POST", "/v1/search", {"query": "q", "filter": {"n": number}})[:2] == (400, "invalid_request")


def test_an_empty_collection_in_a_search_is_400(refusal):
    assert refusal("POST", "/v1/search", {"query": "password", "collection": ""})[:2] == (400, "invalid_request")


@pytest.mark.parametrize("method,path", [("DELETE", "/v1/collections/{name}/documents/x"),
                                         ("GET", "/v1/collections/{name}"),
                                         ("POST", "/v1/collections/{name}/documents")])
def test_a_long_collection_name_is_cut_in_the_message(refusal, method, path):
    name = "N" * 4000
    body = {"documents": [{"id": "a", "text": "t"}]} if method == "POST" else None
    status, code, message = refusal(method, path.format(name=name), body)
    assert (status, code) == (400, "invalid_request")
    assert_cut(message, name)
