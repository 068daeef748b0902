"""`mta shaping suspend|resume|list|show`: shaping suspensions and the effective rules of a
delivery path in the running daemon, through its admin API.
"""

from __future__ import annotations

import argparse
from typing import Any

from mta.cli.common import (
    EX_OK,
    EX_USAGE,
    Action,
    command,
    duration_arg,
    fail,
    print_json,
    run_admin,
    stamp,
    table,
    until_text,
)
from mta.config import Config


def cmd_shaping(args: argparse.Namespace) -> int:
    if args.sub in ("suspend", "resume"):
        # Checked here rather than by argparse `choices`: parsing stays free of imports.
        from mta.shaping.suspend import SCOPES

        if args.scope not in SCOPES:
            return fail(args, f"unknown scope {args.scope!r}: one of {', '.join(SCOPES)}",
                         EX_USAGE)
    return run_admin(args, _SHAPING)


def _shaping_suspend(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    s = client.shaping_suspend(args.scope, args.name, args.reason, args.duration)
    print(f"suspended {s['scope']} {s['name']} until {until_text(s)} ({s['reason']})")
    return EX_OK


def _shaping_resume(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    s = client.shaping_resume(args.scope, args.name)
    print(f"lifted the suspension of {s['scope']} {s['name']} ({s['reason']})")
    return EX_OK


def _shaping_list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.shaping_suspensions()["suspensions"]
    if args.json:
        print_json(items)
    elif not items:
        print("no shaping suspensions")
    else:
        table(["SCOPE", "NAME", "SINCE", "UNTIL", "REASON"],
               [[s["scope"], s["name"], stamp(s["since"]), until_text(s), s["reason"]]
                for s in items])
    return EX_OK


def _shaping_show(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    ex = client.shaping_explain(args.site, source=args.source, tenant=args.tenant)
    if args.json:
        print_json(ex)
        return EX_OK
    print(f"path {ex['path']} (source {ex['source']}, site {ex['site']})")
    print()
    table(["RULE", "VALUE", "FROM"],
           [[name, "-" if r["value"] is None else r["value"], r["from"]]
            for name, r in ex["rules"].items()])
    print()
    now = ex["now"]
    for name, st in ex["throttles"].items():
        if st is None:
            print(f"{name}: no limit")
        else:
            wait = max(st["next_allowed"] - now, 0.0)
            print(f"{name}: {st['tokens']} of {st['burst']} available, one per "
                  f"{st['interval']:g}s" + (f", next in {wait:.1f}s" if wait else ""))
    c = ex["connections"]
    print(f"connections: {c['in_use']} in use, window {c['window']} of limit {c['limit']}")
    a = ex["adaptive"]
    line = f"adaptive: rate scale {a['rate_scale']:g}, slowdown streak {a['slowdown_streak']}"
    if a.get("dead_until"):
        line += (f", dead until {stamp(a['dead_until'])} ({a['dead_category']}"
                 + (f": {a['dead_reply']}" if a.get("dead_reply") else "") + ")")
    print(line)
    s = ex.get("suspension")
    print("suspension: none" if s is None else
          f"suspension: {s['scope']} {s['name']} until {until_text(s)} ({s['reason']})")
    if "egress" in ex:
        e = ex["egress"]
        print(f"egress: from {e['address'] or '(any local address)'} as "
              f"{e['ehlo_name'] or '(server hostname)'}, sent today {e['sent_today']}"
              + (f" of warm-up cap {e['warmup_cap_today']}" if e.get("warmup_cap_today")
                 else ""))
        bl = e.get("blocklist") or {}
        for zone, code in (bl.get("dns") or {}).items():
            print(f"blocklist: listed in {zone} ({code}): {bl['action']}")
        if bl.get("reply_hold"):
            h = bl["reply_hold"]
            print(f"blocklist: replies of {len(h['sites'])} sites name {h['list']}: "
                  f"{bl['action']} until {stamp(h['until'])} ({h['reply']})")
    return EX_OK


_SHAPING: dict[str, Action] = {
    "suspend": _shaping_suspend, "resume": _shaping_resume, "list": _shaping_list,
    "show": _shaping_show,
}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "shaping", cmd_shaping, "shaping suspensions and rules (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    s = ss.add_parser("suspend", help="stop sending to a site, from a source, on a path "
                                      "(SOURCE->SITE) or for a tenant")
    s.add_argument("scope", metavar="site|source|path|tenant")
    s.add_argument("name")
    s.add_argument("--reason", required=True)
    s.add_argument("--duration", type=duration_arg, help="e.g. 1h (default: until resumed)")
    r = ss.add_parser("resume", help="lift a suspension")
    r.add_argument("scope", metavar="site|source|path|tenant")
    r.add_argument("name")
    ss.add_parser("list", help="active suspensions").add_argument("--json", action="store_true")
    sh = ss.add_parser("show", help="effective rules of a site (and the layer each value "
                                    "came from), throttle and connection state")
    sh.add_argument("site")
    sh.add_argument("--source", default=None, help="egress source (default: default)")
    sh.add_argument("--tenant", default=None, help="also check this tenant's suspension")
    sh.add_argument("--json", action="store_true")
