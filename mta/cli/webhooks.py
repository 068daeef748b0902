"""`mta webhooks add|list|show|test|remove|enable|failed|replay`: the endpoints the running
daemon posts events to, through its admin API (/api/v1/webhooks, mta.http.admin_webhooks).

`add` prints the endpoint's signing secret once (the receiver verifies `webhook-signature`
with it, e.g. with the `standardwebhooks` library); `list` never shows it. `failed` and
`replay` act on the batches of the node asked (each node posts its own events).
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mta.cli.common import (
    EX_OK,
    EX_UNAVAILABLE,
    Action,
    command,
    count_arg,
    print_json,
    run_admin,
    stamp,
    table,
)
from mta.config import Config


def cmd_webhooks(args: argparse.Namespace) -> int:
    return run_admin(args, _WEBHOOKS)


def _path(ep_id: str, tail: str = "") -> str:
    return f"/api/v1/webhooks/{urllib.parse.quote(ep_id, safe='')}{tail}"


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    body = {"url": args.url, "tenant": args.tenant, "description": args.description,
            "events": [e.strip() for e in args.events.split(",") if e.strip()]
            if args.events else None}
    ep = client.request("POST", "/api/v1/webhooks",
                        body={k: v for k, v in body.items() if v is not None})
    if args.json:
        print_json(ep)
        return EX_OK
    print(f"added endpoint {ep['id']} for {ep['tenant'] or 'every tenant'}: {ep['url']} "
          f"(events: {', '.join(ep['events'])})")
    print(f"signing secret (shown once): {ep['secret']}")
    return EX_OK


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    eps = client.request("GET", "/api/v1/webhooks")["endpoints"]
    if args.json:
        print_json(eps)
        return EX_OK
    if not eps:
        print("no webhook endpoints")
        return EX_OK
    table(["ID", "TENANT", "URL", "EVENTS", "STATE", "SINCE"],
          [[e["id"], e["tenant"] or "*", e["url"], ",".join(e["events"]),
            "enabled" if e["enabled"] else f"disabled: {e['disabled_reason']}",
            stamp(e["created_at"])] for e in eps])
    return EX_OK


def _show(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    print_json(client.request("GET", _path(args.id)))
    return EX_OK


def _test(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", _path(args.id, "/test"))
    if args.json:
        print_json(r)
    elif r["ok"]:
        print(f"{r['url']} answered {r['status']} in {r['seconds'] * 1000:.0f} ms")
    else:
        print(f"{r['url']} failed: {r['error']}")
    return EX_OK if r["ok"] else EX_UNAVAILABLE


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.request("DELETE", _path(args.id))
    print(f"removed endpoint {args.id} and its waiting batches")
    return EX_OK


def _enable(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    ep = client.request("POST", _path(args.id, "/enable"))
    print(f"enabled endpoint {ep['id']} ({ep['url']})")
    return EX_OK


def _failed(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    out = client.request("GET", "/api/v1/webhooks/failed",
                         query={"endpoint": args.endpoint, "limit": args.limit})["failed"]
    if args.json:
        print_json(out)
        return EX_OK
    if not out:
        print("no failed batches")
        return EX_OK
    table(["WEBHOOK ID", "ENDPOINT", "EVENTS", "CREATED", "ATTEMPTS", "LAST ERROR"],
          [[b["webhook_id"], b["endpoint"], b["events"], stamp(b["created_at"]),
            b["attempts"], b["last_error"]] for b in out])
    return EX_OK


def _replay(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.endpoint:
        body["endpoint"] = args.endpoint
    if args.webhook_ids:
        body["webhook_ids"] = args.webhook_ids
    n = client.request("POST", "/api/v1/webhooks/replay", body=body)["replayed"]
    print(f"replaying {n} batch(es)")
    return EX_OK


_WEBHOOKS: dict[str, Action] = {"add": _add, "list": _list, "show": _show, "test": _test,
                                "remove": _remove, "enable": _enable, "failed": _failed,
                                "replay": _replay}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    wp = command(sub, common, "webhooks", cmd_webhooks, "webhook endpoints (daemon)")
    ws = wp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    a = ws.add_parser("add", help="post events to a URL; prints its signing secret")
    a.add_argument("url")
    a.add_argument("--tenant", default=None,
                   help="only this tenant's (and its sub-accounts') events (default: all)")
    a.add_argument("--events", default=None,
                   help="comma-separated event names, e.g. delivered,bounced "
                        "(default: every event)")
    a.add_argument("--description", default=None)
    a.add_argument("--json", action="store_true")
    ls = ws.add_parser("list", help="the endpoints (without secrets)")
    ls.add_argument("--json", action="store_true")
    for name, text in (("show", "one endpoint, as JSON"), ("remove", "stop posting to it"),
                       ("enable", "enable a disabled endpoint again")):
        p = ws.add_parser(name, help=text)
        p.add_argument("id")
    t = ws.add_parser("test", help="post a webhook_test event now; exit 69 if it fails")
    t.add_argument("id")
    t.add_argument("--json", action="store_true")
    f = ws.add_parser("failed", help="batches that failed for good on this node")
    f.add_argument("--endpoint", default=None)
    f.add_argument("--limit", type=count_arg, default=100)
    f.add_argument("--json", action="store_true")
    r = ws.add_parser("replay", help="post failed batches again (same webhook ids)")
    r.add_argument("webhook_ids", nargs="*", help="these batches (default: all)")
    r.add_argument("--endpoint", default=None, help="only this endpoint's")
