"""The `mta` command: serve, check-config, passwd, and the operator commands.

`mta serve` wires the daemon together (mta.daemon). Every operator command that acts on a
running daemon (`queue`, `policy`, `shaping`, the usage part of `licence show`) goes through
its HTTP admin API (mta.http.client), so the CLI and scripts see exactly the same thing.
Commands that only read or write files (`check-config`, `passwd`, `bounce classify`,
`dkim keygen|check`, `licence keygen|issue`) run locally.

Exit codes follow sysexits(3): 0 ok, 1 refused (the message says why), 64 usage, 65 bad
data (a licence that does not verify), 66 missing input file, 69 daemon (or that part of
it) unavailable, 73 cannot create a file, 77 bad admin token, 78 bad config.
Table output has `--json` for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mta.config import Config, ConfigError, load_config

EX_OK = 0
EX_ERROR = 1
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_CONFIG = 78

# `mta policy limit` without --until: an operator limit is temporary by design (the store
# needs an end); a month covers an investigation without being forgotten for ever.
DEFAULT_LIMIT_DAYS = 30


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) instead of argparse's 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")

DEFAULT_CONFIG = os.environ.get("MTA_CONFIG", "config.toml")


def _load(path: str) -> Config:
    """Load and validate the whole configuration, including the parts that need files
    (DKIM keys, licence): what `check-config` accepts, `serve` accepts."""
    from mta.daemon import validate_runtime

    cfg = load_config(path)
    errors = validate_runtime(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        _load(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    print(f"{args.config}: ok")
    return EX_OK


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    from mta.daemon import serve

    return serve(cfg)


def cmd_passwd(args: argparse.Namespace) -> int:
    from mta.smtp.auth import hash_password

    if args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("mta passwd: passwords differ", file=sys.stderr)
            return EX_USAGE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("mta passwd: empty password", file=sys.stderr)
        return EX_USAGE
    print(hash_password(password))
    return EX_OK


# --- commands against the running daemon ---------------------------------------------------

def _admin(args: argparse.Namespace):  # -> AdminClient
    from mta.http.client import AdminClient

    return AdminClient.from_config(_config(args))


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_queue(args: argparse.Namespace) -> int:
    from mta.http.client import AdminError

    client = _admin(args)
    try:
        if args.queue_cmd == "list":
            result = client.queue_list(state=args.state, limit=args.limit)
            if args.json:
                _print_json(result)
            else:
                _print_queue_table(result["messages"])
        elif args.queue_cmd == "show":
            _print_json(client.queue_show(args.id))
        elif args.queue_cmd in ("hold", "release", "delete", "bounce"):
            result = client.queue_action(args.id, args.queue_cmd)
            print(f"{args.id}: {result.get('result', 'ok')}")
        elif args.queue_cmd == "flush":
            result = client.queue_flush(args.id)
            print(f"flushed {result.get('recipients', 0)} recipient(s)")
        elif args.queue_cmd == "stats":
            result = client.queue_stats()
            if args.json:
                _print_json(result)
            else:
                _print_stats(result)
        elif args.queue_cmd == "explain":
            _print_json(client.queue_explain(args.id))
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


def cmd_bounce(args: argparse.Namespace) -> int:
    from mta.bounce.classify import classify_main

    try:
        cfg = load_config(args.config) if Path(args.config).exists() else Config()
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    return classify_main(args.reply, cfg)


# --- shared helpers for the operator commands -------------------------------------------------

def _config(args: argparse.Namespace) -> Config:
    """The config file, types checked (not the runtime checks: an operator must be able to
    inspect a daemon whose DKIM key is missing). Exit 78 with one line per error."""
    try:
        return load_config(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr naming the command, e.g. `mta policy credits add: ...`."""
    words = [args.command, *(getattr(args, k, None) for k in ("sub", "sub2"))]
    print(f"mta {' '.join(w for w in words if w)}: {message}", file=sys.stderr)
    return code


def _when_arg(text: str) -> str:
    """--until/--expires: "2026-12-31" (through that day, [policy] timezone) or an ISO 8601
    date-time; checked here so a typo is a usage error (64), not a server refusal."""
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date like 2026-12-31 (or 2026-12-31T18:00)") from None


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-31") from None


def _count_arg(text: str) -> int:
    try:
        n = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return n


