"""`mta bounce classify "550 5.1.1 ..."`: how mta files a reply (mta.bounce.classify), with
the config's own rules when there is a config.
"""

from __future__ import annotations

import argparse
from typing import Any

from mta.cli.common import command, section_config


def cmd_bounce(args: argparse.Namespace) -> int:
    from mta.bounce.classify import classify_main

    # [bounce] rules is the one key it reads; without a config file, the built-in rules.
    cfg = section_config(args, ("bounce",), missing_ok=True)
    return classify_main(args.reply, cfg)


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    b = command(sub, common, "bounce", cmd_bounce, "bounce classification")
    bs = b.add_subparsers(dest="bounce_cmd", required=True, metavar="ACTION")
    bc = bs.add_parser("classify", help="classify a reply, e.g. \"550 5.1.1 no such user\"")
    bc.add_argument("reply")
