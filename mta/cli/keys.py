"""`mta keys create|list|revoke TENANT`: tenants' API keys for POST /api/v1/messages, in the
running daemon's policy store through its admin API (/api/v1/admin/keys).

`create` prints the key once (only its SHA-256 is stored; a lost key is revoked and made
again); `revoke TENANT ID` takes the id `list` shows. Keys in the config are listed too
(source "config") and changed by editing the config and a SIGHUP.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from mta.cli.common import EX_OK, Action, command, print_json, run_admin, stamp, table
from mta.config import Config


def cmd_keys(args: argparse.Namespace) -> int:
    return run_admin(args, _KEYS)


def _create(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", "/api/v1/admin/keys",
                       body={"tenant": args.tenant, "label": args.label})
    if args.json:
        print_json(r)
    else:
        print(r["key"])
        print(f"key {r['id']} created for tenant {r['tenant']}: it is shown only now",
              file=sys.stderr)
    return EX_OK


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.request("GET", "/api/v1/admin/keys",
                           query={"tenant": args.tenant} if args.tenant else None)["keys"]
    if args.json:
        print_json(items)
    elif not items:
        print("no API keys")
    else:
        table(["TENANT", "ID", "SOURCE", "CREATED", "LABEL"],
              [[r["tenant"], r["id"], r["source"], stamp(r["created"]), r["label"] or "-"]
               for r in items])
    return EX_OK


def _revoke(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    q = urllib.parse.quote
    r = client.request("DELETE", f"/api/v1/admin/keys/{q(args.tenant, safe='')}/"
                                 f"{q(args.id, safe='')}")["revoked"]
    print(f"revoked key {r['id']} of tenant {r['tenant']}")
    return EX_OK


_KEYS: dict[str, Action] = {"create": _create, "list": _list, "revoke": _revoke}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "keys", cmd_keys, "tenants' API keys (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    p = ss.add_parser("create", help="make a key; prints it once")
    p.add_argument("tenant")
    p.add_argument("--label", default="", help="a note kept with the key")
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("list", help="keys (of one tenant), never the keys themselves")
    p.add_argument("tenant", nargs="?")
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("revoke", help="refuse a key from now on, on every node")
    p.add_argument("tenant")
    p.add_argument("id", help="the id `mta keys list` shows")
