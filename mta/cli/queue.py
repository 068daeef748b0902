"""`mta queue list|show|hold|release|delete|bounce|flush|stats|explain`: the queue of the
running daemon, through its admin API.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mta.cli.common import EX_OK, admin_client, command, file_config, print_json


def cmd_queue(args: argparse.Namespace) -> int:
    from mta.http.client import AdminError

    client = admin_client(file_config(args))
    try:
        if args.queue_cmd == "list":
            result = client.queue_list(state=args.state, limit=args.limit,
                                       tenant=args.tenant, site=args.site)
            if args.json:
                print_json(result)
            else:
                _print_queue_table(result["messages"])
        elif args.queue_cmd == "show":
            print_json(client.queue_show(args.id))
        elif args.queue_cmd in ("hold", "release", "delete", "bounce"):
            result = client.queue_action(args.id, args.queue_cmd)
            print(f"{args.id}: {result.get('result', 'ok')}")
        elif args.queue_cmd == "flush":
            result = client.queue_flush(args.id)
            print(f"flushed {result.get('recipients', 0)} recipient(s)")
        elif args.queue_cmd == "stats":
            result = client.queue_stats()
            if args.json:
                print_json(result)
            else:
                _print_stats(result)
        elif args.queue_cmd == "explain":
            print_json(client.queue_explain(args.id))
    except AdminError as e:
        print(f"mta queue {args.queue_cmd}: {e}", file=sys.stderr)
        return e.exit_code
    return EX_OK


def _print_queue_table(messages: list[dict]) -> None:
    print(f"{'ID':<20} {'TENANT':<12} {'SIZE':>8} {'RCPTS':>5}  {'STATE':<9} SENDER")
    for m in messages:
        states = sorted({r["state"] for r in m.get("recipients", [])}) or [m.get("state", "")]
        print(f"{m['id']:<20} {m['tenant'][:12]:<12} {m['size']:>8} "
              f"{len(m.get('recipients', [])):>5}  {','.join(states):<9} "
              f"<{m['mail_from']}>")


def _print_stats(stats: dict) -> None:
    for state, n in sorted(stats.get("by_state", {}).items()):
        print(f"{state:<12} {n}")
    by_site = stats.get("by_site", {})
    if by_site:
        print()
        print(f"{'SITE':<40} QUEUED")
        for site, n in sorted(by_site.items(), key=lambda kv: -kv[1]):
            print(f"{site[:40]:<40} {n}")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    q = command(sub, common, "queue", cmd_queue,
                "inspect and act on the queue of the running daemon")
    qs = q.add_subparsers(dest="queue_cmd", required=True, metavar="ACTION")
    ql = qs.add_parser("list", help="list queued messages")
    ql.add_argument("--json", action="store_true")
    ql.add_argument("--state", choices=["queued", "held", "delivered", "bounced", "expired"])
    ql.add_argument("--limit", type=int, default=100)
    ql.add_argument("--tenant", help="only this tenant's messages")
    ql.add_argument("--site", help='only those with a recipient at this site ("": not routed)')
    for action, text in (("show", "show one message"), ("hold", "hold a message"),
                         ("release", "release a held message"),
                         ("delete", "delete a message without notice"),
                         ("bounce", "bounce a message to its sender, with a DSN"),
                         ("explain", "say why a message is waiting")):
        qs.add_parser(action, help=text).add_argument("id")
    qs.add_parser("flush", help="retry deferred mail now").add_argument("id", nargs="?")
    qst = qs.add_parser("stats", help="counts by state and by site")
    qst.add_argument("--json", action="store_true")
