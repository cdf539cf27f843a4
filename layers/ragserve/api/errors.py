"""Domain errors to HTTP: the one place that knows status codes."""

from __future__ import annotations

from http import HTTPStatus

from ragserve.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelArtifactError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RagserveError,
    RateLimited,
    Unauthorized,
)

STATUS: dict[type[RagserveError], HTTPStatus] = {
    InvalidInput: HTTPStatus.BAD_REQUEST,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    NotFound: HTTPStatus.NOT_FOUND,
    Conflict: HTTPStatus.CONFLICT,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    Forbidden: HTTPStatus.FORBIDDEN,
    RateLimited: HTTPStatus.TOO_MANY_REQUESTS,
    NotReady: HTTPStatus.SERVICE_UNAVAILABLE,
    ModelArtifactError: HTTPStatus.SERVICE_UNAVAILABLE,
}


def status_of(error: RagserveError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return int(STATUS[cls])
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)


def headers_of(error: RagserveError) -> dict[str, str]:
    if isinstance(error, RateLimited):
        return {"Retry-After": str(error.retry_after)}
    return {}


def error_body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id or ""}}
