"""`mta content list|add|remove|check`: the content rules of the running daemon, through its
admin API (/api/v1/admin/content/...).

`add FILE` takes one rule as a TOML table (the body of a [[content.rules]] entry: `name =
"pharma"`, `body = "(?i)v[i1]agra"`, `action = "reject"`, ...) or a JSON object, from a
file or `-` for stdin; it holds at once on this node and within [content] rules_poll on the
others. Rules in the config file are listed too (source "config") and changed by editing
the file and a SIGHUP. `check FILE` is the dry run: a raw message through the rules.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.parse
from typing import Any

from mta.cli.common import (
    EX_DATAERR,
    EX_OK,
    Action,
    command,
    fail,
    print_json,
    run_admin,
    stamp,
    table,
)
from mta.config import Config


def cmd_content(args: argparse.Namespace) -> int:
    return run_admin(args, _CONTENT)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("GET", "/api/v1/admin/content/rules")
    if args.json:
        print_json(r)
        return EX_OK
    if not r["rules"]:
        print("no content rules")
        return EX_OK
    added = {x["name"]: x for x in r.get("runtime", [])}
    table(["NAME", "KIND", "ACTION", "SCORE", "SOURCE", "ADDED"],
          [[x["name"], x["kind"], x["action"], f"{x['score']:g}" if x["action"] == "score"
            else "-", x.get("source", "config"),
            stamp(added[x["name"]]["added"]) if x["name"] in added else "-"]
           for x in r["rules"]])
    idle = [x["name"] for x in r.get("runtime", []) if not x["active"]]
    if idle:
        print(f"not run (the config has rules of these names): {', '.join(idle)}",
              file=sys.stderr)
    return EX_OK


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    try:
        raw = _read(args.file)
    except OSError as e:
        return fail(args, f"{args.file}: {e.strerror}", EX_DATAERR)
    text = raw.decode("utf-8", "replace")
    try:
        rule = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        return fail(args, f"{args.file}: not a TOML table or a JSON object: {e}", EX_DATAERR)
    r = client.request("POST", "/api/v1/admin/content/rules", body=rule)
    if args.json:
        print_json(r)
    else:
        print(f"content rule {r['name']} added")
    return EX_OK


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.name, safe="")
    client.request("DELETE", f"/api/v1/admin/content/rules/{name}")
    print(f"content rule {args.name} removed")
    return EX_OK


def _check(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    try:
        message = _read(args.file).decode("utf-8", "replace")
    except OSError as e:
        return fail(args, f"{args.file}: {e.strerror}", EX_DATAERR)
    body: dict[str, Any] = {"message": message, "tenant": args.tenant}
    if args.sender:
        body["sender"] = args.sender
    r = client.request("POST", "/api/v1/admin/content/check", body=body)
    if args.json:
        print_json(r)
    else:
        print(f"{r['action']}: rules {', '.join(r['rules']) or '-'}, score {r['score']:g}"
              + (f", reply {r['reply']}" if r.get("reply") else "")
              + (f" ({r['reason']})" if r.get("reason") else ""))
    return EX_OK


_CONTENT: dict[str, Action] = {"list": _list, "add": _add, "remove": _remove,
                               "check": _check}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "content", cmd_content, "content rules (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    p = ss.add_parser("list", help="the rules in force, the config's and the run-time ones")
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("add", help="add a rule at run time, on every node")
    p.add_argument("file", help="one rule as a TOML table or a JSON object; - for stdin")
    p.add_argument("--json", action="store_true")
    p = ss.add_parser("remove", help="remove a rule added at run time")
    p.add_argument("name")
    p = ss.add_parser("check", help="dry run: a message through the rules, nothing stored")
    p.add_argument("file", help="the raw message; - for stdin")
    p.add_argument("--tenant", default="default")
    p.add_argument("--sender", default="")
    p.add_argument("--json", action="store_true")
