"""parse_body: size, base64, UTF-8, JSON and the request model, each failure a domain
error (InvalidInput -> 400, PayloadTooLarge -> 413)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragserve.api.body import parse_body, parse_json, raw_body
from ragserve.api.requests import EmbedRequest, OpenAIEmbeddingsRequest
from ragserve.errors import InvalidInput, PayloadTooLarge

LIMIT = 1_048_576


def event(body, *, is_base64: bool = False) -> dict:
    return {"body": body, "isBase64Encoded": is_base64}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_plain_json_body_is_parsed_into_the_model():
    request = parse_body(event('{"texts": ["a", "b"], "encoding": "int8"}'), EmbedRequest, LIMIT)

    assert request.texts == ["a", "b"]
    assert request.encoding == "int8"
    assert request.normalize is True


def test_base64_body_is_decoded():
    body = json.dumps({"texts": ["café ☕"]}).encode("utf-8")

    request = parse_body(event(b64(body), is_base64=True), EmbedRequest, LIMIT)

    assert request.texts == ["café ☕"]


def test_invalid_base64_is_invalid_input():
    with pytest.raises(InvalidInput) as info:
        parse_body(event("not*base64!", is_base64=True), EmbedRequest, LIMIT)

    assert info.value.code == "invalid_body"
    assert "base64" in info.value.message


def test_base64_of_invalid_utf8_is_invalid_input():
    with pytest.raises(InvalidInput) as info:
        parse_body(event(b64(b'{"texts": ["\xff\xfe"]}'), is_base64=True), EmbedRequest, LIMIT)

    assert info.value.code == "invalid_utf8"
    assert "UTF-8" in info.value.message


def test_plain_body_with_a_lone_surrogate_is_invalid_utf8():
    with pytest.raises(InvalidInput) as info:
        parse_json(event('{"texts": ["\ud800"]}'), LIMIT)

    assert info.value.code == "invalid_utf8"


@pytest.mark.parametrize("body", ['{"texts": [', "{'texts': []}", '{"texts": []} trailing', "nul"])
def test_malformed_json_is_invalid_input(body):
    with pytest.raises(InvalidInput) as info:
        parse_body(event(body), EmbedRequest, LIMIT)

    assert info.value.code == "invalid_json"
    assert info.value.message.startswith("request body is not valid JSON")


@pytest.mark.parametrize("body", [None, "", "   \n"])
def test_missing_or_blank_body_is_invalid_input(body):
    with pytest.raises(InvalidInput, match="empty") as info:
        parse_body(event(body), EmbedRequest, LIMIT)

    assert info.value.code == "invalid_json"


@pytest.mark.parametrize(("body", "kind"), [("[]", "list"), ('"texts"', "str"), ("3", "int"), ("null", "NoneType")])
def test_json_that_is_not_an_object_is_invalid_input(body, kind):
    with pytest.raises(InvalidInput, match=f"must be a JSON object, not {kind}"):
        parse_body(event(body), EmbedRequest, LIMIT)


def test_body_of_exactly_the_limit_is_accepted():
    body = '{"texts": ["x"]}'
    body += " " * (LIMIT - len(body))

    assert parse_body(event(body), EmbedRequest, LIMIT).texts == ["x"]


def test_body_one_byte_over_the_limit_is_too_large():
    body = '{"texts": ["x"]}'
    body += " " * (LIMIT + 1 - len(body))

    with pytest.raises(PayloadTooLarge) as info:
        parse_body(event(body), EmbedRequest, LIMIT)

    assert info.value.code == "body_too_large"
    assert str(LIMIT) in info.value.message


def test_limit_counts_utf8_bytes_not_characters():
    body = '{"texts": ["' + "é" * 60 + '"]}'  # 60 characters, 120 bytes

    with pytest.raises(PayloadTooLarge):
        raw_body(event(body), max_bytes=100)
    assert raw_body(event(body), max_bytes=200) == body.encode("utf-8")


def test_base64_body_is_limited_by_its_decoded_size():
    decoded = b'{"texts": ["x"]}' + b" " * 200

    assert len(raw_body(event(b64(decoded), is_base64=True), max_bytes=len(decoded))) == len(decoded)
    with pytest.raises(PayloadTooLarge):
        raw_body(event(b64(decoded), is_base64=True), max_bytes=len(decoded) - 1)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=1, max_value=5000), over=st.booleans())
def test_base64_limit_is_exact_for_any_size(limit, over):
    # the early length check on the encoded text must never reject a body within the limit
    data = b"x" * (limit + over)

    if over:
        with pytest.raises(PayloadTooLarge):
            raw_body(event(b64(data), is_base64=True), max_bytes=limit)
    else:
        assert raw_body(event(b64(data), is_base64=True), max_bytes=limit) == data


def test_huge_base64_body_is_rejected_before_decoding():
    with pytest.raises(PayloadTooLarge):
        raw_body(event("A" * 10_000, is_base64=True), max_bytes=100)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"texts": "one string"}, "texts"),
        ({"texts": [1, 2]}, "texts.0"),
        ({"texts": ["a", None]}, "texts.1"),
        ({}, "texts"),
        ({"texts": ["a"], "normalize": "yes"}, "normalize"),
        ({"texts": ["a"], "normalize": 1}, "normalize"),
        ({"texts": ["a"], "encoding": "fp16"}, "encoding"),
        ({"texts": ["a"], "unexpected": True}, "unexpected"),
    ],
)
def test_validation_errors_are_invalid_input_naming_the_field(payload, where):
    with pytest.raises(InvalidInput) as info:
        parse_body(event(json.dumps(payload)), EmbedRequest, LIMIT)

    assert info.value.code == "invalid_request"
    assert info.value.message.startswith(f"{where}:")
    assert "pydantic" not in info.value.message  # no links to library docs, no internals


@pytest.mark.parametrize("payload", [{"input": [101, 2023, 102]}, {"input": [[101, 102]]}, {"input": 7},
                                     {"input": "a", "encoding_format": "int8"}, {"input": "a", "dimensions": 0}])
def test_openai_request_rejects_what_is_not_served(payload):
    with pytest.raises(InvalidInput):
        parse_body(event(json.dumps(payload)), OpenAIEmbeddingsRequest, LIMIT)


def test_openai_request_accepts_a_string_or_a_list_and_ignores_unknown_fields():
    single = parse_body(event('{"input": "hi", "user": "u-1"}'), OpenAIEmbeddingsRequest, LIMIT)
    many = parse_body(event('{"input": ["a", "b"], "model": "m"}'), OpenAIEmbeddingsRequest, LIMIT)

    assert single.texts == ["hi"]
    assert (many.texts, many.model, many.encoding_format) == (["a", "b"], "m", "float")


def test_error_summary_is_capped_at_five_problems():
    with pytest.raises(InvalidInput) as info:
        parse_body(event(json.dumps({"texts": list(range(20))})), EmbedRequest, LIMIT)

    assert info.value.message.count("texts.") == 5
