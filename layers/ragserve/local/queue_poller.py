"""The local SQS event source mapping: receive from the local FIFO queue, invoke the
ingest function with an SQS event, delete what it applied, retry what it reported
failed. One poller per data directory (a file lock), so one writer per collection."""

from __future__ import annotations

import dataclasses
import fcntl
import threading
from pathlib import Path

from ragserve.errors import RagserveError
from ragserve.ingest.queue import LocalJobQueue
from ragserve.local.events import LocalContext, sqs_event
from ragserve.local.gateway import Handler
from ragserve.local.logs import local_logger

log = local_logger()


class QueuePoller:
    def __init__(self, queue: LocalJobQueue, handler: Handler, lock_path: Path, *, interval: float = 0.2,
                 batch_size: int = 10, visibility_timeout: float = 900.0, retry_delay: float = 2.0) -> None:
        self.queue = queue
        self.handler = handler
        self.lock_path = lock_path
        self.interval = interval
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file = None

    def acquire(self) -> bool:
        """Become the writer for this data directory; False if another process is."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self.lock_path.open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            return False
        recovered = self.queue.recover_in_flight()
        if recovered:
            log.info("recovered in-flight messages of a stopped writer", extra={"messages": recovered})
        return True

    def poll_once(self) -> int:
        messages = self.queue.receive(self.batch_size, self.visibility_timeout)
        if not messages:
            return 0
        event = sqs_event([dataclasses.asdict(m) for m in messages])
        try:
            result = self.handler(event, LocalContext(function_name="ingest", timeout_s=self.visibility_timeout))
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        except RagserveError as exc:  # a known condition (e.g. the writer not ready), logged once at init
            log.error("ingest function refused the batch; it will be retried",
                      extra={"code": exc.code, "reason": exc.message, "messages": len(messages)})
            failed = {m.message_id for m in messages}
        except Exception:  # a Lambda error: the whole batch goes back to the queue
            log.exception("ingest function raised; batch will be retried")
            failed = {m.message_id for m in messages}
        self.queue.delete([m for m in messages if m.message_id not in failed])
        if failed:
            self.queue.release([m for m in messages if m.message_id in failed], delay=self.retry_delay)
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.poll_once()
            except Exception:  # keep polling: the queue keeps the messages
                log.exception("queue poll failed")
                handled = 0
            if not handled:
                self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._run, name="ragserve-queue-poller", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if self._lock_file:
            self._lock_file.close()
