"""Read a proxy event's body: size, base64, UTF-8, JSON and the request model, each
failure a domain error with a message that says what was wrong."""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from ragserve.documents import shorten
from ragserve.errors import InvalidInput, PayloadTooLarge

Model = TypeVar("Model", bound=BaseModel)


def raw_body(event: dict, max_bytes: int) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        if len(body) > (max_bytes * 4) // 3 + 4:
            raise PayloadTooLarge(f"request body is over {max_bytes} bytes", code="body_too_large")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("request body is marked base64 but is not valid base64",
                               code="invalid_body") from None
    else:
        data = body.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(data)} bytes; the limit is {max_bytes}",
                              code="body_too_large")
    return data


def parse_json(event: dict, max_bytes: int) -> object:
    data = raw_body(event, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not valid UTF-8 (byte {exc.start})", code="invalid_utf8") from None
    if not text.strip():
        raise InvalidInput("request body is empty; a JSON object is required", code="invalid_json")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", code="invalid_json") from None


def parse_body(event: dict, model: type[Model], max_bytes: int) -> Model:
    """The body of ``event`` as ``model``; InvalidInput / PayloadTooLarge otherwise."""
    payload = parse_json(event, max_bytes)
    if not isinstance(payload, dict):
        raise InvalidInput(f"request body must be a JSON object, not {type(payload).__name__}",
                           code="invalid_request")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(describe(exc), code="invalid_request") from None


def describe(exc: ValidationError) -> str:
    """A short, user-facing summary of pydantic errors (no Python internals; field names
    the caller chose, such as metadata keys, cut to their first characters)."""
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(shorten(str(p)) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
