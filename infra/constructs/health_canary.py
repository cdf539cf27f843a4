"""A CloudWatch Synthetics canary that does what a user does, on a schedule, and the
setup that gives it what a user has.

Each run (``CANARY_SCRIPT``, Node.js):

1. ``GET /health``: must answer 200 (``unhealthy`` is 503). ``degraded`` does not fail
   the run (the service answers; a cache or the idempotency table is down): it is
   logged, and /health says which check.
2. ``POST /v1/embed`` with the canary's key and a text unique to the run (so the
   embedding cache cannot answer it: the model does): 200, the model's dimensions,
   one vector of that length, unit norm.
3. ``POST /v1/search`` in the canary collection, the canary query plus the run id
   (so neither cache answers): 200, the expected document first, an index version.

Any failure fails the run; the health alarm (``ragserve-<stage>-health``, on the
canary's ``SuccessPercent``) pages after two failed runs in a row.

What a user has: a read key limited to the ``canary`` collection and that collection.
``CanarySetup`` is a CloudFormation custom resource served by the ``canary`` function
(functions/ops/canary.py, outside the VPC): it issues the key with the code behind
``ragserve keys create`` (hash in the keys table, API Gateway key in the canary tier's
usage plan), stores it in a Secrets Manager secret only the canary (and the setup) can
read, and queues the canary documents (``ragserve.dependencies.canary``) to the ingest
queue, where the single writer embeds and publishes them like any write. Deleting the
stack revokes the key. The canary reads the key from the secret at each run.

Artifacts go to a private, encrypted, TLS-only bucket that forgets them after a month;
step reports never include headers or bodies (the key is a header)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CustomResource, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_synthetics as synthetics
from constructs import Construct

from ragserve.auth.store import KEY_ID_INDEX
from ragserve.dependencies.canary import CANARY_COLLECTION, CANARY_QUERY, CANARY_TOP_HIT, seed_job

CANARY_SCRIPT = r"""
const synthetics = require('Synthetics');
const log = require('SyntheticsLogger');
const { SecretsManagerClient, GetSecretValueCommand } = require('@aws-sdk/client-secrets-manager');

// never report headers (the API key is one) or bodies
const STEP_CONFIG = { includeRequestHeaders: false, includeResponseHeaders: false, includeRequestBody: false,
                      includeResponseBody: false, restrictedHeaders: ['x-api-key'] };
const DIMENSIONS = Number(process.env.CANARY_DIMENSIONS);

async function apiKey() {
  const answer = await new SecretsManagerClient({}).send(
    new GetSecretValueCommand({ SecretId: process.env.CANARY_SECRET_ARN }));
  let key;
  try { key = JSON.parse(answer.SecretString || '{}').api_key; } catch (e) { key = undefined; }
  if (!key) throw new Error('the canary secret holds no api_key (did the canary setup run?)');
  return key;
}

function requestTo(url, method, headers, body) {
  const target = new URL(url);
  const options = { hostname: target.hostname, method, path: target.pathname + target.search,
                    port: target.port || (target.protocol === 'https:' ? 443 : 80), protocol: target.protocol,
                    headers: Object.assign({ 'User-Agent': synthetics.getCanaryUserAgentString() }, headers) };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers['Content-Type'] = 'application/json';
    options.headers['Content-Length'] = Buffer.byteLength(options.body);  // not chunked
  }
  return options;
}

function readBody(response) {
  return new Promise((resolve, reject) => {
    let data = '';
    response.on('data', (chunk) => { data += chunk; });
    response.on('end', () => resolve(data));
    response.on('error', reject);
  });
}

// One HTTP step: the status must be `status`; `check` gets the parsed JSON body.
async function step(name, options, status, check) {
  await synthetics.executeHttpStep(name, options, async (response) => {
    const text = await readBody(response);
    if (response.statusCode !== status) {
      throw new Error(`${name} answered ${response.statusCode}: ${text.slice(0, 300)}`);
    }
    let body;
    try { body = JSON.parse(text); } catch (e) { throw new Error(`${name}: the answer is not JSON`); }
    check(body);
  }, STEP_CONFIG);
}

