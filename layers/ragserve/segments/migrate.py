"""Moving a local collection written by an older ragserve (format 1: one directory per
version, ``v{N}/{index.usearch,vectors.f16.npy,docs.jsonl,manifest.json}``) to segments:
``ragserve collections migrate``. The live format-1 version becomes one segment of
version N+1; nothing of the old directories is changed or deleted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ragserve.index.ann import IndexParams
from ragserve.segments.files import read_records, store_segment
from ragserve.snapshots.errors import SnapshotCorrupt
from ragserve.snapshots.manifest import VersionManifest
from ragserve.snapshots.store import SnapshotStore

OLD_FILES = ("vectors.f16.npy", "docs.jsonl", "manifest.json")


def old_version_dir(root: Path, collection: str, version: int) -> Path:
    return Path(root) / "collections" / collection / f"v{version}"


def is_old_format(root: Path, collection: str, version: int) -> bool:
    return (old_version_dir(root, collection, version) / "manifest.json").is_file()


def migrate_collection(store: SnapshotStore, root: Path, collection: str, scratch_dir: Path, *,
                       hnsw_min_rows: int, threads: int = 0) -> VersionManifest:
    """Publish the live format-1 version of ``collection`` as one segment."""
    current = store.current(collection)
    if current is None or not is_old_format(root, collection, current):
        raise ValueError(f"collection {collection!r} has no live format-1 version to migrate")
    directory = old_version_dir(root, collection, current)
    meta = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    if meta.get("format") != 1:
        raise SnapshotCorrupt(f"collection {collection!r} v{current}: not a format-1 manifest")
    records = read_records(directory / "docs.jsonl")
    vectors = np.load(directory / "vectors.f16.npy", allow_pickle=False)
    if len(records) != len(vectors) or len(records) != meta["count"]:
        raise SnapshotCorrupt(f"collection {collection!r} v{current}: {len(records)} documents, "
                              f"{len(vectors)} vectors, manifest {meta['count']}")
    params = dict(meta.get("params") or {})
    version = store.next_version(collection)
    segments = []
    if records:
        segments.append(store_segment(store, collection, f"s{version}-0", records, vectors,
                                      IndexParams(dtype=meta["dtype"], **params), scratch_dir,
                                      hnsw_min_rows=hnsw_min_rows, threads=threads))
    manifest = VersionManifest(collection=collection, version=version, model_id=meta["model_id"],
                               dimensions=int(meta["dimensions"]), dtype=meta["dtype"], params=params,
                               segments=tuple(segments), parent=current, operation="repair")
    store.publish(manifest, expected_current=current)
    return manifest
