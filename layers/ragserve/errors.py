"""The domain errors of ragserve. No HTTP here: ``ragserve.api.errors`` maps them to
status codes in one place."""

from __future__ import annotations


class RagserveError(Exception):
    """Base class. ``code`` is the stable machine-readable error code."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(RagserveError):
    """The request is malformed: bad JSON, wrong type, empty text, value out of range."""

    code = "invalid_request"


class PayloadTooLarge(RagserveError):
    """A size limit was exceeded: body, text length, number of texts."""

    code = "payload_too_large"


class NotFound(RagserveError):
    """The named route, model or collection does not exist."""

    code = "not_found"


class Conflict(RagserveError):
    """The request conflicts with another: an Idempotency-Key reused for another body,
    or still in use by a request in progress."""

    code = "conflict"


class Unauthorized(RagserveError):
    """No credentials were given."""

    code = "unauthorized"


class Forbidden(RagserveError):
    """Credentials were given but do not allow this call."""

    code = "forbidden"


class RateLimited(RagserveError):
    """The caller is over its rate limit; ``retry_after`` is in whole seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(RagserveError):
    """The service cannot answer yet, or a dependency is down with no fallback."""

    code = "not_ready"


class ModelArtifactError(RagserveError):
    """A model file is missing, altered, or the manifest does not name the model.

    ``message`` says where and what to do (for logs and the operator); ``summary`` is
    the short reason that may be shown to any caller (no paths, no hashes)."""

    code = "model_unavailable"

    def __init__(self, message: str, *, summary: str) -> None:
        super().__init__(message)
        self.summary = summary
