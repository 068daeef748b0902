"""A suppression entry, how addresses and scopes are written, and the CSV / JSON lines
formats of `mta suppress import|export` and the API.

An entry suppresses one address, or a whole domain written "@example.com" (input "example.com"
is taken as that too), in one scope: "global" (the operator's list, every tenant) or a
tenant's name (a sub-account is a tenant with a parent; its mail is checked against its own
list, each ancestor's, and the global one). Addresses compare in lower case, as policy counts
them (mta.policy.engine.normalise_address).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELDS", "GLOBAL", "REASONS", "Entry", "EntryError", "candidates", "dump_csv",
           "dump_jsonl", "normalise_target", "parse_lines", "valid_scope"]

GLOBAL = "global"
REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "import")
# Column order of CSV files (a header line names them; only "address" is required).
FIELDS = ("address", "scope", "reason", "source", "created_at", "expires_at")

_SCOPE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # tenant names (mta.http.admin_policy)
# Deliberately loose: an entry must be able to name any address a client gave at RCPT.
_ADDRESS_RE = re.compile(r"^[^@\s<>\",]{1,64}@[^@\s<>\",]{1,253}$")
_DOMAIN_RE = re.compile(r"^@?[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
_MAX_SOURCE = 200


class EntryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Entry:
    scope: str  # GLOBAL or a tenant name
    address: str  # normalised: "user@example.com" or "@example.com" (the whole domain)
    reason: str  # one of REASONS
    source: str = ""  # what caused it: a queue id, an event, "api", "cli", a file name
    created_at: float = 0.0
    expires_at: float | None = None  # None: until removed

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "address": self.address, "reason": self.reason,
                "source": self.source, "created_at": self.created_at,
                "expires_at": self.expires_at}


_HASHED_RE = re.compile(r"^hmac:[0-9a-f]{64}$")


def valid_scope(scope: str) -> bool:
    return bool(_SCOPE_RE.match(scope))


def normalise_target(text: str) -> str:
    """An address ("User@Example.COM" -> "user@example.com") or a domain ("example.com" or
    "@example.com" -> "@example.com"); EntryError if it is neither."""
    t = text.strip().strip("<>").lower()
    if _HASHED_RE.match(t):  # an erased address's keyed hash (mta.gdpr): listed, removable
        return t
    if "@" in t[1:]:
        if not _ADDRESS_RE.match(t):
            raise EntryError(f"not an address: {text!r}")
        return t
    if not _DOMAIN_RE.match(t) or "." not in t:
        raise EntryError(f"not an address or a domain: {text!r}")
    return t if t.startswith("@") else "@" + t


def candidates(recipient: str) -> tuple[str, str] | tuple[str]:
    """What a recipient is looked up as: itself, and its domain."""
    r = recipient.strip().strip("<>").lower()
    at = r.rfind("@")
    return (r, r[at:]) if at > 0 else (r,)


def _instant(value: Any, key: str) -> float | None:
    """POSIX seconds, or ISO 8601 ("2026-12-31", "2026-12-31T18:00:00+00:00"; UTC if no
    offset); "" / None: not given."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EntryError(f"{key}: not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise EntryError(f"{key}: not a time: {value!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    raise EntryError(f"{key}: not a time")


def make_entry(doc: dict[str, Any], *, scope: str | None, reason: str, source: str,
               now: float) -> Entry:
    """An Entry from a JSON object or a CSV row. `scope`: forced (the caller's own scope),
    or None to read "scope" (default global)."""
    address = doc.get("address")
    if not isinstance(address, str) or not address.strip():
        raise EntryError("address is required")
    given_scope = doc.get("scope") or None
    if scope is not None:
        if given_scope is not None and given_scope != scope:
            raise EntryError(f"scope {given_scope!r}: only {scope!r} may be written here")
        s = scope
    else:
        s = given_scope or GLOBAL
    if not isinstance(s, str) or not valid_scope(s):
        raise EntryError(f"not a scope: {s!r}")
    r = doc.get("reason") or reason
    if r not in REASONS:
        raise EntryError(f"reason must be one of {', '.join(REASONS)}, not {r!r}")
    src = doc.get("source") or source
    if not isinstance(src, str) or len(src) > _MAX_SOURCE or "\n" in src:
        raise EntryError(f"source: one line, at most {_MAX_SOURCE} characters")
    created = _instant(doc.get("created_at"), "created_at")
    expires = _instant(doc.get("expires_at"), "expires_at")
    return Entry(s, normalise_target(address), r, src,
                 created if created is not None else now, expires)


def parse_lines(lines: Iterable[str], fmt: str, *, scope: str | None, reason: str = "import",
                source: str = "import", now: float
                ) -> Iterator[tuple[int, Entry | EntryError]]:
    """(line number, entry or the error in that line) for each record of a CSV file (header
    line optional: without one, the columns are FIELDS in order) or of JSON lines. A bare
    address per line is valid CSV."""
    if fmt == "jsonl":
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if isinstance(doc, str):
                    doc = {"address": doc}
                if not isinstance(doc, dict):
                    raise EntryError("not a JSON object")
                yield n, make_entry(doc, scope=scope, reason=reason, source=source, now=now)
            except EntryError as e:
                yield n, e
            except ValueError as e:
                yield n, EntryError(f"not JSON: {e}")
        return
    if fmt != "csv":
        raise ValueError(f"unknown format {fmt!r}: csv or jsonl")
    header: tuple[str, ...] | None = None
    for n, row in enumerate(csv.reader(lines), 1):
        if not row or not any(c.strip() for c in row):
            continue
        if header is None:
            cells = tuple(c.strip().lower() for c in row)
            if "address" in cells:
                header = cells
                continue
            header = FIELDS
        if len(row) > len(header):
            yield n, EntryError(f"{len(row)} columns, the header has {len(header)}")
            continue
        try:
            yield n, make_entry(dict(zip(header, (c.strip() for c in row), strict=False)),
                                scope=scope, reason=reason, source=source, now=now)
        except EntryError as e:
            yield n, e


def _iso(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def dump_csv(entries: Iterable[Entry], header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(FIELDS)
    for e in entries:
        w.writerow((e.address, e.scope, e.reason, e.source, _iso(e.created_at),
                    _iso(e.expires_at)))
    return buf.getvalue()


def dump_jsonl(entries: Iterable[Entry]) -> str:
    return "".join(json.dumps(e.as_dict(), separators=(",", ":")) + "\n" for e in entries)
