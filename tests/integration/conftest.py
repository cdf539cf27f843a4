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
