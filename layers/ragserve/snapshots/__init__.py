"""Versioned collections of immutable segments and the stores that keep them
(docs/ARCHITECTURE.md section 5).

    >>> from ragserve.snapshots import LocalSnapshotStore
    >>> store = LocalSnapshotStore(Path(".ragserve"))
    >>> store.manifest("docs", store.require_current("docs")).segments

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
    StoreUnreadable,
    VersionExists,
)
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.manifest import BlobRef, SegmentEntry, VersionManifest
from ragserve.snapshots.store import SnapshotStore

if TYPE_CHECKING:
    from ragserve.snapshots.s3 import S3SnapshotStore

__all__ = [
    "BlobRef",
    "CollectionNotFound",
    "LocalSnapshotStore",
    "PointerConflict",
    "S3SnapshotStore",
    "SegmentEntry",
    "SnapshotCorrupt",
    "SnapshotError",
    "SnapshotMismatch",
    "SnapshotMissing",
    "SnapshotStore",
    "StoreUnreadable",
    "VersionExists",
    "VersionManifest",
]


def __getattr__(name: str) -> Any:
    if name == "S3SnapshotStore":
        from ragserve.snapshots.s3 import S3SnapshotStore

        return S3SnapshotStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
