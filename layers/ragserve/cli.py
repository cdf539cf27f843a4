"""The ``ragserve`` command: ``serve`` the local API, ``invoke`` one event."""

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
    from ragserve.local.server import load_handlers, make_server
    from ragserve.settings import GatewaySettings, SettingsError

    log = local_logger()
    try:
        settings = GatewaySettings.from_env()
        keys = parse_api_keys(settings.api_keys)
    except SettingsError as exc:
        print(f"ragserve: {exc}", file=sys.stderr)
        return 2
    if not keys:
        key = dev_key()
        keys = {key.key: key}
        print(f"\n  No RAGSERVE_API_KEYS set: made a dev key with write scope for this run:\n\n"
              f"    export RAGSERVE_KEY={key.key}\n", file=sys.stderr, flush=True)
    handlers = load_handlers()
    try:
        server = make_server(Gateway(settings, handlers, keys), args.host, args.port)
    except OSError as exc:
        print(f"ragserve: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    log.info("listening", extra={"url": f"http://{host}:{port}", "functions": sorted(handlers),
                                 "keys": sorted(k.key_id for k in keys.values())})
    print(f"  ragserve listening on http://{host}:{port}  (Ctrl-C to stop)\n", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("stopped")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    _local_env("POWERTOOLS_TRACE_DISABLED")  # EMF stays on: it goes to stderr with the logs
    import importlib

    import orjson

    from ragserve.local.events import LocalContext

    source = sys.stdin.read() if args.event == "-" else Path(args.event).read_text(encoding="utf-8")
    try:
        event = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        print(f"ragserve: {args.event} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"functions.{args.function}.handler")
    except ModuleNotFoundError:
        print(f"ragserve: no function {args.function!r} (expected functions/{args.function}/handler.py)",
              file=sys.stderr)
        return 2
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the result
        result = module.lambda_handler(event, LocalContext(function_name=args.function))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragserve", description="Embeddings and semantic search, locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API on loopback, emulating API Gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)
    invoke = sub.add_parser("invoke", help="run one event through a function's lambda_handler")
    invoke.add_argument("function", help="a folder under functions/, e.g. embed")
    invoke.add_argument("event", help="event JSON file, or - for stdin")
    invoke.set_defaults(func=cmd_invoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
