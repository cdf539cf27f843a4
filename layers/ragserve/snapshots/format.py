"""The on-disk format of one collection version: an immutable snapshot directory with
``index.usearch``, ``vectors.f16.npy``, ``docs.jsonl`` and, written last,
``manifest.json`` (model, shape, index params, sha256 and size of every file).

A directory without a manifest is an unfinished snapshot; a directory whose files do
not match their manifest is a corrupt one. ``verify_snapshot`` refuses both."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragserve.errors import InvalidInput
from ragserve.model.manifest import sha256_file
from ragserve.snapshots.errors import SnapshotCorrupt, SnapshotMismatch, SnapshotMissing

SNAPSHOT_FILES = ("index.usearch", "vectors.f16.npy", "docs.jsonl")
# What a collection holds; the index is derived from it (the writer rebuilds it every version).
DATA_FILES = ("vectors.f16.npy", "docs.jsonl")
MANIFEST = "manifest.json"
FORMAT = 1
DTYPES = ("f16", "i8", "b1")

# Lower case only: a collection is a directory name, and the default file systems of
# macOS and Windows would fold "Docs" and "docs" into one.
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def validate_collection(collection: str) -> str:
    """Return ``collection`` if it is a safe name for a directory and an S3 key part."""
    if not isinstance(collection, str) or not COLLECTION_NAME.fullmatch(collection):
        raise InvalidInput(
            f"invalid collection name {collection!r}: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return collection


def validate_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"invalid snapshot version {version!r}: versions are integers >= 1")
    return version


@dataclass(frozen=True)
class SnapshotMeta:
    """What ``manifest.json`` says about one collection version."""

    collection: str
    version: int
    model_id: str
    dimensions: int
    dtype: str  # "f16" | "i8" | "b1"
    count: int
    built_at: str  # ISO-8601 UTC, e.g. "2025-01-31T12:00:00Z"
    params: dict[str, Any] = field(default_factory=dict)  # index params (connectivity, expansion, metric...)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> size in bytes
    format: int = FORMAT

    def __post_init__(self) -> None:
        validate_collection(self.collection)
        validate_version(self.version)
        if self.dtype not in DTYPES:
            raise InvalidInput(f"invalid dtype {self.dtype!r}: one of {', '.join(DTYPES)}")
        if self.dimensions < 1 or self.count < 0:
            raise InvalidInput(f"invalid shape: dimensions={self.dimensions}, count={self.count}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotMeta:
        """Parse a manifest; anything malformed raises ``SnapshotCorrupt``."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("the manifest is not a JSON object")
            if data.get("format") != FORMAT:
                raise ValueError(f"unsupported manifest format {data.get('format')!r} (this code reads {FORMAT})")
            return cls(
                collection=data["collection"],
                version=data["version"],
                model_id=str(data["model_id"]),
                dimensions=int(data["dimensions"]),
                dtype=data["dtype"],
                count=int(data["count"]),
                built_at=str(data["built_at"]),
                params=dict(data.get("params") or {}),
                files={str(k): str(v) for k, v in data["files"].items()},
                sizes={str(k): int(v) for k, v in data["sizes"].items()},
                format=data["format"],
            )
        except (ValueError, TypeError, KeyError, AttributeError, InvalidInput) as exc:
            reason = exc.message if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
            raise SnapshotCorrupt(f"invalid snapshot manifest: {reason}") from None


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_manifest(
    directory: Path,
    *,
    collection: str,
    version: int,
    model_id: str,
    dimensions: int,
    dtype: str,
    count: int,
    params: dict[str, Any],
    built_at: str | None = None,
) -> SnapshotMeta:
    """Hash the data files of ``directory`` and write ``manifest.json`` atomically.

    Call it last, once every data file is written: the data files are fsync'ed first, so
    a manifest on disk always describes files that are on disk too."""
    directory = Path(directory)
    missing = [name for name in SNAPSHOT_FILES if not (directory / name).is_file()]
    if missing:
        raise SnapshotMissing(f"cannot write the manifest of {directory}: missing {', '.join(missing)}")
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for name in SNAPSHOT_FILES:
        path = directory / name
        fsync_path(path)
        files[name] = sha256_file(path)
        sizes[name] = path.stat().st_size
    meta = SnapshotMeta(
        collection=collection,
        version=version,
        model_id=model_id,
        dimensions=dimensions,
        dtype=dtype,
        count=count,
        built_at=built_at or utc_now_iso(),
        params=dict(params),
        files=files,
        sizes=sizes,
    )
    atomic_write_text(directory / MANIFEST, meta.to_json())
    return meta


