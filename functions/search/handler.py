"""Search function: POST /v1/search, GET /v1/collections/{c}.

The model and the default collection are loaded here, at import (Lambda init); the
live version of each collection is re-checked every few seconds and hot-swapped.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve import health
from ragserve.api.access import check_collection_access
from ragserve.api.app import InitResult, create_app, load_model, resolve
from ragserve.api.body import parse_body
from ragserve.api.requests import SearchRequest
from ragserve.cache import build_query_cache
from ragserve.errors import RagserveError
from ragserve.observability.telemetry import Telemetry
from ragserve.search.registry import CollectionRegistry
from ragserve.search.service import search
from ragserve.settings import CacheSettings, SearchSettings
from ragserve.snapshots.format import validate_collection as check_collection_name
from ragserve.stores import open_store

SETTINGS = SearchSettings.from_env()
telemetry = Telemetry("search")
logger, tracer = telemetry.logger, telemetry.tracer
CACHE_SETTINGS = CacheSettings.from_env()
ENCODER = InitResult(lambda: load_model(SETTINGS.encoder, CACHE_SETTINGS, telemetry), telemetry, "model")
QUERY_CACHE = build_query_cache(CACHE_SETTINGS, on_lookup=telemetry.record_cache, logger=logger)


def _open_registry() -> CollectionRegistry:
    encoder = ENCODER.get()
    registry = CollectionRegistry(
        open_store(SETTINGS.store), SETTINGS.store.download_dir, recheck_seconds=SETTINGS.search.recheck_seconds,
        model_id=encoder.model_id, dimensions=encoder.dimensions, log=logger,
        on_swap=lambda loaded, ms: telemetry.record_index_load(loaded.version, ms))
    try:
        registry.get(SETTINGS.search.default_collection)  # at init, so the first search is warm
    except RagserveError as exc:
        logger.info("default collection not loaded at init", extra={"reason": exc.message})
    return registry


REGISTRY = InitResult(_open_registry, telemetry, "collections")
health.register("collections", lambda: REGISTRY.value.health() if REGISTRY.value is not None
                else health.Check("unhealthy", REGISTRY.error or "not loaded"))
health.register_fact("index_version", lambda: _default_version())
if QUERY_CACHE is not None:
    health.register("query_cache", QUERY_CACHE.health)
app = create_app(telemetry)


def _default_version() -> int | None:
    registry = REGISTRY.value
    loaded = registry.loaded().get(SETTINGS.search.default_collection) if registry else None
    return loaded.version if loaded else None


@app.post("/v1/search")
@tracer.capture_method
def handle_post_search() -> Response:
    event = app.current_event.raw_event
    request = parse_body(event, SearchRequest, SETTINGS.limits.max_body_bytes)
    check_collection_access(event, request.collection or SETTINGS.search.default_collection)
    answer = search(REGISTRY.get(), ENCODER.get(), request, limits=SETTINGS.limits, search_limits=SETTINGS.search,
                    query_cache=QUERY_CACHE)
    telemetry.record_search(len(request.query), answer.page.top_score if answer.page else None,
                            answer.index_version)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=answer.body)


@app.get("/v1/collections/<collection>")
@tracer.capture_method
def handle_get_collection(collection: str) -> dict:
    check_collection_access(app.current_event.raw_event, collection)
    return REGISTRY.get().get(check_collection_name(collection)).describe()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, telemetry)
