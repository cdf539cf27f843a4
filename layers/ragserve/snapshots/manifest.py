"""The manifest of one collection version: a small JSON document listing the
collection's **segments** (docs/ARCHITECTURE.md section 5).

A segment is an immutable set of rows written once (by a write, a bulk shard or a
merge). Its files are blobs, content-addressed by sha256:

- ``vectors``: float16 ``(rows, d)`` ``.npy``, the source of every score;
- ``docs``: JSONL, one ``{"id", "text", "metadata", "hash"}`` record per row;
- ``ids``: JSON ``{"ids": [...], "hashes": [...]}`` in row order (what the writer reads
  to find the row of an id, without the texts);
- ``index``: a usearch HNSW graph over the vectors, or none (a small segment is
  searched exactly).

Rows replaced or deleted after a segment was written are listed in its **deletion
vector** (``deletes``: a sorted uint32 ``.npy`` of row numbers), rewritten with the
manifest; the segment's files never change. A version is what its manifest lists; the
conditional swap of ``CURRENT`` makes one live.

A manifest carries the sha256 of its own canonical form (``checksum``), so a damaged
one is refused wherever it is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ragserve.errors import InvalidInput
from ragserve.snapshots.errors import SnapshotCorrupt
from ragserve.snapshots.format import utc_now_iso, validate_collection, validate_version

FORMAT = 2
DTYPES = ("f16", "i8", "b1")
SHA256 = re.compile(r"[0-9a-f]{64}")
SEGMENT_ID = re.compile(r"s[1-9][0-9]*-[0-9]+")
OPERATIONS = ("write", "compact", "bulk", "replace", "repair")
SEGMENT_FILES = ("vectors", "docs", "ids", "index")


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A stored file, named by the sha256 of its bytes."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not SHA256.fullmatch(self.sha256):
            raise ValueError(f"not a sha256 hex digest: {self.sha256!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"invalid blob size {self.size!r}")

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Any) -> BlobRef:
        return cls(str(data["sha256"]), data["size"])


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One segment as a version sees it: its files and which of its rows are deleted."""

    id: str  # "s{version it was created in}-{n}": unique within the collection
    rows: int
    vectors: BlobRef
    docs: BlobRef
    ids: BlobRef
    index: BlobRef | None = None  # None: searched exactly
    deletes: BlobRef | None = None  # None: no row deleted
    deleted: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not SEGMENT_ID.fullmatch(self.id):
            raise ValueError(f"invalid segment id {self.id!r}")
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
            raise ValueError(f"segment {self.id}: rows must be >= 1, not {self.rows!r}")
        if isinstance(self.deleted, bool) or not isinstance(self.deleted, int):
            raise ValueError(f"segment {self.id}: deleted must be an integer, not {self.deleted!r}")
        if not 0 <= self.deleted <= self.rows or (self.deleted > 0) != (self.deletes is not None):
            raise ValueError(f"segment {self.id}: {self.deleted} deleted rows of {self.rows} "
                             f"({'with' if self.deletes else 'without'} a deletion vector)")

    @property
    def live(self) -> int:
        return self.rows - self.deleted

    @property
    def bytes(self) -> int:
        """Bytes of the segment's own files (not its deletion vector)."""
        return sum(ref.size for ref in self.files().values())

    def files(self) -> dict[str, BlobRef]:
        """The segment's immutable files by role (``index`` only when it has one)."""
        found = {"vectors": self.vectors, "docs": self.docs, "ids": self.ids}
        if self.index is not None:
            found["index"] = self.index
        return found

    def blobs(self) -> list[BlobRef]:
        """Every blob this entry references, its deletion vector included."""
        return [*self.files().values(), *([self.deletes] if self.deletes else [])]

    def with_deletes(self, deletes: BlobRef | None, deleted: int) -> SegmentEntry:
        return replace(self, deletes=deletes, deleted=deleted)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "rows": self.rows, "deleted": self.deleted}
        for name in (*SEGMENT_FILES, "deletes"):
            ref = getattr(self, name)
            out[name] = ref.to_dict() if ref is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> SegmentEntry:
        def ref(name: str) -> BlobRef | None:
            value = data.get(name)
            return BlobRef.from_dict(value) if value is not None else None

        return cls(id=data["id"], rows=data["rows"], vectors=BlobRef.from_dict(data["vectors"]),
                   docs=BlobRef.from_dict(data["docs"]), ids=BlobRef.from_dict(data["ids"]),
                   index=ref("index"), deletes=ref("deletes"), deleted=data.get("deleted", 0))


