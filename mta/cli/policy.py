"""`mta policy credits|limit|unlimit|suspend|resume|show|tenants|reputation|escalate|clear`:
the policy state of the running daemon (tenants, prepaid credits, operator limits,
suspensions, the reputation ladder), through its admin API.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from mta.cli.common import (
    EX_ERROR,
    EX_OK,
    EX_USAGE,
    Action,
    command,
    count_arg,
    duration_arg,
    fail,
    print_json,
    run_admin,
    table,
    until_text,
    when_arg,
    zone,
)
from mta.config import Config

# `mta policy limit` without --until: an operator limit is temporary by design (the store
# needs an end); a month covers an investigation without being forgotten for ever.
DEFAULT_LIMIT_DAYS = 30


def cmd_policy(args: argparse.Namespace) -> int:
    problem = _policy_subject_problem(args)
    if problem:
        return fail(args, problem, EX_USAGE)
    name = getattr(args, "name", None)
    if args.sub in ("limit", "unlimit") and name is not None:
        # Checked here (not by argparse `choices`) so that parsing the command line does
        # not import the policy engine: every `mta` command starts faster.
        from mta.policy import LIMIT_NAMES

        if name not in LIMIT_NAMES:
            return fail(args, f"unknown limit {name!r}: one of {', '.join(LIMIT_NAMES)}",
                         EX_USAGE)
    if args.sub == "reputation":
        bad = next((x for x in args.set if "=" not in x), None)
        if bad is not None:
            return fail(args, f"--set {bad}: expected KEY=VALUE, e.g. "
                        "complaint=0.001,0.002,0.003,0.005", EX_USAGE)
    return run_admin(args, _POLICY)


def _policy_subject_problem(args: argparse.Namespace) -> str:
    """suspend/resume/show act on one subject: a TENANT, --sender-domain or --source."""
    if args.sub not in ("suspend", "resume", "show"):
        return ""
    given = [x for x in (args.tenant, args.sender_domain, getattr(args, "source", None))
             if x is not None]
    kinds = "TENANT or --sender-domain" + (" or --source" if args.sub != "show" else "")
    if len(given) != 1:
        return f"give exactly one of {kinds}"
    if getattr(args, "msg_class", None) and args.tenant is None:
        return "--class applies to a tenant"
    if getattr(args, "until", None) and getattr(args, "duration", None):
        return "give --until or --for, not both"
    return ""


def _end_text(ts: float | None, tz: ZoneInfo, never: str = "until lifted") -> str:
    """An end instant as the operator gave it: a local midnight is "through" the day before
    (`--until 2026-12-31` ends at 2027-01-01 00:00), anything else "until" the instant."""
    if ts is None:
        return never
    end = dt.datetime.fromtimestamp(ts, tz)
    if end.time() == dt.time():
        return f"through {(end.date() - dt.timedelta(days=1)).isoformat()}"
    return f"until {end.strftime('%Y-%m-%d %H:%M:%S')}"


def _lot_line(lot: dict, tz: ZoneInfo) -> str:
    state = "expired" if lot["expired"] else ("paid" if lot["paid"] else "unpaid")
    note = f" ({lot['note']})" if lot.get("note") else ""
    return (f"lot {lot['id']}: {lot['remaining']:,}/{lot['amount']:,} {state}, usable "
            f"{_end_text(lot['expires'], tz)}{note}")


def _credits_text(summary: dict, tz: ZoneInfo) -> str:
    lines = [f"tenant {summary['tenant']}: balance {summary['balance']:,}, held "
             f"{summary['held']:,}, unpaid {summary['unpaid']:,}"]
    lines += [f"  {_lot_line(lot, tz)}" for lot in summary["lots"]]
    return "\n".join(lines)


def _policy_credits(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    from mta.policy import LedgerEntry, format_history

    tz = zone(cfg)
    if args.sub2 == "add":
        lot = client.credits_add(args.tenant, args.amount, paid=args.paid,
                                 expires=args.expires, note=args.note)
        print(f"tenant {args.tenant}: added {_lot_line(lot, tz)}")
    elif args.sub2 == "paid":
        lot = client.credits_paid(args.lot)
        print(f"tenant {lot['tenant']}: marked paid: {_lot_line(lot, tz)}")
    elif args.sub2 == "show":
        summary = client.credits(args.tenant)
        if args.json:
            print_json(summary)
        else:
            print(_credits_text(summary, tz))
    else:
        entries = client.credits_history(args.tenant, args.limit)["entries"]
        if args.json:
            print_json(entries)
        elif entries:
            print(f"{'ENTRY':>8} {'TIME':<19} {'LOT':<9} {'DELTA':>6} {'KIND':<8} REFERENCE")
            print(format_history([LedgerEntry(**e) for e in entries], tz))
        else:
            print(f"tenant {args.tenant}: no credit history")
    return EX_OK


def _policy_limit(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    until = args.until or (dt.datetime.now(zone(cfg)).date()
                           + dt.timedelta(days=DEFAULT_LIMIT_DAYS)).isoformat()
    o = client.limit_set(args.tenant, args.name, args.value, until=until, reason=args.reason)
    print(f"tenant {args.tenant}: {o['name']} = {o['value']:,} "
          f"{_end_text(o['until'], zone(cfg))} ({o['reason']})")
    return EX_OK


def _policy_unlimit(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    n = client.limit_clear(args.tenant, args.name)["cleared"]
    print(f"tenant {args.tenant}: cleared {n} operator limit(s)")
    return EX_OK


def _policy_suspend(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    if args.source is not None:
        return _source_suspend(client, cfg, args)
    if args.sender_domain is not None:
        s = client.domain_suspend(args.sender_domain, args.reason, until=args.until,
                                  duration=args.duration)
        print(f"sender domain {s['domain']}: suspended {_end_text(s['until'], zone(cfg))} "
              f"({s['reason']})")
        return EX_OK
    s = client.suspend(args.tenant, args.reason, msg_class=args.msg_class, until=args.until,
                       duration=args.duration)
    what = "all mail" if s["msg_class"] == "*" else f"class {s['msg_class']}"
    print(f"tenant {args.tenant}: {what} suspended {_end_text(s['until'], zone(cfg))} "
          f"({s['reason']})")
    return EX_OK


def _source_name(cfg: Config, given: str) -> str:
    """An egress source by its name or its address (as `[[egress.source]]` configures it).
    ValueError names the configured ones when neither matches."""
    import ipaddress

    from mta.shaping.egress import DEFAULT_SOURCE

    sources = cfg.egress.source
    if any(src.name == given for src in sources) or (not sources and given == DEFAULT_SOURCE):
        return given
    try:
        ip = ipaddress.ip_address(given.strip("[]"))
    except ValueError:
        ip = None
    for src in sources:
        if ip is not None and src.address:
            try:
                if ipaddress.ip_address(src.address) == ip:
                    return src.name
            except ValueError:
                continue
    known = ", ".join(f"{s.name} ({s.address or 'any address'})" for s in sources)
    raise ValueError(f"no egress source named or bound to {given!r} (configured: "
                     f"{known or DEFAULT_SOURCE})")


def _source_suspend(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    """`--source`: the shaping suspension of an egress source (mta.shaping.suspend), so the
    dispatcher stops sending from it; the same as `mta shaping suspend source NAME`."""
    try:
        name = _source_name(cfg, args.source)
    except ValueError as e:
        return fail(args, str(e), EX_ERROR)
    duration: str | float | None = args.duration
    if args.until:
        # Shaping counts in real time: the end becomes a duration from now.
        text = args.until
        end = (dt.datetime.combine(dt.date.fromisoformat(text) + dt.timedelta(days=1),
                                   dt.time(), zone(cfg)) if len(text) == 10
               else dt.datetime.fromisoformat(text))
        if end.tzinfo is None:
            end = end.replace(tzinfo=zone(cfg))
        duration = end.timestamp() - dt.datetime.now(dt.UTC).timestamp()
        if duration <= 0:
            return fail(args, "the suspension would end in the past", EX_ERROR)
    s = client.shaping_suspend("source", name, args.reason, duration)
    alias = f" ({args.source})" if args.source != name else ""
    print(f"source {name}{alias}: suspended until {until_text(s, zone(cfg))} "
          f"({s['reason']})")
    return EX_OK


def _policy_resume(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    if args.source is not None:
        try:
            name = _source_name(cfg, args.source)
        except ValueError as e:
            return fail(args, str(e), EX_ERROR)
        s = client.shaping_resume("source", name)
        print(f"source {name}: resumed ({s['reason']})")
        return EX_OK
    if args.sender_domain is not None:
        r = client.domain_resume(args.sender_domain)
        if not r["lifted"]:
            return fail(args, f"no active suspension of sender domain {r['domain']}",
                         EX_ERROR)
        print(f"sender domain {r['domain']}: lifted {r['lifted']} suspension(s)")
        return EX_OK
    n = client.resume(args.tenant, args.msg_class)["lifted"]
    if not n:
        what = f"class {args.msg_class} of " if args.msg_class else ""
        return fail(args, f"no active suspension of {what}tenant {args.tenant}", EX_ERROR)
    print(f"tenant {args.tenant}: lifted {n} suspension(s)")
    return EX_OK


def _tenant_row(t: dict) -> list[object]:
    return [t["name"], t.get("plan") or "-", t.get("parent") or "-", t.get("status", ""),
            "yes" if t.get("prepaid") else "no", t.get("pool") or "-",
            ",".join(t.get("classes") or []) or "(all)"]


_TENANT_HEADERS = ["TENANT", "PLAN", "PARENT", "STATUS", "PREPAID", "POOL", "CLASSES"]


def _policy_tenants(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    tenants = client.tenants()["tenants"]
    if args.json:
        print_json(tenants)
    else:
        table(_TENANT_HEADERS, [_tenant_row(t) for t in tenants])
    return EX_OK


def _suspension_line(s: dict, tz: ZoneInfo) -> str:
    what = "all mail" if s.get("msg_class", "*") == "*" else f"class {s['msg_class']}"
    return f"suspended: {what} {_end_text(s['until'], tz)} ({s['reason']})"


def _policy_show(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    from mta.http.client import AdminError

    tz = zone(cfg)
    if args.sender_domain is not None:
        doc = client.domain_suspensions(args.sender_domain)
        if args.json:
            print_json(doc)
        elif not doc["suspensions"]:
            print(f"sender domain {doc['domain']}: not suspended")
        for s in [] if args.json else doc["suspensions"]:
            print(f"sender domain {doc['domain']}: {_suspension_line(s, tz)}")
        return EX_OK
    tenant = next((t for t in client.tenants()["tenants"] if t["name"] == args.tenant), None)
    if tenant is None:
        raise AdminError(f"unknown tenant {args.tenant!r} (not_found)")
    usage = client.limits_usage(args.tenant)["usage"]
    credits = client.credits(args.tenant)
    suspensions = client.suspensions(args.tenant)["suspensions"]
    if args.json:
        print_json({"tenant": tenant, "usage": usage, "credits": credits,
                     "suspensions": suspensions})
        return EX_OK
    table(_TENANT_HEADERS, [_tenant_row(tenant)])
    print()
    if usage:
        table(["LIMIT", "TENANT", "USED", "MAX", "FROM"],
               [[u["name"], u["tenant"], u["used"], u["limit"] or "unlimited", u["source"]]
                for u in usage])
    else:
        print("limits: none")
    print()
    for s in suspensions:
        print(_suspension_line(s, tz))
    if suspensions:
        print()
    print(_credits_text(credits, tz))
    return EX_OK


def _rep_path(tenant: str, tail: str = "") -> str:
    import urllib.parse

    return f"/api/v1/admin/tenants/{urllib.parse.quote(tenant, safe='')}/reputation{tail}"


def _policy_reputation(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    if args.set or args.unset:
        changes: dict[str, str] = {}
        for item in args.set:
            key, _, value = item.partition("=")
            changes[key.strip()] = value.strip()
        r = client.request("POST", _rep_path(args.tenant, "/thresholds"),
                           body={"set": changes, "unset": args.unset})
    else:
        r = client.request("GET", _rep_path(args.tenant))
    if args.json:
        print_json(r)
        return EX_OK
    tz = zone(cfg)
    since = (dt.datetime.fromtimestamp(r["since"], tz).strftime("%Y-%m-%d %H:%M")
             if r["since"] else "-")
    print(f"{r['tenant']}: {r['state']}{' (set by hand)' if r['manual'] else ''} since "
          f"{since}{': ' + r['reason'] if r['reason'] else ''}")
    print(f"figures now reach: {r['figures_reach']}{' (' + r['why'] + ')' if r['why'] else ''}")
    table(["WINDOW", "FINAL", "HARD BOUNCE", "COMPLAINT", "SPAM BLOCK"],
          [[f"{f['window'] / 3600:g}h", f["sample"], f"{f['hard_bounce_rate']:.2%}",
            f"{f['complaint_rate']:.2%}", f"{f['spam_block_rate']:.2%}"]
           for f in r["figures"]])
    print()
    table(["THRESHOLD", "VALUE", "FROM"],
          [[k, ", ".join(f"{x:g}" for x in t["value"]) if isinstance(t["value"], list)
            else str(t["value"]).lower() if isinstance(t["value"], bool) else t["value"],
            t["source"]] for k, t in r.get("thresholds", {}).items()])
    return EX_OK


def _policy_escalate(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", _rep_path(args.tenant),
                       body={"state": args.state, "reason": args.reason})
    print(f"{r['tenant']} is now {r['state']} (until `mta policy clear`)")
    return EX_OK


def _policy_clear(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    r = client.request("POST", _rep_path(args.tenant, "/clear"), body={"reason": args.reason})
    print(f"{r['tenant']} is now {r['state']}; earlier figures no longer count")
    return EX_OK


_POLICY: dict[str, Action] = {
    "credits": _policy_credits, "limit": _policy_limit, "unlimit": _policy_unlimit,
    "suspend": _policy_suspend, "resume": _policy_resume, "show": _policy_show,
    "tenants": _policy_tenants, "reputation": _policy_reputation,
    "escalate": _policy_escalate, "clear": _policy_clear,
}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    pp = command(sub, common, "policy", cmd_policy,
                 "tenants, credits, limits, suspensions (daemon)")
    ps = pp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    c = ps.add_parser("credits", help="prepaid credits of a tenant")
    cs = c.add_subparsers(dest="sub2", required=True, metavar="ACTION")
    a = cs.add_parser("add", help="add a lot of credits")
    a.add_argument("tenant")
    a.add_argument("amount", type=count_arg)
    a.add_argument("--paid", action="store_true",
                   help="usable now (default: unpaid until `credits paid LOT`)")
    a.add_argument("--expires", type=when_arg, metavar="DATE",
                   help="default: [policy] credit_validity_months from today")
    a.add_argument("--note", default="", help="e.g. an order number")
    cs.add_parser("paid", help="mark a lot paid").add_argument("lot", type=int)
    for name, text in (("show", "balance and lots"), ("history", "ledger, oldest first")):
        x = cs.add_parser(name, help=text)
        x.add_argument("tenant")
        x.add_argument("--json", action="store_true")
        if name == "history":
            x.add_argument("--limit", type=int, default=100)
    lim = ps.add_parser("limit", help="set a temporary operator limit")
    lim.add_argument("tenant")
    lim.add_argument("name", help="messages_per_hour|day|month, unique_recipients_per_month")
    lim.add_argument("value", type=count_arg)
    lim.add_argument("--until", type=when_arg, metavar="DATE",
                     help=f"default: {DEFAULT_LIMIT_DAYS} days from today")
    lim.add_argument("--reason", default="set with mta policy limit")
    u = ps.add_parser("unlimit", help="clear operator limits (all, or one NAME)")
    u.add_argument("tenant")
    u.add_argument("name", nargs="?", help="only this limit")
    su = ps.add_parser("suspend", help="refuse a tenant's mail (or one class of it), mail "
                                       "from a sender domain, or stop an egress source")
    su.add_argument("tenant", nargs="?")
    su.add_argument("--class", dest="msg_class", metavar="CLASS", help="e.g. marketing")
    su.add_argument("--sender-domain", metavar="DOMAIN",
                    help="MAIL FROM of exactly this domain, any tenant (not subdomains)")
    su.add_argument("--source", metavar="NAME_OR_IP",
                    help="an egress source, by name or address: its queued mail waits")
    su.add_argument("--until", type=when_arg, metavar="DATE", help="default: until resumed")
    su.add_argument("--for", dest="duration", type=duration_arg, metavar="DURATION",
                    help="e.g. 2h, instead of --until")
    su.add_argument("--reason", required=True)
    r = ps.add_parser("resume", help="lift suspensions: a tenant's (all, or one class), a "
                                     "sender domain's, an egress source's")
    r.add_argument("tenant", nargs="?")
    r.add_argument("--class", dest="msg_class", metavar="CLASS")
    r.add_argument("--sender-domain", metavar="DOMAIN")
    r.add_argument("--source", metavar="NAME_OR_IP")
    sh = ps.add_parser("show", help="a tenant: settings, usage against limits, suspensions, "
                                    "credits; or a sender domain's suspensions")
    sh.add_argument("tenant", nargs="?")
    sh.add_argument("--sender-domain", metavar="DOMAIN")
    sh.add_argument("--json", action="store_true")
    ps.add_parser("tenants", help="list tenants").add_argument("--json", action="store_true")
    rp = ps.add_parser("reputation", help="a tenant's escalation state and the figures behind "
                                          "it")
    rp.add_argument("tenant")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a run-time threshold of this tenant (and its sub-accounts), e.g. "
                         "complaint=0.001,0.002,0.003,0.005, min_sample=50, exempt=true; "
                         "shared by every node")
    rp.add_argument("--unset", action="append", default=[], metavar="KEY",
                    help="drop a run-time threshold (\"all\": every one)")
    es = ps.add_parser("escalate", help="move a tenant up (or down) the ladder by hand; it "
                                        "stays there until `clear`")
    es.add_argument("tenant")
    es.add_argument("state", choices=("warned", "limited", "suspended_class", "suspended",
                                      "terminated"))
    es.add_argument("--reason", required=True)
    cl = ps.add_parser("clear", help="back to ok, lifting what the ladder set; earlier "
                                     "figures no longer count")
    cl.add_argument("tenant")
    cl.add_argument("--reason", required=True)
