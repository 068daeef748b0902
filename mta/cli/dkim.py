"""`mta dkim keygen|check`: make a signing key and its DNS record; check that DNS publishes
the keys the config signs with (mta.dkim).
"""

from __future__ import annotations

import argparse
from typing import Any

from mta.cli.common import command, section_config


def cmd_dkim(args: argparse.Namespace) -> int:
    from mta.dkim import check_main, keygen_main

    if args.sub == "keygen":
        # Local: needs no config, so keys can be made before the config exists.
        return keygen_main(args.domain, args.selector, args.algorithm, args.out)
    # The keys it checks and the resolvers it asks: nothing else of the config matters here.
    cfg = section_config(args, ("server", "dkim", "dns"))
    return check_main(args.domain, cfg, list(cfg.dns.nameservers), timeout=cfg.dns.timeout)


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    d = command(sub, common, "dkim", cmd_dkim,
                "DKIM keys: generate one, check DNS against the config")
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
