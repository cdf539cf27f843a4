"""The embed function end to end: API Gateway REST proxy events through the real
``functions.embed.handler.lambda_handler`` (real model), against docs/ARCHITECTURE.md section 3."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ragserve.embedding.encodings import from_base64
from tests.corruption import flipped

MAX_BODY = 1_048_576


def assert_error(response, status: int, request_id: str, code: str | None = None) -> dict:
    """The one error shape: {"error": {"code", "message", "request_id"}}, JSON, no trace."""
    assert response.status == status, response.body
    assert response.content_type.startswith("application/json")
    assert set(response.body) == {"error"}
    error = response.body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == request_id
    assert "Traceback" not in error["message"] and 'File "' not in error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def texts_body_of_size(size: int) -> str:
    """A valid /v1/embed body of exactly ``size`` bytes (JSON whitespace as padding)."""
    body = json.dumps({"texts": ["padding makes this body exactly the right size"]})
    return body + " " * (size - len(body))


# -- POST /v1/embed: success ---------------------------------------------------------

def test_embed_returns_unit_vectors_and_usage(invoke, make_event, encoder):
    texts = ["hello world", "Serverless functions scale to zero when nobody calls them."]

    response = invoke(make_event("POST", "/v1/embed", body={"texts": texts}))

    assert response.status == 200, response.body
    assert response.content_type.startswith("application/json")
    body = response.body
    assert body["model"] == "all-MiniLM-L6-v2"
    assert body["dimensions"] == 384
    vectors = np.asarray(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # same model; answers carry the embedding cache's float16 precision
    np.testing.assert_allclose(vectors, encoder.embed(texts), atol=2e-4)
    expected = encoder.encode(texts)
    assert body["usage"] == {"tokens": expected.tokens, "truncated": 0}


def test_embed_normalize_false_gives_raw_vectors(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body={"texts": ["hello world"], "normalize": False}))

    assert response.status == 200
    norm = np.linalg.norm(np.asarray(response.body["embeddings"][0]))
    assert abs(norm - 1.0) > 0.05


def test_embed_base64_decodes_to_the_float_vectors(invoke, make_event):
    texts = ["first text", "a second, somewhat longer text"]

    floats = invoke(make_event("POST", "/v1/embed", body={"texts": texts}))
    encoded = invoke(make_event("POST", "/v1/embed", body={"texts": texts, "encoding": "base64"}))

    assert encoded.status == 200 and encoded.body["encoding"] == "base64"
    decoded = np.vstack([from_base64(item) for item in encoded.body["embeddings"]])
    np.testing.assert_array_equal(decoded, np.asarray(floats.body["embeddings"], dtype=np.float32))


def test_embed_int8_and_binary_encodings(invoke, make_event):
    texts = ["vector search", "cold start"]

    floats = np.asarray(invoke(make_event("POST", "/v1/embed", body={"texts": texts})).body["embeddings"])
    int8 = invoke(make_event("POST", "/v1/embed", body={"texts": texts, "encoding": "int8"}))
    binary = invoke(make_event("POST", "/v1/embed", body={"texts": texts, "encoding": "binary"}))

    assert int8.status == binary.status == 200
    quantized = np.asarray(int8.body["embeddings"])
    assert quantized.shape == (2, 384)
    assert quantized.min() >= -127 and quantized.max() <= 127
    cosine = (quantized * floats).sum(1) / np.linalg.norm(quantized, axis=1)
    assert cosine.min() >= 0.99
    packed = np.asarray(binary.body["embeddings"])
    assert packed.shape == (2, 48)
    assert packed.min() >= 0 and packed.max() <= 255
    np.testing.assert_array_equal(np.unpackbits(packed.astype(np.uint8), axis=1).astype(bool), floats > 0)


def test_embed_base64_encoded_request_body(invoke, make_event):
    event = make_event("POST", "/v1/embed", body={"texts": ["sent as base64"]})
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True

    response = invoke(event)

    assert response.status == 200
    assert len(response.body["embeddings"]) == 1


def test_unicode_texts_are_embedded(invoke, make_event):
    texts = ["日本語のテキスト", "Ünïcödé ☕ 🚀", "Привет, мир"]

    response = invoke(make_event("POST", "/v1/embed", body={"texts": texts}))

    assert response.status == 200
    assert np.asarray(response.body["embeddings"]).shape == (3, 384)


# -- POST /v1/embed: limits at their boundaries --------------------------------------

def test_exactly_100_texts_are_accepted(invoke, make_event):
    texts = [f"text number {i}" for i in range(100)]

    response = invoke(make_event("POST", "/v1/embed", body={"texts": texts}))

    assert response.status == 200
    assert len(response.body["embeddings"]) == 100


def test_101_texts_are_too_many(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body={"texts": ["x"] * 101}, request_id="r-101"))

    error = assert_error(response, 413, "r-101", "too_many_texts")
    assert "100" in error["message"]


def test_text_of_exactly_8192_characters_is_accepted_and_truncated(invoke, make_event):
    text = ("word " * 2000)[:8192]
    assert len(text) == 8192

    response = invoke(make_event("POST", "/v1/embed", body={"texts": [text, "ok"]}))

    assert response.status == 200
    assert response.body["usage"] == {"tokens": 256 + 3, "truncated": 1}


def test_text_of_8193_characters_is_too_long(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body={"texts": ["ok", "a" * 8193]}, request_id="r-long"))

    error = assert_error(response, 413, "r-long", "text_too_long")
    assert "text 1" in error["message"] and "8192" in error["message"]


def test_multibyte_text_limit_counts_characters_not_bytes(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body={"texts": ["é" * 8192]}))

    assert response.status == 200


def test_body_of_exactly_1_mib_is_accepted(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body=texts_body_of_size(MAX_BODY)))

    assert response.status == 200


def test_body_one_byte_over_1_mib_is_too_large(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embed", body=texts_body_of_size(MAX_BODY + 1), request_id="r-big"))

    assert_error(response, 413, "r-big", "body_too_large")


def test_base64_body_over_1_mib_is_too_large(invoke, make_event):
    event = make_event("POST", "/v1/embed", request_id="r-big64")
    event["body"] = base64.b64encode(texts_body_of_size(MAX_BODY + 1).encode()).decode()
    event["isBase64Encoded"] = True

    assert_error(invoke(event), 413, "r-big64", "body_too_large")


# -- POST /v1/embed: every 400 of section 3 ------------------------------------------

BAD_EMBED_BODIES = {
    "empty list": ({"texts": []}, "empty_input"),
    "empty text": ({"texts": ["fine", ""]}, "empty_text"),
    "whitespace text": ({"texts": [" \t\n\u00a0 "]}, "empty_text"),
    "texts is a string": ({"texts": "not a list"}, "invalid_request"),
    "texts are numbers": ({"texts": [1, 2, 3]}, "invalid_request"),
    "texts has null": ({"texts": ["a", None]}, "invalid_request"),
    "texts nested": ({"texts": [["a"]]}, "invalid_request"),
    "texts missing": ({"text": ["a"]}, "invalid_request"),
    "normalize not bool": ({"texts": ["a"], "normalize": "true"}, "invalid_request"),
    "unknown encoding": ({"texts": ["a"], "encoding": "float16"}, "invalid_request"),
    "unknown field": ({"texts": ["a"], "model": "x"}, "invalid_request"),
    "malformed JSON": ('{"texts": ["a"', "invalid_json"),
    "JSON with trailing garbage": ('{"texts": ["a"]}}', "invalid_json"),
    "JSON array": ('["a", "b"]', "invalid_request"),
    "JSON string": ('"a"', "invalid_request"),
    "JSON null": ("null", "invalid_request"),
    "no body": (None, "invalid_json"),
    "invalid UTF-8": (b'{"texts": ["\xc3\x28"]}', "invalid_utf8"),  # rest_event sends it base64
}


@pytest.mark.parametrize(("body", "code"), BAD_EMBED_BODIES.values(), ids=BAD_EMBED_BODIES.keys())
def test_invalid_embed_request_is_400(invoke, make_event, body, code):
    event = make_event("POST", "/v1/embed", body=body, request_id="r-bad")

    assert_error(invoke(event), 400, "r-bad", code)


def test_base64_flag_on_a_body_that_is_not_base64_is_400(invoke, make_event):
    event = make_event("POST", "/v1/embed", body={"texts": ["a"]}, request_id="r-b64")
    event["isBase64Encoded"] = True

    assert_error(invoke(event), 400, "r-b64", "invalid_body")


def test_error_request_id_follows_the_event(invoke, make_event):
    for request_id in ("abc-1", "c0ffee00-0000-4000-8000-000000000000"):
        assert_error(invoke(make_event("POST", "/v1/embed", body={"texts": []}, request_id=request_id)),
                     400, request_id)


# -- POST /v1/embeddings (OpenAI) ----------------------------------------------------

def test_openai_embeddings_list_input(invoke, make_event, encoder):
    inputs = ["The quick brown fox jumps over the lazy dog.", "hi", "What is the capital of Australia?"]

    response = invoke(make_event("POST", "/v1/embeddings", body={"input": inputs, "model": "all-MiniLM-L6-v2"}))

    assert response.status == 200, response.body
    body = response.body
    assert body["object"] == "list"
    assert body["model"] == "all-MiniLM-L6-v2"
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(item["object"] == "embedding" and len(item["embedding"]) == 384 for item in body["data"])
    vectors = np.asarray([item["embedding"] for item in body["data"]], dtype=np.float32)
    # data[i] is input[i] (answers carry the embedding cache's float16 precision)
    np.testing.assert_allclose(vectors, encoder.embed(inputs), atol=2e-4)
    tokens = encoder.encode(inputs).tokens
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_openai_embeddings_string_input_and_alias(invoke, make_event):
    response = invoke(make_event("POST", "/v1/embeddings",
                                 body={"input": "hello", "model": "sentence-transformers/all-MiniLM-L6-v2"}))

    assert response.status == 200
    assert len(response.body["data"]) == 1
    assert response.body["data"][0]["index"] == 0
    assert response.body["usage"]["prompt_tokens"] == 3


def test_openai_base64_decodes_to_the_float_vector(invoke, make_event):
    inputs = ["alpha", "a somewhat longer second input"]

    floats = invoke(make_event("POST", "/v1/embeddings", body={"input": inputs}))
    encoded = invoke(make_event("POST", "/v1/embeddings", body={"input": inputs, "encoding_format": "base64"}))

    assert encoded.status == 200
    for float_item, b64_item in zip(floats.body["data"], encoded.body["data"], strict=True):
        assert isinstance(b64_item["embedding"], str)
        np.testing.assert_array_equal(from_base64(b64_item["embedding"]),
                                      np.asarray(float_item["embedding"], dtype=np.float32))


def test_openai_dimensions_of_the_model_are_accepted(invoke, make_event):
    assert invoke(make_event("POST", "/v1/embeddings", body={"input": "a", "dimensions": 384})).status == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": "hello", "model": "text-embedding-3-small"}, 404, "model_not_found"),
        ({"input": [101, 7592, 102]}, 400, "invalid_request"),  # token ids are not supported
        ({"input": [[101, 7592, 102]]}, 400, "invalid_request"),
        ({"input": []}, 400, "empty_input"),
        ({"input": ""}, 400, "empty_text"),
        ({"input": "a", "encoding_format": "int8"}, 400, "invalid_request"),
        ({"input": "a", "dimensions": 256}, 400, "invalid_dimensions"),
        ({"model": "all-MiniLM-L6-v2"}, 400, "invalid_request"),
        ({"input": ["x"] * 101}, 413, "too_many_texts"),
        ({"input": "a" * 8193}, 413, "text_too_long"),
    ],
)
def test_invalid_openai_request(invoke, make_event, body, status, code):
    response = invoke(make_event("POST", "/v1/embeddings", body=body, request_id="r-oai"))

    assert_error(response, status, "r-oai", code)


# -- GET /health, GET /metrics, unknown routes ---------------------------------------

def test_health_is_healthy(invoke, make_event):
    response = invoke(make_event("GET", "/health"))

    assert response.status == 200
    assert response.body["status"] == "healthy"
    assert response.body["model"] == "all-MiniLM-L6-v2"
    assert response.body["checks"]["model"] == "ok"
    assert "index_version" in response.body


def requests_total(metrics_text: str, operation: str, status: str) -> float:
    match = re.search(rf'^ragserve_requests_total\{{operation="{operation}",status="{status}"\}} (\S+)$',
                      metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_is_prometheus_text_and_counts_requests(invoke, make_event):
    before = invoke(make_event("GET", "/metrics"))
    assert invoke(make_event("POST", "/v1/embed", body={"texts": ["count me"]})).status == 200
    after = invoke(make_event("GET", "/metrics"))

    assert after.status == 200
    assert after.content_type.startswith("text/plain; version=0.0.4")
    assert isinstance(after.body, str)
    assert "# TYPE ragserve_requests_total counter" in after.body
    assert requests_total(after.body, "embed", "2xx") == requests_total(before.body, "embed", "2xx") + 1
    assert "ragserve_embedding_dimensions 384" in after.body
    for line in after.body.splitlines():  # every sample line is `name{labels} number`
        if line and not line.startswith("#"):
            assert math.isfinite(float(line.rpartition(" ")[2])) or line.endswith("Inf"), line


def test_errors_are_counted_by_status_class(invoke, make_event):
    before = invoke(make_event("GET", "/metrics")).body
    invoke(make_event("POST", "/v1/embed", body={"texts": []}))
    after = invoke(make_event("GET", "/metrics")).body

    assert requests_total(after, "embed", "4xx") == requests_total(before, "embed", "4xx") + 1


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nothing-here"), ("POST", "/v2/embed"),
                                              ("GET", "/v1/embed"), ("DELETE", "/health")])
def test_unknown_route_is_404_json(invoke, make_event, method, path):
    response = invoke(make_event(method, path, request_id="r-404"))

    error = assert_error(response, 404, "r-404", "not_found")
    assert path in error["message"]


# -- the model cannot be loaded: the module still imports, and answers 503 ------------

BROKEN_MODEL_SCRIPT = textwrap.dedent("""
    import json
    from ragserve.local.events import LocalContext, rest_event
    from functions.embed.handler import lambda_handler

    def call(method, path, body=None):
        event = rest_event(method, path, headers={"x-api-key": "local-dev-key"},
                           body=None if body is None else json.dumps(body), request_id="r-broken")
        response = lambda_handler(event, LocalContext(function_name="embed"))
        return {"status": response["statusCode"], "body": json.loads(response["body"])}

    print("RESULT " + json.dumps({
        "health": call("GET", "/health"),
        "embed": call("POST", "/v1/embed", {"texts": ["hello"]}),
        "embeddings": call("POST", "/v1/embeddings", {"input": "hello"}),
    }))
