"""A search instance on S3 downloads only the segments it lacks (cached by sha256) and
drops the cached blobs the live version no longer references, so its disk holds one
version's worth, not every version it has seen (moto in server mode)."""

from __future__ import annotations

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.search.registry import CollectionRegistry
from ragserve.segments.compactor import Compactor
from ragserve.segments.policy import MergePolicy
from ragserve.settings import IndexSettings
from ragserve.snapshots.s3 import S3SnapshotStore
from tests.integration.conftest import aws_client


def test_reader_cache_follows_the_live_version(moto_server, s3_bucket, encoder, tmp_path):
    store = S3SnapshotStore(s3_bucket, "cache/", client=aws_client("s3", moto_server))
    writer = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "writer")
    reader = CollectionRegistry(S3SnapshotStore(s3_bucket, "cache/", client=aws_client("s3", moto_server)),
                                tmp_path / "reader", recheck_seconds=0, model_id=encoder.model_id,
                                dimensions=encoder.dimensions)
    cached = tmp_path / "reader" / "notes" / "blobs"

    def needed(manifest) -> set[str]:
        """What a reader downloads: every blob but the ids (only the writer reads those)."""
        return {ref.sha256 for s in manifest.segments for role, ref in s.files().items() if role != "ids"} | {
            s.deletes.sha256 for s in manifest.segments if s.deletes is not None}

    for n in range(4):
        writer.apply("notes", [IngestJob(f"j{n}", 0, "notes", (Document(f"d{n}", f"note {n} on tides"),
                                                               Document("shared", f"version {n}")))])
        loaded = reader.get("notes")
        assert {p.name for p in cached.iterdir()} == needed(loaded.manifest)

    merged = Compactor(store, MergePolicy(segments_per_tier=2, max_merge_at_once=4, floor_rows=1),
                       tmp_path / "compactor", hnsw_min_rows=4096).compact("notes")
    loaded = reader.get("notes")

    assert merged and len(loaded.manifest.segments) < 4
    assert {p.name for p in cached.iterdir()} == needed(loaded.manifest)
    query = encoder.embed(["version 3"])[0]
    assert loaded.search(query, k=1, offset=0, where=None, include_text=True).results[0]["text"] == "version 3"
