"""Compaction function: merges a collection's segments as the tiered policy asks and
applies retention (``ragserve.segments.maintenance``). In AWS it runs apart from the
writer, one at a time (reserved concurrency 1; a race would still be safe, as both
commit with a conditional swap of ``CURRENT``):

- ``{"collection": "docs"}``: sent asynchronously by the ingest function after a
  publish that leaves a merge to do (``Maintenance.trigger``);
- an EventBridge scheduled event (no ``collection``): every collection of the store.

A merge is capped by ``CompactionSettings.max_segment_rows`` (500k rows: ~340 s of HNSW
build on 2 cores), so each one fits in the 15 minutes; every merge commits on its own,
so a run cut short loses only the merge in flight (its blobs are left to retention).
A scheduled run starts no further collection when less than one capped merge's time
is left: the next run picks them up.

Answers a JSON summary: merges, versions and blobs deleted, per collection.
"""

from __future__ import annotations

import shutil
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.observability.telemetry import Telemetry
from ragserve.segments.maintenance import Maintenance, MaintenanceResult
from ragserve.settings import IngestSettings
from ragserve.snapshots.format import validate_collection
from ragserve.stores import open_store

SETTINGS = IngestSettings.from_env()
telemetry = Telemetry("compact")
logger = telemetry.logger
# Time one capped merge needs (HNSW build of max_segment_rows plus transfers): a
# scheduled run starts another collection only with at least this much left.
MERGE_BUDGET_MS = 420_000
_maintenance: Maintenance | None = None


def maintenance() -> Maintenance:
    global _maintenance
    if _maintenance is None:
        _maintenance = Maintenance.from_settings(open_store(SETTINGS.store), SETTINGS, log=logger)
    return _maintenance


def summary(result: MaintenanceResult) -> dict[str, Any]:
    retention = result.retention
    return {
        "collection": result.collection,
        "merges": len(result.merges),
        "segments_merged": sum(len(m.merged) for m in result.merges),
        "rows_purged": sum(m.purged for m in result.merges),
        "version": result.merges[-1].version if result.merges else None,  # the last merge's
        "versions_deleted": list(retention.versions_deleted) if retention else [],
        "blobs_deleted": retention.blobs_deleted if retention else 0,
        "bytes_deleted": retention.bytes_deleted if retention else 0,
        "retention_skipped": retention.skipped if retention else None,
        "error": result.error,
    }


def _collections(event: dict, runner: Maintenance) -> list[str]:
    if event.get("collection") is not None:  # a direct (async) invocation
        return [validate_collection(event["collection"])]
    return sorted(runner.store.collections())  # the schedule: every collection


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    event = event if isinstance(event, dict) else {}
    if not SETTINGS.compaction.enabled:
        logger.info("compaction disabled (RAGSERVE_COMPACTION_ENABLED=false): nothing done")
        return {"enabled": False, "collections": [], "deferred": [], "merges": 0, "versions_deleted": 0,
                "blobs_deleted": 0, "errors": []}
    runner = maintenance()
    names = _collections(event, runner)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = min(MERGE_BUDGET_MS, remaining() // 2) if remaining else 0
    done: list[dict[str, Any]] = []
    deferred: list[str] = []
    try:
        for i, collection in enumerate(names):
            if i and remaining and remaining() < budget:
                deferred = names[i:]
                logger.warning("compaction run out of time: collections left to the next run",
                               extra={"deferred": len(deferred)})
                break
            done.append(summary(runner.run(collection)))
    finally:
        # downloaded inputs and builds: a warm instance must not fill its /tmp run after run
        shutil.rmtree(runner.compactor.scratch_dir, ignore_errors=True)
    result = {
        "enabled": True,
        "collections": done,
        "deferred": deferred,
        "merges": sum(c["merges"] for c in done),
        "versions_deleted": sum(len(c["versions_deleted"]) for c in done),
        "blobs_deleted": sum(c["blobs_deleted"] for c in done),
        "errors": [c["collection"] for c in done if c["error"]],
    }
    logger.info("compaction run", extra={k: v for k, v in result.items() if k != "collections"})
    return result
