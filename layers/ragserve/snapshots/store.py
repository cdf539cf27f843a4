"""The contract every store keeps (``local``: a directory, ``s3``: a bucket).

Layout, the same in both (docs/ARCHITECTURE.md section 5)::

    collections/{c}/CURRENT              the live version number, as text: the commit point
    collections/{c}/versions/v{N}.json   the manifest of version N (immutable)
    collections/{c}/blobs/{sha256}       segment files and deletion vectors (immutable)

A publish stores the new blobs first (``put_blob``; a blob that is there already is not
written again), then the manifest (created only if absent), then swaps ``CURRENT`` with a
compare-and-swap. Nothing is ever overwritten but ``CURRENT``; readers verify every blob
by its name (sha256) and every manifest by its checksum.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ragserve.snapshots.errors import (
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotError,
    StoreUnreadable,
    VersionExists,
)
from ragserve.snapshots.manifest import BlobRef, VersionManifest

POINTER = "CURRENT"
VERSIONS = "versions"
BLOBS = "blobs"
MANIFEST_NAME = re.compile(r"v([1-9][0-9]*)\.json")


def manifest_name(version: int) -> str:
    return f"v{version}.json"


def parse_manifest_name(name: str) -> int | None:
    match = MANIFEST_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_pointer(text: str | bytes, *, collection: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise SnapshotCorrupt(f"the CURRENT pointer of collection {collection!r} does not hold a version number")
    return value


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    modified: float  # seconds since the epoch: retention spares young blobs (a write in progress)


class SnapshotStore(ABC):
    """Versioned collections of immutable segments behind an atomically swapped pointer."""

    # How much older than it is a blob's ``modified`` may look (S3 keeps LastModified to
    # the second): retention gives blobs this much more time.
    modified_slack_seconds: float = 0.0

    # -- the pointer -----------------------------------------------------------------

    @abstractmethod
    def current(self, collection: str) -> int | None:
        """The live version; None if the collection has none. ``SnapshotCorrupt`` if
        ``CURRENT`` is unreadable."""

    @abstractmethod
    def set_current(self, collection: str, version: int) -> None:
        """Point ``CURRENT`` at ``version`` unconditionally: a repair step only
        (``ragserve collections repair``); the manifest must exist and verify."""

    # -- manifests -------------------------------------------------------------------

    @abstractmethod
    def manifest(self, collection: str, version: int) -> VersionManifest:
        """The verified manifest of ``version``. ``CollectionNotFound`` if the collection
        has nothing stored, ``SnapshotMissing`` if that version is not there,
        ``SnapshotCorrupt`` if it is damaged or names another collection or version."""

    @abstractmethod
    def versions(self, collection: str) -> list[int]:
        """Every version with a stored manifest, ascending."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Collections that have a ``CURRENT`` pointer, sorted."""

    # -- blobs -----------------------------------------------------------------------

    @abstractmethod
    def put_blob(self, collection: str, source: Path) -> BlobRef:
        """Store the file at ``source`` under its sha256 (nothing is written if that blob
        is already stored intact) and return its reference."""

    @abstractmethod
    def blob(self, collection: str, ref: BlobRef, cache_dir: Path) -> Path:
        """A local path holding the verified bytes of ``ref`` (the local store: the
        stored file itself; S3: a copy under ``cache_dir``, downloaded once and reused).
        ``SnapshotMissing`` if it is not stored, ``SnapshotCorrupt`` if its bytes differ."""

    @abstractmethod
    def blobs(self, collection: str) -> list[StoredBlob]:
        """Every stored blob of ``collection`` (for retention and verification)."""

    # -- commit and retention --------------------------------------------------------

    @abstractmethod
    def publish(self, manifest: VersionManifest, *, expected_current: int | None) -> None:
        """Store ``manifest`` (every blob it names must be stored already) and swap
        ``CURRENT`` from ``expected_current`` to its version.

        ``VersionExists`` if that version's manifest is stored already (versions are
        immutable) or is not newer than ``CURRENT``; ``PointerConflict`` if ``CURRENT`` is
        not ``expected_current``: then ``CURRENT`` is unchanged and the manifest removed."""

    @abstractmethod
    def delete_versions(self, collection: str, versions: Iterable[int]) -> None:
        """Delete these manifests (never the live one: ``ValueError``)."""

    @abstractmethod
    def delete_blobs(self, collection: str, shas: Iterable[str], *, older_than: float) -> list[str]:
        """Delete those of these blobs last written before ``older_than`` (epoch seconds;
        a blob a write has just stored or reused is spared); returns the deleted ones.
        Retention decides which (``ragserve.segments.retention``)."""

    def evict_cache(self, collection: str, cache_dir: Path, keep: set[str]) -> int:
        """Delete cached copies of blobs not in ``keep`` (a reader, after a swap: what the
        live version no longer references); the count. Stores read in place keep none."""
        return 0

    def clean_leftovers(self, collection: str, *, older_than: float) -> int:
        """Remove what a crashed writer left half-written (temporary files) before
        ``older_than``; the count. Stores without such leftovers remove nothing."""
        return 0

    # -- shared helpers --------------------------------------------------------------

    def next_version(self, collection: str) -> int:
        """The number to build next: one more than any stored manifest and the live one."""
        return max([*self.versions(collection), self.current(collection) or 0]) + 1

    def require_current(self, collection: str) -> int:
        """The live version, or ``CollectionNotFound`` (404) if there is none."""
        version = self.current(collection)
        if version is None:
            raise CollectionNotFound(f"collection {collection!r} not found")
        return version

    def live_manifest(self, collection: str) -> VersionManifest | None:
        """The manifest ``CURRENT`` names; None if the collection has no version."""
        version = self.current(collection)
        return None if version is None else self.manifest(collection, version)


def read_live(store: SnapshotStore, collection: str, *, waiting: str) -> tuple[int | None, VersionManifest | None]:
    """``(CURRENT, its manifest)`` for a writer or a compactor about to build on it;
    ``StoreUnreadable`` (naming who ``waiting`` until a repair) if either cannot be read."""
    try:
        current = store.current(collection)
        return current, (None if current is None else store.manifest(collection, current))
    except SnapshotError as exc:
        raise StoreUnreadable(f"collection {collection!r}: the live version cannot be read ({exc.message}); "
                              f"{waiting} until it is repaired") from None


def check_pointer(collection: str, version: int, current: int | None, expected_current: int | None) -> None:
    """The compare half of compare-and-swap, plus the rule that versions only move forward."""
    if current != expected_current:
        raise PointerConflict(
            f"collection {collection!r} is at version {current}, not {expected_current}: another writer "
            "published meanwhile; re-read the current version and rebuild"
        )
    if current is not None and version <= current:
        raise VersionExists(
            f"cannot publish {collection!r} v{version}: versions only move forward and v{current} is live"
        )


def check_manifest(manifest: VersionManifest, collection: str, version: int) -> VersionManifest:
    if manifest.collection != collection or manifest.version != version:
        raise SnapshotCorrupt(f"the manifest stored as {collection!r} v{version} names "
                              f"{manifest.collection!r} v{manifest.version}")
    return manifest
