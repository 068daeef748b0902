"""`mta domains add|verify|list|remove|check TENANT DOMAIN`: tenants' sending domains in the
running daemon, through its admin API (/api/v1/admin/domains).

add prints the TXT record to publish; verify looks it up now (exit 1 while it is not
found); check reports SPF, DKIM and DMARC and whether they align with the domain.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from mta.cli.common import EX_ERROR, EX_OK, Action, command, print_json, run_admin, stamp, table
from mta.config import Config


def cmd_domains(args: argparse.Namespace) -> int:
    return run_admin(args, _DOMAINS)


def _path(args: argparse.Namespace, tail: str = "") -> str:
    q = urllib.parse.quote
    return f"/api/v1/admin/domains/{q(args.tenant, safe='')}/{q(args.domain, safe='')}{tail}"


def _publish(r: dict[str, Any]) -> str:
    t = r["txt_record"]
    return f'{t["name"]}. IN TXT "{t["value"]}"'


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", "/api/v1/admin/domains",
                       body={"tenant": args.tenant, "domain": args.domain})
    if args.json:
        print_json(r)
        return EX_OK
    state = "verified" if r["verified"] else "not verified yet"
    print(f"{r['domain']} registered for tenant {r['tenant']} ({state}); publish:")
    print(f"  {_publish(r)}")
    print(f"then run: mta domains verify {r['tenant']} {r['domain']}")
    return EX_OK


def _verify(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", _path(args, "/verify"))
    if args.json:
        print_json(r)
    elif r["verified"]:
        print(f"{r['domain']} is verified for tenant {r['tenant']}")
    else:
        print(f"{r['domain']} is not verified: {r['last_error']}")
        print(f"  publish: {_publish(r)}")
    return EX_OK if r["verified"] else EX_ERROR


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.request("GET", "/api/v1/admin/domains",
                           query={"tenant": args.tenant})["domains"]
    if args.json:
        print_json(items)
    elif not items:
        print("no sending domains registered")
    else:
        table(["TENANT", "DOMAIN", "VERIFIED", "CHECKED", "PROBLEM"],
              [[r["tenant"], r["domain"], "yes" if r["verified"] else "no",
                stamp(r["checked_at"]) if r["checked_at"] else "-", r["last_error"] or "-"]
               for r in items])
    return EX_OK


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.request("DELETE", _path(args))
    print(f"removed {args.domain} from tenant {args.tenant}")
    return EX_OK


def _check(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("GET", _path(args, "/check"))
    if args.json:
        print_json(r)
        return EX_OK
    reg = r.get("registration")
    print(f"{r['domain']}: " + ("not registered for this tenant" if reg is None else
                                "verified" if reg["verified"] else "registered, not verified"))
    spf = r["spf"]
    print(f"SPF    {spf['record'] or '-'}" + (f"  ({spf['error']})" if spf["error"] else ""))
    for addr, ok in spf["covers_egress"].items():
        print(f"         egress {addr}: {'listed' if ok else 'NOT listed (ip4:/ip6:)'}")
    dkim = r["dkim"]
    if dkim["signing_domain"] is None:
        print("DKIM   no [dkim] section signs mail From: this domain")
    for sel, s in dkim["selectors"].items():
        ok = "matches our key" if s["matches_key"] else (s["error"] or "does NOT match our key")
        print(f"DKIM   d={dkim['signing_domain']} s={sel}: {ok}")
    dm = r["dmarc"]
    print(f"DMARC  {dm['record'] or '-'}" + (f" (at {dm['at']})" if dm["at"] else "")
          + (f"  ({dm['error']})" if dm["error"] else ""))
    al = r["alignment"]
    print(f"aligned: DKIM {'yes' if al['dkim'] else 'no'}, SPF {'yes' if al['spf'] else 'no'}")
    return EX_OK if al["dkim"] or al["spf"] else EX_ERROR


_DOMAINS: dict[str, Action] = {"add": _add, "verify": _verify, "list": _list,
                               "remove": _remove, "check": _check}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "domains", cmd_domains, "tenants' sending domains (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    for name, text in (("add", "register a domain; prints the TXT record to publish"),
                       ("verify", "look the verification TXT record up now"),
                       ("remove", "forget a domain"),
                       ("check", "SPF, DKIM and DMARC records and alignment")):
        p = ss.add_parser(name, help=text)
        p.add_argument("tenant")
        p.add_argument("domain")
        p.add_argument("--json", action="store_true")
    ls = ss.add_parser("list", help="registered domains")
    ls.add_argument("tenant", nargs="?")
    ls.add_argument("--json", action="store_true")
