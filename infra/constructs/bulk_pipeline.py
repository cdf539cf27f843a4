"""Bulk loads (1M+ documents): a Step Functions state machine whose Distributed Map
lists the JSONL shards under an S3 prefix and runs the shard function on each, in
parallel child executions. Each shard embeds its documents and stores them as a segment
of its own in the collection's store; the final step builds nothing: it commits every
shard's segment with one manifest (one conditional swap of ``collections/<c>/CURRENT``),
so it takes seconds whatever the load's size. The compaction function merges the
segments later, like any others.

Start it with ``{"collection": "docs", "job_id": "2026-01-01-a", "prefix": "bulk/<job>/shards/"}``:
the load is appended (a document already in the collection under the same id is
superseded). Add ``"replace": true`` only to make the load the whole collection; a
``replace`` that is not a JSON boolean fails the execution before anything runs.
Contract with the handlers (functions/ingest/bulk.py):
  shard_handler({"bucket", "key", "collection", "job_id", "replace"}) stores one shard's segment and
    writes its entry under bulk/<job>/segments/
  merge_handler({"bucket", "collection", "job_id", "prefix", "replace"}) -> {"collection", "version", ...}
A shard that fails after its retries fails the job; nothing is published."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct


@dataclass(frozen=True, slots=True)
class BulkPipelineProps:
    name: str
    bucket: s3.IBucket
    shard_function: lambda_.IFunction
    merge_function: lambda_.IFunction
    max_concurrency: int = 50
    timeout: Duration = Duration.hours(24)
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH


class BulkPipeline(Construct):
    state_machine: sfn.StateMachine
    defaults: sfn.Pass  # the first state: "replace" defaults to false
    distributed_map: sfn.DistributedMap
    log_group: logs.LogGroup

    def __init__(self, scope: Construct, construct_id: str, props: BulkPipelineProps) -> None:
        super().__init__(scope, construct_id)
        retry = {"errors": ["States.TaskFailed", "Lambda.TooManyRequestsException"],
                 "interval": Duration.seconds(5), "max_attempts": 3, "backoff_rate": 2.0}
        # "replace" defaults to false: the execution input merged over {"replace": false}.
        # Intrinsic functions take no object literal, so the defaults are put beside the
        # input first, then merged (the input's own "replace" wins).
        self.defaults = sfn.Pass(self, "Defaults", parameters={"defaults": {"replace": False}, "input.$": "$"})
        apply_defaults = sfn.Pass(
            self, "ApplyDefaults", output_path="$.args",
            parameters={"args": sfn.JsonPath.json_merge(sfn.JsonPath.object_at("$.defaults"),
                                                        sfn.JsonPath.object_at("$.input"))})
        # the handlers read it with bool(): a string "false" must not replace the collection
        check_replace = sfn.Choice(self, "CheckReplace").otherwise(sfn.Fail(
            self, "InvalidReplace", error="InvalidInput", cause="replace must be a JSON boolean (true or false)"))
        replace = sfn.JsonPath.string_at("$.replace")  # (any JSON type: the path is all that is rendered)
        shard = tasks.LambdaInvoke(
            self, "EmbedShard", lambda_function=props.shard_function, payload_response_only=True,
            payload=sfn.TaskInput.from_object({
                "bucket": sfn.JsonPath.string_at("$.bucket"), "key": sfn.JsonPath.string_at("$.key"),
                "collection": sfn.JsonPath.string_at("$.collection"), "job_id": sfn.JsonPath.string_at("$.job_id"),
                "replace": replace,
            }),
        )
        shard.add_retry(**retry)
        self.distributed_map = sfn.DistributedMap(
            self, "EmbedShards",
            item_reader=sfn.S3ObjectsItemReader(bucket=props.bucket, prefix=sfn.JsonPath.string_at("$.prefix")),
            item_selector={
                "bucket": props.bucket.bucket_name,
                "key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
                "collection": sfn.JsonPath.string_at("$.collection"),
                "job_id": sfn.JsonPath.string_at("$.job_id"),
                "replace": replace,
            },
            max_concurrency=props.max_concurrency,
            map_execution_type=sfn.StateMachineType.STANDARD,  # shards may run up to 15 min (express: 5)
            tolerated_failure_count=0,
            result_path=sfn.JsonPath.DISCARD,
        )
        self.distributed_map.item_processor(shard)
        merge = tasks.LambdaInvoke(
            self, "MergeAndPublish", lambda_function=props.merge_function, payload_response_only=True,
            payload=sfn.TaskInput.from_object({
                "bucket": props.bucket.bucket_name, "collection": sfn.JsonPath.string_at("$.collection"),
                "job_id": sfn.JsonPath.string_at("$.job_id"), "prefix": sfn.JsonPath.string_at("$.prefix"),
                "replace": replace,
            }),
        )
        merge.add_retry(**retry)
        self.log_group = logs.LogGroup(self, "Logs", retention=props.log_retention,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=props.name,
            definition_body=sfn.DefinitionBody.from_chainable(
                self.defaults.next(apply_defaults).next(check_replace.when(
                    sfn.Condition.is_boolean("$.replace"), self.distributed_map.next(merge)))),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=props.timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
