"""The contract every snapshot backend keeps (``local``: a directory, ``s3``: a bucket).

Layout, the same in both: ``collections/{c}/v{N}/`` holds one immutable snapshot
(data files first, ``manifest.json`` last) and ``collections/{c}/CURRENT`` names the live
version. ``publish`` moves ``CURRENT`` with a compare-and-swap, only once the new
version is complete; readers go through ``fetch``, which verifies every file."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from ragserve.snapshots.errors import CollectionNotFound, PointerConflict, SnapshotCorrupt, VersionExists
from ragserve.snapshots.format import (
    SNAPSHOT_FILES,
    SnapshotMeta,
    validate_collection,
    validate_version,
    verify_snapshot,
)

POINTER = "CURRENT"
VERSION_DIR = re.compile(r"v([1-9][0-9]*)")


def version_dir(version: int) -> str:
    return f"v{version}"


def parse_version_dir(name: str) -> int | None:
    match = VERSION_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_pointer(text: str | bytes, *, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise SnapshotCorrupt(f"pointer {where} does not hold a version number: {text[:40]!r}")
    return value


class SnapshotStore(ABC):
    """Versioned, immutable collection snapshots behind an atomically swapped pointer."""

    @abstractmethod
    def current(self, collection: str) -> int | None:
        """The live version of ``collection``; None if it has none."""

    @abstractmethod
    def publish(self, collection: str, version: int, source_dir: Path, *, expected_current: int | None) -> SnapshotMeta:
        """Store the snapshot in ``source_dir`` as ``collection`` v``version`` and make it live.

        ``source_dir`` must verify and its manifest must name this collection and version
        (else ``SnapshotMismatch``). Data files are stored first, ``manifest.json`` last,
        then ``CURRENT`` is swapped from ``expected_current`` to ``version``. If ``CURRENT``
        is not ``expected_current`` this raises ``PointerConflict``, leaves ``CURRENT`` as
        it is and removes what it stored. A version number that exists (complete or not)
        or is not newer than ``CURRENT`` raises ``VersionExists``."""

    @abstractmethod
    def fetch(self, collection: str, version: int, dest_dir: Path, *,
              files: Sequence[str] = SNAPSHOT_FILES) -> Path:
        """A local directory holding the verified snapshot (``verify_snapshot``).

        ``files`` limits what is fetched and verified (the manifest always is): the
        writer asks for ``DATA_FILES`` only, as it rebuilds the index from them, so a
        damaged index never keeps it from building on the documents of that version.

        Raises ``CollectionNotFound`` if the collection has nothing stored,
        ``SnapshotMissing`` if the version is absent or unfinished, ``SnapshotCorrupt``
        if a file does not match the manifest."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Collections that have a live version, sorted."""

    @abstractmethod
    def versions(self, collection: str) -> list[int]:
        """Every version number stored for ``collection``, finished or not, ascending."""

    @abstractmethod
    def prune(self, collection: str, keep: int) -> list[int]:
        """Delete the versions older than the newest ``keep``; returns them, ascending.

        Never deletes the live version, nor any version newer than it (one may be being
        published right now); with no live version it deletes nothing."""

    def next_version(self, collection: str) -> int:
        """The number to build next: one more than any stored version and the live one."""
        return max([*self.versions(collection), self.current(collection) or 0]) + 1

    def require_current(self, collection: str) -> int:
        """The live version, or ``CollectionNotFound`` (404) if there is none."""
        version = self.current(collection)
        if version is None:
            raise CollectionNotFound(f"collection {collection!r} not found")
        return version


def check_source(collection: str, version: int, source_dir: Path) -> SnapshotMeta:
    """Validate the arguments of ``publish`` and verify what is about to be published."""
    validate_collection(collection)
    validate_version(version)
    return verify_snapshot(Path(source_dir), collection=collection, version=version)


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


def plan_prune(versions: list[int], current: int | None, keep: int) -> list[int]:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    if current is None:
        return []
    newest = set(sorted(versions, reverse=True)[:keep])
    return sorted(v for v in versions if v not in newest and v < current)