""")


def broken_artifacts(artifacts_dir, tmp_path, damage: str):
    copy = tmp_path / "model_artifacts"
    (copy / "all-MiniLM-L6-v2").mkdir(parents=True)
    shutil.copy2(artifacts_dir / "manifest.json", copy / "manifest.json")
    shutil.copy2(artifacts_dir / "all-MiniLM-L6-v2" / "tokenizer.json", copy / "all-MiniLM-L6-v2" / "tokenizer.json")
    model = copy / "all-MiniLM-L6-v2" / "model.onnx"
    if damage == "altered":
        model.write_bytes(flipped((artifacts_dir / "all-MiniLM-L6-v2" / "model.onnx").read_bytes()))
    return copy, model


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_broken_model_still_imports_and_answers_503(artifacts_dir, tmp_path, damage, repo_root):
    copy, model = broken_artifacts(artifacts_dir, tmp_path, damage)
    env = {**os.environ, "RAGSERVE_ARTIFACTS_DIR": str(copy)}

    run = subprocess.run([sys.executable, "-c", BROKEN_MODEL_SCRIPT], cwd=repo_root, env=env,
                         capture_output=True, text=True, timeout=120, check=False)

    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    health = result["health"]
    assert health["status"] == 503
    assert health["body"]["status"] == "unhealthy"
    reason = health["body"]["checks"]["model"]
    assert f"model file {damage}" in reason
    assert str(model) not in reason  # /health needs no key: no server paths in it
    assert str(model) in run.stderr  # the operator's log says which file
    for route in ("embed", "embeddings"):
        assert result[route]["status"] == 503
        error = result[route]["body"]["error"]
        assert error["code"] == "not_ready"
        assert error["request_id"] == "r-broken"
        assert f"model file {damage}" in error["message"]
