"""S3: the collection snapshots bucket (versioned, encrypted, public access blocked,
TLS only) and the bucket that receives its server access logs (and the canary's)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct


@dataclass(frozen=True, slots=True)
class SnapshotStorageProps:
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    noncurrent_version_days: int = 30  # old object versions (e.g. a replaced CURRENT pointer) kept this long
    access_log_days: int = 90
    bulk_input_days: int = 14  # bulk/<job>/ shards and shard outputs are scratch


class SnapshotStorage(Construct):
    bucket: s3.Bucket
    access_logs: s3.Bucket

    def __init__(self, scope: Construct, construct_id: str, props: SnapshotStorageProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # server access logging cannot deliver to SSE-KMS
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(props.access_log_days))],
            removal_policy=props.removal_policy,
        )
        self.bucket = s3.Bucket(
            self, "Snapshots",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,  # no KMS: no KMS endpoint or per-request KMS cost
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="snapshots/",
            lifecycle_rules=[
                s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(
                    props.noncurrent_version_days), abort_incomplete_multipart_upload_after=Duration.days(1)),
                s3.LifecycleRule(id="bulk-scratch", prefix="bulk/", expiration=Duration.days(props.bulk_input_days)),
            ],
            removal_policy=props.removal_policy,
        )
