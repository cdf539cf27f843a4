"""The live version of each collection, for a search function.

A collection is loaded on first use (at init for the default one) and its ``CURRENT``
pointer re-checked at most every ``recheck_seconds``. A new version is synced by
manifest diff: only the segments this instance lacks are downloaded and opened, the
others are shared with the version already loaded (no doubling of memory during a
swap). It is opened and verified *before* it replaces the old one, so in-flight
searches keep the version they started with, and a version that fails verification is
refused: the old one stays live and the collection reports degraded until a good
version appears. An unreadable ``CURRENT`` is treated the same way: the loaded version
keeps serving, degraded.

A refused version is tried again: after a failure that may pass (a network error, a
throttled request) at the next re-check, after a bad file (corrupt, missing, built by
another model) once ``retry_refused_seconds`` have gone by, so a repaired store heals
without a restart. An instance that has nothing live yet (a cold start) falls back to
the newest older version that verifies, so a new instance serves what the warm ones
kept serving (degraded) rather than a 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ragserve.errors import NotReady
from ragserve.health import Check
from ragserve.search.collection import LoadedCollection
from ragserve.snapshots.errors import (
    CollectionNotFound,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotMismatch,
    SnapshotMissing,
)
from ragserve.snapshots.store import SnapshotStore


class ModelMismatch(ValueError):
    """A snapshot embedded by another model (or another dimension) than this function's."""

    code = "model_mismatch"


# Failures that trying again cannot fix until someone repairs the store.
_LASTING = (SnapshotCorrupt, SnapshotMissing, SnapshotMismatch, ModelMismatch)
FALLBACK_VERSIONS = 3  # older versions a cold instance tries before giving up


@dataclass(frozen=True, slots=True)
class _Refusal:
    reason: str  # short: the error's code
    retry_at: float  # clock time from which the version is tried again


@dataclass(slots=True)
class _Entry:
    live: LoadedCollection | None = None
    checked_at: float = float("-inf")
    refused: dict[int, _Refusal] = field(default_factory=dict)
    pointer_problem: str | None = None  # CURRENT could not be read at the last check
    lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, version: int, now: float) -> bool:
        refusal = self.refused.get(version)
        return refusal is None or now >= refusal.retry_at


