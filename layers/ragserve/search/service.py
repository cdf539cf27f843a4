"""The search use case: validate, embed the query, search the live collection."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ragserve.api.requests import SearchRequest
from ragserve.cache.queries import QueryCache, query_cache_key
from ragserve.documents import has_visible_text
from ragserve.errors import InvalidInput, PayloadTooLarge
from ragserve.model.encoder import Encoder
from ragserve.search.collection import SearchPage
from ragserve.search.registry import CollectionRegistry
from ragserve.settings import Limits, SearchLimits
from ragserve.snapshots.format import validate_collection as check_collection_name


def validate_search(request: SearchRequest, limits: Limits, search_limits: SearchLimits) -> str:
    """The collection to search, or InvalidInput (400) / PayloadTooLarge (413)."""
    if len(request.query) > limits.max_query_chars:
        raise PayloadTooLarge(f"query has {len(request.query)} characters; the limit is {limits.max_query_chars}",
                              code="query_too_long")
    if not has_visible_text(request.query):
        raise InvalidInput("query is empty or has no visible character", code="empty_query")
    if not 1 <= request.k <= search_limits.max_k:
        raise InvalidInput(f"k must be between 1 and {search_limits.max_k}", code="invalid_k")
    if request.offset < 0:
        raise InvalidInput("offset must not be negative", code="invalid_offset")
    if request.offset > search_limits.max_offset:
        raise InvalidInput(f"offset must be at most {search_limits.max_offset}", code="invalid_offset")
    return check_collection_name(request.collection or search_limits.default_collection)


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    body: str  # the JSON response
    index_version: int
    page: SearchPage | None  # None: served from the query cache


def search(registry: CollectionRegistry, encoder: Encoder, request: SearchRequest, *, limits: Limits,
           search_limits: SearchLimits, query_cache: QueryCache | None = None) -> SearchAnswer:
    """The response body of a search. With a query cache, a repeated search of the same
    index version is answered from it (a new version is a new key space)."""
    name = validate_search(request, limits, search_limits)
    collection = registry.get(name)  # 404 before spending CPU on the query
    key = None
    if query_cache is not None:
        key = query_cache_key(collection=name, index_version=collection.version, query=request.query, k=request.k,
                              offset=request.offset, filter=request.filter, include_text=request.include_text)
        cached = query_cache.get(key)
        if cached is not None:
            return SearchAnswer(cached.decode("utf-8"), collection.version, None)
    query = encoder.embed([request.query])[0]
    page = collection.search(query, k=request.k, offset=request.offset, where=request.filter,
                             include_text=request.include_text)
    body = orjson.dumps({"results": page.results, "index_version": page.index_version,
                         "next_offset": page.next_offset})
    if key is not None:
        query_cache.put(key, body)
    return SearchAnswer(body.decode("utf-8"), collection.version, page)
