"""A CloudWatch Synthetics canary that calls GET /health over HTTPS on a schedule and
fails unless the answer is 200 with status healthy or degraded. Its artifacts go to a
private, encrypted, TLS-only bucket that forgets them after a month."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_synthetics as synthetics
from constructs import Construct

CANARY_SCRIPT = """
const synthetics = require('Synthetics');
const log = require('SyntheticsLogger');

exports.handler = async function () {
  const url = new URL(process.env.HEALTH_URL);
  const request = { hostname: url.hostname, method: 'GET', path: url.pathname, port: 443, protocol: 'https:',
                    headers: { 'User-Agent': synthetics.getCanaryUserAgentString() } };
  await synthetics.executeHttpStep('GET /health', request, async (response) => {
    const body = await new Promise((resolve, reject) => {
      let data = '';
      response.on('data', (chunk) => { data += chunk; });
      response.on('end', () => resolve(data));
      response.on('error', reject);
    });
    if (response.statusCode !== 200) {
      throw new Error(`/health answered ${response.statusCode}: ${body.slice(0, 300)}`);
    }
    const status = JSON.parse(body).status;
    if (status !== 'healthy' && status !== 'degraded') {
      throw new Error(`/health status is ${status}`);
    }
    log.info(`/health: ${status}`);
  });
};
"""


@dataclass(frozen=True, slots=True)
class HealthCanaryProps:
    name: str  # at most 21 characters, lower case
    health_url: str
    rate: Duration = Duration.minutes(5)
    access_logs: s3.IBucket | None = None
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN


class HealthCanary(Construct):
    canary: synthetics.Canary
    artifacts: s3.Bucket

    def __init__(self, scope: Construct, construct_id: str, props: HealthCanaryProps) -> None:
        super().__init__(scope, construct_id)
        self.artifacts = s3.Bucket(
            self, "Artifacts", encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            server_access_logs_bucket=props.access_logs, server_access_logs_prefix="canary/",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(30))],
            removal_policy=props.removal_policy,
        )
        self.canary = synthetics.Canary(
            self, "Canary",
            canary_name=props.name,
            runtime=synthetics.Runtime.SYNTHETICS_NODEJS_PUPPETEER_9_1,
            test=synthetics.Test.custom(code=synthetics.Code.from_inline(CANARY_SCRIPT), handler="index.handler"),
            schedule=synthetics.Schedule.rate(props.rate),
            environment_variables={"HEALTH_URL": props.health_url},
            artifacts_bucket_location=synthetics.ArtifactsBucketLocation(bucket=self.artifacts, prefix="health"),
            success_retention_period=Duration.days(7),
            failure_retention_period=Duration.days(30),
            provisioned_resource_cleanup=True,
            active_tracing=False,
        )
