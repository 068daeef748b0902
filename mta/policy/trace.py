"""Forged trace headers: what a client may not bring with it (RFC 8601 section 5).

A message arriving claims nothing about us: a `Received:` field whose `from` or `by` names
our [server] hostname, or an `Authentication-Results:` field carrying our authserv-id, was
written by the client (or an earlier hop pretending to be us) and would mislead whoever
reads the delivered message, so ingress removes them before signing. The first field is
ours (prepended at end of DATA, or by the HTTP door) and is kept.
"""

from __future__ import annotations

import re

__all__ = ["strip_forged_trace"]

_FIELD = re.compile(rb"(?m)^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)\r?\n")


def _header_end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return len(data) if end < 0 else end + 2


def strip_forged_trace(data: bytes, hostname: str, authserv_id: str, *,
                       keep_first: bool = True) -> tuple[bytes, list[str]]:
    """(data without the forged fields, one "Name: value" line per field removed)."""
    end = _header_end(data)
    head = data[:end]
    low = head.lower()
    host = hostname.lower().encode()
    serv = authserv_id.lower().encode()
    if low.count(host) <= 1 and (not serv or b"authentication-results" not in low):
        return data, []  # the usual case: only our own Received names us
    claims = re.compile(rb"(?i)\b(?:from|by)\s+" + re.escape(host) + rb"(?![-.a-z0-9])")
    ours = re.compile(rb"(?i)^\s*" + re.escape(serv) + rb"(?:\s+\d+)?\s*(?:;|$)")
    removed: list[str] = []
    keep: list[bytes] = []
    pos = 0
    first = True
    for m in _FIELD.finditer(head):
        if m.start() != pos:  # not a field boundary (garbage): leave the block alone
            return data, []
        pos = m.end()
        name = m.group(1).lower()
        value = b" ".join(m.group(2).split())
        forged = (name == b"received" and not (keep_first and first)
                  and claims.search(value) is not None) or (
            name == b"authentication-results" and bool(serv)
            and ours.match(value) is not None)
        first = False
        if forged:
            removed.append(f"{m.group(1).decode('ascii', 'replace')}: "
                           f"{value.decode('utf-8', 'replace')[:200]}")
        else:
            keep.append(m.group(0))
    if not removed:
        return data, []
    return b"".join(keep) + head[pos:] + data[end:], removed
