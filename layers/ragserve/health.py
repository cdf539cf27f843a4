"""Health checks: each function's init registers what it depends on; /health reports
them all. In Lambda a process holds one function; locally it holds every function, so
the local /health covers the whole service."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Status = Literal["healthy", "degraded", "unhealthy"]
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    detail: str = "ok"  # short, safe to show to any caller: no paths, no secrets


_checks: dict[str, Callable[[], Check]] = {}
_facts: dict[str, Callable[[], object]] = {}
_lock = threading.Lock()


def register(name: str, check: Callable[[], Check]) -> None:
    with _lock:
        _checks[name] = check


def registered() -> dict[str, Callable[[], Check]]:
    """The checks registered so far, by name (a copy)."""
    with _lock:
        return dict(_checks)


def register_fact(name: str, value: Callable[[], object]) -> None:
    """A top-level field of the report (``model``, ``index_version``)."""
    with _lock:
        _facts[name] = value


def report() -> dict:
    """``{"status", <facts>..., "checks": {name: detail}}``; the worst check decides."""
    with _lock:
        checks, facts = dict(_checks), dict(_facts)
    results: dict[str, Check] = {}
    for name, check in sorted(checks.items()):
        try:
            results[name] = check()
        except Exception as exc:  # noqa: BLE001 - a failing check is a finding, not a 500
            results[name] = Check("unhealthy", f"check failed: {type(exc).__name__}")
    status: Status = max((r.status for r in results.values()), key=_RANK.__getitem__, default="healthy")
    body: dict = {"status": status, "model": None, "index_version": None}  # docs/ARCHITECTURE.md section 3
    for name, value in sorted(facts.items()):
        body[name] = value()
    body["checks"] = {name: r.detail for name, r in results.items()}
    return body


def http_status(body: dict) -> int:
    return 503 if body["status"] == "unhealthy" else 200
