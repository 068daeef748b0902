"""`mta suppress list|add|remove|import|export`: the suppression lists of the running daemon,
through its admin API (/api/v1/suppressions, mta.http.admin_suppressions).

Files are CSV (a header line naming the columns address, scope, reason, source, created_at,
expires_at; or one address per line) or JSON lines (`--format jsonl`, the default for a
.jsonl / .ndjson file). An import is sent as it is, _CHUNK lines per request (the daemon
parses and writes each in batches), and is idempotent: the same file twice changes nothing.
An export pages through the list and writes the same formats.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import Any

from mta.cli.common import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    Action,
    command,
    count_arg,
    fail,
    print_json,
    run_admin,
    stamp,
    table,
)
from mta.config import Config

_CHUNK = 50_000  # lines per import request
_PAGE = 10_000
_CTYPE = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
_REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "import")


def cmd_suppress(args: argparse.Namespace) -> int:
    return run_admin(args, _SUPPRESS)


def _path(scope: str, address: str) -> str:
    return (f"/api/v1/suppressions/{urllib.parse.quote(scope, safe='')}/"
            f"{urllib.parse.quote(address, safe='@')}")


def _list(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    page = client.request("GET", "/api/v1/suppressions", query={
        "scope": args.scope, "cursor": args.cursor, "limit": args.limit})
    if args.json:
        print_json(page)
        return EX_OK
    entries = page["entries"]
    if not entries:
        print("no suppressions")
    else:
        table(["SCOPE", "ADDRESS", "REASON", "SINCE", "UNTIL", "SOURCE"],
              [[e["scope"], e["address"], e["reason"], stamp(e["created_at"]),
                stamp(e["expires_at"], never="never"), e["source"]] for e in entries])
    if page["next"]:
        print(f"more: --cursor {page['next']!r}", file=sys.stderr)
    return EX_OK


def _add(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    body = {"address": args.address, "scope": args.scope, "reason": args.reason,
            "source": args.source or "cli", "expires_at": args.expires}
    e = client.request("POST", "/api/v1/suppressions",
                       body={k: v for k, v in body.items() if v is not None})
    until = stamp(e["expires_at"], never="removed")
    print(f"suppressed {e['address']} on list {e['scope']} ({e['reason']}) until {until}")
    return EX_OK


def _remove(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    client.request("DELETE", _path(args.scope, args.address))
    print(f"removed {args.address} from list {args.scope}")
    return EX_OK


def _format(args: argparse.Namespace, name: str | None) -> str:
    if args.format:
        return str(args.format)
    return "jsonl" if name and name.endswith((".jsonl", ".ndjson")) else "csv"


def _import(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    fmt = _format(args, args.file)
    try:
        f = open(args.file, encoding="utf-8", newline="")
    except OSError as e:
        return fail(args, f"{args.file}: {e.strerror}", EX_NOINPUT)
    imported = invalid = 0
    with f:
        header: str | None = None
        line_no = 0
        while True:
            lines = []
            first = line_no + 1
            for line in f:
                line_no += 1
                if fmt == "csv" and header is None and line.strip():
                    # A header names the columns; a first line without "address" is data.
                    cells = [c.strip().strip('"').lower() for c in line.split(",")]
                    header = line if "address" in cells else ""
                    if header:
                        first = line_no + 1
                        continue
                lines.append(line if line.endswith("\n") else line + "\n")
                if len(lines) >= _CHUNK:
                    break
            if not lines:
                break
            out = client.request("POST", "/api/v1/suppressions/import",
                                 query={"scope": args.scope},
                                 raw=((header or "") + "".join(lines)).encode(),
                                 content_type=_CTYPE[fmt])
            imported += out["imported"]
            invalid += out["invalid"]
            skip = 1 if header else 0
            for err in out["errors"]:
                print(f"{args.file}:{first + err['line'] - 1 - skip}: {err['error']}",
                      file=sys.stderr)
    print(f"imported {imported:,} entries" + (f", {invalid:,} invalid" if invalid else ""))
    return EX_DATAERR if invalid else EX_OK


def _export(client: Any, cfg: Config, args: argparse.Namespace) -> int:
    from mta.suppress.entry import Entry, dump_csv, dump_jsonl

    fmt = _format(args, args.output)
    out = (open(args.output, "w", encoding="utf-8", newline="") if args.output
           else sys.stdout)
    n, cursor = 0, None
    try:
        while True:
            page = client.request("GET", "/api/v1/suppressions", query={
                "scope": args.scope, "cursor": cursor, "limit": _PAGE})
            entries = [Entry(**e) for e in page["entries"]]
            out.write(dump_jsonl(entries) if fmt == "jsonl" else
                      dump_csv(entries, header=n == 0))
            n += len(entries)
            cursor = page["next"]
            if cursor is None:
                break
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"exported {n:,} entries to {args.output}")
    return EX_OK


_SUPPRESS: dict[str, Action] = {"list": _list, "add": _add, "remove": _remove,
                                "import": _import, "export": _export}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = command(sub, common, "suppress", cmd_suppress, "suppression lists (daemon)")
    ss = sp.add_subparsers(dest="sub", required=True, metavar="ACTION")
    scope_help = 'a tenant\'s list or "global" (default: %(default)s)'
    ls = ss.add_parser("list", help="entries, a page at a time")
    ls.add_argument("--scope", default=None, help="one list (default: every list)")
    ls.add_argument("--cursor", default=None, help="where the previous page ended")
    ls.add_argument("--limit", type=count_arg, default=100)
    ls.add_argument("--json", action="store_true")
    a = ss.add_parser("add", help="suppress an address, or a whole domain (@example.com)")
    a.add_argument("address")
    a.add_argument("--scope", default="global", help=scope_help)
    a.add_argument("--reason", default="manual", choices=_REASONS)
    a.add_argument("--source", default=None, help="why (a ticket, a message id)")
    a.add_argument("--expires", default=None,
                   help="ISO 8601 date or date-time (UTC without an offset); default: the "
                        "reason's ([suppression] hard_bounce_expiry, else never)")
    r = ss.add_parser("remove", help="take an address off a list")
    r.add_argument("address")
    r.add_argument("--scope", default="global", help=scope_help)
    i = ss.add_parser("import", help="add every entry of a CSV or JSON lines file")
    i.add_argument("file")
    i.add_argument("--scope", default=None,
                   help="put every entry on this list (default: the file's scope column, "
                        "else global)")
    i.add_argument("--format", choices=("csv", "jsonl"), default=None)
    e = ss.add_parser("export", help="write the entries as CSV or JSON lines")
    e.add_argument("-o", "--output", default=None, help="file (default: standard output)")
    e.add_argument("--scope", default=None, help="one list (default: every list)")
    e.add_argument("--format", choices=("csv", "jsonl"), default=None)
