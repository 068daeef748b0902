"""The `mta` command: serve, check-config, passwd, init, and the operator commands.

`mta serve` wires the daemon together (mta.daemon). Every operator command that acts on a
running daemon (`queue`, `policy`, `shaping`, the usage part of `licence show`) goes through
its HTTP admin API (mta.http.client), so the CLI and scripts see exactly the same thing.
Commands that only read or write files (`check-config`, `passwd`, `init`, `bounce
classify`, `dkim keygen|check`, `licence keygen|issue`) run locally, and read no more of
the config than they use.

One module per command group registers its subcommand (`add(sub, common)`) and its handler;
`common` holds what they share (exit codes, config loading, the admin client, helpers).
Exit codes follow sysexits(3) (mta.cli.common). Table output has `--json` for scripts.
"""

from __future__ import annotations

import argparse

from mta.cli import (
    bounce,
    console,
    content,
    dkim,
    domains,
    gdpr,
    init,
    intake,
    keys,
    licence,
    policy,
    queue,
    serve,
    shaping,
    suppress,
    users,
    webhooks,
)
from mta.cli.common import CONFIG_HELP, EX_OK, Parser, find_config

# In `mta --help` order.
_GROUPS = (serve, init, queue, bounce, dkim, licence, policy, shaping, suppress, domains,
           content, webhooks, intake, keys, users, gdpr, console)


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=CONFIG_HELP)

    p = Parser(prog="mta", description="mta message transfer agent", parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.add(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config, args.config_found = find_config(getattr(args, "config", None))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_OK
