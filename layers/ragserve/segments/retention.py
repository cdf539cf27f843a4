"""Retention: delete what no version inside the retention window references.

Kept: the live version, every version newer than it (one may be being published), and
every version that was live within ``window_seconds`` (replaced by the next one inside
it, however old it is); with them every blob they reference.
Deleted: older manifests, then blobs that no kept version references and that were
last written before the window (a write stores its blobs before its manifest: young
blobs may belong to it). A reader that fetched a version inside the window finds all
of it. When anything needed for the decision cannot be read, nothing is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from ragserve.snapshots.errors import SnapshotError
from ragserve.snapshots.store import SnapshotStore


@dataclass(frozen=True, slots=True)
class RetentionResult:
    collection: str
    versions_deleted: tuple[int, ...]
    blobs_deleted: int
    bytes_deleted: int
    skipped: str | None = None  # why nothing was deleted
    leftovers: int = 0  # temporary files of crashed writes removed


def _created(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # "2026-11-30T01:02:03Z": UTC


def apply_retention(store: SnapshotStore, collection: str, *, window_seconds: float,
                    now: float | None = None) -> RetentionResult:
    now = time.time() if now is None else now
    cutoff = now - window_seconds
    try:
        current = store.current(collection)
    except SnapshotError as exc:
        return RetentionResult(collection, (), 0, 0, skipped=f"CURRENT unreadable ({exc.code})")
    if current is None:
        return RetentionResult(collection, (), 0, 0, skipped="no live version")
    try:  # a live version that cannot be read (damaged, or gone) is what a repair needs the older ones for
        replaced_at = _created(store.manifest(collection, current).created_at)
    except SnapshotError as exc:
        return RetentionResult(collection, (), 0, 0, skipped=f"v{current} unreadable ({exc.code})")
    kept, doomed = [], []
    # Newest first: a version is read until the next one goes live, so it is judged by when
    # it was replaced (the creation of the next stored version up to the live one), not by its age.
    for version in sorted(store.versions(collection), reverse=True):
        if version >= current:
            kept.append(version)
            continue
        try:
            manifest = store.manifest(collection, version)
        except SnapshotError as exc:
            return RetentionResult(collection, (), 0, 0, skipped=f"v{version} unreadable ({exc.code})")
        (kept if replaced_at >= cutoff else doomed).append(version)
        replaced_at = _created(manifest.created_at)
    referenced: set[str] = set()
    for version in kept:
        try:
            referenced |= store.manifest(collection, version).blobs()
        except SnapshotError as exc:
            if version == current:
                return RetentionResult(collection, (), 0, 0, skipped=f"v{version} unreadable ({exc.code})")
            # a newer manifest that does not verify was never made live: it protects nothing
    if doomed:
        store.delete_versions(collection, doomed)
    # S3 keeps LastModified to the second (a blob may look up to 1 s older than it is):
    # blobs get that much more time than manifests.
    blob_cutoff = cutoff - store.modified_slack_seconds
    stale = [b for b in store.blobs(collection) if b.sha256 not in referenced and b.modified < blob_cutoff]
    sizes = {b.sha256: b.size for b in stale}
    deleted = store.delete_blobs(collection, list(sizes), older_than=blob_cutoff)
    leftovers = store.clean_leftovers(collection, older_than=blob_cutoff)
    return RetentionResult(collection, tuple(doomed), len(deleted), sum(sizes[s] for s in deleted),
                           leftovers=leftovers)
