"""The local server's structured logger (JSON lines on stderr, like the functions')."""

from __future__ import annotations

import functools
import sys

from aws_lambda_powertools import Logger


@functools.cache
def local_logger() -> Logger:
    return Logger(service="ragserve-local", stream=sys.stderr)
