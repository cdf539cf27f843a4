"""Model faults over HTTP: a `ragserve serve` whose model file is altered or missing
reports unhealthy and refuses embedding with a clear 503, and any write it accepted
meanwhile lands once the model is repaired and the server restarted: nothing lost."""

from __future__ import annotations

import shutil

import pytest
from test_embed_handler import broken_artifacts
from test_serve_collections import WRITE_KEY, Server, assert_exactly_once, documents

from ragserve.snapshots.local import LocalSnapshotStore


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_writes_accepted_while_the_model_is_broken_land_once_it_is_repaired(artifacts_dir, tmp_path, damage):
    broken, model = broken_artifacts(artifacts_dir, tmp_path, damage)
    data_dir = tmp_path / "data"
    env = {"RAGSERVE_ARTIFACTS_DIR": str(broken)}
    server = Server(data_dir, demo=False, extra_env=env, ready_status=503)
    try:
        # GIVEN a server whose model is broken: unhealthy, and embedding refused with the reason
        status, health = server.request("GET", "/health", key="")
        assert status == 503 and health["status"] == "unhealthy"
        assert f"model file {damage}" in health["checks"]["model"]
        status, body = server.request("POST", "/v1/embed", {"texts": ["hello"]})
        assert status == 503 and body["error"]["code"] == "not_ready"
        assert f"model file {damage}" in body["error"]["message"]

        # WHEN writes come in, each is either accepted (202) or refused with a clear JSON 503
        accepted: set[str] = set()
        for batch in range(3):
            docs = documents(f"b{batch}-", 2)
            status, body = server.request("POST", "/v1/collections/notes/documents", {"documents": docs},
                                          key=WRITE_KEY)
            assert status in (202, 503), body
            if status == 202:
                accepted |= {d["id"] for d in docs}
            else:
                assert body["error"]["code"] and body["error"]["request_id"]
        assert accepted, "the queue does not need the model: writes are accepted and wait for the writer"
    finally:
        server.stop()
    assert "Traceback" not in server.read_log()  # the failure is logged once, with its reason

    # THEN, with the model repaired and the server restarted on the same data, every accepted write lands
    shutil.copy2(artifacts_dir / model.parent.name / model.name, model)
    repaired = Server(data_dir, demo=False, extra_env=env)
    try:
        repaired.wait_for_documents("notes", len(accepted), timeout=60)
        assert_exactly_once(LocalSnapshotStore(data_dir), "notes", accepted=accepted)
        status, body = repaired.request("POST", "/v1/embed", {"texts": ["hello"]})
        assert status == 200 and len(body["embeddings"]) == 1
    finally:
        repaired.stop()