def read_manifest(directory: Path) -> SnapshotMeta:
    path = Path(directory) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SnapshotMissing(f"snapshot {directory} has no {MANIFEST} (never finished, or not a snapshot)") from None
    except UnicodeDecodeError:
        raise SnapshotCorrupt(f"{path} is not UTF-8 text") from None
    return SnapshotMeta.from_json(text)


def verify_snapshot(directory: Path, *, collection: str | None = None, version: int | None = None,
                    files: Sequence[str] = SNAPSHOT_FILES) -> SnapshotMeta:
    """Check ``files`` (default: every file) of the snapshot against its manifest (size, then sha256).

    Raises ``SnapshotMissing`` (no manifest, a file missing), ``SnapshotCorrupt`` (a
    file altered, the manifest malformed) or, when ``collection``/``version`` are
    given and the manifest names others, ``SnapshotMismatch``."""
    directory = Path(directory)
    meta = read_manifest(directory)
    if set(meta.files) != set(SNAPSHOT_FILES) or set(meta.sizes) != set(SNAPSHOT_FILES):
        raise SnapshotCorrupt(
            f"{directory / MANIFEST} lists files {sorted(meta.files)}, expected {sorted(SNAPSHOT_FILES)}"
        )
    if (collection is not None and meta.collection != collection) or (version is not None and meta.version != version):
        raise SnapshotMismatch(
            f"snapshot {directory} is {meta.collection!r} v{meta.version}, "
            f"expected {collection or meta.collection!r} v{version or meta.version}"
        )
    for name in files:
        path = directory / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SnapshotMissing(f"snapshot {directory} is missing {name}") from None
        expected = meta.files[name]
        if size != meta.sizes[name]:
            raise SnapshotCorrupt(
                f"snapshot file altered: {path} is {size} bytes, manifest expects {meta.sizes[name]} "
                f"(sha256 {sha256_file(path)}, manifest expects {expected})"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise SnapshotCorrupt(f"snapshot file altered: {path} has sha256 {actual}, manifest expects {expected}")
    return meta


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a mix:
    a temp file in the same directory, fsync, ``os.replace``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- staging directories ---------------------------------------------------------------
# A snapshot is assembled in a staging directory and renamed into place when complete.
# The staging directory holds a lock file (flock, so it is released when its owner dies,
# and excludes other threads as well as other processes); a cleaner that can take the
# lock knows the owner is gone and removes the leftovers.

STAGING_MARKER = ".staging.lock"
STAGING_GRACE_S = 60.0  # younger staging dirs are never cleaned (just created, or sealed and being renamed)


class Staging:
    """``with Staging(parent, prefix) as staging:`` fill ``staging.path``, ``seal()``, rename
    it away. Whatever is still at ``staging.path`` on exit is removed."""

    def __init__(self, parent: Path, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._fd = os.open(self.path / STAGING_MARKER, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def seal(self) -> None:
        """Drop the marker: call just before renaming the directory into place."""
        (self.path / STAGING_MARKER).unlink(missing_ok=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


def clean_stale_staging(parent: Path, pattern: str) -> list[Path]:
    """Remove staging dirs under ``parent`` matching ``pattern`` whose owner is gone:
    older than a minute and their marker absent or not locked by anyone."""
    removed = []
    for path in parent.glob(pattern):
        try:
            # young: perhaps created a moment ago, its marker not yet locked, or just sealed
            if not path.is_dir() or time.time() - path.stat().st_mtime < STAGING_GRACE_S:
                continue
            try:
                fd = os.open(path / STAGING_MARKER, os.O_RDONLY)
            except FileNotFoundError:
                pass
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner is alive
                finally:
                    os.close(fd)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def remove_dir(path: Path) -> None:
    """Remove a directory so that it never appears half-deleted under its own name:
    rename it aside first, then delete."""
    aside = path.with_name(f"{path.name}.deleting-{os.urandom(4).hex()}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)
