"""The ``s3`` store: a bucket. The only module of ragserve.snapshots that talks to AWS.

    {prefix}collections/{c}/CURRENT              the live version number ("N\\n")
    {prefix}collections/{c}/versions/v{N}.json   manifests, created only if absent
    {prefix}collections/{c}/blobs/{sha256}       segment files and deletion vectors

Nothing is overwritten but ``CURRENT``, and that only with S3 conditional writes:
``IfNoneMatch="*"`` to create it, ``IfMatch=<ETag read with the expected value>`` to
move it. A manifest is created with ``IfNoneMatch="*"`` too, so exactly one publisher
owns each version number; it carries that publisher's token (object metadata), which
tells a retried request that lost to its own first attempt from another writer.

Readers get blobs through a local cache (``cache_dir/{c}/blobs/{sha256}``): downloaded
to a temporary name, verified (size and sha256), renamed into place, and reused.
boto3 is imported on first use only."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from ragserve.model.manifest import sha256_file
from ragserve.snapshots.errors import (
    CollectionNotFound,
    PointerConflict,
    SnapshotCorrupt,
    SnapshotMissing,
    VersionExists,
)
from ragserve.snapshots.format import validate_collection, validate_version
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

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MULTIPART_BYTES = 64 * 1024 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
TOKEN = "ragserve-publisher"  # object metadata of a manifest: who created it


@lru_cache(maxsize=1)
def s3_transfer_config() -> Any:
    """Multipart over 64 MB, 8 parts in flight: an 874 MB index in 14 parts."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                          max_concurrency=8, use_threads=True)


@lru_cache(maxsize=1)
def _full_object_sha256_supported() -> bool:
    """Whether this s3transfer accepts ``ChecksumSHA256`` for an upload (newer ones do)."""
    from s3transfer.manager import TransferManager

    return "ChecksumSHA256" in TransferManager.ALLOWED_UPLOAD_ARGS


