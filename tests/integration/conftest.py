"""Integration fixtures: one moto server (S3 today; DynamoDB and SQS can share it) for
the whole session, in server mode, reached over HTTP by real boto3 clients exactly as
the functions reach AWS."""

from __future__ import annotations

import uuid

import pytest

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server():
    """The endpoint URL of a moto server on a free local port (all AWS services)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_client(service: str, endpoint_url: str):
    """A boto3 client for the moto server: dummy credentials, a fixed region, few
    retries, and enough pooled connections for the threaded race tests."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32),
    )


@pytest.fixture(scope="session")
def s3_client(moto_server):
    return aws_client("s3", moto_server)


@pytest.fixture()
def s3_bucket(s3_client) -> str:
    """A fresh, empty bucket for one test."""
    name = f"ragserve-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


class RedisServer:
    """A real ``redis-server`` on a loopback port, no persistence; tests may ``kill``
    (SIGKILL), ``pause``/``resume`` (SIGSTOP/SIGCONT: a hung server) and ``start`` it
    again on the same port."""

    def __init__(self) -> None:
        import shutil
        import socket

        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> RedisServer:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def pause(self) -> None:
        import signal

        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(5)
            except Exception:  # noqa: BLE001
                self.kill()


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session (tests must not kill it: see ``disposable_redis``)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def disposable_redis():
    """A redis-server of this test's own, which it may kill, pause and restart."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def live_records(store, collection: str, cache_dir) -> dict[str, dict]:
    """Every live document of ``collection``'s live version by id, read from its verified
    segment files and deletion vectors: the ground truth for "no accepted document was
    lost". An id live in two rows (a write or a merge that doubled it) fails the test."""
    from ragserve.segments.files import read_deletes, read_records

    manifest = store.manifest(collection, store.require_current(collection))
    found: dict[str, dict] = {}
    for entry in manifest.segments:
        records = read_records(store.blob(collection, entry.docs, cache_dir))
        assert len(records) == entry.rows, f"segment {entry.id}: {len(records)} documents for {entry.rows} rows"
        deleted: set[int] = set()
        if entry.deletes is not None:
            deleted = set(read_deletes(store.blob(collection, entry.deletes, cache_dir), entry.rows).tolist())
        for row, record in enumerate(records):
            if row in deleted:
                continue
            assert record["id"] not in found, f"document {record['id']!r} is live twice (segment {entry.id})"
            found[record["id"]] = record
    assert len(found) == manifest.count, f"{len(found)} live rows, the manifest counts {manifest.count}"
    return found


def live_document_ids(store, collection: str, cache_dir) -> set[str]:
    """The ids in ``collection``'s live version (see ``live_records``)."""
    return set(live_records(store, collection, cache_dir))
