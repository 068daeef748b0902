"""`mta console accounts list|add|passwd|role|disable|enable|remove`: the operator console's
run-time accounts, in the running daemon's policy store through its admin API
(/api/v1/admin/console/accounts), beside the config's [console.accounts.NAME] (listed,
changed only in the config file).

The password is read like `mta passwd` reads it (prompt twice, or one stdin line, or
--password) and hashed here (scrypt): only the hash is sent and stored. A new password,
`disable` and `remove` end the account's console sessions.
"""

from __future__ import annotations

import argparse
import sys
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
from mta.config.console import ROLES


def cmd_console(args: argparse.Namespace) -> int:
    return run_admin(args, _ACCOUNTS)


def _password(args: argparse.Namespace) -> str | None:
    from mta.console.accounts import MIN_PASSWORD

    password = read_password(args.password, "console accounts")
    if password is None:
        return None
    if len(password) < MIN_PASSWORD:
        print(f"mta console accounts: the password must have at least {MIN_PASSWORD} "
              "characters", file=sys.stderr)
        return None
    from mta.smtp.auth import hash_password

    return hash_password(password)


def _path(name: str, tail: str = "") -> str:
    return f"/api/v1/admin/console/accounts/{urllib.parse.quote(name, safe='')}{tail}"


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    hashed = _password(args)
    if hashed is None:
        return EX_USAGE
    body = {"name": args.name, "role": args.role, "password_hash": hashed}
    if args.tenant:
        body["tenant"] = args.tenant
    r = client.request("POST", "/api/v1/admin/console/accounts", body=body)
    what = f"portal account of tenant {r['tenant']}" if r["tenant"] else r["role"]
    print(f"console account {r['name']} added ({what})")
    return EX_OK


def _passwd(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    hashed = _password(args)
    if hashed is None:
        return EX_USAGE
    client.request("PUT", _path(args.name, "/password"), body={"password_hash": hashed})
    print(f"password of console account {args.name} changed (its sessions ended)")
    return EX_OK


def _role(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("PUT", _path(args.name, "/role"), body={"role": args.role})
    print(f"console account {r['name']} is now {r['role']}")
    return EX_OK


def _state(verb: str) -> Action:
    def run(client: Any, cfg: Config, args: argparse.Namespace) -> int:
        client.request("POST", _path(args.name, f"/{verb}"))
        print(f"console account {args.name} {verb}d")
        return EX_OK
    return run


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.request("DELETE", _path(args.name))
    print(f"console account {args.name} removed (its sessions ended)")
    return EX_OK


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.request("GET", "/api/v1/admin/console/accounts")["accounts"]
    if args.json:
        print_json(items)
    elif not items:
        print("no console accounts")
    else:
        table(["ACCOUNT", "ROLE", "TENANT", "SOURCE", "STATE", "CREATED", "BY"],
              [[a["name"], a["role"], a["tenant"] or "-", a["source"],
                "disabled" if a["disabled"] else "active", stamp(a["created"]),
                a["by"] or "-"] for a in items])
    return EX_OK


_ACCOUNTS: dict[str, Action] = {"add": _add, "passwd": _passwd, "role": _role,
                                "disable": _state("disable"), "enable": _state("enable"),
                                "remove": _remove, "list": _list}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "console", cmd_console, "the operator console (daemon)")
    groups = sp.add_subparsers(dest="group", required=True, metavar="GROUP")
    acc = groups.add_parser("accounts", help="console accounts made at run time",
                            parents=[common])
    ss = acc.add_subparsers(dest="sub", required=True, metavar="ACTION")
    p = ss.add_parser("add", help="add an account (password: prompt, stdin or --password)")
    p.add_argument("name")
    p.add_argument("--role", choices=ROLES, default="viewer")
    p.add_argument("--tenant", help="a portal account of this tenant (sees it only)")
    p.add_argument("--password", help="the password (default: prompt or stdin)")
    p = ss.add_parser("passwd", help="reset an account's password (ends its sessions)")
    p.add_argument("name")
    p.add_argument("--password", help="the password (default: prompt or stdin)")
    p = ss.add_parser("role", help="change an account's role")
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    for verb, text in (("disable", "refuse the account's sign-in and end its sessions"),
                       ("enable", "allow a disabled account again"),
                       ("remove", "forget an account (ends its sessions)")):
        ss.add_parser(verb, help=text).add_argument("name")
    ls = ss.add_parser("list", help="run-time and config accounts")
    ls.add_argument("--json", action="store_true")
