"""The OpenAPI 3.1 document of the API, generated from the one routes table
(``ragserve.routes.ROUTES``), the request models (``ragserve.api.requests``), the
response models (``ragserve.api.responses``) and the limits in the settings: nothing
about a route is written twice.

``docs/openapi.json`` is this document with the default settings (``ragserve
openapi`` writes it; a test keeps it current); GET /v1/openapi.json serves it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import ragserve
from ragserve.api.requests import DocumentsRequest, EmbedRequest, OpenAIEmbeddingsRequest, SearchRequest
from ragserve.api.responses import (
    AcceptedResponse,
    CollectionInfo,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    OpenAIEmbeddingsResponse,
    SearchResponse,
)
from ragserve.documents import ID_PATTERN, MAX_ID_CHARS, MAX_METADATA_BYTES
from ragserve.observability.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from ragserve.routes import ROUTES, Route
from ragserve.settings import IngestSettings, Limits, SearchLimits
from ragserve.snapshots.format import COLLECTION_NAME

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "apiKey"
API_KEY_HEADER = "x-api-key"
NON_BLANK = r"\S"  # at least one character that is not whitespace
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class OperationDoc:
    """What the routes table does not say about an operation."""

    summary: str
    status: int  # of success
    response: type[BaseModel] | None  # JSON body of success; None: ``media_type`` below
    request: type[BaseModel] | None = None
    media_type: str = "application/json"
    errors: tuple[int, ...] = ()  # statuses beyond those the route's shape implies
    idempotency_key: bool = False
    description: str = ""
    same_body: tuple[int, ...] = ()  # other statuses answered with the success body


OPERATIONS: dict[str, OperationDoc] = {  # by Route.operation
    "embed": OperationDoc("Embed texts", 200, EmbedResponse, EmbedRequest),
    "embeddings": OperationDoc("Embed texts (OpenAI shape)", 200, OpenAIEmbeddingsResponse, OpenAIEmbeddingsRequest,
                               errors=(404,), description="404 `model_not_found`: `model` is not served here."),
    "search": OperationDoc("Semantic search in a collection", 200, SearchResponse, SearchRequest, errors=(404,),
                           description="404 `collection_not_found`: the collection has no live version."),
    "describe_collection": OperationDoc("Describe a collection's live version", 200, CollectionInfo),
    "ingest": OperationDoc("Add or replace documents", 202, AcceptedResponse, DocumentsRequest, errors=(409,),
                           idempotency_key=True,
                           description="Accepted once durable in the queue; the single writer of the collection "
                                       f"applies it shortly. Metadata is at most {MAX_METADATA_BYTES} bytes of JSON "
                                       "per document."),
    "delete_document": OperationDoc("Delete a document", 202, AcceptedResponse, errors=(409,), idempotency_key=True),
    "health": OperationDoc("Health of the service and its dependencies", 200, HealthResponse, same_body=(503,),
                           description="503 with the same body when unhealthy."),
    "metrics": OperationDoc("Metrics (Prometheus text exposition)", 200, None,
                            media_type=PROMETHEUS_CONTENT_TYPE.split(";")[0]),
    "openapi": OperationDoc("This OpenAPI document", 200, None),
}

ERROR_DESCRIPTIONS = {
    400: "Malformed request: invalid JSON or UTF-8, wrong type, unknown field, an empty text (no visible "
         "character), a value out of range (metadata and filter numbers: within 2^53 - 1), an invalid collection "
         "name or document id",
    401: "No `x-api-key` header",
    403: "Unknown key, a read key on a write route, or a collection the key may not use",
    404: "No such route, collection or model",
    405: "This method is not allowed on this path",
    409: "The Idempotency-Key was used for another request (another route, document id or body), or a request "
         "with it is still in progress",
    413: "A limit was exceeded: body size, number of texts or documents, text or query length",
    429: "Over the key's rate limit: retry after `Retry-After` seconds",
    503: "Not ready (model or index not loaded), or a dependency is down with no fallback",
}


def _path_parameter_schemas() -> dict[str, dict[str, Any]]:
    return {
        "c": {"type": "string", "pattern": f"^{COLLECTION_NAME.pattern}$",
              "description": "collection: 1-63 lower-case letters, digits, '-' or '_', starting with a letter "
                             "or digit"},
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
               "pattern": ID_PATTERN,
               "description": "document id: printable, not only whitespace"},
    }


def _limited_properties(limits: Limits, search: SearchLimits, max_documents: int) -> dict[str, dict[str, dict]]:
    """The limits of docs/ARCHITECTURE.md section 3, from the settings: model -> field -> schema.
    Exceeding a size limit answers 413, any other violation 400."""
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars, "pattern": NON_BLANK}
    texts = {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_texts}
    collection = _path_parameter_schemas()["c"]
    return {
        "EmbedRequest": {"texts": texts},
        "OpenAIEmbeddingsRequest": {"input": {"anyOf": [text, texts]}},
        "SearchRequest": {
            "query": {"type": "string", "minLength": 1, "maxLength": limits.max_query_chars, "pattern": NON_BLANK},
            "k": {"type": "integer", "minimum": 1, "maximum": search.max_k},
            "offset": {"type": "integer", "minimum": 0, "maximum": search.max_offset},
            "collection": {"anyOf": [{"type": "string", "pattern": collection["pattern"]}, {"type": "null"}],
                           "description": f"null: {search.default_collection!r}"},
        },
        "DocumentIn": {"id": _path_parameter_schemas()["id"], "text": text},
        "DocumentsRequest": {"documents": {"type": "array", "items": {"$ref": _REF.format(model="DocumentIn")},
                                           "minItems": 1, "maxItems": max_documents}},
    }


def _component_schemas(limits: Limits, search: SearchLimits, max_documents: int) -> dict[str, dict]:
    models: list[tuple[type[BaseModel], str]] = [(ErrorResponse, "serialization")]
    for doc in OPERATIONS.values():
        if doc.request is not None:
            models.append((doc.request, "validation"))
        if doc.response is not None:
            models.append((doc.response, "serialization"))
    _, top = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    schemas = dict(sorted(top["$defs"].items()))
    for model, fields in _limited_properties(limits, search, max_documents).items():
        properties = schemas[model]["properties"]
        for name, schema in fields.items():
            kept = {k: v for k, v in properties[name].items() if k in ("title", "default")}
            properties[name] = {**kept, **schema}
    return schemas


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": _REF.format(model=model.__name__)}


def _error_statuses(route: Route, doc: OperationDoc) -> list[int]:
    statuses = set(doc.errors) | {503}
    if route.scope is not None:
        statuses |= {401, 403, 429}
    if doc.request is not None:
        statuses |= {400, 413}
    if _PATH_PARAMETER.search(route.resource):  # a bad name; a segment that no longer matches the route
        statuses |= {400, 404, 405}
    return sorted(statuses)


def _responses(route: Route, doc: OperationDoc) -> dict[str, dict]:
    if doc.response is not None:
        success = _json(_ref(doc.response))
    elif doc.media_type == "application/json":
        success = _json({"type": "object"})
    else:
        success = {doc.media_type: {"schema": {"type": "string"}}}
    responses = {str(doc.status): {"description": doc.summary, "content": success}}
    for status in _error_statuses(route, doc):
        if status in doc.same_body:
            responses[str(status)] = {"description": doc.description or doc.summary, "content": success}
            continue
        response: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[status], "content": _json(_ref(ErrorResponse))}
        if status == 429:
            response["headers"] = {"Retry-After": {"required": True, "description": "seconds to wait",
                                                   "schema": {"type": "integer", "minimum": 1}}}
        responses[str(status)] = response
    return responses


def _operation(route: Route, doc: OperationDoc) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_parameter_schemas()[name]}
        for name in _PATH_PARAMETER.findall(route.resource)
    ]
    if doc.idempotency_key:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "description": "a replay of the same request (route, document id and body) with "
                                          "the same key gets the first answer and makes no second job; the same "
                                          "key for another request is 409; after 24 hours the key is free again",
                           "schema": {"type": "string"}})
    operation: dict[str, Any] = {
        "operationId": route.operation,
        "summary": doc.summary,
        "tags": [route.function],
        "security": [{SECURITY_SCHEME: []}] if route.scope is not None else [],
    }
    description = (f"Scope: {route.scope}." if route.scope else "No key needed.") + \
        (f" {doc.description}" if doc.description else "")
    operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if doc.request is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(doc.request))}
    operation["responses"] = _responses(route, doc)
    return operation


def build_openapi(limits: Limits | None = None, search: SearchLimits | None = None, max_documents: int | None = None,
                  routes: Sequence[Route] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (KeyError: a route without an OperationDoc)."""
    limits = limits or Limits()
    search = search or SearchLimits()
    if max_documents is None:
        max_documents = IngestSettings.model_fields["max_documents"].default
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.resource, {})[route.method.lower()] = _operation(route, OPERATIONS[route.operation])
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ragserve",
            "version": ragserve.__version__,
            "description": "Embeddings and semantic search. Errors are always "
                           '`{"error": {"code", "message", "request_id"}}`. '
                           f"Request bodies are at most {limits.max_body_bytes} bytes (413).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                                                  "description": "read or write scope; write includes read"}},
            "schemas": _component_schemas(limits, search, max_documents),
        },
    }


def render_openapi(document: dict[str, Any] | None = None) -> str:
    """The document as committed in ``docs/openapi.json`` (default settings unless given)."""
    import json

    return json.dumps(build_openapi() if document is None else document, indent=2, ensure_ascii=False) + "\n"
