"""The ``local`` store: a directory (the embedded default).

    root/collections/{c}/CURRENT               the live version number, as text
    root/collections/{c}/versions/v{N}.json    manifests
    root/collections/{c}/blobs/{sha256}        segment files and deletion vectors
    root/collections/{c}/.lock                 flock'ed around each commit

Blobs and manifests are written to a temporary name, fsync'ed and renamed into place,
so a crash never leaves a half file under a real name; retention removes the
temporary files a crash left once they are older than its window.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragserve.model.manifest import sha256_file
from ragserve.snapshots.errors import CollectionNotFound, SnapshotCorrupt, SnapshotMissing, VersionExists
from ragserve.snapshots.format import atomic_write_bytes, atomic_write_text, fsync_path, validate_collection
from ragserve.snapshots.manifest import SHA256, BlobRef, VersionManifest
from ragserve.snapshots.store import (
    BLOBS,
    POINTER,
    VERSIONS,
    SnapshotStore,
    StoredBlob,
    check_manifest,
    check_pointer,
    manifest_name,
    parse_manifest_name,
    parse_pointer,
)

LOCK = ".lock"


class LocalSnapshotStore(SnapshotStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # (path, size, mtime) of blobs this process has hashed: each is verified once
        self._verified: set[tuple[str, int, int]] = set()

    def __repr__(self) -> str:
        return f"LocalSnapshotStore({str(self.root)!r})"

    def _dir(self, collection: str) -> Path:
        return self.root / "collections" / validate_collection(collection)

    @contextmanager
    def _locked(self, collection_dir: Path) -> Iterator[None]:
        """Exclusive commit lock of one collection (flock: threads and processes alike)."""
        collection_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(collection_dir / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- the pointer -----------------------------------------------------------------

    def current(self, collection: str) -> int | None:
        try:
            text = (self._dir(collection) / POINTER).read_bytes()
        except FileNotFoundError:
            return None
        return parse_pointer(text, collection=collection)

    def set_current(self, collection: str, version: int) -> None:
        self.manifest(collection, version)
        cdir = self._dir(collection)
        with self._locked(cdir):
            atomic_write_text(cdir / POINTER, f"{version}\n")

    # -- manifests -------------------------------------------------------------------

    def manifest(self, collection: str, version: int) -> VersionManifest:
        cdir = self._dir(collection)
        try:
            text = (cdir / VERSIONS / manifest_name(version)).read_bytes()
        except FileNotFoundError:
            if not cdir.is_dir():
                raise CollectionNotFound(f"collection {collection!r} not found") from None
            if (cdir / f"v{version}" / "manifest.json").is_file():
                raise SnapshotMissing(f"collection {collection!r} v{version} was written by an older ragserve "
                                      f"(format 1): run `ragserve collections migrate --collection {collection}`"
                                      ) from None
            raise SnapshotMissing(f"collection {collection!r} has no version {version}") from None
        where = f"the manifest of {collection!r} v{version}"
        return check_manifest(VersionManifest.from_json(text, where=where), collection, version)

    def versions(self, collection: str) -> list[int]:
        vdir = self._dir(collection) / VERSIONS
        if not vdir.is_dir():
            return []
        found = (parse_manifest_name(p.name) for p in vdir.iterdir())
        return sorted(v for v in found if v is not None)

    def collections(self) -> list[str]:
        base = self.root / "collections"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / POINTER).is_file())

    # -- blobs -----------------------------------------------------------------------

    def _blob_path(self, collection: str, sha: str) -> Path:
        return self._dir(collection) / BLOBS / sha

    def put_blob(self, collection: str, source: Path) -> BlobRef:
        ref = BlobRef(sha256_file(source), Path(source).stat().st_size)
        target = self._blob_path(collection, ref.sha256)
        if target.is_file() and target.stat().st_size == ref.size and sha256_file(target) == ref.sha256:
            os.utime(target)  # young again: retention spares it until the write that reuses it commits
            return ref  # stored already, intact
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{ref.sha256}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            with Path(source).open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            if sha256_file(tmp) != ref.sha256:
                raise SnapshotCorrupt(f"a blob of {collection!r} changed while it was being stored")
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(target.parent)
        stat = target.stat()  # verified above: publish need not hash it again
        self._verified.add((str(target), stat.st_size, stat.st_mtime_ns))
        return ref

    def blob(self, collection: str, ref: BlobRef, cache_dir: Path | None = None) -> Path:
        path = self._blob_path(collection, ref.sha256)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise SnapshotMissing(f"collection {collection!r} is missing blob {ref.sha256[:12]}") from None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return path
        if stat.st_size != ref.size or sha256_file(path) != ref.sha256:
            raise SnapshotCorrupt(f"blob {ref.sha256[:12]} of collection {collection!r} is altered "
                                  f"({stat.st_size} bytes, {ref.size} expected, or another sha256)")
        self._verified.add(key)
        return path

    def blobs(self, collection: str) -> list[StoredBlob]:
        bdir = self._dir(collection) / BLOBS
        if not bdir.is_dir():
            return []
        found = []
        for path in bdir.iterdir():
            if SHA256.fullmatch(path.name):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                found.append(StoredBlob(path.name, stat.st_size, stat.st_mtime))
        return found

    # -- commit and retention --------------------------------------------------------

    def publish(self, manifest: VersionManifest, *, expected_current: int | None) -> None:
        collection, version = manifest.collection, manifest.version
        cdir = self._dir(collection)
        # Every blob verified first (each hashed once per process while unchanged): a version
        # is never published over a damaged one, whose documents it would carry on unreadable.
        for ref in {ref.sha256: ref for s in manifest.segments for ref in s.blobs()}.values():
            self.blob(collection, ref)
        with self._locked(cdir):
            for sha in manifest.blobs():  # under the lock: retention deletes under it too
                if not self._blob_path(collection, sha).is_file():
                    raise SnapshotMissing(f"cannot publish {collection!r} v{version}: blob {sha[:12]} is not stored")
            check_pointer(collection, version, self.current(collection), expected_current)
            target = cdir / VERSIONS / manifest_name(version)
            if target.exists():
                raise VersionExists(f"{collection!r} v{version} already exists; versions are immutable")
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, manifest.to_json())
            atomic_write_text(cdir / POINTER, f"{version}\n")

    def delete_versions(self, collection: str, versions: Iterable[int]) -> None:
        cdir = self._dir(collection)
        with self._locked(cdir):
            live = self.current(collection)
            for version in versions:
                if version == live:
                    raise ValueError(f"refusing to delete the live version {version} of {collection!r}")
                (cdir / VERSIONS / manifest_name(version)).unlink(missing_ok=True)
            if (cdir / VERSIONS).is_dir():
                fsync_path(cdir / VERSIONS)

    def clean_leftovers(self, collection: str, *, older_than: float) -> int:
        """Temporary files of blobs and manifests (``.{name}.tmp-{pid}-{random}``) whose
        writer crashed before renaming them into place."""
        removed = 0
        cdir = self._dir(collection)
        for folder in (cdir / BLOBS, cdir / VERSIONS, cdir):
            if not folder.is_dir():
                continue
            for path in folder.glob(".*.tmp-*"):
                try:
                    if path.is_file() and path.stat().st_mtime < older_than:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def delete_blobs(self, collection: str, shas: Iterable[str], *, older_than: float) -> list[str]:
        cdir = self._dir(collection)
        bdir = cdir / BLOBS
        deleted = []
        with self._locked(cdir):
            for sha in shas:
                path = bdir / sha
                try:
                    if not SHA256.fullmatch(sha) or path.stat().st_mtime >= older_than:
                        continue  # reused by a write since it was listed
                    path.unlink()
                except FileNotFoundError:
                    continue
                deleted.append(sha)
            if bdir.is_dir():
                fsync_path(bdir)
        return deleted
