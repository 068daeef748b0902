"""`mta gdpr export ADDRESS | erase ADDRESS`: what the running daemon holds about one
address, and its erasure, through its admin API (/api/v1/admin/gdpr, mta.http.admin_gdpr).

`export` prints JSON: per worker, the queued messages that hold the address (as sender,
recipient, or named in a body), its events (rotated files too), the events of inbound
reports about it, its suppression entries, its unique-recipient counts and ledger rows,
and the webhook batches that carry it. `erase` removes all of it and keeps its suppression
entries as a keyed hash (`[retention] gdpr_key_file`), so mail to it is still refused;
it prints what was removed (`--json`: the API's answer).
"""

from __future__ import annotations

import argparse
from typing import Any

from mta.cli.common import EX_OK, Action, command, print_json, run_admin
from mta.config import Config

# An erasure vacuums every SQLite file: a large spool takes a while.
_ERASE_TIMEOUT = 600.0


def cmd_gdpr(args: argparse.Namespace) -> int:
    return run_admin(args, _GDPR)


def _export(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.timeout = max(client.timeout, _ERASE_TIMEOUT)
    print_json(client.request("POST", "/api/v1/admin/gdpr/export",
                              body={"address": args.address}))
    return EX_OK


def _erase(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.timeout = max(client.timeout, _ERASE_TIMEOUT)
    out = client.request("POST", "/api/v1/admin/gdpr/erase", body={"address": args.address})
    if args.json:
        print_json(out)
        return EX_OK
    for w in out["workers"]:
        q, e = w.get("queue", {}), w.get("events", {})
        s = w.get("suppressions", {})
        print(f"worker {w['shard']}: {q.get('messages_deleted', 0)} message(s) deleted, "
              f"{q.get('recipients_removed', 0)} recipient(s) removed, "
              f"{q.get('bodies_redacted', 0)} body(ies) redacted; "
              f"{e.get('lines_removed', 0)} event line(s) removed, "
              f"{e.get('lines_redacted', 0)} redacted in {e.get('files_rewritten', 0)} "
              f"file(s); {s.get('entries_hashed', 0) + s.get('entries_added', 0)} "
              f"suppression entr(ies) kept as {w['token']}")
    return EX_OK


_GDPR: dict[str, Action] = {"export": _export, "erase": _erase}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    gp = command(sub, common, "gdpr", cmd_gdpr,
                 "export or erase what mta holds about an address (daemon)")
    gs = gp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    e = gs.add_parser("export", help="everything about ADDRESS, as JSON")
    e.add_argument("address")
    r = gs.add_parser("erase", help="remove ADDRESS everywhere; keep it suppressed as a hash")
    r.add_argument("address")
    r.add_argument("--json", action="store_true")
