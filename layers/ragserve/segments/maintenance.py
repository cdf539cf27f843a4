"""Compaction and retention of the collections a writer touched: run beside the writer
locally (after its writes), and by the compaction function in AWS (after publishes and
on a schedule). Both commit with the same conditional swap as a write."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from ragserve.segments.compactor import Compactor, CompactResult
from ragserve.segments.policy import MergePolicy
from ragserve.segments.retention import RetentionResult, apply_retention
from ragserve.settings import IngestSettings
from ragserve.snapshots.errors import SnapshotError
from ragserve.snapshots.store import SnapshotStore


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    collection: str
    merges: tuple[CompactResult, ...]
    retention: RetentionResult | None
    error: str | None = None


class Maintenance:
    def __init__(self, store: SnapshotStore, compactor: Compactor, *, retention_seconds: float,
                 queue=None, log=None) -> None:
        self.store = store
        self.compactor = compactor
        self.retention_seconds = retention_seconds
        self.queue = queue  # the local queue: its applied messages are purged with retention
        self._log = log
        self._lambda = None

    @classmethod
    def from_settings(cls, store: SnapshotStore, settings: IngestSettings, *, queue=None, log=None) -> Maintenance:
        c = settings.compaction
        policy = MergePolicy(segments_per_tier=c.segments_per_tier, max_merge_at_once=c.max_merge_at_once,
                             max_segment_rows=c.max_segment_rows, floor_rows=settings.index.hnsw_min_rows,
                             deletes_pct_allowed=c.deletes_pct_allowed)
        compactor = Compactor(store, policy, settings.store.data_dir / "scratch" / "compaction",
                              hnsw_min_rows=settings.index.hnsw_min_rows,
                              threads=settings.encoder.threads or 0, log=log)  # None (all CPUs) is 0 here
        return cls(store, compactor, retention_seconds=c.retention_seconds, queue=queue, log=log)

    def run(self, collection: str) -> MaintenanceResult:
        """Merge what the policy asks for, then apply retention. A storage fault stops it
        (logged; the next run tries again): maintenance never loses or blocks a write."""
        try:
            merges = tuple(self.compactor.compact(collection))
            retention = apply_retention(self.store, collection, window_seconds=self.retention_seconds)
        except SnapshotError as exc:
            if self._log:
                self._log.error("maintenance stopped by a storage fault",
                                extra={"collection": collection, "code": exc.code, "reason": exc.message})
            return MaintenanceResult(collection, (), None, exc.code)
        if self._log and (merges or retention.versions_deleted or retention.blobs_deleted):
            self._log.info("maintenance", extra={
                "collection": collection, "merges": len(merges), "versions_deleted": len(retention.versions_deleted),
                "blobs_deleted": retention.blobs_deleted, "bytes_deleted": retention.bytes_deleted})
        return MaintenanceResult(collection, merges, retention)

    def after_writes(self, collections: Iterable[str]) -> list[MaintenanceResult]:
        results = [self.run(c) for c in sorted(set(collections))]
        if self.queue is not None and results:
            self.queue.purge_done(time.time() - max(self.retention_seconds, 86_400.0))
        return results

    def wants_merge(self, collection: str) -> bool:
        manifest = self.store.live_manifest(collection)
        return manifest is not None and self.compactor.policy.find_merge(manifest.segments) is not None

    def trigger(self, collections: Iterable[str], function_name: str) -> None:
        """AWS: invoke the compaction function asynchronously for collections that need a merge."""
        import json

        import boto3

        if self._lambda is None:
            self._lambda = boto3.client("lambda")
        for collection in sorted(set(collections)):
            try:
                if not self.wants_merge(collection):
                    continue
            except SnapshotError:
                continue
            try:  # the writes have landed: a failed trigger must not fail their batch
                self._lambda.invoke(FunctionName=function_name, InvocationType="Event",
                                    Payload=json.dumps({"collection": collection}).encode())
            except Exception as exc:  # noqa: BLE001 - the schedule runs compaction anyway
                if self._log:
                    self._log.warning("compaction trigger failed; the schedule will run it",
                                      extra={"collection": collection, "reason": f"{type(exc).__name__}: {exc}"})
