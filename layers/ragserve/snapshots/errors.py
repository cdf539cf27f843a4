"""Snapshot errors. Like ``ragserve.errors``, no HTTP here: ``ragserve.api.errors`` maps
them by class (``CollectionNotFound`` and ``SnapshotMissing`` are ``NotFound``, so 404;
the others fall through to 500)."""

from __future__ import annotations

from ragserve.errors import NotFound, RagserveError


class SnapshotError(RagserveError):
    """Base class of everything the snapshot stores raise."""

    code = "snapshot_error"


class SnapshotMissing(SnapshotError, NotFound):
    """A snapshot, its manifest or one of its files is not there (never published,
    pruned, or a publish that crashed before writing the manifest)."""

    code = "snapshot_missing"


class SnapshotCorrupt(SnapshotError):
    """A snapshot file does not match its manifest (sha256 or size), or the manifest
    itself is unreadable. The snapshot is refused, never served."""

    code = "snapshot_corrupt"


class SnapshotMismatch(SnapshotError):
    """A complete, intact snapshot that is not the one asked for: its manifest names
    another collection or version."""

    code = "snapshot_mismatch"


class PointerConflict(SnapshotError):
    """The ``CURRENT`` pointer was not what the caller expected (another writer moved
    it). ``CURRENT`` is left untouched; re-read it and retry with a new version."""

    code = "pointer_conflict"


class VersionExists(PointerConflict):
    """The version number is taken (versions are immutable) or is not newer than the
    live one. A conflict too: another writer got there first."""

    code = "snapshot_version_exists"


class CollectionNotFound(SnapshotError, NotFound):
    """The collection has no live version in the store."""

    code = "collection_not_found"


class StoreUnreadable(SnapshotError):
    """The writer cannot read the live version (``CURRENT``, its manifest or a segment's
    ids or deletion vector is damaged or missing). It never publishes past such a
    version: the jobs stay queued until the store is repaired."""

    code = "store_unreadable"
