"""Open the snapshot store a function's settings name (adapters live in snapshots/)."""

from __future__ import annotations

from ragserve.settings import StoreSettings
from ragserve.snapshots.store import SnapshotStore


def open_store(settings: StoreSettings) -> SnapshotStore:
    if settings.kind == "s3":
        from ragserve.snapshots.s3 import S3SnapshotStore

        if not settings.bucket:
            raise ValueError("RAGSERVE_STORE=s3 needs RAGSERVE_SNAPSHOT_BUCKET")
        return S3SnapshotStore(settings.bucket, settings.prefix)
    from ragserve.snapshots.local import LocalSnapshotStore

    return LocalSnapshotStore(settings.data_dir)
