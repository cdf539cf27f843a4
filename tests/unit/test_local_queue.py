"""The local durable queue keeps SQS FIFO's promises: deduplication, per-group order,
one batch of a group in flight, visibility timeout, dead letters, durability; and what
the consumer needs around storage faults: a deferred message is held back without
counting toward the dead-letter limit, dead letters are redriven in order, and only
old applied messages are purged."""

from __future__ import annotations

import subprocess
import sys
import time

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob, new_job_id, split_upserts
from ragserve.ingest.queue import LocalJobQueue


def job(collection: str, n: int, job_id: str | None = None) -> IngestJob:
    return IngestJob(job_id or f"job-{collection}-{n}", 0, collection, (Document(f"d{n}", f"text {n}"),))


def test_send_is_deduplicated_by_message_id(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    queue.send(job("a", 1))  # a replay
    assert len(queue.receive(10)) == 1


def test_messages_of_a_group_come_in_order_and_one_batch_at_a_time(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    for n in range(5):
        queue.send(job("a", n))
    first = queue.receive(3)
    assert [IngestJob.from_json(m.body).job_id for m in first] == ["job-a-0", "job-a-1", "job-a-2"]
    assert queue.receive(3) == []  # the group is in flight
    queue.delete(first)
    rest = queue.receive(10)
    assert [IngestJob.from_json(m.body).job_id for m in rest] == ["job-a-3", "job-a-4"]


def test_other_groups_proceed_while_one_is_in_flight(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    queue.send(job("b", 1))
    a = queue.receive(10)
    b = queue.receive(10)
    assert {a[0].group, b[0].group} == {"a", "b"}


def test_released_messages_come_back_after_the_delay_and_in_order(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    queue.send(job("a", 2))
    batch = queue.receive(1)
    queue.release(batch, delay=0.2)
    assert queue.receive(10) == []  # the head is delayed: the group waits, order is kept
    time.sleep(0.25)
    again = queue.receive(10)
    assert [m.message_id for m in again] == ["job-a-1.0", "job-a-2.0"]
    assert again[0].receive_count == 2


def test_an_expired_visibility_timeout_redelivers(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    assert len(queue.receive(10, visibility_timeout=0.1)) == 1  # the consumer dies
    time.sleep(0.15)
    assert len(queue.receive(10)) == 1


def test_poison_message_is_dead_lettered_after_max_receives(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3", max_receives=2)
    queue.send(job("a", 1))
    queue.send(job("a", 2))
    for _ in range(2):
        queue.release(queue.receive(1), delay=0)
    assert queue.receive(1) == []  # the head is set aside
    assert [m.message_id for m in queue.receive(1)] == ["job-a-2.0"]
    assert queue.counts()["dead"] == 1


def test_a_sent_message_survives_a_killed_process(tmp_path):
    path = tmp_path / "q.sqlite3"
    script = (
        "import os, sys\n"
        "from ragserve.ingest.queue import LocalJobQueue\n"
        "from ragserve.ingest.jobs import IngestJob\n"
        f"LocalJobQueue(__import__('pathlib').Path({str(path)!r})).send(IngestJob('job-x', 0, 'c'))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert done.returncode == -9
    assert [m.message_id for m in LocalJobQueue(path).receive(10)] == ["job-x.0"]


def test_job_ids_are_stable_for_a_replay_and_distinct_otherwise():
    assert new_job_id("c", "key-1", "idem-1") == new_job_id("c", "key-1", "idem-1")
    assert new_job_id("c", "key-1", "idem-1") != new_job_id("c", "key-2", "idem-1")
    assert new_job_id("c", "key-1", None) != new_job_id("c", "key-1", None)


def test_large_requests_are_split_into_sqs_sized_parts_in_order():
    documents = [Document(f"d{i}", "x" * 8192) for i in range(100)]  # ~820 KB
    parts = split_upserts("job-1", "c", documents)
    assert len(parts) > 1
    assert all(len(p.to_json().encode()) <= 256 * 1024 for p in parts)
    assert [d.id for p in parts for d in p.upserts] == [d.id for d in documents]
    assert [p.part for p in parts] == list(range(len(parts)))
    assert IngestJob.from_json(parts[0].to_json()) == parts[0]


def test_the_sole_consumer_recovers_messages_in_flight_at_a_crash(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    assert len(queue.receive(10, visibility_timeout=900)) == 1  # then the consumer is killed
    assert queue.receive(10) == []
    assert queue.recover_in_flight() == 1
    assert [m.message_id for m in queue.receive(10)] == ["job-a-1.0"]


def records(messages) -> list[dict]:
    """What the ingest function hands back to ``defer`` and ``dead_letter``: SQS records."""
    return [{"messageId": m.message_id, "receiptHandle": m.receipt} for m in messages]


def ids(messages) -> list[str]:
    return [m.message_id for m in messages]


def test_a_deferred_message_waits_out_its_backoff_and_keeps_the_group_in_order(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    queue.send(job("a", 2))
    queue.send(job("b", 1))
    queue.defer(records(queue.receive(10)))  # a storage fault: group a is held back
    assert ids(queue.receive(10)) == ["job-b-1.0"]  # other groups go on
    assert queue.receive(10) == []  # a's head waits its backoff, and nothing of a jumps ahead of it


def test_deferring_does_not_count_toward_max_receives(tmp_path, monkeypatch):
    monkeypatch.setattr("ragserve.ingest.queue.storage_fault_delay", lambda count: 0)  # no backoff: try at once
    queue = LocalJobQueue(tmp_path / "q.sqlite3", max_receives=2)
    queue.send(job("a", 1))
    queue.send(job("a", 2))
    for _ in range(10):  # far more tries than max_receives, each refused by a storage fault
        batch = queue.receive(10)
        assert ids(batch) == ["job-a-1.0", "job-a-2.0"]
        assert [m.receive_count for m in batch] == [1, 1]
        queue.defer(records(batch))
    assert "dead" not in queue.counts()
    queue.delete(queue.receive(10))  # the store repaired: they are applied
    assert queue.counts() == {"done": 2}


def test_a_failed_attempt_counts_toward_max_receives(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3", max_receives=3)
    queue.send(job("a", 1))
    for _ in range(3):
        queue.release(queue.receive(10), delay=0)  # not deferred: a failure of the job itself
    assert queue.receive(10) == []
    assert queue.counts() == {"dead": 1}


def test_dead_letter_then_redrive_brings_messages_back_in_their_order(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    for n in range(1, 4):
        queue.send(job("a", n))
    queue.send(job("b", 1))
    head = queue.receive(1)
    queue.dead_letter(records(head))  # poison: a-1 set aside
    rest = queue.receive(10)
    assert ids(rest) == ["job-a-2.0", "job-a-3.0"]  # the group goes on without it
    queue.dead_letter(records(rest))
    assert ids(queue.receive(10)) == ["job-b-1.0"]
    assert queue.counts() == {"dead": 3, "pending": 1}
    assert queue.receive(10) == []  # b in flight, a all dead

    assert queue.redrive(group="nope") == 0
    assert queue.redrive(group="a") == 3
    again = queue.receive(10)
    assert ids(again) == ["job-a-1.0", "job-a-2.0", "job-a-3.0"]  # at their old place, in order
    assert [m.receive_count for m in again] == [1, 1, 1]  # a fresh count of tries
    assert "dead" not in queue.counts()


def test_redrive_puts_a_message_back_ahead_of_later_ones_of_its_group(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    queue.dead_letter(records(queue.receive(1)))
    queue.send(job("a", 2))  # sent after a-1 was set aside
    assert queue.redrive() == 1
    assert ids(queue.receive(10)) == ["job-a-1.0", "job-a-2.0"]


def test_dead_letter_and_defer_ignore_a_stale_receipt(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))
    stale = queue.receive(1, visibility_timeout=0.05)
    time.sleep(0.1)
    fresh = queue.receive(1)  # redelivered: the first receipt is no longer valid
    queue.dead_letter(records(stale))
    queue.defer(records(stale))
    assert queue.counts() == {"pending": 1}
    queue.delete(fresh)
    assert queue.counts() == {"done": 1}


def test_purge_done_removes_only_applied_messages_older_than_the_cutoff(tmp_path):
    queue = LocalJobQueue(tmp_path / "q.sqlite3")
    queue.send(job("a", 1))  # old, applied: purged
    queue.send(job("b", 1))  # old, dead: kept (redrive needs it)
    queue.send(job("c", 1))  # old, pending: kept
    queue.delete(queue.receive(10))
    queue.dead_letter(records(queue.receive(10)))
    time.sleep(0.02)
    cutoff = time.time()
    time.sleep(0.02)
    queue.send(job("d", 1))  # new, applied: kept
    batches = [queue.receive(10), queue.receive(10)]
    queue.delete([m for batch in batches for m in batch if m.group == "d"])
    assert queue.counts() == {"done": 2, "dead": 1, "pending": 1}

    assert queue.purge_done(cutoff) == 1
    assert queue.counts() == {"done": 1, "dead": 1, "pending": 1}
    left = queue._connect().execute("SELECT message_id, state FROM messages ORDER BY seq").fetchall()
    assert left == [("job-b-1.0", "dead"), ("job-c-1.0", "pending"), ("job-d-1.0", "done")]
    assert queue.purge_done(cutoff) == 0