def _upload_args(sha: str, size: int) -> dict[str, str]:
    """S3 checks what it received against the sha256 we computed (a single-part upload
    only: S3 keeps no whole-object sha256 of a multipart one; those parts are checked
    one by one)."""
    if size < MULTIPART_BYTES and _full_object_sha256_supported():
        return {"ChecksumSHA256": base64.b64encode(bytes.fromhex(sha)).decode("ascii")}
    return {"ChecksumAlgorithm": "SHA256"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3SnapshotStore(SnapshotStore):
    modified_slack_seconds = 2.0  # LastModified is kept to the second, and clocks drift

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._client = client
        self._client_lock = threading.Lock()
        # (path, size, mtime) of cached blobs this process has hashed: each is verified once
        self._verified: set[tuple[str, int, int]] = set()

    def __repr__(self) -> str:
        return f"S3SnapshotStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3

                    self._client = boto3.client("s3")
        return self._client

    # -- keys --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _collection_key(self, collection: str) -> str:
        return f"{self.prefix}collections/{validate_collection(collection)}/"

    def _pointer_key(self, collection: str) -> str:
        return self._collection_key(collection) + POINTER

    def _manifest_key(self, collection: str, version: int) -> str:
        return f"{self._collection_key(collection)}{VERSIONS}/{manifest_name(validate_version(version))}"

    def _blob_key(self, collection: str, sha: str) -> str:
        return f"{self._collection_key(collection)}{BLOBS}/{sha}"

    def _pages(self, **kwargs: Any) -> Iterator[dict]:
        yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)

    def _head(self, key: str) -> dict | None:
        """HEAD ``key``; None if it is not there."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND_CODES:
                return None
            raise

    def _get(self, key: str) -> dict | None:
        """GET ``key`` with its body read (``response["Body"]`` is bytes); None if absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND_CODES:
                return None
            raise
        return {**response, "Body": response["Body"].read()}

    # -- the pointer -------------------------------------------------------------------

    def _read_pointer(self, collection: str) -> tuple[int | None, str | None]:
        """(version, ETag) of ``CURRENT``, or (None, None) if there is none."""
        response = self._get(self._pointer_key(collection))
        if response is None:
            return None, None
        return parse_pointer(response["Body"], collection=collection), response["ETag"]

    def current(self, collection: str) -> int | None:
        return self._read_pointer(collection)[0]

    def set_current(self, collection: str, version: int) -> None:
        self.manifest(collection, version)
        self.client.put_object(Bucket=self.bucket, Key=self._pointer_key(collection),
                               Body=f"{version}\n".encode(), ContentType="text/plain")

    def _swap_pointer(self, collection: str, version: int, expected_current: int | None, etag: str | None) -> None:
        condition = {"IfNoneMatch": "*"} if expected_current is None else {"IfMatch": etag}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._pointer_key(collection),
                                   Body=f"{version}\n".encode(), ContentType="text/plain", **condition)
        except ClientError as exc:
            code = _code(exc)
            # IfMatch on a CURRENT deleted meanwhile answers NoSuchKey: a conflict too
            if code not in CONFLICT_CODES and not (expected_current is not None and code in NOT_FOUND_CODES):
                raise
            # A retried request can fail the condition its first attempt met: if CURRENT
            # names our version (its manifest is ours alone), the swap happened.
            try:
                now: object = self.current(collection)
            except SnapshotCorrupt:
                now = "an unreadable pointer"
            if now == version:
                return
            raise PointerConflict(
                f"collection {collection!r} moved from version {expected_current} to {now} while v{version} "
                "was being published; CURRENT is unchanged"
            ) from None

    # -- manifests -------------------------------------------------------------------

    def _has_anything(self, collection: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._collection_key(collection), MaxKeys=1)
        return bool(listed.get("KeyCount", 0))

    def manifest(self, collection: str, version: int) -> VersionManifest:
        response = self._get(self._manifest_key(collection, version))
        if response is None:
            if not self._has_anything(collection):
                raise CollectionNotFound(f"collection {collection!r} not found in {self._where()}")
            raise SnapshotMissing(f"collection {collection!r} has no version {version} in {self._where()}")
        where = f"the manifest of {collection!r} v{version}"
        return check_manifest(VersionManifest.from_json(response["Body"], where=where), collection, version)

    def versions(self, collection: str) -> list[int]:
        base = f"{self._collection_key(collection)}{VERSIONS}/"
        found = (parse_manifest_name(obj["Key"][len(base):])
                 for page in self._pages(Prefix=base) for obj in page.get("Contents", ()))
        return sorted(v for v in found if v is not None)

    def collections(self) -> list[str]:
        root = f"{self.prefix}collections/"
        names = [common["Prefix"][len(root):].rstrip("/")
                 for page in self._pages(Prefix=root, Delimiter="/") for common in page.get("CommonPrefixes", ())]
        return sorted(n for n in names if self._head(f"{root}{n}/{POINTER}") is not None)

    # -- blobs -----------------------------------------------------------------------

    def put_blob(self, collection: str, source: Path) -> BlobRef:
        source = Path(source)
        ref = BlobRef(sha256_file(source), source.stat().st_size)
        # Uploaded even when stored already: that makes it young again, so retention
        # spares it until the write that reuses it commits.
        self.client.upload_file(str(source), self.bucket, self._blob_key(collection, ref.sha256),
                                ExtraArgs=_upload_args(ref.sha256, ref.size), Config=s3_transfer_config())
        return ref

    def _missing_blob(self, collection: str, sha: str) -> SnapshotMissing:
        return SnapshotMissing(f"collection {collection!r} is missing blob {sha[:12]} in {self._where()}")

    def blob(self, collection: str, ref: BlobRef, cache_dir: Path) -> Path:
        key = self._blob_key(collection, ref.sha256)
        target = Path(cache_dir) / collection / BLOBS / ref.sha256
        if self._cached(target, ref):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{ref.sha256}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            try:
                self.client.download_file(self.bucket, key, str(tmp), Config=s3_transfer_config())
            except ClientError as exc:
                if _code(exc) not in NOT_FOUND_CODES:
                    raise
                raise self._missing_blob(collection, ref.sha256) from None
            size = tmp.stat().st_size
            if size != ref.size or sha256_file(tmp) != ref.sha256:
                raise SnapshotCorrupt(f"blob {ref.sha256[:12]} of collection {collection!r} in {self._where()} "
                                      f"is altered ({size} bytes, {ref.size} expected, or another sha256)")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        stat = target.stat()
        self._verified.add((str(target), stat.st_size, stat.st_mtime_ns))
        return target

    def evict_cache(self, collection: str, cache_dir: Path, keep: set[str]) -> int:
        folder = Path(cache_dir) / collection / BLOBS
        if not folder.is_dir():
            return 0
        removed = 0
        for path in folder.iterdir():
            if path.name.startswith(".") or path.name in keep:
                continue  # a download in progress, or still referenced
            path.unlink(missing_ok=True)  # a search still mapping it keeps its pages until it ends
            removed += 1
        return removed

    def _cached(self, path: Path, ref: BlobRef) -> bool:
        """Whether ``path`` holds the bytes of ``ref`` (hashed once per process)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in self._verified:
            return True
        if stat.st_size != ref.size or sha256_file(path) != ref.sha256:
            path.unlink(missing_ok=True)  # a damaged copy: downloaded again (never rewritten in place)
            return False
        self._verified.add(key)
        return True

    def blobs(self, collection: str) -> list[StoredBlob]:
        base = f"{self._collection_key(collection)}{BLOBS}/"
        found = []
        for page in self._pages(Prefix=base):
            for obj in page.get("Contents", ()):
                sha = obj["Key"][len(base):]
                if SHA256.fullmatch(sha):
                    found.append(StoredBlob(sha, int(obj["Size"]), obj["LastModified"].timestamp()))
        return found

    # -- commit and retention --------------------------------------------------------

    def publish(self, manifest: VersionManifest, *, expected_current: int | None) -> None:
        collection, version = manifest.collection, manifest.version
        current, etag = self._read_pointer(collection)
        check_pointer(collection, version, current, expected_current)
        self._check_blobs(manifest, expected_current)
        key = self._manifest_key(collection, version)
        self._create_manifest(key, manifest)
        try:
            self._swap_pointer(collection, version, expected_current, etag)
        except PointerConflict:
            self.client.delete_object(Bucket=self.bucket, Key=key)  # ours: created above, never live
            raise

    def _check_blobs(self, manifest: VersionManifest, expected_current: int | None) -> None:
        """HEAD every blob ``manifest`` adds to its parent (all of them without one). The
        parent's blobs are taken as stored only when the parent is the live version that
        ``check_pointer`` just read: retention never deletes what the live version uses."""
        collection, version = manifest.collection, manifest.version
        known: set[str] = set()
        if manifest.parent is not None and manifest.parent == expected_current:
            try:
                known = self.manifest(collection, manifest.parent).blobs()
            except (SnapshotMissing, SnapshotCorrupt, CollectionNotFound):
                known = set()  # check them all
        refs = {ref.sha256: ref for s in manifest.segments for ref in s.blobs()}
        for sha, ref in sorted(refs.items()):
            if sha in known:
                continue
            head = self._head(self._blob_key(collection, sha))
            if head is None:
                raise SnapshotMissing(f"cannot publish {collection!r} v{version}: blob {sha[:12]} is not stored "
                                      f"in {self._where()}")
            if int(head["ContentLength"]) != ref.size:
                raise SnapshotCorrupt(f"cannot publish {collection!r} v{version}: blob {sha[:12]} is stored with "
                                      f"{head['ContentLength']} bytes, the manifest says {ref.size}")

    def _create_manifest(self, key: str, manifest: VersionManifest) -> None:
        """Create the manifest object if absent: this publisher then owns the version."""
        body = manifest.to_json()
        token = uuid.uuid4().hex
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                                   Metadata={TOKEN: token}, IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in CONFLICT_CODES:
                raise
            # A retried request may have lost to its own first attempt: then the stored
            # object is ours (same bytes and token). Anything else is another writer's.
            stored = self._get(key)
            if stored is None or stored["Body"] != body or stored.get("Metadata", {}).get(TOKEN) != token:
                raise VersionExists(f"{manifest.collection!r} v{manifest.version} already exists in "
                                    f"{self._where()}; versions are immutable") from None

    def delete_versions(self, collection: str, versions: Iterable[int]) -> None:
        versions = list(versions)
        live = self.current(collection)
        if live is not None and live in versions:
            raise ValueError(f"refusing to delete the live version {live} of {collection!r}")
        self._delete_keys([self._manifest_key(collection, v) for v in versions])

    def delete_blobs(self, collection: str, shas: Iterable[str], *, older_than: float) -> list[str]:
        doomed: dict[str, str] = {}  # key: sha
        for sha in shas:
            if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                continue
            key = self._blob_key(collection, sha)
            if key in doomed:
                continue
            head = self._head(key)
            if head is None or head["LastModified"].timestamp() >= older_than:
                continue  # gone already, or reused by a write since it was listed
            doomed[key] = sha
        failed = self._delete_keys(list(doomed))
        return [sha for key, sha in doomed.items() if key not in failed]

    def _delete_keys(self, keys: list[str]) -> set[str]:
        """DeleteObjects in batches; returns the keys S3 reported it could not delete."""
        failed: set[str] = set()
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start:start + DELETE_BATCH]]
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            failed |= {error["Key"] for error in response.get("Errors", ())}
        return failed
