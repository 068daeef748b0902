"""URL domains against DNS URI blocklists (RFC 5782 style): which hosts are listed.

Owns the names asked (`<host>.<zone>`, the host's parents down to two labels, IPv4 hosts
with their octets reversed as RFC 5782 2.1 says) and what an answer means: an A record in
127.0.0.0/8 is a listing (its address the list's return code), except 127.255.255.0/24,
which lists such as Spamhaus's use for errors ("query refused", "use a data feed"): those
are logged, not listings. NXDOMAIN is "not listed". A lookup that fails (SERVFAIL,
timeout) is not a listing either: a broken list must not stop mail.

Every question goes through the daemon's resolver, whose cache keeps answers for their
TTL (negative answers too), so a campaign's thousand copies of one link ask DNS once;
cached answers are read without a task each (`Resolver.cached`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Iterable
from typing import Protocol

from mta.dns.answer import Answer, Status

__all__ = ["Listing", "check_hosts", "query_names"]

log = logging.getLogger("mta.content")

_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")
_MAX_PARENT_NAMES = 3  # a.b.c.example.com: itself, c.example.com, example.com


class Lookup(Protocol):
    async def lookup(self, name: str, rdtype: str) -> Answer: ...


Listing = tuple[str, str, str]  # (host, zone, return code)


def query_names(host: str) -> list[str]:
    """The names to look up for one URL host (without the zone)."""
    if host[-1:].isdigit():  # only then can it be a dotted quad (no raise per name)
        try:
            return [".".join(reversed(str(ipaddress.IPv4Address(host)).split(".")))]
        except ValueError:
            pass
    # The host, and its registered domain's likely forms (no public suffix list here):
    # the last three and the last two labels.
    labels = host.split(".")
    names = [host] + [".".join(labels[-n:]) for n in (3, 2) if len(labels) > n]
    return names[:_MAX_PARENT_NAMES]


async def _code(resolver: Lookup, name: str) -> str | None:
    return _code_of(await resolver.lookup(name, "A"), name)


def _code_of(answer: Answer, name: str) -> str | None:
    if answer.status is not Status.OK:
        if answer.status is Status.SERVFAIL:
            log.info("URI blocklist lookup %s failed: %s", name, answer.detail)
        return None
    for record in answer.records:
        try:
            addr = ipaddress.IPv4Address(str(record))
        except ValueError:
            continue
        if addr in _ERRORS:
            log.warning("URI blocklist %s answered an error code %s (list refuses this "
                        "resolver?)", name, addr)
            continue
        if addr in _LISTED:
            return str(addr)
    return None


@functools.lru_cache(maxsize=4096)
def _names(host: str, zone: str) -> tuple[str, ...]:
    """The full names asked for one host in one zone (a campaign's links recur)."""
    return tuple(f"{n}.{zone}" for n in query_names(host))


async def check_hosts(resolver: Lookup, hosts: Iterable[str],
                      zones: Iterable[str]) -> list[Listing]:
    """Every (host, zone, code) listing among `hosts` in `zones`, asked concurrently."""
    pairs = [(host, zone) for zone in zones for host in hosts]
    # Answers in the resolver's cache are read at once (a campaign's links are asked
    # about thousands of times); only the others become concurrent questions.
    cached = getattr(resolver, "cached", None)
    codes: list[str | None] = []
    missing: list[tuple[int, str]] = []  # (index in codes, name)
    for host, zone in pairs:
        for name in _names(host, zone):
            answer = cached(name, "A") if cached is not None else None
            if answer is None:
                missing.append((len(codes), name))
                codes.append(None)
            else:
                codes.append(_code_of(answer, name))
    if missing:
        found_codes = await asyncio.gather(*(_code(resolver, name) for _, name in missing))
        for (i, _), code in zip(missing, found_codes, strict=True):
            codes[i] = code
    found: list[Listing] = []
    seen: set[tuple[str, str]] = set()
    at = 0
    for host, zone in pairs:
        n = len(_names(host, zone))
        code = next((c for c in codes[at:at + n] if c is not None), None)
        at += n
        if code is not None and (host, zone) not in seen:
            seen.add((host, zone))
            found.append((host, zone, code))
    return found
