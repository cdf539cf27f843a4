"""Embed function: POST /v1/embed, POST /v1/embeddings (OpenAI), GET /health, GET /metrics.

The model is loaded here, at import (Lambda init), never per request.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve import health
from ragserve.api.app import InitResult, create_app, health_response, load_model, resolve
from ragserve.api.body import parse_body
from ragserve.api.requests import EmbedRequest, OpenAIEmbeddingsRequest
from ragserve.embedding.service import embed_texts
from ragserve.errors import InvalidInput, NotFound
from ragserve.observability.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from ragserve.observability.telemetry import Telemetry, render_prometheus
from ragserve.settings import CacheSettings, EmbedSettings

SETTINGS = EmbedSettings.from_env()
telemetry = Telemetry("embed")
logger, tracer = telemetry.logger, telemetry.tracer
CACHE_SETTINGS = CacheSettings.from_env()
ENCODER = InitResult(lambda: load_model(SETTINGS.encoder, CACHE_SETTINGS, telemetry), telemetry, "model")
health.register("model", lambda: health.Check("healthy") if ENCODER.value is not None
                else health.Check("unhealthy", ENCODER.error or "not loaded"))
health.register_fact("model", lambda: ENCODER.value.model_id if ENCODER.value is not None else None)
health.register("embedding_cache", lambda: ENCODER.value.health() if ENCODER.value is not None
                else health.Check("healthy", "off"))
app = create_app(telemetry)


@app.post("/v1/embed")
@tracer.capture_method
def handle_post_embed() -> dict:
    request = parse_body(app.current_event.raw_event, EmbedRequest, SETTINGS.limits.max_body_bytes)
    result = embed_texts(ENCODER.get(), request.texts, limits=SETTINGS.limits,
                         normalize=request.normalize, encoding=request.encoding)
    telemetry.record_embedding(result.count, result.tokens, result.truncated, result.dimensions)
    return {
        "model": result.model,
        "dimensions": result.dimensions,
        "encoding": request.encoding,
        "embeddings": result.embeddings,
        "usage": {"tokens": result.tokens, "truncated": result.truncated},
    }


@app.post("/v1/embeddings")
@tracer.capture_method
def handle_post_embeddings() -> dict:
    request = parse_body(app.current_event.raw_event, OpenAIEmbeddingsRequest, SETTINGS.limits.max_body_bytes)
    encoder = ENCODER.get()
    if request.model is not None and request.model not in encoder.spec.aliases:
        raise NotFound(f"model {request.model!r} is not served here; use {encoder.model_id!r}",
                       code="model_not_found")
    if request.dimensions is not None and request.dimensions != encoder.dimensions:
        raise InvalidInput(f"dimensions must be {encoder.dimensions} for {encoder.model_id}",
                           code="invalid_dimensions")
    result = embed_texts(encoder, request.texts, limits=SETTINGS.limits, encoding=request.encoding_format)
    telemetry.record_embedding(result.count, result.tokens, result.truncated, result.dimensions)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector}
                 for i, vector in enumerate(result.embeddings)],
        "model": result.model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }


@app.get("/health")
def handle_get_health() -> Response:
    return health_response()


@app.get("/metrics")
def handle_get_metrics() -> Response:
    return Response(status_code=200, content_type=PROMETHEUS_CONTENT_TYPE, body=render_prometheus())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, telemetry)
