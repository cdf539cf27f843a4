"""The ``local`` snapshot store: a directory (the embedded default).

    root/collections/{c}/v{N}/{index.usearch,vectors.f16.npy,docs.jsonl,manifest.json}
    root/collections/{c}/CURRENT     the live version number, as text
    root/collections/{c}/.lock       flock'ed by writers (publish, prune)

A version is assembled in ``v{N}.tmp-*`` and renamed to ``v{N}`` only when complete, so
a crash mid-publish never leaves a half version under a real name."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ragserve.snapshots.errors import CollectionNotFound, SnapshotMissing, VersionExists
from ragserve.snapshots.format import (
    MANIFEST,
    SNAPSHOT_FILES,
    SnapshotMeta,
    Staging,
    atomic_write_text,
    clean_stale_staging,
    fsync_path,
    remove_dir,
    validate_collection,
    validate_version,
    verify_snapshot,
)
from ragserve.snapshots.store import (
    POINTER,
    SnapshotStore,
    check_pointer,
    check_source,
    parse_pointer,
    parse_version_dir,
    plan_prune,
    version_dir,
)

LOCK = ".lock"


class LocalSnapshotStore(SnapshotStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalSnapshotStore({str(self.root)!r})"

    def _collection_dir(self, collection: str) -> Path:
        return self.root / "collections" / validate_collection(collection)

    @contextmanager
    def _locked(self, collection_dir: Path) -> Iterator[None]:
        """Exclusive writer lock of one collection (flock: threads and processes alike)."""
        collection_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(collection_dir / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def current(self, collection: str) -> int | None:
        path = self._collection_dir(collection) / POINTER
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return parse_pointer(text, where=str(path))

    def publish(self, collection: str, version: int, source_dir: Path, *, expected_current: int | None) -> SnapshotMeta:
        meta = check_source(collection, version, source_dir)
        check_pointer(collection, version, self.current(collection), expected_current)  # fail before copying
        cdir = self._collection_dir(collection)
        with self._locked(cdir):
            clean_stale_staging(cdir, "v*.tmp-*")
            clean_stale_staging(cdir, "v*.deleting-*")
        with Staging(cdir, f"{version_dir(version)}.tmp-") as staging:
            for name in (*SNAPSHOT_FILES, MANIFEST):  # the manifest last
                _copy_durably(Path(source_dir) / name, staging.path / name)
            fsync_path(staging.path)
            verify_snapshot(staging.path, collection=collection, version=version)  # the copy is intact
            with self._locked(cdir):
                check_pointer(collection, version, self.current(collection), expected_current)
                target = cdir / version_dir(version)
                if target.exists():
                    raise VersionExists(f"{collection!r} v{version} already exists at {target}; versions are immutable")
                staging.seal()
                try:
                    os.rename(staging.path, target)
                except OSError as exc:  # created meanwhile without the lock (by hand)
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise VersionExists(f"{collection!r} v{version} already exists at {target}") from None
                    raise
                fsync_path(cdir)
                atomic_write_text(cdir / POINTER, f"{version}\n")
        return meta

    def fetch(self, collection: str, version: int, dest_dir: Path | None = None, *,
              files: Sequence[str] = SNAPSHOT_FILES) -> Path:
        """The version directory itself, verified (``dest_dir`` is not used: nothing to copy)."""
        validate_version(version)
        path = self._collection_dir(collection) / version_dir(version)
        if not path.is_dir():
            if not self.versions(collection) and self.current(collection) is None:
                raise CollectionNotFound(f"collection {collection!r} not found in {self.root}")
            raise SnapshotMissing(f"{collection!r} v{version} is not in {self.root}")
        verify_snapshot(path, collection=collection, version=version, files=files)
        return path

    def collections(self) -> list[str]:
        base = self.root / "collections"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / POINTER).is_file())

    def versions(self, collection: str) -> list[int]:
        cdir = self._collection_dir(collection)
        if not cdir.is_dir():
            return []
        found = (parse_version_dir(p.name) for p in cdir.iterdir() if p.is_dir())
        return sorted(v for v in found if v is not None)

    def prune(self, collection: str, keep: int) -> list[int]:
        cdir = self._collection_dir(collection)
        if not cdir.is_dir():
            plan_prune([], None, keep)  # validates keep
            return []
        with self._locked(cdir):
            doomed = plan_prune(self.versions(collection), self.current(collection), keep)
            for version in doomed:
                remove_dir(cdir / version_dir(version))
            if doomed:
                fsync_path(cdir)
        return doomed


def _copy_durably(source: Path, target: Path) -> None:
    try:
        with source.open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        raise SnapshotMissing(f"{source} disappeared while it was being published") from None

