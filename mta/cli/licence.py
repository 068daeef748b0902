"""`mta licence keygen|issue|show`: Ed25519 keys that sign volume licences, issuing one, and
verifying one (with its usage from the running daemon when it answers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from mta.cli.common import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_USAGE,
    admin_client,
    command,
    count_arg,
    date_arg,
    fail,
    print_json,
    section_config,
    zone,
)
from mta.config import Config, ConfigError, load_config


def cmd_licence(args: argparse.Namespace) -> int:
    from mta.policy import LicenceError

    try:
        if args.sub == "keygen":
            return _licence_keygen(args)
        if args.sub == "issue":
            return _licence_issue(args)
        return _licence_show(args)
    except LicenceError as e:
        return fail(args, str(e), EX_DATAERR)


def _licence_keygen(args: argparse.Namespace) -> int:
    from mta.policy import generate_licence_keypair

    private, public = generate_licence_keypair()
    if args.out:
        # The private key signs licences: created 0600, never over an existing key.
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return fail(args, f"{args.out} exists; not overwriting it", EX_CANTCREAT)
        except OSError as e:
            return fail(args, f"cannot create {args.out}: {e.strerror}", EX_CANTCREAT)
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
        return fail(args, f"cannot read the private key {args.private_key}: "
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
        return fail(args, f"cannot write {out}: {e.strerror}", EX_CANTCREAT)
    doc = json.loads(text)["licence"]
    print(f"{out}: licence {doc['id']} for {doc['licensee']}, valid {doc['valid_from']} .. "
          f"{doc['valid_until']}")
    return EX_OK


def _licence_show(args: argparse.Namespace) -> int:
    from mta.policy.licence import parse_licence

    # The licence side reads [policy] only; with --public-key it needs no config at all.
    cfg = section_config(args, ("policy",), missing_ok=args.public_key is not None)
    path = Path(args.file) if args.file else cfg.policy.licence_file
    if path is None:
        return fail(args, "no FILE given and no [policy] licence_file configured", EX_USAGE)
    public = args.public_key if args.public_key is not None else cfg.policy.licence_public_key
    if not public:
        return fail(args, f"{cfg.path}: policy.licence_public_key: required to verify a "
                           "licence (or give --public-key)", EX_CONFIG)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return fail(args, f"cannot read {path}: {getattr(e, 'strerror', None) or e}",
                     EX_NOINPUT)
    lic = parse_licence(text, public)
    today = dt.datetime.now(zone(cfg)).date()
    days_left = max((lic.valid_until - today).days + 1, 0)
    usage, problem = _daemon_usage(args, lic.id)
    out: dict[str, Any] = {
        "file": str(path), "licensee": lic.licensee, "id": lic.id,
        "issued": lic.issued.isoformat() if lic.issued else None,
        "valid_from": lic.valid_from.isoformat(), "valid_until": lic.valid_until.isoformat(),
        "state": lic.state_on(today), "days_left": days_left,
        "monthly_volume": lic.monthly_volume, "max_connections": lic.max_connections,
        "signature": "ok", "usage": usage, "usage_problem": problem}
    if args.json:
        print_json(out)
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


def _daemon_usage(args: argparse.Namespace, licence_id: str) -> tuple[dict | None, str | None]:
    """This month's use of the licence, from the daemon's policy store: (usage, None), or
    (None, why not). Asked briefly; the file alone still says everything else."""
    from mta.http.client import AdminError

    try:
        cfg = load_config(args.config) if Path(args.config).exists() else Config()
    except ConfigError as e:
        more = f" (and {len(e.errors) - 1} more)" if len(e.errors) > 1 else ""
        return None, f"cannot ask the daemon: {e.errors[0]}{more}"
    client = admin_client(cfg)
    client.timeout = 5.0
    try:
        status = client.licence()
    except AdminError as e:
        return None, str(e)
    if status.get("id") is None:
        problem = status.get("problem")
        return None, ("the daemon has no licence in force ("
                      + (problem or f"state {status.get('state')}") + ")")
    if status["id"] != licence_id:
        return None, f"the daemon enforces another licence ({status['id']})"
    return {k: status.get(k) for k in ("month", "used", "remaining", "ratio")}, None


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    lp = command(sub, common, "licence", cmd_licence,
                 "volume licences: keys, issue, show usage")
    ls = lp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    k = ls.add_parser("keygen", help="print a new Ed25519 keypair for signing licences")
    k.add_argument("-o", "--out", metavar="FILE",
                   help="write the private key here (0600) instead of printing it")
    i = ls.add_parser("issue", help="sign a licence (printed, or written with -o)")
    i.add_argument("--private-key", required=True, metavar="FILE",
                   help="file holding the base64 private key (from `licence keygen`)")
    i.add_argument("--licensee", required=True, metavar="NAME")
    i.add_argument("--from", dest="valid_from", required=True, type=date_arg,
                   metavar="DATE", help="first valid day, e.g. 2026-01-01")
    i.add_argument("--until", dest="valid_until", required=True, type=date_arg,
                   metavar="DATE", help="last valid day (inclusive)")
    i.add_argument("--monthly-volume", required=True, type=count_arg, metavar="N",
                   help="accepted recipients per calendar month; 0 = unlimited")
    i.add_argument("--max-connections", required=True, type=count_arg, metavar="N",
                   help="concurrent outbound connections; 0 = unlimited")
    i.add_argument("-o", "--out", metavar="FILE")
    s = ls.add_parser("show", help="verify a licence; usage from the daemon when it runs")
    s.add_argument("file", nargs="?", metavar="FILE",
                   help="licence file (default: [policy] licence_file)")
    s.add_argument("--public-key", metavar="KEY",
                   help="base64 public key (default: [policy] licence_public_key)")
    s.add_argument("--json", action="store_true")
