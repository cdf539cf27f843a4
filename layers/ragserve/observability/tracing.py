"""Powertools Tracer, without the X-Ray SDK's import cost where tracing is off.

Powertools imports ``aws_xray_sdk.core`` (and botocore with it, ~200 ms) even when
tracing is disabled. Outside Lambda, or with POWERTOOLS_TRACE_DISABLED, the Tracer is
given a provider that records nothing, so local init stays fast; in Lambda the real
X-Ray provider is used.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment


class _NullSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None: ...
    def add_subsegment(self, subsegment: Any) -> None: ...
    def remove_subsegment(self, subsegment: Any) -> None: ...
    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None: ...


class _NullProvider(BaseProvider):
    @contextlib.contextmanager
    def in_subsegment(self, name=None, **kwargs):
        yield _NullSegment()

    @contextlib.asynccontextmanager
    async def in_subsegment_async(self, name=None, **kwargs):
        yield _NullSegment()

    def put_annotation(self, key: str, value: Any) -> None: ...
    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None: ...
    def patch(self, modules) -> None: ...
    def patch_all(self) -> None: ...


def tracing_enabled() -> bool:
    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not os.environ.get("AWS_SAM_LOCAL")
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes", "on")
    return in_lambda and not disabled


def make_tracer(service: str) -> Tracer:
    if tracing_enabled():
        return Tracer(service=service)
    return Tracer(service=service, disabled=True, auto_patch=False, provider=_NullProvider())
