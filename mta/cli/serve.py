"""`mta serve`, `mta check-config` and `mta passwd`: the daemon, its configuration, and the
password hashes that configuration holds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mta.cli.common import EX_CONFIG, EX_OK, EX_USAGE, checked_config, command, read_password
from mta.config import ConfigError


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        checked_config(args)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    print(f"{args.config}: ok")
    return EX_OK


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        cfg = checked_config(args)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    from mta.daemon import serve

    return serve(cfg)


def cmd_passwd(args: argparse.Namespace) -> int:
    from mta.smtp.auth import hash_password

    password = read_password(args.password, "passwd")
    if password is None:
        return EX_USAGE
    print(hash_password(password))
    return EX_OK


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    command(sub, common, "serve", cmd_serve, "run the daemon in the foreground")
    command(sub, common, "check-config", cmd_check_config,
            "validate the configuration (exit 78 on errors)")
    sp = command(sub, common, "passwd", cmd_passwd,
                 "print a scrypt hash for [users.NAME] password")
    sp.add_argument("password", nargs="?", help="the password (default: prompt or stdin)")
