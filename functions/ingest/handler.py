"""Ingest function: POST /v1/collections/{c}/documents and DELETE
/v1/collections/{c}/documents/{id} (202 once the write is durable in the queue), and
the queue consumer: SQS FIFO batches (group = collection) applied by the single writer.
"""

from __future__ import annotations

from dataclasses import asdict

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve import health
from ragserve.api.access import check_collection_access, principal
from ragserve.api.app import InitResult, create_app, resolve
from ragserve.api.body import parse_body
from ragserve.api.requests import DocumentsRequest
from ragserve.ingest.consumer import BatchOutcome, consume
from ragserve.ingest.idempotency import IdempotentWrites, describe_route, persistence_layer
from ragserve.ingest.queue import LocalJobQueue, SqsJobQueue
from ragserve.ingest.service import Accepted, accept_delete, accept_upserts
from ragserve.ingest.writer import CollectionWriter
from ragserve.model.encoder import load_encoder
from ragserve.observability.telemetry import Telemetry
from ragserve.segments.maintenance import Maintenance
from ragserve.settings import IngestSettings
from ragserve.stores import open_store

SETTINGS = IngestSettings.from_env()
telemetry = Telemetry("ingest")
logger, tracer = telemetry.logger, telemetry.tracer
QUEUE = SqsJobQueue(SETTINGS.queue_url, dead_letter_url=SETTINGS.dead_letter_url) if SETTINGS.queue_url else \
    LocalJobQueue(SETTINGS.store.data_dir / "queue.sqlite3")
WRITER = InitResult(lambda: CollectionWriter(open_store(SETTINGS.store), load_encoder(settings=SETTINGS.encoder),
                                             SETTINGS.index, SETTINGS.store.data_dir / "scratch", log=logger),
                    telemetry, "writer")
# Locally, compaction and retention run beside the writer, after its writes; in AWS they
# are a function of their own (functions/ingest/compact.py), triggered after publishes
# and on a schedule.
MAINTENANCE = InitResult(lambda: Maintenance.from_settings(
    WRITER.get().store, SETTINGS, queue=QUEUE if not SETTINGS.queue_url else None, log=logger), telemetry,
    "maintenance")
IDEMPOTENCY = IdempotentWrites(persistence_layer(SETTINGS.idempotency_table,
                                                SETTINGS.store.data_dir / "idempotency.sqlite3"), log=logger)
# Collections whose writes a storage fault holds back (jobs queued, nothing published),
# until a write of theirs succeeds: /health says degraded meanwhile (locally, where one
# process serves /health too; in AWS the logs and the storage-fault metric say it).
STALLED: dict[str, str] = {}


def _writer_health() -> health.Check:
    stalled = dict(STALLED)
    if not stalled:
        return health.Check("healthy")
    return health.Check("degraded", "; ".join(f"{c}: writes held back by a storage fault ({reason})"
                                              for c, reason in sorted(stalled.items())))


health.register("writer", _writer_health)
app = create_app(telemetry)


def _accepted(result: dict) -> Response:
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=result)


def _idempotent(collection: str, route: str, write) -> Response:
    """At most once per (caller, collection, Idempotency-Key) and request (``route`` and body):
    a replay gets the first answer, the key reused for another request a 409."""
    event = app.current_event
    result = IDEMPOTENCY.run(principal=principal(event.raw_event), collection=collection,
                             key=event.headers.get("idempotency-key"), body=event.decoded_body.encode()
                             if event.body else b"", route=route, write=lambda job_id: asdict(write(job_id)),
                             context=app.lambda_context)
    return _accepted(result)


@app.post("/v1/collections/<collection>/documents")
@tracer.capture_method
def handle_post_documents(collection: str) -> Response:
    event = app.current_event.raw_event
    check_collection_access(event, collection)
    request = parse_body(event, DocumentsRequest, SETTINGS.limits.max_body_bytes)

    def write(job_id: str) -> Accepted:
        result = accept_upserts(QUEUE, collection, request.documents, job_id=job_id,
                                limits=SETTINGS.limits, max_documents=SETTINGS.max_documents)
        logger.info("documents accepted", extra={"collection": collection, "job_id": result.job_id,
                                                 "documents": result.accepted})
        return result

    return _idempotent(collection, describe_route("POST", "/v1/collections/{c}/documents", c=collection), write)


@app.delete("/v1/collections/<collection>/documents/<doc_id>")
@tracer.capture_method
def handle_delete_document(collection: str, doc_id: str) -> Response:
    event = app.current_event.raw_event
    check_collection_access(event, collection)

    def write(job_id: str) -> Accepted:
        result = accept_delete(QUEUE, collection, doc_id, job_id=job_id)
        logger.info("delete accepted", extra={"collection": collection, "job_id": result.job_id})
        return result

    return _idempotent(collection, describe_route("DELETE", "/v1/collections/{c}/documents/{id}", c=collection,
                                                  id=doc_id), write)


def _settle(outcome: BatchOutcome) -> None:
    """Storage faults: held back without counting toward the dead-letter queue. Poison:
    moved there (``ragserve queue redrive`` brings them back)."""
    if outcome.deferred:
        QUEUE.defer(outcome.deferred)
    if outcome.poison:
        logger.error("ingest messages dead-lettered", extra={"messages": len(outcome.poison)})
        QUEUE.dead_letter(outcome.poison)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "Records" in event:  # the SQS event source: apply queued jobs
        with telemetry.invocation():
            outcome = consume(event["Records"], WRITER.get(), log=logger)
            _settle(outcome)
            for result in outcome.results:
                STALLED.pop(result.collection, None)
            STALLED.update(outcome.faults)
            telemetry.record_writes(outcome.results, len(outcome.failed_message_ids))
            telemetry.record_storage_faults(len(outcome.deferred))
            if not SETTINGS.queue_url and SETTINGS.compaction.enabled:
                MAINTENANCE.get().after_writes([r.collection for r in outcome.results if r.version])
            elif SETTINGS.compaction_function:
                MAINTENANCE.get().trigger([r.collection for r in outcome.results if r.version],
                                          SETTINGS.compaction_function)
        return outcome.response()
    return resolve(app, event, context, telemetry)
