"""What every `mta` command shares: exit codes, the argument parser class, config loading,
the admin API client, and the helpers that parse arguments and print tables and times.

Exit codes follow sysexits(3): 0 ok, 1 refused (the message says why), 64 usage, 65 bad
data (a licence that does not verify), 66 missing input file, 69 daemon (or that part of
it) unavailable, 73 cannot create a file, 77 bad admin token, 78 bad config.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) instead of argparse's 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


# The config file when -c is not given: $MTA_CONFIG, else ./config.toml when it exists (a
# checkout, what `make run` serves), else the system's.
CHECKOUT_CONFIG = "config.toml"
SYSTEM_CONFIG = "/etc/mta/mta.toml"
CONFIG_HELP = (f"configuration file (default: $MTA_CONFIG, else ./{CHECKOUT_CONFIG} if it "
               f"exists, else {SYSTEM_CONFIG})")


def find_config(explicit: str | None) -> tuple[str, bool]:
    """(the config file a command uses, whether it was named or found). A file named by -c
    or $MTA_CONFIG is used as it is, so a missing one is reported by its own name."""
    if explicit is not None:
        return explicit, True
    named = os.environ.get("MTA_CONFIG")
    if named:
        return named, True
    for candidate in (CHECKOUT_CONFIG, SYSTEM_CONFIG):
        if Path(candidate).is_file():
            return candidate, True
    return SYSTEM_CONFIG, False


def require_config(args: argparse.Namespace) -> None:
    """Exit 78 with one line when no -c, no $MTA_CONFIG and no default file exists."""
    if not getattr(args, "config_found", True):
        print(f"mta: no config file: tried -c, $MTA_CONFIG, ./{CHECKOUT_CONFIG}, "
              f"{SYSTEM_CONFIG} (`mta init` writes one)", file=sys.stderr)
        raise SystemExit(EX_CONFIG)


def command(sub: Any, common: argparse.ArgumentParser, name: str,
            func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
    """Register `mta NAME` (which also takes -c) with its handler."""
    sp = sub.add_parser(name, help=help, parents=[common])
    sp.set_defaults(func=func)
    return sp


def checked_config(args: argparse.Namespace) -> Config:
    """Load and validate the whole configuration, including the parts that need files
    (DKIM keys, licence): what `check-config` accepts, `serve` accepts."""
    from mta.preflight import validate_runtime

    require_config(args)
    cfg = load_config(args.config)
    errors = validate_runtime(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def file_config(args: argparse.Namespace) -> Config:
    """The config file, types checked (not the runtime checks: an operator must be able to
    inspect a daemon whose DKIM key is missing). Exit 78 with one line per error."""
    require_config(args)
    try:
        return load_config(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def section_config(args: argparse.Namespace, sections: tuple[str, ...], *,
                   missing_ok: bool = False) -> Config:
    """Only the tables `sections` of the config file, for a command that reads nothing else:
    `mta bounce classify` must work in a checkout whose TLS pair is not made yet. With
    `missing_ok`, no file means the defaults. Exit 78 with one line per error in those."""
    if missing_ok and not Path(args.config).exists():
        return Config()
    require_config(args)
    try:
        return load_config(args.config, sections)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr naming the command, e.g. `mta policy credits add: ...`."""
    words = [args.command, *(getattr(args, k, None) for k in ("sub", "sub2"))]
    print(f"mta {' '.join(w for w in words if w)}: {message}", file=sys.stderr)
    return code


def when_arg(text: str) -> str:
    """--until/--expires: "2026-12-31" (through that day, [policy] timezone) or an ISO 8601
    date-time; checked here so a typo is a usage error (64), not a server refusal."""
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat()
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date like 2026-12-31 (or 2026-12-31T18:00)") from None


def date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-31") from None


def count_arg(text: str) -> int:
    try:
        n = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return n


def duration_arg(text: str) -> str:
    from mta.config import parse_duration

    try:
        if parse_duration(text) <= 0:
            raise ValueError("a duration must be positive")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def zone(cfg: Config) -> ZoneInfo:
    return ZoneInfo(cfg.policy.timezone)


def stamp(ts: float | None, tz: ZoneInfo | None = None, never: str = "-") -> str:
    if ts is None:
        return never
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: list[str], rows: list[list[object]]) -> None:
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


def until_text(s: dict, tz: ZoneInfo | None = None) -> str:
    return stamp(s.get("until"), tz, "lifted")


Action = Callable[[Any, Config, argparse.Namespace], int]


def run_admin(args: argparse.Namespace, actions: dict[str, Action]) -> int:
    """Run `actions[args.sub](client, cfg, args)` against the daemon's admin API; an
    AdminError becomes one line on stderr and its exit code (69 unreachable, 77 token)."""
    from mta.http.client import AdminError

    cfg = file_config(args)
    try:
        return actions[args.sub](admin_client(cfg), cfg, args)
    except AdminError as e:
        return fail(args, str(e), e.exit_code)


def admin_client(cfg: Config):  # -> AdminClient
    """The client of the running daemon's admin API that `cfg` describes: every command
    that acts on the daemon gets it here."""
    from mta.http.client import AdminClient

    return AdminClient.from_config(cfg)


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))



def read_password(given: str | None, command: str) -> str | None:
    """The password of `mta passwd` / `mta users`: the argument, else asked twice on a
    terminal, else one line of stdin. None (said on stderr) if empty or mistyped."""
    import getpass

    if given is not None:
        password = given
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print(f"mta {command}: passwords differ", file=sys.stderr)
            return None
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print(f"mta {command}: empty password", file=sys.stderr)
        return None
    return password
