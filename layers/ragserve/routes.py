"""The API's routes and the function that owns each: one table, read by the local
gateway (and by the CDK stack), so that local routing is API Gateway's routing."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

Scope = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    resource: str  # API Gateway resource path, e.g. /v1/collections/{c}
    function: str  # folder under functions/
    operation: str  # metric dimension Operation
    scope: Scope | None  # None: no key needed

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters if ``method path`` is this route, else None."""
        if method != self.method:
            return None
        found = _pattern(self.resource).fullmatch(path)
        return None if found is None else found.groupdict()


@functools.cache
def _pattern(resource: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource)))


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/embed", "embed", "embed", "read"),
    Route("POST", "/v1/embeddings", "embed", "embeddings", "read"),
    Route("POST", "/v1/search", "search", "search", "read"),
    Route("GET", "/v1/collections/{c}", "search", "describe_collection", "read"),
    Route("POST", "/v1/collections/{c}/documents", "ingest", "ingest", "write"),
    Route("DELETE", "/v1/collections/{c}/documents/{id}", "ingest", "delete_document", "write"),
    Route("GET", "/health", "ops", "health", None),
    Route("GET", "/metrics", "ops", "metrics", "read"),
    Route("GET", "/v1/openapi.json", "ops", "openapi", None),
)


def find_route(method: str, path: str, routes: tuple[Route, ...] = ROUTES) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None


def path_exists(path: str, routes: tuple[Route, ...] = ROUTES) -> bool:
    """Whether any method serves ``path`` (to tell 405 from 404)."""
    return any(_pattern(r.resource).fullmatch(path) for r in routes)


def operation_of(method: str, resource: str) -> str:
    for route in ROUTES:
        if route.method == method and route.resource == resource:
            return route.operation
    return "unknown"


def functions() -> list[str]:
    return sorted({r.function for r in ROUTES})
