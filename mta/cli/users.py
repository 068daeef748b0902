"""`mta users add|passwd|disable|enable|remove|list`: SMTP AUTH users made at run time, in
the running daemon's policy store through its admin API (/api/v1/admin/users), beside the
config's `[users.NAME]` (listed, changed only in the config).

The password is read like `mta passwd` reads it (prompt twice, or one stdin line, or
--password) and hashed here (scrypt): only the hash is sent and stored.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mta.cli.common import (
    EX_OK,
    EX_USAGE,
    Action,
    command,
    print_json,
    read_password,
    run_admin,
    stamp,
    table,
)
from mta.config import Config


def cmd_users(args: argparse.Namespace) -> int:
    return run_admin(args, _USERS)


def _password(args: argparse.Namespace) -> str | None:
    password = read_password(args.password, "users")
    if password is None:
        return None
    from mta.smtp.auth import hash_password

    return hash_password(password)


def _path(name: str, tail: str = "") -> str:
    return f"/api/v1/admin/users/{urllib.parse.quote(name, safe='')}{tail}"


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    hashed = _password(args)
    if hashed is None:
        return EX_USAGE
    r = client.request("POST", "/api/v1/admin/users", body={
        "name": args.name, "tenant": args.tenant, "password_hash": hashed,
        "networks": args.network})
    print(f"user {r['name']} added for tenant {r['tenant']}")
    return EX_OK


def _passwd(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    hashed = _password(args)
    if hashed is None:
        return EX_USAGE
    client.request("PUT", _path(args.name, "/password"), body={"password_hash": hashed})
    print(f"password of {args.name} changed")
    return EX_OK


def _state(verb: str) -> Action:
    def run(client: Any, cfg: Config, args: argparse.Namespace) -> int:
        client.request("POST", _path(args.name, f"/{verb}"))
        print(f"user {args.name} {verb}d")
        return EX_OK
    return run


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.request("DELETE", _path(args.name))
    print(f"user {args.name} removed")
    return EX_OK


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.request("GET", "/api/v1/admin/users")["users"]
    if args.json:
        print_json(items)
    elif not items:
        print("no users")
    else:
        table(["USER", "TENANT", "SOURCE", "STATE", "NETWORKS", "CREATED"],
              [[u["name"], u["tenant"], u["source"],
                "disabled" if u["disabled"] else "active",
                ",".join(u["networks"]) or "-", stamp(u["created"])] for u in items])
    return EX_OK


_USERS: dict[str, Action] = {"add": _add, "passwd": _passwd, "disable": _state("disable"),
                             "enable": _state("enable"), "remove": _remove, "list": _list}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "users", cmd_users, "SMTP AUTH users made at run time (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    p = ss.add_parser("add", help="add a user (password: prompt, stdin or --password)")
    p.add_argument("name")
    p.add_argument("--tenant", required=True)
    p.add_argument("--network", action="append", default=[], metavar="CIDR",
                   help="client network the user may log in from (repeat); default anywhere")
    p.add_argument("--password", help="the password (default: prompt or stdin)")
    p = ss.add_parser("passwd", help="set a user's password")
    p.add_argument("name")
    p.add_argument("--password", help="the password (default: prompt or stdin)")
    for verb, text in (("disable", "refuse the user's AUTH from now on, on every node"),
                       ("enable", "allow a disabled user again"), ("remove", "forget a user")):
        ss.add_parser(verb, help=text).add_argument("name")
    ls = ss.add_parser("list", help="run-time and config users")
    ls.add_argument("--json", action="store_true")
