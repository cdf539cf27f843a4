"""Property tests of every request model in ``ragserve.api.requests``, read as the
handlers read them (``parse_body`` then the core's limit checks): generated valid
requests parse and keep their values; wrong types, exceeded limits and empty texts
(no visible character) raise InvalidInput (400) or PayloadTooLarge (413) with the
documented code, and nothing else does; and ``raw_body``/``parse_json`` on any body,
base64 or not, raise nothing but those two.

The limits are small settings (not the defaults) so that exceeding them is cheap."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragserve.api.body import parse_body, parse_json
from ragserve.api.errors import status_of
from ragserve.api.requests import DocumentsRequest, EmbedRequest, OpenAIEmbeddingsRequest, SearchRequest
from ragserve.documents import MAX_SAFE_INTEGER, has_visible_text
from ragserve.embedding.service import validate_texts
from ragserve.errors import InvalidInput, PayloadTooLarge
from ragserve.ingest.service import validate_documents
from ragserve.search.service import validate_search
from ragserve.settings import Limits, SearchLimits

LIMITS = Limits(max_texts=5, max_text_chars=40, max_query_chars=30, max_body_bytes=4096)
SEARCH = SearchLimits(max_k=10, max_offset=20)
MAX_DOCUMENTS = 4
PROPERTY = settings(max_examples=100, deadline=None)


def event(body: str | None, *, base64_encoded: bool = False) -> dict:
    return {"httpMethod": "POST", "headers": {"content-type": "application/json"}, "body": body,
            "isBase64Encoded": base64_encoded}


def read_embed(payload: object) -> EmbedRequest:
    request = parse_body(event(json.dumps(payload)), EmbedRequest, LIMITS.max_body_bytes)
    validate_texts(request.texts, LIMITS)
    return request


def read_embeddings(payload: object) -> OpenAIEmbeddingsRequest:
    request = parse_body(event(json.dumps(payload)), OpenAIEmbeddingsRequest, LIMITS.max_body_bytes)
    validate_texts(request.texts, LIMITS)
    return request


def read_search(payload: object) -> SearchRequest:
    request = parse_body(event(json.dumps(payload)), SearchRequest, LIMITS.max_body_bytes)
    validate_search(request, LIMITS, SEARCH)
    return request


def read_documents(payload: object) -> DocumentsRequest:
    request = parse_body(event(json.dumps(payload)), DocumentsRequest, LIMITS.max_body_bytes)
    validate_documents(request.documents, LIMITS, MAX_DOCUMENTS)
    return request


READERS: dict[str, Callable[[object], object]] = {"embed": read_embed, "embeddings": read_embeddings,
                                                  "search": read_search, "documents": read_documents}


def refused(read: Callable[[object], object], payload: object) -> tuple[int, str]:
    """(status, code) of the refusal; fails unless ``read`` raises InvalidInput or PayloadTooLarge."""
    with pytest.raises((InvalidInput, PayloadTooLarge)) as caught:
        read(payload)
    return status_of(caught.value), caught.value.code


# ------------------------------------------------------------------ strategies

text = st.text(min_size=1, max_size=LIMITS.max_text_chars).filter(has_visible_text)
blank = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u200b\u200c\u200d\ufeff\u0301\x00\u2028",
                max_size=LIMITS.max_text_chars)
scalar = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.floats(
    -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, allow_nan=False) | st.text(max_size=8)
metadata = st.dictionaries(st.text(max_size=8), scalar, max_size=3)
json_values = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)
collection_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
doc_id = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Cc", "Cs")),
                 min_size=1, max_size=20).filter(str.strip)
document = st.fixed_dictionaries({"id": doc_id, "text": text},
                                 optional={"metadata": metadata})
documents = st.lists(document, min_size=1, max_size=MAX_DOCUMENTS, unique_by=lambda d: d["id"])

VALID = {
    "embed": st.fixed_dictionaries({"texts": st.lists(text, min_size=1, max_size=LIMITS.max_texts)}, optional={
        "normalize": st.booleans(), "encoding": st.sampled_from(["float", "base64", "int8", "binary"])}),
    "embeddings": st.fixed_dictionaries({"input": text | st.lists(text, min_size=1, max_size=LIMITS.max_texts)},
                                        optional={"model": st.text(max_size=20) | st.none(),
                                                  "encoding_format": st.sampled_from(["float", "base64"]),
                                                  "dimensions": st.integers(1, 4096) | st.none(),
                                                  "user": st.text(max_size=10)}),
    "search": st.fixed_dictionaries({"query": st.text(min_size=1, max_size=LIMITS.max_query_chars).filter(
                                        has_visible_text)},
                                    optional={"k": st.integers(1, SEARCH.max_k),
                                              "offset": st.integers(0, SEARCH.max_offset),
                                              "collection": collection_names | st.none(),
                                              "filter": metadata | st.none(), "include_text": st.booleans()}),
    "documents": st.fixed_dictionaries({"documents": documents}),
}

# What each field must be; anything else is a wrong type (400 invalid_request).
IS_STR_LIST = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
IS_INT = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
IS_SCALAR_MAP = lambda v: isinstance(v, dict) and all(  # noqa: E731
    x is None or isinstance(x, (str, int, float, bool)) for x in v.values())
FIELD_TYPES: dict[str, dict[str, Callable[[object], bool]]] = {
    "embed": {"texts": IS_STR_LIST, "normalize": lambda v: isinstance(v, bool),
              "encoding": lambda v: v in ("float", "base64", "int8", "binary")},
    "embeddings": {"input": lambda v: isinstance(v, str) or IS_STR_LIST(v),
                   "model": lambda v: v is None or isinstance(v, str),
                   "encoding_format": lambda v: v in ("float", "base64"),
                   "dimensions": lambda v: v is None or (IS_INT(v) and v >= 1)},
    "search": {"query": lambda v: isinstance(v, str), "k": IS_INT, "offset": IS_INT,
               "collection": lambda v: v is None or isinstance(v, str),
               "filter": lambda v: v is None or IS_SCALAR_MAP(v), "include_text": lambda v: isinstance(v, bool)},
    "documents": {"documents": lambda v: isinstance(v, list) and all(
        isinstance(d, dict) and set(d) <= {"id", "text", "metadata"} and {"id", "text"} <= set(d)
        and isinstance(d["id"], str) and isinstance(d["text"], str)
        and IS_SCALAR_MAP(d.get("metadata", {})) for d in v)},
}


# ------------------------------------------------------------------ valid requests

@pytest.mark.parametrize("name", sorted(READERS))
@PROPERTY
@given(data=st.data())
def test_valid_requests_parse_and_keep_their_values(name, data):
    payload = data.draw(VALID[name])

    request = READERS[name](payload)

    dumped = request.model_dump(exclude_unset=True)
    for field, value in payload.items():
        if field in type(request).model_fields:
            assert dumped[field] == value, field
    if name == "embeddings":
        assert request.texts == ([payload["input"]] if isinstance(payload["input"], str) else payload["input"])


# ------------------------------------------------------------------ invalid requests

@pytest.mark.parametrize("name", sorted(READERS))
@PROPERTY
@given(data=st.data())
def test_a_wrong_type_in_any_field_is_400_invalid_request(name, data):
    payload = dict(data.draw(VALID[name]))
    field = data.draw(st.sampled_from(sorted(FIELD_TYPES[name])))
    payload[field] = data.draw(json_values.filter(lambda v: not FIELD_TYPES[name][field](v)))

    assert refused(READERS[name], payload) == (400, "invalid_request")


@pytest.mark.parametrize("name", ["embed", "search", "documents"])
@PROPERTY
@given(data=st.data(), extra=st.text(min_size=1, max_size=10))
def test_an_unknown_field_is_400_except_on_the_openai_route(name, data, extra):
    payload = data.draw(VALID[name])
    known = {"embed": EmbedRequest, "search": SearchRequest, "documents": DocumentsRequest}[name].model_fields
    if extra in payload or extra in known:  # a field of the model, not an unknown one ("k": 1 is a valid k)
        return
    assert refused(READERS[name], {**payload, extra: 1}) == (400, "invalid_request")
    assert read_embeddings({**data.draw(VALID["embeddings"]), "x-" + extra: 1})  # OpenAI's: ignored


@PROPERTY
@given(texts=st.lists(text, min_size=LIMITS.max_texts + 1, max_size=LIMITS.max_texts + 3),
       long_text=st.text(min_size=LIMITS.max_text_chars + 1, max_size=LIMITS.max_text_chars + 20).filter(str.strip),
       position=st.integers(0, LIMITS.max_texts - 1), as_openai=st.booleans())
def test_exceeded_text_limits_are_413(texts, long_text, position, as_openai):
    read, key = (read_embeddings, "input") if as_openai else (read_embed, "texts")

    assert refused(read, {key: texts}) == (413, "too_many_texts")
    fitting = texts[:LIMITS.max_texts]
    fitting[position] = long_text
    assert refused(read, {key: fitting}) == (413, "text_too_long")


@PROPERTY
@given(texts=st.lists(text, max_size=LIMITS.max_texts - 1), empty=blank, position=st.integers(0, LIMITS.max_texts),
       as_openai=st.booleans())
def test_empty_or_whitespace_texts_are_400(texts, empty, position, as_openai):
    read, key = (read_embeddings, "input") if as_openai else (read_embed, "texts")
    texts.insert(min(position, len(texts)), empty)

    assert refused(read, {key: texts}) == (400, "empty_text")
    assert refused(read_embed, {"texts": []}) == (400, "empty_input")


@PROPERTY
@given(query=st.text(min_size=LIMITS.max_query_chars + 1, max_size=LIMITS.max_query_chars + 30),
       empty=blank.filter(lambda q: len(q) <= LIMITS.max_query_chars),
       k=st.integers(-(2**63), 0) | st.integers(SEARCH.max_k + 1, 2**63 - 1),
       offset=st.integers(-(2**63), -1) | st.integers(SEARCH.max_offset + 1, 2**63 - 1))
def test_search_limits_are_413_and_ranges_400(query, empty, k, offset):
    assert refused(read_search, {"query": query}) == (413, "query_too_long")
    assert refused(read_search, {"query": empty}) == (400, "empty_query")
    assert refused(read_search, {"query": "ok", "k": k}) == (400, "invalid_k")
    assert refused(read_search, {"query": "ok", "offset": offset}) == (400, "invalid_offset")
    assert refused(read_search, {"query": "ok", "collection": "Not A Name"})[0] == 400
    # past 64 bits orjson reads a JSON integer as a float: still a 400, as a wrong type
    assert refused(read_search, {"query": "ok", "k": 2**64}) == (400, "invalid_request")


@PROPERTY
@given(docs=documents, extra=st.lists(document, min_size=MAX_DOCUMENTS + 1, max_size=MAX_DOCUMENTS + 2,
                                      unique_by=lambda d: d["id"]),
       empty=blank, long_text=st.text(min_size=LIMITS.max_text_chars + 1, max_size=LIMITS.max_text_chars + 9))
def test_document_limits_are_413_and_bad_documents_400(docs, extra, empty, long_text):
    assert refused(read_documents, {"documents": extra}) == (413, "too_many_documents")
    assert refused(read_documents, {"documents": []}) == (400, "empty_input")
    first = docs[0]
    assert refused(read_documents, {"documents": [{**first, "text": empty}]}) == (400, "empty_text")
    assert refused(read_documents, {"documents": [{**first, "text": long_text}]}) == (413, "text_too_long")
    assert refused(read_documents, {"documents": [first, first]}) == (400, "duplicate_id")
    for bad_id in (" ", "\u2003\x85", "a\x00b", "tab\there", "del\x7f", "nel\x85"):
        assert refused(read_documents, {"documents": [{**first, "id": bad_id}]}) == (400, "invalid_document_id")


# ------------------------------------------------------------------ anything at all

@pytest.mark.parametrize("name", sorted(READERS))
@PROPERTY
@given(payload=json_values | st.dictionaries(st.sampled_from(
    ["texts", "input", "query", "documents", "k", "offset", "filter", "encoding", "normalize", "model", "collection",
     "include_text", "dimensions", "encoding_format"]), json_values, max_size=5))
def test_any_json_is_read_or_refused_with_400_or_413_only(name, payload):
    try:
        READERS[name](payload)
    except (InvalidInput, PayloadTooLarge) as exc:
        assert status_of(exc) in (400, 413) and exc.code and exc.message


@PROPERTY
@given(body=st.none() | st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
       base64_encoded=st.booleans(), encode=st.booleans())
def test_any_body_string_is_read_or_refused_with_400_or_413_only(body, base64_encoded, encode):
    if encode and body is not None:
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    try:
        parse_json(event(body, base64_encoded=base64_encoded), 128)
    except (InvalidInput, PayloadTooLarge) as exc:
        assert status_of(exc) in (400, 413) and exc.code in (
            "invalid_body", "invalid_utf8", "invalid_json", "body_too_large")
