"""The sample events in events/: each one, through the function that owns its route, answers the
status code listed in events/expected.json, and the files are what make_events.py
writes (so nobody edits them by hand and lets them drift)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
NOT_EVENTS = {"expected.json"}
EVENT_FILES = sorted(p.name for p in EVENTS_DIR.glob("*.json") if p.name not in NOT_EVENTS)


@pytest.fixture(scope="module")
def expected() -> dict[str, int]:
    return json.loads((EVENTS_DIR / "expected.json").read_text(encoding="utf-8"))


def load_make_events():
    spec = importlib.util.spec_from_file_location("make_events", EVENTS_DIR / "make_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_event_file_is_listed_in_expected_and_vice_versa(expected):
    assert EVENT_FILES, "no sample events found"
    assert sorted(expected) == EVENT_FILES


def test_files_are_what_make_events_writes():
    written = load_make_events().rendered_files()

    assert sorted(written) == sorted(EVENT_FILES + ["expected.json"])
    stale = [name for name, content in written.items()
             if (EVENTS_DIR / name).read_text(encoding="utf-8") != content]
    assert not stale, f"run `python events/make_events.py`: stale {stale}"


@pytest.mark.parametrize("name", EVENT_FILES)
def test_event_answers_the_expected_status(invoke_route, seeded_default_collection, expected, name):
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))

    response = invoke_route(event)

    assert response.status == expected[name], response.body
    assert response.status < 500
    request_id = event["requestContext"]["requestId"]
    assert request_id.startswith("evt-")
    if response.status >= 400:
        assert set(response.body) == {"error"}
        assert response.body["error"]["request_id"] == request_id
        assert response.body["error"]["code"] and response.body["error"]["message"]
    elif event["path"].startswith("/v1/embed"):
        assert response.content_type.startswith("application/json")
        assert response.body["model"] == "all-MiniLM-L6-v2"
    elif event["path"].startswith("/v1/"):
        assert response.content_type.startswith("application/json")


KEYLESS = {"apigw_health_get.json", "apigw_openapi_get.json"}  # the routes with scope None


@pytest.mark.parametrize("name", [n for n in EVENT_FILES if n not in KEYLESS])
def test_keyed_routes_carry_the_local_api_key(name):
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))

    assert event["headers"]["x-api-key"] == "local-dev-key"
    assert event["requestContext"]["identity"]["apiKey"] == "local-dev-key"
    assert event["requestContext"]["requestTimeEpoch"] == 1_767_225_600_000
    if event["httpMethod"] == "POST":
        assert event["headers"]["content-type"] == "application/json"
