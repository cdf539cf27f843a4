"""Writing one segment's files and storing them as blobs; reading them back.

A segment of ``rows >= hnsw_min_rows`` gets an HNSW graph; a smaller one is searched
exactly (a fresh write is therefore exact, and cheap: no graph to build)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from ragserve.index.ann import IndexParams, VectorIndex
from ragserve.snapshots.manifest import BlobRef, SegmentEntry, VersionManifest, empty_manifest
from ragserve.snapshots.store import SnapshotStore


def stored_params(params: IndexParams) -> dict:
    """What a manifest records of ``params`` (the dtype has a field of its own)."""
    return {name: getattr(params, name) for name in params.__dataclass_fields__ if name != "dtype"}


def manifest_params(manifest: VersionManifest) -> IndexParams:
    """The index parameters a manifest's segments are built and searched with."""
    return IndexParams(dtype=manifest.dtype, **manifest.params)


def write_segment_files(directory: Path, records: Sequence[dict], vectors: np.ndarray, params: IndexParams, *,
                        hnsw_min_rows: int, threads: int = 0) -> dict[str, Path]:
    """The files of one segment under ``directory``: row i is ``records[i]``, ``vectors[i]``."""
    if len(records) != len(vectors) or not len(records):
        raise ValueError(f"a segment needs rows: {len(records)} records, {len(vectors)} vectors")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"vectors": directory / "vectors.f16.npy", "docs": directory / "docs.jsonl",
             "ids": directory / "ids.json"}
    if len(records) >= hnsw_min_rows:
        paths["index"] = directory / "index.usearch"
        index = VectorIndex.build(np.asarray(vectors, dtype=np.float32), params, threads=threads)
        index.save(paths["index"], paths["vectors"])
    else:
        with paths["vectors"].open("wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float16), allow_pickle=False)
    with paths["docs"].open("wb") as f:
        for record in records:
            f.write(orjson.dumps(record) + b"\n")
    paths["ids"].write_bytes(orjson.dumps({"ids": [r["id"] for r in records],
                                           "hashes": [r.get("hash") for r in records]}))
    return paths


def store_segment(store: SnapshotStore, collection: str, segment_id: str, records: Sequence[dict],
                  vectors: np.ndarray, params: IndexParams, scratch_dir: Path, *, hnsw_min_rows: int,
                  threads: int = 0) -> SegmentEntry:
    """Write a segment's files and store them as blobs: its manifest entry."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{segment_id}-", dir=scratch_dir))
    try:
        paths = write_segment_files(work, records, vectors, params, hnsw_min_rows=hnsw_min_rows, threads=threads)
        refs = {role: store.put_blob(collection, path) for role, path in paths.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SegmentEntry(id=segment_id, rows=len(records), vectors=refs["vectors"], docs=refs["docs"],
                        ids=refs["ids"], index=refs.get("index"))


def store_deletes(store: SnapshotStore, collection: str, rows: np.ndarray, scratch_dir: Path) -> BlobRef:
    """Store a deletion vector: the sorted, distinct row numbers as a uint32 ``.npy``."""
    rows = np.unique(np.asarray(rows, dtype=np.uint32))
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="deletes-", suffix=".npy", delete=False) as f:
        np.save(f, rows, allow_pickle=False)
        path = Path(f.name)
    try:
        return store.put_blob(collection, path)
    finally:
        path.unlink(missing_ok=True)


def read_deletes(path: Path, rows: int) -> np.ndarray:
    """A deletion vector's rows, checked against the segment's size."""
    deleted = np.load(path, allow_pickle=False)
    if deleted.dtype != np.uint32 or deleted.ndim != 1 or (len(deleted) and int(deleted.max()) >= rows):
        raise ValueError(f"deletion vector of {deleted.dtype} {deleted.shape} does not fit a segment of {rows} rows")
    return deleted


def read_ids(path: Path) -> tuple[list[str], list[str | None]]:
    data = orjson.loads(path.read_bytes())
    ids, hashes = data["ids"], data["hashes"]
    if len(ids) != len(hashes):
        raise ValueError("ids and hashes differ in length")
    return ids, hashes


def read_records(path: Path) -> list[dict]:
    with path.open("rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def publish_segments(store: SnapshotStore, collection: str, records: Sequence[dict], vectors: np.ndarray, *,
                     model_id: str, params: IndexParams, scratch_dir: Path, segment_rows: int,
                     hnsw_min_rows: int, threads: int = 0) -> VersionManifest:
    """A new collection (no version yet) of already embedded rows, cut into segments of
    ``segment_rows``, published as version 1: for benchmarks and seeding, where there is
    no encoder to run. ``PointerConflict`` if the collection exists."""
    base = empty_manifest(collection, model_id=model_id, dimensions=int(vectors.shape[1]), dtype=params.dtype,
                          params=stored_params(params))
    entries = [store_segment(store, collection, f"s1-{n}", records[start:start + segment_rows],
                             vectors[start:start + segment_rows], params, scratch_dir,
                             hnsw_min_rows=hnsw_min_rows, threads=threads)
               for n, start in enumerate(range(0, len(records), segment_rows))]
    manifest = base.successor(1, entries, "bulk", parent=None)
    store.publish(manifest, expected_current=None)
    return manifest
