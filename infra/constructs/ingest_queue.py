"""SQS FIFO: the ingest queue (message group = collection, so one writer per
collection) and its dead-letter queue. Content-based deduplication is off: the
producer sets MessageDeduplicationId (the job id), so a replayed request is dropped
however its body is serialised. Poison messages reach the dead-letter queue through
the consumer (``ragserve.ingest.consumer``), not through SQS's redrive, which is only
a safety net (``IngestQueueProps.max_receives``)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct


@dataclass(frozen=True, slots=True)
class IngestQueueProps:
    consumer_timeout: Duration
    # Only a safety net: the consumer moves poison messages to the DLQ itself after
    # consumer.MAX_ATTEMPTS (5) receives (RAGSERVE_DEAD_LETTER_URL).
    # A storage fault is not the messages' fault: the consumer defers them with
    # ChangeMessageVisibility, backing off up to 15 minutes, and they must wait in the
    # queue until the store is repaired, however many receives that takes. 1000 receives
    # at up to 15 minutes each is ~10 days: a message held back that long still reaches
    # the DLQ (and its alarm) before the 14 days of retention could drop it.
    max_receives: int = 1000
    retention: Duration = Duration.days(14)


class IngestQueue(Construct):
    queue: sqs.Queue
    dead_letters: sqs.Queue

    def __init__(self, scope: Construct, construct_id: str, props: IngestQueueProps) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self, "DeadLetters", fifo=True, content_based_deduplication=False, retention_period=props.retention,
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self, "Queue", fifo=True, content_based_deduplication=False,
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
            # AWS's advice for Lambda consumers: at least 6x the function timeout
            visibility_timeout=Duration.seconds(props.consumer_timeout.to_seconds() * 6),
            retention_period=props.retention,
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=props.max_receives),
        )
