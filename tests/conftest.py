"""Shared fixtures: paths, the real encoder, the golden data, and a way to put one API
Gateway event through the embed function's ``lambda_handler``."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings as hypothesis_settings

from ragserve.settings import Env

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
ARTIFACTS_DIR = REPO_ROOT / "model_artifacts"
EVENTS_DIR = REPO_ROOT / "events"
API_KEY = "local-dev-key"

# Hermetic: the developer's RAGSERVE_* variables must not change what the tests load
# (this runs before any test module imports the handler, which reads them at import).
for _name in [v for k, v in vars(Env).items() if k.isupper()]:
    os.environ.pop(_name, None)
# Handlers imported in this process keep their collections and queue here, never in
# the repo's ./.ragserve.
# One directory per session, even when a test module imports this file again as
# `tests.conftest` (a second module object: without this it would make a second
# directory and point every handler imported afterwards at it).
SESSION_DATA_DIR = Path(os.environ.get("RAGSERVE_TESTS_SESSION_DIR") or tempfile.mkdtemp(prefix="ragserve-tests-"))
os.environ["RAGSERVE_TESTS_SESSION_DIR"] = str(SESSION_DATA_DIR)
os.environ[Env.DATA_DIR] = str(SESSION_DATA_DIR)
os.environ[Env.RECHECK_SECONDS] = "0"

# Property tests explore new inputs on every local run; CI (CI=true) replays a fixed
# sequence, so a submission's result does not depend on the draw. What a local run finds
# becomes a fix and, where it matters, an explicit example.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def encoder():
    """The default model (int8), loaded once, exactly as the embed function loads it."""
    import ragserve

    return ragserve.load_encoder()


@pytest.fixture(scope="session")
def golden_texts() -> list[str]:
    return json.loads((DATA_DIR / "golden_texts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def golden_vectors(golden_texts) -> np.ndarray:
    """PyTorch reference embeddings (L2-normalised), one row per golden text."""
    vectors = np.load(DATA_DIR / "golden_vectors.npy")
    assert vectors.shape == (len(golden_texts), 384)
    return vectors


@dataclass(frozen=True)
class Invocation:
    """What the handler answered: status, headers (lower-case names), the raw response,
    and the body parsed as JSON when the answer is JSON (else the body text)."""

    status: int
    headers: dict[str, str]
    body: Any
    raw: dict

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def invoke_handler(event: dict, function: str = "embed") -> Invocation:
    import importlib

    from ragserve.local.events import LocalContext

    handler = importlib.import_module(f"functions.{function}.handler").lambda_handler
    response = handler(event, LocalContext(function_name=function))
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), ",".join(values))
    body = response.get("body")
    if headers.get("content-type", "").startswith("application/json"):
        body = json.loads(body)
    return Invocation(int(response["statusCode"]), headers, body, response)


@pytest.fixture(scope="session")
def invoke():
    """``invoke(event) -> Invocation``: one event through the embed function."""
    return invoke_handler


def invoke_routed(event: dict) -> Invocation:
    """Through the function that owns the event's route (as API Gateway routes it)."""
    from ragserve.routes import find_route

    found = find_route(event["httpMethod"], event["path"])
    return invoke_handler(event, found[0].function if found else "embed")


@pytest.fixture(scope="session")
def invoke_route():
    """``invoke_route(event) -> Invocation``: one event through the function owning its route."""
    return invoke_routed


SEED_DOCUMENTS = [
    ("pw-1", "To reset your password, open Settings, choose Security and follow the link we email you.", "account"),
    ("pw-2", "Forgotten passwords can be changed from the sign-in page with the 'forgot password' link.", "account"),
    ("bill-1", "Invoices are sent on the first day of each month and can be paid by card.", "billing"),
    ("search-1", "A vector index answers nearest-neighbour queries over embeddings.", "search"),
    ("search-2", "HNSW graphs give fast approximate search with high recall.", "search"),
    ("search-3", "Exact re-scoring of candidates fixes the recall lost by quantised indexes.", "search"),
    ("cloud-1", "Serverless functions scale to zero when nobody calls them.", "cloud"),
    ("cloud-2", "Provisioned concurrency keeps Lambda environments warm.", "cloud"),
    ("cloud-3", "Cold starts are the time a new function instance needs before it can answer.", "cloud"),
    ("food-1", "Add two cups of flour and stir until the batter is smooth.", "cooking"),
]


@pytest.fixture(scope="session")
def seeded_default_collection(encoder):
    """A small "default" collection in the session data dir (where handlers look)."""
    from ragserve.documents import Document
    from ragserve.ingest.jobs import IngestJob
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.settings import IndexSettings
    from ragserve.snapshots.local import LocalSnapshotStore

    store = LocalSnapshotStore(SESSION_DATA_DIR)
    if store.current("default") is None:
        docs = tuple(Document(i, text, {"topic": topic}) for i, text, topic in SEED_DOCUMENTS)
        CollectionWriter(store, encoder, IndexSettings(), SESSION_DATA_DIR / "scratch").apply(
            "default", [IngestJob("seed", 0, "default", docs)])
    return store


@pytest.fixture(scope="session")
def make_event():
    """``make_event(method, path, body=..., request_id=...)``: a REST proxy event as the
    local gateway builds it, with the API key and (for a body) a JSON content type."""
    from ragserve.local.events import rest_event

    def build(method: str, path: str, *, body: object = None, request_id: str = "test-request",
              headers: dict[str, str] | None = None) -> dict:
        all_headers = {"x-api-key": API_KEY}
        if body is not None:
            all_headers["content-type"] = "application/json"
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body)
        all_headers.update(headers or {})
        return rest_event(method, path, headers=all_headers, body=body, api_key=API_KEY, request_id=request_id)

    return build
