"""The ``s3`` snapshot store. The only module of ragserve.snapshots that talks to AWS.

    {prefix}collections/{c}/v{N}/.claim        written first, IfNoneMatch="*": owns v{N}
    {prefix}collections/{c}/v{N}/{data files}  then the data files
    {prefix}collections/{c}/v{N}/manifest.json then the manifest
    {prefix}collections/{c}/CURRENT            last, a conditional write (compare-and-swap)

``CURRENT`` is swapped with S3 conditional writes: ``IfNoneMatch="*"`` to create it,
``IfMatch=<etag read with the expected value>`` to move it. ``fetch`` downloads into a
staging directory and renames it into place once verified."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ragserve.snapshots.errors import (
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotMismatch,
    SnapshotMissing,
    VersionExists,
)
from ragserve.snapshots.format import (
    MANIFEST,
    SNAPSHOT_FILES,
    SnapshotMeta,
    Staging,
    clean_stale_staging,
    fsync_path,
    remove_dir,
    utc_now_iso,
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

CLAIM = ".claim"
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MULTIPART_BYTES = 64 * 1024 * 1024


@lru_cache(maxsize=1)
def s3_transfer_config() -> Any:
    """Multipart over 64 MB, 8 parts in flight: an 874 MB index in 14 parts."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                          max_concurrency=8, use_threads=True)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3SnapshotStore(SnapshotStore):
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._client = client

    def __repr__(self) -> str:
        return f"S3SnapshotStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    # -- keys --------------------------------------------------------------------------

    def _collection_key(self, collection: str) -> str:
        return f"{self.prefix}collections/{validate_collection(collection)}/"

    def _version_key(self, collection: str, version: int) -> str:
        return f"{self._collection_key(collection)}{version_dir(validate_version(version))}/"

    def _pointer_key(self, collection: str) -> str:
        return self._collection_key(collection) + POINTER

    # -- the pointer -------------------------------------------------------------------

    def _read_pointer(self, collection: str) -> tuple[int | None, str | None]:
        """(version, ETag) of CURRENT, or (None, None) if there is none."""
        key = self._pointer_key(collection)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND_CODES:
                return None, None
            raise
        body = response["Body"].read()
        return parse_pointer(body, where=f"s3://{self.bucket}/{key}"), response["ETag"]

    def current(self, collection: str) -> int | None:
        return self._read_pointer(collection)[0]

    def _swap_pointer(self, collection: str, version: int, expected_current: int | None, etag: str | None) -> None:
        condition = {"IfNoneMatch": "*"} if expected_current is None else {"IfMatch": etag}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._pointer_key(collection),
                                   Body=f"{version}\n".encode(), ContentType="text/plain", **condition)
        except ClientError as exc:
            if _code(exc) not in CONFLICT_CODES:
                raise
            # A retried request can fail the condition that its first attempt met: if
            # CURRENT names our version (claimed, so nobody else's), the swap happened.
            now = self.current(collection)
            if now == version:
                return
            raise PointerConflict(
                f"collection {collection!r} moved from {expected_current} to {now} while v{version} was "
                "being published; CURRENT is unchanged"
            ) from None

    # -- publish -----------------------------------------------------------------------

    def publish(self, collection: str, version: int, source_dir: Path, *, expected_current: int | None) -> SnapshotMeta:
        meta = check_source(collection, version, source_dir)
        current, etag = self._read_pointer(collection)
        check_pointer(collection, version, current, expected_current)
        base = self._version_key(collection, version)
        self._claim(collection, version, base)
        try:
            for name in SNAPSHOT_FILES:
                self.client.upload_file(str(Path(source_dir) / name), self.bucket, base + name,
                                        Config=s3_transfer_config())
            self.client.put_object(Bucket=self.bucket, Key=base + MANIFEST,
                                   Body=(Path(source_dir) / MANIFEST).read_bytes(), ContentType="application/json")
        except BaseException:
            self._delete_version(collection, version)
            raise
        try:
            self._swap_pointer(collection, version, expected_current, etag)
        except PointerConflict:
            self._delete_version(collection, version)
            raise
        return meta

    def _claim(self, collection: str, version: int, base: str) -> None:
        """Own version ``version``: exactly one publisher creates its ``.claim`` object."""
        taken = VersionExists(f"{collection!r} v{version} already exists in s3://{self.bucket}/{base}; "
                              "versions are immutable")
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, MaxKeys=1)
        if listed.get("KeyCount", 0):
            raise taken
        token = uuid.uuid4().hex
        body = json.dumps({"token": token, "claimed_at": utc_now_iso()}).encode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=base + CLAIM, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in CONFLICT_CODES:
                raise
            try:  # a retried request may have lost to its own first attempt
                existing = self.client.get_object(Bucket=self.bucket, Key=base + CLAIM)["Body"].read()
            except ClientError:
                raise taken from None
            if existing != body:
                raise taken from None

    def _delete_version(self, collection: str, version: int) -> None:
        """Delete every object of one version, the manifest first (so it is never a
        complete-looking version with files missing)."""
        base = self._version_key(collection, version)
        keys = [obj["Key"] for page in self._pages(Prefix=base) for obj in page.get("Contents", ())]
        if base + MANIFEST in keys:
            self.client.delete_object(Bucket=self.bucket, Key=base + MANIFEST)
            keys.remove(base + MANIFEST)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # -- read --------------------------------------------------------------------------

    def fetch(self, collection: str, version: int, dest_dir: Path, *,
              files: Sequence[str] = SNAPSHOT_FILES) -> Path:
        """Download into ``dest_dir/{c}/v{N}/`` (reused if it is already there and verifies)."""
        base = self._version_key(collection, version)
        target = Path(dest_dir) / collection / version_dir(version)
        if target.is_dir():
            try:
                return _verified(target, collection, version, files)
            except (SnapshotMissing, SnapshotCorrupt, SnapshotMismatch):
                remove_dir(target)  # a bad local copy: download again
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(target.parent, ".v*.tmp-*")
        clean_stale_staging(target.parent, "v*.deleting-*")
        with Staging(target.parent, f".{version_dir(version)}.tmp-") as staging:
            try:
                manifest = self.client.get_object(Bucket=self.bucket, Key=base + MANIFEST)["Body"].read()
            except ClientError as exc:
                if _code(exc) not in NOT_FOUND_CODES:
                    raise
                raise self._missing(collection, version, f"has no {MANIFEST} (never finished or pruned)") from None
            (staging.path / MANIFEST).write_bytes(manifest)
            for name in files:
                try:
                    self.client.download_file(self.bucket, base + name, str(staging.path / name),
                                              Config=s3_transfer_config())
                except ClientError as exc:
                    if _code(exc) not in NOT_FOUND_CODES:
                        raise
                    raise SnapshotMissing(f"s3://{self.bucket}/{base} is missing {name}") from None
            verify_snapshot(staging.path, collection=collection, version=version, files=files)
            fsync_path(staging.path)
            staging.seal()
            try:
                os.rename(staging.path, target)
            except OSError as exc:  # another fetch finished first: use its copy
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                shutil.rmtree(staging.path, ignore_errors=True)
                return _verified(target, collection, version, files)
            fsync_path(target.parent)
        return target

    def _missing(self, collection: str, version: int, what: str) -> Exception:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._collection_key(collection), MaxKeys=1)
        if not listed.get("KeyCount", 0):
            return CollectionNotFound(f"collection {collection!r} not found in s3://{self.bucket}/{self.prefix}")
        return SnapshotMissing(f"{collection!r} v{version} in s3://{self.bucket}/{self.prefix} {what}")

    def _pages(self, **kwargs: Any):
        return self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)

    def collections(self) -> list[str]:
        root = f"{self.prefix}collections/"
        found = set()
        for page in self._pages(Prefix=root):
            for obj in page.get("Contents", ()):
                name, _, rest = obj["Key"][len(root):].partition("/")
                if rest == POINTER:
                    found.add(name)
        return sorted(found)

    def versions(self, collection: str) -> list[int]:
        base = self._collection_key(collection)
        found = []
        for page in self._pages(Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                version = parse_version_dir(common["Prefix"][len(base):].rstrip("/"))
                if version is not None:
                    found.append(version)
        return sorted(found)

    def prune(self, collection: str, keep: int) -> list[int]:
        doomed = plan_prune(self.versions(collection), self.current(collection), keep)
        for version in doomed:
            self._delete_version(collection, version)
        return doomed


def _verified(path: Path, collection: str, version: int, files: Sequence[str]) -> Path:
    verify_snapshot(path, collection=collection, version=version, files=files)
    return path