exports.handler = async function () {
  const run = new Date().toISOString();
  const api = process.env.API_URL;
  await step('GET /health', requestTo(process.env.HEALTH_URL, 'GET', {}), 200, (body) => {
    if (body.status !== 'healthy' && body.status !== 'degraded') {
      throw new Error(`/health status is ${body.status}`);
    }
    if (body.status === 'degraded') log.warn(`/health is degraded: ${JSON.stringify(body.checks)}`);
    else log.info('/health: healthy');
  });
  const key = { 'x-api-key': await apiKey() };
  await step('POST /v1/embed', requestTo(new URL('v1/embed', api).href, 'POST', key,
                                         { texts: [`ragserve canary run ${run}`] }), 200, (body) => {
    const vectors = body.embeddings;
    if (body.dimensions !== DIMENSIONS || !Array.isArray(vectors) || vectors.length !== 1
        || vectors[0].length !== DIMENSIONS) {
      throw new Error(`embed: expected one vector of ${DIMENSIONS} dimensions, got ${body.dimensions}`);
    }
    const norm = Math.sqrt(vectors[0].reduce((sum, x) => sum + x * x, 0));
    if (Math.abs(norm - 1) > 0.01) throw new Error(`embed: the vector's norm is ${norm}, not 1`);
    log.info(`embed: ${body.model}, ${body.dimensions} dimensions`);
  });
  const search = { query: `${process.env.CANARY_QUERY} (canary run ${run})`,
                   collection: process.env.CANARY_COLLECTION, k: 3 };
  await step('POST /v1/search', requestTo(new URL('v1/search', api).href, 'POST', key, search), 200, (body) => {
    const top = (body.results || [])[0];
    if (!top || top.id !== process.env.CANARY_TOP_HIT) {
      throw new Error(`search: expected ${process.env.CANARY_TOP_HIT} first, got ${top ? top.id : 'no result'}`);
    }
    if (typeof body.index_version !== 'number') throw new Error('search: no index_version');
    log.info(`search: ${top.id} first (score ${top.score}), index version ${body.index_version}`);
  });
};
"""


@dataclass(frozen=True, slots=True)
class HealthCanaryProps:
    name: str  # at most 21 characters, lower case
    api_url: str  # the stage's base URL, ending with "/"
    health_url: str
    setup_function: lambda_.IFunction  # functions/ops/canary.py (the custom resource)
    keys_table: dynamodb.ITable
    usage_plan: apigw.IUsagePlan  # of the canary's tier
    tier: str
    stage: str
    queue: sqs.IQueue  # the ingest queue
    dimensions: int  # of the served model
    rate: Duration = Duration.minutes(5)
    key_generation: int = 1  # a change issues a new key (and revokes the old one)
    access_logs: s3.IBucket | None = None
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN


class HealthCanary(Construct):
    canary: synthetics.Canary
    artifacts: s3.Bucket
    secret: secretsmanager.Secret
    setup: CustomResource

    def __init__(self, scope: Construct, construct_id: str, props: HealthCanaryProps) -> None:
        super().__init__(scope, construct_id)
        self.artifacts = s3.Bucket(
            self, "Artifacts", encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True,
            server_access_logs_bucket=props.access_logs, server_access_logs_prefix="canary/",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(30))],
            removal_policy=props.removal_policy,
        )
        # the canary's API key ({"api_key", "key_id"}), written by the setup; a placeholder until then
        self.secret = secretsmanager.Secret(
            self, "Key", description="ragserve canary: read key limited to the canary collection (set by the stack)",
            removal_policy=RemovalPolicy.DESTROY)
        self._grant_setup(props)
        self.setup = CustomResource(
            self, "Setup", service_token=props.setup_function.function_arn, resource_type="Custom::RagserveCanary",
            properties={
                "Stage": props.stage, "KeysTable": props.keys_table.table_name,
                "PlanId": props.usage_plan.usage_plan_id, "Tier": props.tier,
                "SecretArn": self.secret.secret_arn, "QueueUrl": props.queue.queue_url,
                "Collection": CANARY_COLLECTION, "Generation": str(props.key_generation),
                "SeedJobId": seed_job().job_id,  # new documents: an update that queues them
            },
        )
        self.canary = synthetics.Canary(
            self, "Canary",
            canary_name=props.name,
            runtime=synthetics.Runtime.SYNTHETICS_NODEJS_PUPPETEER_9_1,
            test=synthetics.Test.custom(code=synthetics.Code.from_inline(CANARY_SCRIPT), handler="index.handler"),
            schedule=synthetics.Schedule.rate(props.rate),
            timeout=Duration.seconds(60),  # cold starts of embed and search (no provisioned concurrency in dev)
            environment_variables={
                "HEALTH_URL": props.health_url, "API_URL": props.api_url,
                "CANARY_SECRET_ARN": self.secret.secret_arn, "CANARY_COLLECTION": CANARY_COLLECTION,
                "CANARY_QUERY": CANARY_QUERY, "CANARY_TOP_HIT": CANARY_TOP_HIT,
                "CANARY_DIMENSIONS": str(props.dimensions),
            },
            artifacts_bucket_location=synthetics.ArtifactsBucketLocation(bucket=self.artifacts, prefix="health"),
            success_retention_period=Duration.days(7),
            failure_retention_period=Duration.days(30),
            provisioned_resource_cleanup=True,
            active_tracing=False,
        )
        self.secret.grant_read(self.canary.role)
        self.canary.node.add_dependency(self.setup)  # its first run has a key

    def _grant_setup(self, props: HealthCanaryProps) -> None:
        """The setup function's permissions, each on the one resource it touches."""
        setup, table = props.setup_function, props.keys_table
        apigateway = f"arn:{Stack.of(self).partition}:apigateway:{Stack.of(self).region}::"
        setup.add_to_role_policy(iam.PolicyStatement(  # KeyManager: put, revoke, find by key id
            actions=["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query"],
            resources=[table.table_arn, Fn.join("", [table.table_arn, f"/index/{KEY_ID_INDEX}"])]))
        apikeys = f"{apigateway}/apikeys"
        setup.add_to_role_policy(iam.PolicyStatement(actions=["apigateway:POST"], resources=[
            apikeys, Fn.join("", [f"{apigateway}/usageplans/", props.usage_plan.usage_plan_id, "/keys"])]))
        setup.add_to_role_policy(iam.PolicyStatement(actions=["apigateway:DELETE"], resources=[f"{apikeys}/*"]))
        setup.add_to_role_policy(iam.PolicyStatement(  # the key's tags, set when it is created
            actions=["apigateway:PUT", "apigateway:POST"],
            resources=[f"{apigateway}/tags/*"]))
        setup.add_to_role_policy(iam.PolicyStatement(actions=["secretsmanager:PutSecretValue"],
                                                     resources=[self.secret.secret_arn]))
        setup.add_to_role_policy(iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[props.queue.queue_arn]))
