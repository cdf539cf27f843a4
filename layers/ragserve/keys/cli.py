"""``ragserve keys``: manage the API keys of a deployed stack.

    ragserve keys create --scope read|write --tier NAME [--collections a,b]
    ragserve keys rotate KEY_ID
    ragserve keys revoke KEY_ID
    ragserve keys list [--all]

The table and stage come from ``--table`` / ``--stage`` or ``RAGSERVE_KEYS_TABLE`` /
``RAGSERVE_STAGE`` (the stack's outputs name both); AWS credentials and region are
boto3's usual ones. A new key is printed once, alone on stdout; nothing ever prints a
key's hash."""

from __future__ import annotations

import argparse
import json
import sys

from ragserve.auth.keys import SCOPES, KeyRecord, parse_collections
from ragserve.errors import InvalidInput


def add_keys_parser(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="manage API keys of a deployed stack (DynamoDB + API Gateway)")
    keys.add_argument("--table", help="keys table name (default: $RAGSERVE_KEYS_TABLE)")
    keys.add_argument("--stage", help="stage whose usage plans to use (default: $RAGSERVE_STAGE)")
    keys.add_argument("--json", action="store_true", help="print JSON")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and attach it to its tier's usage plan")
    create.add_argument("--scope", required=True, choices=SCOPES)
    create.add_argument("--tier", required=True, help="usage plan tier, e.g. free, standard, premium")
    create.add_argument("--collections", help="comma-separated collections the key may use (default: all)")
    create.add_argument("--usage-plan-id", help="attach to this usage plan instead of ragserve-<stage>-<tier>")
    rotate = actions.add_parser("rotate", help="new secret for a key id; the old one stops working")
    rotate.add_argument("key_id")
    revoke = actions.add_parser("revoke", help="revoke every secret of a key id")
    revoke.add_argument("key_id")
    listing = actions.add_parser("list", help="list keys (never their secrets or hashes)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    keys.set_defaults(func=cmd_keys)


def _public(record: KeyRecord) -> dict:
    """What may be shown about a key: everything but the hash."""
    return {"key_id": record.key_id, "scope": record.scope, "tier": record.tier,
            "collections": record.collections_label, "status": record.status,
            "created_at": record.created_at, "revoked_at": record.revoked_at}


def _manager(args: argparse.Namespace):
    from ragserve.auth.store import DynamoKeyStore
    from ragserve.keys.manager import KeyManager, UsagePlans
    from ragserve.settings import KeysSettings

    settings = KeysSettings.from_env(table=args.table, stage=args.stage)
    return KeyManager(DynamoKeyStore(settings.table), UsagePlans(), settings.stage)


def _print_issued(issued, args: argparse.Namespace, verb: str) -> None:
    if args.json:
        print(json.dumps({**_public(issued.record), "api_key": issued.key}))
        return
    r = issued.record
    print(f"{verb} {r.key_id}: scope {r.scope}, tier {r.tier}, collections {r.collections_label}.\n"
          f"The key is printed below, once; store it now (only its hash is kept).", file=sys.stderr)
    print(issued.key)


def cmd_keys(args: argparse.Namespace) -> int:
    from ragserve.keys.manager import KeyManagementError
    from ragserve.settings import SettingsError

    try:
        collections = parse_collections(args.collections) if args.action == "create" else None
        manager = _manager(args)
        if args.action == "create":
            issued = manager.create(args.scope, args.tier, collections, plan_id=args.usage_plan_id)
            _print_issued(issued, args, "created")
        elif args.action == "rotate":
            issued = manager.rotate(args.key_id)
            _print_issued(issued, args, "rotated")
            for problem in issued.problems:  # an old secret still works: say so, and fail
                print(f"ragserve keys: the previous secret was not revoked: {problem}", file=sys.stderr)
            if issued.problems:
                return 1
        elif args.action == "revoke":
            revoked = manager.revoke(args.key_id)
            if args.json:
                print(json.dumps([_public(r) for r in revoked]))
            else:
                print(f"revoked {args.key_id}" + ("" if revoked else " (it was already revoked)"))
        else:
            records = manager.list(include_revoked=args.all)
            if args.json:
                print(json.dumps([_public(r) for r in records]))
            else:
                _print_table(records)
    except (KeyManagementError, SettingsError, InvalidInput, ValueError) as exc:
        print(f"ragserve keys: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


def _print_table(records: list[KeyRecord]) -> None:
    columns = ("key_id", "scope", "tier", "collections", "status", "created_at")
    rows = [[str(_public(r)[c]) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    for row in [list(columns)] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
