"""The `mta` command: serve, check-config, passwd, and the operator commands.

`mta serve` wires the daemon together (mta.daemon). Every operator command that acts on a
running daemon (`queue ...`) goes through its HTTP admin API (mta.http.client), so the CLI
and scripts see exactly the same thing. Commands that only read files (`check-config`,
`passwd`, `bounce classify`, `dkim keygen`) run locally.

Exit codes follow sysexits(3): 0 ok, 64 usage, 69 daemon unavailable, 78 bad config.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mta.config import Config, ConfigError, load_config

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CONFIG = 78

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

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None
    return AdminClient.from_config(cfg)


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


# --- argument parsing ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help=f"configuration file (default: {DEFAULT_CONFIG}, or $MTA_CONFIG)")

    p = argparse.ArgumentParser(prog="mta", description="mta message transfer agent",
                                parents=[common])
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
    return p


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
