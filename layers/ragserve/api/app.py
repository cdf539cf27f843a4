"""The resolver every function uses: orjson serialisation, domain errors mapped to the
JSON error shape, no stack trace ever returned, and request metrics around each call."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import orjson
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from ragserve import health
from ragserve.api.errors import error_body, headers_of, status_of
from ragserve.errors import ModelArtifactError, NotReady, RagserveError
from ragserve.observability.telemetry import Telemetry
from ragserve.routes import operation_of
from ragserve.settings import CacheSettings, EncoderSettings

T = TypeVar("T")
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def serialize(value: Any) -> str:
    return orjson.dumps(value, option=_ORJSON_OPTIONS).decode("utf-8")


class InitResult(Generic[T]):
    """What a function loaded at init, or why it could not: the module still imports,
    /health reports the failure, and routes that need it answer 503."""

    def __init__(self, load: Callable[[], T], telemetry: Telemetry, what: str) -> None:
        self.value: T | None = None
        self.error: str | None = None  # short, safe to show to any caller
        try:
            self.value = load()
        except ModelArtifactError as exc:
            self.error = f"{exc.summary} (see the function's log)"
            telemetry.logger.error(f"{what} failed to load", extra={"error": exc.message, "code": exc.code})
        except NotReady as exc:  # something it needs failed first, and was logged then: no traceback
            self.error = exc.message.removeprefix("service not ready: ")
            telemetry.logger.error(f"{what} failed to load", extra={"error": exc.message, "code": exc.code})
        except Exception as exc:
            self.error = f"{what} failed to load: {type(exc).__name__} (see the function's log)"
            telemetry.logger.exception(f"{what} failed to load")

    def get(self) -> T:
        if self.value is None:
            raise NotReady(f"service not ready: {self.error}", code="not_ready")
        return self.value


def load_model(encoder_settings: EncoderSettings, cache_settings: CacheSettings, telemetry: Telemetry):
    """A function's model at init: loaded, verified, warmed up, with the embedding cache
    in front; its init time recorded and logged."""
    from ragserve.cache import CachingEncoder, build_embedding_cache
    from ragserve.model.encoder import load_encoder

    encoder = load_encoder(settings=encoder_settings)
    telemetry.record_model_init(encoder.init_ms, encoder.dimensions)
    telemetry.logger.info("model loaded", extra={"model": encoder.model_id, "variant": encoder.spec.variant,
                                                 "threads": encoder.threads, "init_ms": round(encoder.init_ms, 1)})
    return CachingEncoder(encoder, build_embedding_cache(cache_settings, logger=telemetry.logger),
                          on_lookup=telemetry.record_cache)


def _per_thread(name: str, default: Callable[[], Any] | None = None) -> property:
    def get(self: Any) -> Any:
        if default is not None and not hasattr(self._per_thread, name):
            setattr(self._per_thread, name, default())
        return getattr(self._per_thread, name)

    def set_(self: Any, value: Any) -> None:
        setattr(self._per_thread, name, value)

    return property(get, set_)


class ThreadSafeRestResolver(APIGatewayRestResolver):
    """Powertools' REST resolver with the request being resolved kept per thread.

    Powertools keeps the current event in class attributes of ``BaseRouter`` (shared by
    every resolver in the process) and the matched route in ``self.context``. That holds in
    Lambda, one event at a time per environment, but not in `ragserve serve`, where every
    function runs in one process and requests are resolved on many threads at once: a
    route could read another request's event (concurrent writes were queued under another
    request's job id and then dropped as its duplicates). Routes also get their path
    parameters decoded, as API Gateway's ``pathParameters`` are."""

    current_event = _per_thread("current_event")
    lambda_context = _per_thread("lambda_context")
    context = _per_thread("context", dict)
    processed_stack_frames = _per_thread("processed_stack_frames", list)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._per_thread = threading.local()
        super().__init__(*args, **kwargs)

    def resolve(self, event: Any, context: Any) -> dict[str, Any]:
        self.current_event = self._to_proxy_event(event)
        self.lambda_context = context
        return super().resolve(event, context)

    def _convert_matches_into_route_keys(self, match: re.Match) -> dict[str, str]:
        # Powertools matches routes on ``event.path``, which API Gateway (REST) passes as
        # sent, percent-encoded; the routes get the decoded values, like ``pathParameters``.
        return {name: unquote(value) for name, value in match.groupdict().items()}


def create_app(telemetry: Telemetry) -> APIGatewayRestResolver:
    app = ThreadSafeRestResolver(serializer=serialize)

    def request_id() -> str:
        return app.current_event.request_context.request_id or ""

    @app.exception_handler(RagserveError)
    def handle_domain_error(error: RagserveError) -> Response:
        status = status_of(error)
        log = telemetry.logger.warning if status < 500 else telemetry.logger.error
        log("request failed", extra={"status": status, "code": error.code, "reason": error.message})
        return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                        body=error_body(error.code, error.message, request_id()), headers=headers_of(error))

    @app.not_found
    def handle_not_found(_: NotFoundError) -> Response:
        event = app.current_event
        return Response(status_code=404, content_type=content_types.APPLICATION_JSON,
                        body=error_body("not_found", f"no route for {event.http_method} {event.path}",
                                        request_id()))

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        telemetry.logger.exception("unhandled error", extra={"error_type": type(error).__name__})
        return Response(status_code=500, content_type=content_types.APPLICATION_JSON,
                        body=error_body("internal_error", "internal error; see the logs for this request id",
                                        request_id()))

    return app


def health_response() -> Response:
    """GET /health: every check the functions in this process registered; 503 when unhealthy."""
    body = health.report()
    return Response(status_code=health.http_status(body), content_type=content_types.APPLICATION_JSON, body=body)


def resolve(app: APIGatewayRestResolver, event: dict, context: Any, telemetry: Telemetry) -> dict:
    """``app.resolve`` with the request's latency, count and error class recorded."""
    with telemetry.invocation():
        started = time.perf_counter()
        response = app.resolve(event, context)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        operation = operation_of(event.get("httpMethod", ""), event.get("resource", ""))
        telemetry.record_request(operation, int(response["statusCode"]), elapsed_ms)
    return response
