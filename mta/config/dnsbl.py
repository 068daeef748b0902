"""[dnsbl]: watching our own egress addresses on DNS blocklists (mta/shaping/dnsbl.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.config.values import Duration

__all__ = ["DnsblConfig"]


@dataclass(frozen=True)
class DnsblConfig:
    # DNSxL zones (RFC 5782) to look every egress source address up in, e.g.
    # "zen.spamhaus.org" (mind its terms: public resolvers are refused). Empty: no watch.
    zones: list[str] = field(default_factory=list)
    # How often each address is looked up in each zone.
    interval: Duration = 300.0
    # A listed address: "shift" (pools stop choosing it while others are usable) or
    # "suspend" (a shaping suspension of the source: its queued mail waits too).
    action: str = "shift"
    # Clean answers in a row (every zone) before a listed address is used again.
    clean_checks: int = 3
    # After delisting, the address's share of its pool grows from 10% back to all of it
    # over this long (0: all at once): receivers watch an address that was just listed.
    ramp: Duration = 6 * 3600.0
    # Receivers' replies naming a blocklist (mta/shaping/blocklist_reply.py): once this
    # many distinct sites said so about one source within `reply_window`, the source is
    # treated as listed (the same `action`) for `reply_hold`, unless a DNS check confirms
    # a listing first (then the DNS rules above govern). 0: replies never hold a source.
    reply_threshold: int = 3
    reply_window: Duration = 600.0
    reply_hold: Duration = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.action not in ("shift", "suspend"):
            raise ValueError('action must be "shift" or "suspend"')
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        if self.ramp < 0:
            raise ValueError("ramp must not be negative")
        if self.clean_checks < 1:
            raise ValueError("clean_checks must be at least 1")
        if self.reply_threshold < 0:
            raise ValueError("reply_threshold: must be 0 (off) or a number of sites")
        if self.reply_window <= 0:
            raise ValueError("reply_window: must be positive")
        if self.reply_hold <= 0:
            raise ValueError("reply_hold: must be positive")
        for z in self.zones:
            if not z.strip(".") or " " in z:
                raise ValueError(f"not a DNS zone: {z!r}")
