"""Versioned, immutable collection snapshots and the stores that keep them.

    >>> from ragserve.snapshots import LocalSnapshotStore, write_manifest
    >>> store = LocalSnapshotStore(Path(".ragserve"))
    >>> store.publish("docs", store.next_version("docs"), build_dir, expected_current=store.current("docs"))

``S3SnapshotStore`` is imported on first use, so importing this package never imports
boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragserve.snapshots.errors import (
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotMismatch,
    SnapshotMissing,
    VersionExists,
)
from ragserve.snapshots.format import MANIFEST, SNAPSHOT_FILES, SnapshotMeta, verify_snapshot, write_manifest
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.store import SnapshotStore

if TYPE_CHECKING:
    from ragserve.snapshots.s3 import S3SnapshotStore

__all__ = [
    "MANIFEST",
    "SNAPSHOT_FILES",
    "CollectionNotFound",
    "LocalSnapshotStore",
    "PointerConflict",
    "S3SnapshotStore",
    "SnapshotCorrupt",
    "SnapshotError",
    "SnapshotMeta",
    "SnapshotMismatch",
    "SnapshotMissing",
    "SnapshotStore",
    "VersionExists",
    "verify_snapshot",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    if name == "S3SnapshotStore":
        from ragserve.snapshots.s3 import S3SnapshotStore

        return S3SnapshotStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