def _duration_arg(text: str) -> str:
    from mta.config import parse_duration

    try:
        if parse_duration(text) <= 0:
            raise ValueError("a duration must be positive")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _tz(cfg: Config) -> ZoneInfo:
    return ZoneInfo(cfg.policy.timezone)


def _stamp(ts: float | None, tz: ZoneInfo | None = None, never: str = "-") -> str:
    if ts is None:
        return never
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: list[str], rows: list[list[object]]) -> None:
    """Plain columns separated by two spaces; integer columns right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], int) for r in rows) and rows != [] for i in
               range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w)
                         for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    print(line(headers))
    for r in cells:
        print(line(r))


_Action = Callable[[Any, Config, argparse.Namespace], int]


def _run_admin(args: argparse.Namespace, actions: dict[str, _Action]) -> int:
    """Run `actions[args.sub](client, cfg, args)` against the daemon's admin API; an
    AdminError becomes one line on stderr and its exit code (69 unreachable, 77 token)."""
    from mta.http.client import AdminClient, AdminError

    cfg = _config(args)
    try:
        return actions[args.sub](AdminClient.from_config(cfg), cfg, args)
    except AdminError as e:
        return _fail(args, str(e), e.exit_code)


# --- mta dkim ----------------------------------------------------------------------------------

def cmd_dkim(args: argparse.Namespace) -> int:
    from mta.dkim import check_main, keygen_main

    if args.sub == "keygen":
        # Local: needs no config, so keys can be made before the config exists.
        return keygen_main(args.domain, args.selector, args.algorithm, args.out)
    cfg = _config(args)
    return check_main(args.domain, cfg, list(cfg.dns.nameservers), timeout=cfg.dns.timeout)


# --- mta licence -------------------------------------------------------------------------------

def cmd_licence(args: argparse.Namespace) -> int:
    from mta.policy import LicenceError

    try:
        if args.sub == "keygen":
            return _licence_keygen(args)
        if args.sub == "issue":
            return _licence_issue(args)
        return _licence_show(args)
    except LicenceError as e:
        return _fail(args, str(e), EX_DATAERR)


def _licence_keygen(args: argparse.Namespace) -> int:
    from mta.policy import generate_licence_keypair

    private, public = generate_licence_keypair()
    if args.out:
        # The private key signs licences: created 0600, never over an existing key.
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _fail(args, f"{args.out} exists; not overwriting it", EX_CANTCREAT)
        except OSError as e:
            return _fail(args, f"cannot create {args.out}: {e.strerror}", EX_CANTCREAT)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        print(f"# private key written to {args.out}: keep it off the mail servers")
    else:
        print("# private key: keep it secret; `mta licence issue --private-key FILE`")
        print(f"private_key = \"{private}\"")
    print("# public key: [policy] licence_public_key of every daemon")
    print(f"licence_public_key = \"{public}\"")
    return EX_OK


def _licence_issue(args: argparse.Namespace) -> int:
    from mta.policy import issue_licence

    try:
        private = Path(args.private_key).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        return _fail(args, f"cannot read the private key {args.private_key}: "
                           f"{getattr(e, 'strerror', None) or e}", EX_NOINPUT)
    if private.startswith("private_key"):  # the line `licence keygen` printed
        private = private.partition("=")[2].strip().strip('"')
    text = issue_licence(private, licensee=args.licensee, valid_from=args.valid_from,
                         valid_until=args.valid_until, monthly_volume=args.monthly_volume,
                         max_connections=args.max_connections)
    if not args.out:
        sys.stdout.write(text)
        return EX_OK
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)  # whole or nothing: a daemon reloading never reads half a file
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return _fail(args, f"cannot write {out}: {e.strerror}", EX_CANTCREAT)
    doc = json.loads(text)["licence"]
    print(f"{out}: licence {doc['id']} for {doc['licensee']}, valid {doc['valid_from']} .. "
          f"{doc['valid_until']}")
    return EX_OK


def _licence_show(args: argparse.Namespace) -> int:
    from mta.http.client import AdminClient, AdminError
    from mta.policy.licence import parse_licence

    cfg = _config(args) if args.public_key is None or Path(args.config).exists() else Config()
    path = Path(args.file) if args.file else cfg.policy.licence_file
    if path is None:
        return _fail(args, "no FILE given and no [policy] licence_file configured", EX_USAGE)
    public = args.public_key if args.public_key is not None else cfg.policy.licence_public_key
    if not public:
        return _fail(args, f"{cfg.path}: policy.licence_public_key: required to verify a "
                           "licence (or give --public-key)", EX_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return _fail(args, f"cannot read {path}: {getattr(e, 'strerror', None) or e}",
                     EX_NOINPUT)
    lic = parse_licence(text, public)
    today = dt.datetime.now(_tz(cfg)).date()
    days_left = max((lic.valid_until - today).days + 1, 0)
    out: dict[str, Any] = {
        "file": str(path), "licensee": lic.licensee, "id": lic.id,
        "issued": lic.issued.isoformat() if lic.issued else None,
        "valid_from": lic.valid_from.isoformat(), "valid_until": lic.valid_until.isoformat(),
        "state": lic.state_on(today), "days_left": days_left,
        "monthly_volume": lic.monthly_volume, "max_connections": lic.max_connections,
        "signature": "ok", "usage": None, "usage_problem": None}
    # Usage lives in the daemon's policy store: ask it, briefly; the file alone still says
    # everything else.
    client = AdminClient.from_config(cfg)
    client.timeout = 5.0
    try:
        status = client.licence()
    except AdminError as e:
        out["usage_problem"] = str(e)
    else:
        if status.get("id") is None:
            problem = status.get("problem")
            out["usage_problem"] = ("the daemon has no licence in force (" + (
                problem or f"state {status.get('state')}") + ")")
        elif status["id"] != lic.id:
            out["usage_problem"] = f"the daemon enforces another licence ({status['id']})"
        else:
            out["usage"] = {k: status.get(k) for k in ("month", "used", "remaining", "ratio")}
    if args.json:
        _print_json(out)
        return EX_OK
    vol = f"{lic.monthly_volume:,} recipients/month" if lic.monthly_volume else "unlimited"
    conns = str(lic.max_connections) if lic.max_connections else "unlimited"
    print(f"file:            {path}")
    print(f"licensee:        {lic.licensee}")
    print(f"id:              {lic.id}")
    print(f"issued:          {out['issued'] or '-'}")
    print(f"valid:           {out['valid_from']} .. {out['valid_until']} ({out['state']} on "
          f"{today.isoformat()})")
    print(f"days left:       {days_left}")
    print(f"monthly volume:  {vol}")
    print(f"max connections: {conns}")
    print("signature:       ok")
    usage = out["usage"]
    if usage is None:
        print(f"used:            unknown: {out['usage_problem']}")
    else:
        used = usage["used"] or 0
        if lic.monthly_volume:
            print(f"used:            {used:,} of {lic.monthly_volume:,} in {usage['month']} "
                  f"({100 * used / lic.monthly_volume:.1f}%)")
            print(f"remaining:       {max(lic.monthly_volume - used, 0):,}")
        else:
            print(f"used:            {used:,} in {usage['month']}")
            print("remaining:       unlimited")
    return EX_OK


# --- mta policy --------------------------------------------------------------------------------

def cmd_policy(args: argparse.Namespace) -> int:
    problem = _policy_subject_problem(args)
    if problem:
        return _fail(args, problem, EX_USAGE)
    name = getattr(args, "name", None)
    if args.sub in ("limit", "unlimit") and name is not None:
        # Checked here (not by argparse `choices`) so that parsing the command line does
        # not import the policy engine: every `mta` command starts faster.
        from mta.policy import LIMIT_NAMES

        if name not in LIMIT_NAMES:
            return _fail(args, f"unknown limit {name!r}: one of {', '.join(LIMIT_NAMES)}",
                         EX_USAGE)
    return _run_admin(args, _POLICY)


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

    tz = _tz(cfg)
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
            _print_json(summary)
        else:
            print(_credits_text(summary, tz))
    else:
        entries = client.credits_history(args.tenant, args.limit)["entries"]
        if args.json:
            _print_json(entries)
        elif entries:
            print(f"{'ENTRY':>8} {'TIME':<19} {'LOT':<9} {'DELTA':>6} {'KIND':<8} REFERENCE")
            print(format_history([LedgerEntry(**e) for e in entries], tz))
        else:
            print(f"tenant {args.tenant}: no credit history")
    return EX_OK


def _policy_limit(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    until = args.until or (dt.datetime.now(_tz(cfg)).date()
                           + dt.timedelta(days=DEFAULT_LIMIT_DAYS)).isoformat()
    o = client.limit_set(args.tenant, args.name, args.value, until=until, reason=args.reason)
    print(f"tenant {args.tenant}: {o['name']} = {o['value']:,} "
          f"{_end_text(o['until'], _tz(cfg))} ({o['reason']})")
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
        print(f"sender domain {s['domain']}: suspended {_end_text(s['until'], _tz(cfg))} "
              f"({s['reason']})")
        return EX_OK
    s = client.suspend(args.tenant, args.reason, msg_class=args.msg_class, until=args.until,
                       duration=args.duration)
    what = "all mail" if s["msg_class"] == "*" else f"class {s['msg_class']}"
    print(f"tenant {args.tenant}: {what} suspended {_end_text(s['until'], _tz(cfg))} "
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
        return _fail(args, str(e), EX_ERROR)
    duration: str | float | None = args.duration
    if args.until:
        # Shaping counts in real time: the end becomes a duration from now.
        text = args.until
        end = (dt.datetime.combine(dt.date.fromisoformat(text) + dt.timedelta(days=1),
                                   dt.time(), _tz(cfg)) if len(text) == 10
               else dt.datetime.fromisoformat(text))
        if end.tzinfo is None:
            end = end.replace(tzinfo=_tz(cfg))
        duration = end.timestamp() - dt.datetime.now(dt.UTC).timestamp()
        if duration <= 0:
            return _fail(args, "the suspension would end in the past", EX_ERROR)
    s = client.shaping_suspend("source", name, args.reason, duration)
    alias = f" ({args.source})" if args.source != name else ""
    print(f"source {name}{alias}: suspended until {_until_text(s, _tz(cfg))} "
          f"({s['reason']})")
    return EX_OK


def _policy_resume(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    if args.source is not None:
        try:
            name = _source_name(cfg, args.source)
        except ValueError as e:
            return _fail(args, str(e), EX_ERROR)
        s = client.shaping_resume("source", name)
        print(f"source {name}: resumed ({s['reason']})")
        return EX_OK
    if args.sender_domain is not None:
        r = client.domain_resume(args.sender_domain)
        if not r["lifted"]:
            return _fail(args, f"no active suspension of sender domain {r['domain']}",
                         EX_ERROR)
        print(f"sender domain {r['domain']}: lifted {r['lifted']} suspension(s)")
        return EX_OK
    n = client.resume(args.tenant, args.msg_class)["lifted"]
    if not n:
        what = f"class {args.msg_class} of " if args.msg_class else ""
        return _fail(args, f"no active suspension of {what}tenant {args.tenant}", EX_ERROR)
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
        _print_json(tenants)
    else:
        _table(_TENANT_HEADERS, [_tenant_row(t) for t in tenants])
    return EX_OK


def _suspension_line(s: dict, tz: ZoneInfo) -> str:
    what = "all mail" if s.get("msg_class", "*") == "*" else f"class {s['msg_class']}"
    return f"suspended: {what} {_end_text(s['until'], tz)} ({s['reason']})"


def _policy_show(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    from mta.http.client import AdminError

    tz = _tz(cfg)
    if args.sender_domain is not None:
        doc = client.domain_suspensions(args.sender_domain)
        if args.json:
            _print_json(doc)
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
        _print_json({"tenant": tenant, "usage": usage, "credits": credits,
                     "suspensions": suspensions})
        return EX_OK
    _table(_TENANT_HEADERS, [_tenant_row(tenant)])
    print()
    if usage:
        _table(["LIMIT", "TENANT", "USED", "MAX", "FROM"],
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


_POLICY: dict[str, _Action] = {
    "credits": _policy_credits, "limit": _policy_limit, "unlimit": _policy_unlimit,
    "suspend": _policy_suspend, "resume": _policy_resume, "show": _policy_show,
    "tenants": _policy_tenants,
}


# --- mta shaping -------------------------------------------------------------------------------

def cmd_shaping(args: argparse.Namespace) -> int:
    if args.sub in ("suspend", "resume"):
        # Checked here rather than by argparse `choices`: parsing stays free of imports.
        from mta.shaping.suspend import SCOPES

        if args.scope not in SCOPES:
            return _fail(args, f"unknown scope {args.scope!r}: one of {', '.join(SCOPES)}",
                         EX_USAGE)
    return _run_admin(args, _SHAPING)


def _until_text(s: dict, tz: ZoneInfo | None = None) -> str:
    return _stamp(s.get("until"), tz, "lifted")


def _shaping_suspend(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    s = client.shaping_suspend(args.scope, args.name, args.reason, args.duration)
    print(f"suspended {s['scope']} {s['name']} until {_until_text(s)} ({s['reason']})")
    return EX_OK


def _shaping_resume(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    s = client.shaping_resume(args.scope, args.name)
    print(f"lifted the suspension of {s['scope']} {s['name']} ({s['reason']})")
    return EX_OK


def _shaping_list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    items = client.shaping_suspensions()["suspensions"]
    if args.json:
        _print_json(items)
    elif not items:
        print("no shaping suspensions")
    else:
        _table(["SCOPE", "NAME", "SINCE", "UNTIL", "REASON"],
               [[s["scope"], s["name"], _stamp(s["since"]), _until_text(s), s["reason"]]
                for s in items])
    return EX_OK


def _shaping_show(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    ex = client.shaping_explain(args.site, source=args.source, tenant=args.tenant)
    if args.json:
        _print_json(ex)
        return EX_OK
    print(f"path {ex['path']} (source {ex['source']}, site {ex['site']})")
    print()
    _table(["RULE", "VALUE", "FROM"],
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
        line += (f", dead until {_stamp(a['dead_until'])} ({a['dead_category']}"
                 + (f": {a['dead_reply']}" if a.get("dead_reply") else "") + ")")
    print(line)
    s = ex.get("suspension")
    print("suspension: none" if s is None else
          f"suspension: {s['scope']} {s['name']} until {_until_text(s)} ({s['reason']})")
    if "egress" in ex:
        e = ex["egress"]
        print(f"egress: from {e['address'] or '(any local address)'} as "
              f"{e['ehlo_name'] or '(server hostname)'}, sent today {e['sent_today']}"
              + (f" of warm-up cap {e['warmup_cap_today']}" if e.get("warmup_cap_today")
                 else ""))
    return EX_OK


_SHAPING: dict[str, _Action] = {
    "suspend": _shaping_suspend, "resume": _shaping_resume, "list": _shaping_list,
    "show": _shaping_show,
}


# --- argument parsing ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help=f"configuration file (default: {DEFAULT_CONFIG}, or $MTA_CONFIG)")

    p = _Parser(prog="mta", description="mta message transfer agent", parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str):
        sp = sub.add_parser(name, help=help, parents=[common])
        sp.set_defaults(func=func)
        return sp

    add("serve", cmd_serve, "run the daemon in the foreground")
    add("check-config", cmd_check_config, "validate the configuration (exit 78 on errors)")
    sp = add("passwd", cmd_passwd, "print a scrypt hash for [users.NAME] password")
    sp.add_argument("password", nargs="?", help="the password (default: prompt or stdin)")

    q = add("queue", cmd_queue, "inspect and act on the queue of the running daemon")
    qs = q.add_subparsers(dest="queue_cmd", required=True, metavar="ACTION")
    ql = qs.add_parser("list", help="list queued messages")
    ql.add_argument("--json", action="store_true")
    ql.add_argument("--state", choices=["queued", "held", "delivered", "bounced", "expired"])
    ql.add_argument("--limit", type=int, default=100)
    for action, text in (("show", "show one message"), ("hold", "hold a message"),
                         ("release", "release a held message"),
                         ("delete", "delete a message without notice"),
                         ("bounce", "bounce a message to its sender, with a DSN"),
                         ("explain", "say why a message is waiting")):
        qs.add_parser(action, help=text).add_argument("id")
    qs.add_parser("flush", help="retry deferred mail now").add_argument("id", nargs="?")
    qst = qs.add_parser("stats", help="counts by state and by site")
    qst.add_argument("--json", action="store_true")

    b = add("bounce", cmd_bounce, "bounce classification")
    bs = b.add_subparsers(dest="bounce_cmd", required=True, metavar="ACTION")
    bc = bs.add_parser("classify", help="classify a reply, e.g. \"550 5.1.1 no such user\"")
    bc.add_argument("reply")

    _add_dkim(add("dkim", cmd_dkim, "DKIM keys: generate one, check DNS against the config"))
    _add_licence(add("licence", cmd_licence, "volume licences: keys, issue, show usage"))
    _add_policy(add("policy", cmd_policy, "tenants, credits, limits, suspensions (daemon)"))
    _add_shaping(add("shaping", cmd_shaping, "shaping suspensions and rules (daemon)"))
    return p


def _add_dkim(d: argparse.ArgumentParser) -> None:
    ds = d.add_subparsers(dest="sub", required=True, metavar="ACTION")
    k = ds.add_parser("keygen", help="new key file (0600) and the DNS TXT record to publish")
    k.add_argument("--domain", required=True)
    k.add_argument("--selector", required=True)
    k.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa",
                   help="rsa (2048 bits, what every receiver verifies) or ed25519")
    k.add_argument("--out", default=".", metavar="DIR",
                   help="directory for DOMAIN.SELECTOR.key (default: the current one)")
    c = ds.add_parser("check", help="does DNS publish the public half of each key the "
                                    "config signs DOMAIN with? ([dns] nameservers)")
    c.add_argument("--domain", required=True)


def _add_licence(lp: argparse.ArgumentParser) -> None:
    ls = lp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    k = ls.add_parser("keygen", help="print a new Ed25519 keypair for signing licences")
    k.add_argument("-o", "--out", metavar="FILE",
                   help="write the private key here (0600) instead of printing it")
    i = ls.add_parser("issue", help="sign a licence (printed, or written with -o)")
    i.add_argument("--private-key", required=True, metavar="FILE",
                   help="file holding the base64 private key (from `licence keygen`)")
    i.add_argument("--licensee", required=True, metavar="NAME")
    i.add_argument("--from", dest="valid_from", required=True, type=_date_arg,
                   metavar="DATE", help="first valid day, e.g. 2026-01-01")
    i.add_argument("--until", dest="valid_until", required=True, type=_date_arg,
                   metavar="DATE", help="last valid day (inclusive)")
    i.add_argument("--monthly-volume", required=True, type=_count_arg, metavar="N",
                   help="accepted recipients per calendar month; 0 = unlimited")
    i.add_argument("--max-connections", required=True, type=_count_arg, metavar="N",
                   help="concurrent outbound connections; 0 = unlimited")
    i.add_argument("-o", "--out", metavar="FILE")
    s = ls.add_parser("show", help="verify a licence; usage from the daemon when it runs")
    s.add_argument("file", nargs="?", metavar="FILE",
                   help="licence file (default: [policy] licence_file)")
    s.add_argument("--public-key", metavar="KEY",
                   help="base64 public key (default: [policy] licence_public_key)")
    s.add_argument("--json", action="store_true")


def _add_policy(pp: argparse.ArgumentParser) -> None:
    ps = pp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    c = ps.add_parser("credits", help="prepaid credits of a tenant")
    cs = c.add_subparsers(dest="sub2", required=True, metavar="ACTION")
    a = cs.add_parser("add", help="add a lot of credits")
    a.add_argument("tenant")
    a.add_argument("amount", type=_count_arg)
    a.add_argument("--paid", action="store_true",
                   help="usable now (default: unpaid until `credits paid LOT`)")
    a.add_argument("--expires", type=_when_arg, metavar="DATE",
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
    lim.add_argument("value", type=_count_arg)
    lim.add_argument("--until", type=_when_arg, metavar="DATE",
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
    su.add_argument("--until", type=_when_arg, metavar="DATE", help="default: until resumed")
    su.add_argument("--for", dest="duration", type=_duration_arg, metavar="DURATION",
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


def _add_shaping(sp: argparse.ArgumentParser) -> None:
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    s = ss.add_parser("suspend", help="stop sending to a site, from a source, on a path "
                                      "(SOURCE->SITE) or for a tenant")
    s.add_argument("scope", metavar="site|source|path|tenant")
    s.add_argument("name")
    s.add_argument("--reason", required=True)
    s.add_argument("--duration", type=_duration_arg, help="e.g. 1h (default: until resumed)")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = DEFAULT_CONFIG
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())