@dataclass(frozen=True, slots=True)
class VersionManifest:
    """One version of a collection: its segments, oldest first."""

    collection: str
    version: int
    model_id: str
    dimensions: int
    dtype: str
    params: dict[str, Any]
    segments: tuple[SegmentEntry, ...]
    parent: int | None = None  # the version this one was built on
    operation: str = "write"
    created_at: str = field(default_factory=utc_now_iso)
    format: int = FORMAT

    def __post_init__(self) -> None:
        validate_collection(self.collection)
        validate_version(self.version)
        if self.dtype not in DTYPES:
            raise InvalidInput(f"invalid dtype {self.dtype!r}: one of {', '.join(DTYPES)}")
        if isinstance(self.dimensions, bool) or not isinstance(self.dimensions, int) or self.dimensions < 1:
            raise InvalidInput(f"invalid dimensions {self.dimensions!r}")
        if self.operation not in OPERATIONS:
            raise InvalidInput(f"invalid operation {self.operation!r}")
        ids = [s.id for s in self.segments]
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"a segment is listed twice in {self.collection!r} v{self.version}")

    # -- figures ---------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Live documents: rows not deleted, over every segment."""
        return sum(s.live for s in self.segments)

    @property
    def deleted(self) -> int:
        return sum(s.deleted for s in self.segments)

    def blobs(self) -> set[str]:
        """sha256 of every blob this version references."""
        return {ref.sha256 for s in self.segments for ref in s.blobs()}

    def segment(self, segment_id: str) -> SegmentEntry | None:
        return next((s for s in self.segments if s.id == segment_id), None)

    def next_segment_id(self, version: int, used: Iterable[str] = ()) -> str:
        taken = {s.id for s in self.segments} | set(used)
        n = 0
        while f"s{version}-{n}" in taken:
            n += 1
        return f"s{version}-{n}"

    def successor(self, version: int, segments: Iterable[SegmentEntry], operation: str, *,
                  parent: int | None) -> VersionManifest:
        """The next version: same collection, model and parameters, these segments,
        built on ``parent`` (None: the collection had no version)."""
        return replace(self, version=version, segments=tuple(segments), parent=parent,
                       operation=operation, created_at=utc_now_iso())

    # -- serialisation ---------------------------------------------------------------

    def _body(self) -> dict:
        return {"format": self.format, "collection": self.collection, "version": self.version,
                "model_id": self.model_id, "dimensions": self.dimensions, "dtype": self.dtype,
                "params": dict(self.params), "parent": self.parent, "operation": self.operation,
                "created_at": self.created_at, "count": self.count,
                "segments": [s.to_dict() for s in self.segments]}

    def to_json(self) -> bytes:
        body = self._body()
        body["checksum"] = _checksum(body)
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, text: bytes | str, *, where: str = "manifest") -> VersionManifest:
        """Parse and check a manifest; anything malformed or altered raises ``SnapshotCorrupt``
        (``where`` names it in the message: a collection and version, never a file path)."""
        try:
            data = orjson.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            if data.get("format") != FORMAT:
                raise ValueError(f"unsupported manifest format {data.get('format')!r} (this code reads {FORMAT})")
            checksum = data.pop("checksum", None)
            if checksum != _checksum(data):
                raise ValueError("its checksum does not match its content (altered or truncated)")
            manifest = cls(
                collection=data["collection"], version=data["version"], model_id=str(data["model_id"]),
                dimensions=data["dimensions"], dtype=data["dtype"], params=dict(data.get("params") or {}),
                segments=tuple(SegmentEntry.from_dict(s) for s in data["segments"]), parent=data.get("parent"),
                operation=data.get("operation", "write"), created_at=str(data["created_at"]),
                format=data["format"])
            if data.get("count") != manifest.count:
                raise ValueError(f"count {data.get('count')!r} does not match its segments ({manifest.count})")
            return manifest
        except (ValueError, TypeError, KeyError, AttributeError, orjson.JSONDecodeError, InvalidInput) as exc:
            reason = exc.message if isinstance(exc, InvalidInput) else str(exc)
            raise SnapshotCorrupt(f"{where} is not a valid manifest: {reason}") from None


def _checksum(body: dict) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def empty_manifest(collection: str, *, model_id: str, dimensions: int, dtype: str, params: dict) -> VersionManifest:
    """What a collection with no version yet is built on (version 1 with no segments is
    never published; it only seeds ``successor``)."""
    return VersionManifest(collection=collection, version=1, model_id=model_id, dimensions=dimensions,
                           dtype=dtype, params=dict(params), segments=(), parent=None)
