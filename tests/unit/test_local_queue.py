"""The local durable queue keeps SQS FIFO's promises: deduplication, per-group order,
one batch of a group in flight, visibility timeout, dead letters, durability."""

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
