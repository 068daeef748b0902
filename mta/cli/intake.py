"""`mta drain` and `mta intake status|pause|resume`: the intake switch of the running
daemon (mta.smtp.intake), through its admin API (/api/v1/admin/intake).

`mta drain` (= `mta intake pause`) stops new mail - SMTP answers 421 4.3.2, HTTP injection
503, /readyz 503 - while the queue goes on delivering; `mta intake resume` takes mail again.
"""

from __future__ import annotations

import argparse
from typing import Any

from mta.cli.common import EX_OK, Action, command, print_json, run_admin, stamp
from mta.config import Config

_PATH = "/api/v1/admin/intake"


def cmd_intake(args: argparse.Namespace) -> int:
    return run_admin(args, _INTAKE)


def _show(st: dict, args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        print_json(st)
    elif st["accepting"]:
        print(f"intake: accepting new mail (since {stamp(st['since'])})")
    else:
        why = f" ({st['reason']})" if st.get("reason") else ""
        print(f"intake: paused, draining since {stamp(st['since'])}{why}; new mail is "
              "refused (SMTP 421 4.3.2, HTTP 503), the queue is still delivered")
    return EX_OK


def _status(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    return _show(client.request("GET", _PATH), args)


def _pause(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    return _show(client.request("POST", _PATH, {"accepting": False,
                                                "reason": args.reason or ""}), args)


def _resume(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    return _show(client.request("POST", _PATH, {"accepting": True}), args)


_INTAKE: dict[str, Action] = {"status": _status, "pause": _pause, "resume": _resume}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    d = command(sub, common, "drain", cmd_intake,
                "stop taking new mail, keep delivering the queue (daemon)")
    d.set_defaults(sub="pause")
    d.add_argument("--reason", default="", help="shown in `mta intake status` and /readyz")
    d.add_argument("--json", action="store_true")
    sp = command(sub, common, "intake", cmd_intake, "intake switch: status, pause, resume "
                                                     "(daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    ss.add_parser("status", help="is new mail accepted").add_argument(
        "--json", action="store_true")
    p = ss.add_parser("pause", help="the same as `mta drain`")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    ss.add_parser("resume", help="take new mail again").add_argument(
        "--json", action="store_true")