class CollectionRegistry:
    def __init__(self, store: SnapshotStore, cache_dir: Path, *, recheck_seconds: float, model_id: str,
                 dimensions: int, on_swap: Callable[[LoadedCollection, float], None] | None = None,
                 log=None, clock: Callable[[], float] = time.monotonic, retry_refused_seconds: float = 60.0) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.recheck_seconds = recheck_seconds
        self.retry_refused_seconds = retry_refused_seconds
        self.model_id = model_id
        self.dimensions = dimensions
        self._on_swap = on_swap
        self._log = log
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()

    def _entry(self, name: str) -> _Entry:
        with self._entries_lock:
            return self._entries.setdefault(name, _Entry())

    def get(self, name: str) -> LoadedCollection:
        """The live version of ``name``; CollectionNotFound (404) if it has none."""
        entry = self._entry(name)
        if entry.live is None:
            with entry.lock:  # first load: every caller waits for it
                if entry.live is None:
                    self._refresh(name, entry)
        elif self._clock() - entry.checked_at >= self.recheck_seconds and entry.lock.acquire(blocking=False):
            try:  # one caller re-checks; the others go on with the live version
                self._refresh(name, entry)
            finally:
                entry.lock.release()
        if entry.live is None:
            if entry.refused:
                version, refusal = max(entry.refused.items())
                raise NotReady(f"collection {name!r} has no usable version: v{version} refused ({refusal.reason})",
                               code="collection_unavailable")
            raise CollectionNotFound(f"collection {name!r} does not exist")
        return entry.live

    def _refresh(self, name: str, entry: _Entry) -> None:
        now = entry.checked_at = self._clock()
        try:
            current = self.store.current(name)
        except SnapshotError as exc:  # a damaged CURRENT: keep serving what is loaded
            entry.pointer_problem = exc.code
            if self._log:
                self._log.error("collection pointer unreadable", extra={"collection": name, "reason": str(exc)})
            if entry.live is not None:
                return
            current = None  # cold: serve the newest stored version that verifies
        else:
            entry.pointer_problem = None
            if current is not None and any(v > current for v in entry.refused):
                # CURRENT moved back (a repair): those versions are not live, and their
                # numbers may be published again, then to be tried at once
                entry.refused = {v: r for v, r in entry.refused.items() if v <= current}
            if current is None or (entry.live is not None and entry.live.version == current):
                return
        started = time.perf_counter()
        loaded = self._open(name, current, entry, now) if current is not None and entry.due(current, now) else None
        if loaded is None and entry.live is None:  # cold: serve the newest older version that verifies
            older = sorted((v for v in self.store.versions(name) if current is None or v < current), reverse=True)
            for version in older[:FALLBACK_VERSIONS]:
                if entry.due(version, now) and (loaded := self._open(name, version, entry, now)) is not None:
                    break
        if loaded is None:
            return
        previous, entry.live = entry.live, loaded
        load_ms = (time.perf_counter() - started) * 1000.0
        evicted = self.store.evict_cache(name, self.cache_dir, loaded.manifest.blobs())
        if self._log:
            self._log.info("collection loaded", extra={
                "collection": name, "version": loaded.version, "documents": len(loaded), "dtype": loaded.manifest.dtype,
                "segments": len(loaded.segments),
                "previous": previous.version if previous else None, "load_ms": round(load_ms, 1),
                "evicted_blobs": evicted})
        if self._on_swap:
            self._on_swap(loaded, load_ms)

    def _open(self, name: str, version: int, entry: _Entry, now: float) -> LoadedCollection | None:
        """``version`` fetched, verified and opened; None (and the version refused) if it can't be."""
        manifest = None
        try:
            manifest = self.store.manifest(name, version)
            self._check_model(manifest)
            shared = {s.key: s for s in entry.live.segments} if entry.live is not None else {}
            loaded = LoadedCollection.open(manifest, lambda ref: self.store.blob(name, ref, self.cache_dir), shared)
        except Exception as exc:  # noqa: BLE001 - a bad version must never take down a good one
            reason = getattr(exc, "code", type(exc).__name__)
            # a manifest that is not there is looked for again at the next re-check (one small
            # read): that number may yet be published, e.g. after a repair set CURRENT back
            lasting = isinstance(exc, _LASTING) and not (manifest is None and isinstance(exc, SnapshotMissing))
            entry.refused[version] = _Refusal(reason, now + (self.retry_refused_seconds if lasting else 0.0))
            if self._log:
                self._log.error("snapshot refused", extra={"collection": name, "version": version,
                                                          "reason": str(exc), "code": reason, "retry": not lasting})
            return None
        entry.refused.pop(version, None)
        return loaded

    def _check_model(self, manifest) -> None:
        if manifest.model_id != self.model_id or manifest.dimensions != self.dimensions:
            raise ModelMismatch(f"collection built with {manifest.model_id} ({manifest.dimensions} dims); "
                                f"this function serves {self.model_id} ({self.dimensions} dims)")

    def loaded(self) -> dict[str, LoadedCollection]:
        with self._entries_lock:
            return {name: e.live for name, e in self._entries.items() if e.live is not None}

    def health(self) -> Check:
        with self._entries_lock:
            entries = dict(self._entries)
        problems = []
        for name, entry in sorted(entries.items()):
            if entry.pointer_problem:
                problems.append(f"{name}: CURRENT unreadable ({entry.pointer_problem})"
                                + (f", serving v{entry.live.version}" if entry.live else ""))
            newer = [v for v in entry.refused if entry.live is None or v > entry.live.version]
            if newer:
                problems.append(f"{name}: v{max(newer)} refused ({entry.refused[max(newer)].reason})"
                                + (f", serving v{entry.live.version}" if entry.live else ""))
        if not problems:
            return Check("healthy")
        return Check("degraded", "; ".join(problems))
