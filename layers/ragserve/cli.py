"""The ``ragserve`` command: ``serve`` the local API, ``invoke`` one event, write the
``openapi`` document."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

# Local defaults, set before any handler module is imported. EMF metric blobs would
# flood a terminal (the /metrics route shows the same figures); X-Ray has no daemon.
LOCAL_ENV_DEFAULTS = {
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}


def _local_env(*names: str) -> None:
    for name in names or LOCAL_ENV_DEFAULTS:
        os.environ.setdefault(name, LOCAL_ENV_DEFAULTS[name])


def cmd_serve(args: argparse.Namespace) -> int:
    _local_env()
    from ragserve.local.gateway import Gateway, dev_key, parse_api_keys
    from ragserve.local.logs import local_logger
    from ragserve.local.server import HttpLimits, load_handlers, make_server
    from ragserve.settings import GatewaySettings, SettingsError

    log = local_logger()
    try:
        settings = GatewaySettings.from_env()
        keys = parse_api_keys(settings.api_keys)
        limits = HttpLimits.from_env()
    except SettingsError as exc:
        print(f"ragserve: {exc}", file=sys.stderr)
        return 2
    if not keys:
        key = dev_key()
        keys = {key.key: key}
        print(f"\n  No RAGSERVE_API_KEYS set: made a dev key with write scope for this run:\n\n"
              f"    export RAGSERVE_KEY={key.key}\n", file=sys.stderr, flush=True)
    seed_demo_collection(log)
    handlers = load_handlers()
    try:
        server = make_server(Gateway(settings, handlers, keys), args.host, args.port, limits)
    except OSError as exc:
        print(f"ragserve: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    poller = start_queue_poller(handlers, log)
    host, port = server.server_address[:2]
    log.info("listening", extra={"url": f"http://{host}:{port}", "functions": sorted(handlers),
                                 "keys": sorted(k.key_id for k in keys.values())})
    print(f"  ragserve listening on http://{host}:{port}  (Ctrl-C to stop)\n", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever()  # SIGINT/SIGTERM: in-flight requests finish, then the poller stops
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if poller:
            poller.stop()
        log.info("stopped")
    return 0


def seed_demo_collection(log) -> None:
    """Build the demo collection on first start (local store only; "" disables it)."""
    from ragserve.settings import Env, IngestSettings

    name = os.environ.get(Env.DEMO_COLLECTION, "default")
    settings = IngestSettings.from_env()
    if not name or settings.store.kind != "local":
        return
    from ragserve.stores import open_store

    store = open_store(settings.store)
    current = store.current(name)
    if current is not None:
        from ragserve.segments.migrate import is_old_format, migrate_collection

        if is_old_format(settings.store.data_dir, name, current):  # a data dir of an older ragserve
            manifest = migrate_collection(store, settings.store.data_dir, name,
                                          settings.store.data_dir / "scratch" / "migrate",
                                          hnsw_min_rows=settings.index.hnsw_min_rows)
            log.info("demo collection migrated to segments", extra={"collection": name,
                                                                  "version": manifest.version})
        return
    from ragserve.ingest.jobs import IngestJob
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.local.demo import demo_documents
    from ragserve.model.encoder import load_encoder

    try:
        documents = demo_documents()
    except ImportError:
        log.warning("demo collection skipped: install the demo extra (chatterbot-corpus, pyyaml)")
        return
    writer = CollectionWriter(store, load_encoder(settings=settings.encoder), settings.index,
                              settings.store.data_dir / "scratch")
    version = writer.apply(name, [IngestJob("demo-seed", 0, name, tuple(documents))]).version
    log.info("demo collection built", extra={"collection": name, "documents": len(documents), "version": version})


def start_queue_poller(handlers, log):
    """Emulate the SQS event source of the ingest function with the local queue."""
    from ragserve.settings import IngestSettings

    settings = IngestSettings.from_env()
    if "ingest" not in handlers or settings.queue_url:
        return None
    from ragserve.ingest.queue import LocalJobQueue
    from ragserve.local.queue_poller import QueuePoller

    data_dir = settings.store.data_dir
    poller = QueuePoller(LocalJobQueue(data_dir / "queue.sqlite3"), handlers["ingest"], data_dir / "writer.lock")
    if not poller.acquire():
        log.warning("another ragserve process is the writer for this data directory; not polling the queue",
                    extra={"data_dir": str(data_dir)})
        return None
    poller.start()
    return poller


# The functions whose handler is not functions/<name>/handler.py's lambda_handler (the
# stack's image CMDs: infra/config.py FUNCTIONS; tests/infra keeps the two in step).
INVOKE_HANDLERS = {
    "authorizer": "functions.ops.authorizer.lambda_handler",
    "canary": "functions.ops.canary.lambda_handler",
    "compact": "functions.ingest.compact.lambda_handler",
    "shard": "functions.ingest.bulk.shard_handler",
    "merge": "functions.ingest.bulk.merge_handler",
}


def invoke_handler_path(function: str) -> str:
    return INVOKE_HANDLERS.get(function, f"functions.{function}.handler.lambda_handler")


def invoke_preflight(function: str, event: object) -> str | None:
    """Why ``function`` cannot run here, in one line (before its module loads), or None."""
    from ragserve.settings import GatewaySettings, KeysSettings, StoreSettings

    if function in ("shard", "merge"):
        store = StoreSettings.from_env()
        if store.kind != "s3" or not store.bucket:
            return (f"{function} runs against S3: set RAGSERVE_STORE=s3 and RAGSERVE_SNAPSHOT_BUCKET (the stack's "
                    "SnapshotBucketName); locally, `ragserve index build` does what shard and merge do")
        bucket = event.get("bucket") if isinstance(event, dict) else None
        if bucket != store.bucket:
            return f"the event's bucket {bucket!r} is not RAGSERVE_SNAPSHOT_BUCKET {store.bucket!r}"
    if function == "authorizer" and not KeysSettings.from_env().table and not GatewaySettings.from_env().api_keys:
        return ("the authorizer needs RAGSERVE_KEYS_TABLE (a deployed keys table) or, locally, "
                "RAGSERVE_API_KEYS (e.g. local-dev-key:read)")
    return None


def cmd_invoke(args: argparse.Namespace) -> int:
    _local_env("POWERTOOLS_TRACE_DISABLED")  # EMF stays on: it goes to stderr with the logs
    import importlib

    import orjson

    from ragserve.local.events import LocalContext
    from ragserve.settings import SettingsError

    source = sys.stdin.read() if args.event == "-" else Path(args.event).read_text(encoding="utf-8")
    try:
        event = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        print(f"ragserve: {args.event} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        problem = invoke_preflight(args.function, event)
    except SettingsError as exc:
        problem = str(exc)
    if problem:
        print(f"ragserve: {args.function}: {problem}", file=sys.stderr)
        return 2
    module_name, _, attribute = invoke_handler_path(args.function).rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError:
        print(f"ragserve: no function {args.function!r} (expected functions/{args.function}/handler.py)",
              file=sys.stderr)
        return 2
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result
            result = handler(event, LocalContext(function_name=args.function))
    except Exception as exc:
        # what API Gateway makes a 401 of, and AWS calls that fail: one line, no traceback
        if args.function == "authorizer" and str(exc) == "Unauthorized":
            print("ragserve: authorizer: Unauthorized (no x-api-key: API Gateway answers 401)", file=sys.stderr)
            return 1
        if type(exc).__module__.startswith(("botocore", "boto3")):
            print(f"ragserve: {args.function}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    _local_env()
    from ragserve.errors import RagserveError
    from ragserve.ingest.bulk import build_collection, read_documents
    from ragserve.ingest.writer import CollectionWriter
    from ragserve.local.logs import local_logger
    from ragserve.model.encoder import load_encoder
    from ragserve.progress import Progress
    from ragserve.settings import IngestSettings
    from ragserve.snapshots.format import validate_collection as check_collection_name
    from ragserve.stores import open_store

    log = local_logger()
    settings = IngestSettings.from_env()
    try:
        check_collection_name(args.collection)
        with open(args.input, "rb") as f:
            documents = read_documents(f, settings.limits.max_text_chars)
    except (OSError, RagserveError) as exc:
        print(f"ragserve: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    index = settings.index.model_copy(update={"dtype": args.dtype}) if args.dtype else settings.index
    writer = CollectionWriter(open_store(settings.store), load_encoder(settings=settings.encoder), index,
                              settings.store.data_dir / "scratch", log=log)
    progress = Progress(len(documents), f"embedding {args.collection}", log=log)
    version = build_collection(documents, args.collection, writer, encoder_settings=settings.encoder,
                               max_segment_rows=settings.compaction.max_segment_rows, replace=args.replace,
                               workers=args.workers, progress=progress)
    manifest = writer.store.manifest(args.collection, version)
    result = {"collection": args.collection, "version": version, "documents": manifest.count,
              "loaded": len(documents), "dtype": manifest.dtype, "replace": args.replace}
    log.info("index built", extra=result)
    sys.stdout.write(orjson_dumps(result) + "\n")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    """verify / repair / list the collections of the configured store."""
    _local_env()
    from ragserve.segments.verify import repair_collection, verify_collection
    from ragserve.settings import IngestSettings
    from ragserve.snapshots.errors import SnapshotError
    from ragserve.stores import open_store

    settings = IngestSettings.from_env()
    store = open_store(settings.store)
    cache = settings.store.data_dir / "scratch" / "verify"
    names = [args.collection] if getattr(args, "collection", None) else store.collections()
    try:
        if args.collections_command == "list":
            out = []
            for name in names:
                manifest = store.live_manifest(name)
                out.append({"collection": name, "version": manifest.version, "documents": manifest.count,
                            "segments": len(manifest.segments), "deleted_rows": manifest.deleted})
            sys.stdout.write(orjson_dumps(out) + "\n")
            return 0
        if args.collections_command == "migrate":
            from ragserve.segments.migrate import migrate_collection

            manifest = migrate_collection(store, settings.store.data_dir, args.collection,
                                          settings.store.data_dir / "scratch" / "migrate",
                                          hnsw_min_rows=settings.index.hnsw_min_rows)
            sys.stdout.write(orjson_dumps({"collection": args.collection, "version": manifest.version,
                                           "documents": manifest.count}) + "\n")
            return 0
        if args.collections_command == "verify":
            reports = [verify_collection(store, name, cache) for name in names]
            sys.stdout.write(orjson_dumps([r.to_dict() for r in reports]) + "\n")
            return 0 if all(r.ok for r in reports) else 1
        report = repair_collection(store, args.collection, cache, to_version=args.to_version)
    except (ValueError, SnapshotError) as exc:
        print(f"ragserve: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson_dumps(report.to_dict()) + "\n")
    return 0 if report.ok else 1


def cmd_queue(args: argparse.Namespace) -> int:
    """The ingest queue's dead letters: counts, and redrive (locally, or on AWS with
    RAGSERVE_QUEUE_URL and RAGSERVE_DEAD_LETTER_URL set)."""
    _local_env()
    from ragserve.ingest.queue import LocalJobQueue, SqsJobQueue
    from ragserve.settings import IngestSettings

    settings = IngestSettings.from_env()
    if settings.queue_url:
        queue = SqsJobQueue(settings.queue_url, dead_letter_url=settings.dead_letter_url)
        if args.queue_command == "redrive":
            result = {"redriven": queue.redrive()}
        else:
            attrs = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            result = {name: queue.client.get_queue_attributes(QueueUrl=url, AttributeNames=attrs)["Attributes"]
                      for name, url in (("queue", settings.queue_url), ("dead_letters", settings.dead_letter_url))
                      if url}
    else:
        queue = LocalJobQueue(settings.store.data_dir / "queue.sqlite3")
        result = {"redriven": queue.redrive(args.collection)} if args.queue_command == "redrive" else queue.counts()
    sys.stdout.write(orjson_dumps(result) + "\n")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    """The OpenAPI document (default settings) to stdout or a file; --check: exit 1 if the file differs."""
    from ragserve.api.openapi import render_openapi

    text = render_openapi()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"ragserve: {path} is stale: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    return 0


def orjson_dumps(value) -> str:
    import orjson

    return orjson.dumps(value).decode()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragserve", description="Embeddings and semantic search, locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API on loopback, emulating API Gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)
    invoke = sub.add_parser("invoke", help="run one event through a function's lambda_handler")
    invoke.add_argument("function", help="a function of the stack: embed, search, ingest, ops, authorizer, "
                                         "compact, shard, merge, canary")
    invoke.add_argument("event", help="event JSON file, or - for stdin")
    invoke.set_defaults(func=cmd_invoke)
    openapi = sub.add_parser("openapi", help="write the OpenAPI document (default settings)")
    openapi.add_argument("--output", "-o", default=None, help="file to write (default: stdout)")
    openapi.add_argument("--check", action="store_true", help="with --output: exit 1 if the file is stale")
    openapi.set_defaults(func=cmd_openapi)
    index = sub.add_parser("index", help="collection indexes").add_subparsers(dest="index_command", required=True)
    build = index.add_parser("build", help="build a collection from JSONL (id, text, metadata per line)")
    build.add_argument("--input", required=True, help="JSONL file")
    build.add_argument("--collection", required=True)
    build.add_argument("--dtype", choices=["f16", "i8", "b1"], default=None, help="default: RAGSERVE_INDEX_DTYPE")
    build.add_argument("--workers", type=int, default=None, help="embedding processes (default: one per CPU)")
    build.add_argument("--replace", action="store_true",
                       help="make these documents the whole collection (default: append; a document already "
                            "there under the same id is replaced)")
    build.set_defaults(func=cmd_index_build)
    collections = sub.add_parser("collections", help="list, verify and repair collections in the store")
    commands = collections.add_subparsers(dest="collections_command", required=True)
    for name, text in (("list", "live version, documents and segments of each collection"),
                       ("verify", "check CURRENT, the live manifest and every blob (sha256); exit 1 on a problem"),
                       ("repair", "point CURRENT at a version that verifies"),
                       ("migrate", "move a local collection of an older ragserve (format 1) to segments")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--collection", required=name in ("repair", "migrate"))
        if name == "repair":
            command.add_argument("--to-version", type=int, default=None,
                                 help="an older version to make live (drops what only newer versions hold)")
        command.set_defaults(func=cmd_collections)
    queue = sub.add_parser("queue", help="the ingest queue: counts and dead-letter redrive")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True)
    queue_commands.add_parser("counts", help="messages by state").set_defaults(func=cmd_queue)
    redrive = queue_commands.add_parser("redrive", help="move dead-lettered jobs back to the queue, in order")
    redrive.add_argument("--collection", default=None, help="locally: only this collection's jobs")
    redrive.set_defaults(func=cmd_queue)
    from ragserve.keys.cli import add_keys_parser  # `ragserve keys ...` (AWS: DynamoDB + API Gateway)

    add_keys_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
