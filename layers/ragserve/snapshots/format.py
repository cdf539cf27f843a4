"""File-system helpers shared by the stores and the readers: names that are safe as
directory and S3 key parts, atomic writes, staging directories that a crash never
leaves behind under a real name."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from ragserve.documents import shorten
from ragserve.errors import InvalidInput

# Lower case only: a collection is a directory name, and the default file systems of
# macOS and Windows would fold "Docs" and "docs" into one.
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def validate_collection(collection: str) -> str:
    """Return ``collection`` if it is a safe name for a directory and an S3 key part."""
    if not isinstance(collection, str) or not COLLECTION_NAME.fullmatch(collection):
        shown = shorten(collection) if isinstance(collection, str) else collection  # a long name, cut
        raise InvalidInput(
            f"invalid collection name {shown!r}: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return collection


def validate_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(f"invalid snapshot version {version!r}: versions are integers >= 1")
    return version


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a mix:
    a temp file in the same directory, fsync, ``os.replace``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
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
