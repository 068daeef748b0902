"""Blocklist watch of our own egress addresses ([dnsbl]).

Every `interval`, each egress source with an address is looked up in each zone the way
receivers do (RFC 5782: the reversed octets, or nibbles for IPv6, under the zone; an A
record means listed, its value the list's return code). Lookups go to the resolver's
backend, uncached: a delisting must be seen at the next check, not after a negative TTL.

A new listing is a `dnsbl_listed` event naming the address, source, zone, return code and
the tenants that sent from the source in the last 24 h, by volume (with their bounces),
then the action: "shift" takes the source out of pool choice while another source is
usable (Egress.shifted), "suspend" suspends the source in shaping (its queued mail waits).
After `clean_checks` clean rounds in a row (every zone answering "not listed") it is used
again (`dnsbl_delisted`), its share ramping up over `ramp` (Egress.ramp); a temporary DNS
failure counts as neither.

Receivers' replies are a signal too: a bounce or deferral whose reply names a blocklist
("blocked using zen.spamhaus.org", "listed in ...", "RBL") is a `dnsbl_reply` event
naming the source, and starts a check round at once (at most one a minute per source)
instead of waiting for the interval. SIGHUP: new zones, interval and action apply (`reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from mta.config import Config
from mta.dns.answer import Status

__all__ = ["DnsblWatch", "query_name"]

log = logging.getLogger("mta.shaping")

_DAY = 86400.0
_SENT_EVENTS = frozenset({"delivered", "bounced", "deferred", "expired"})
# Words receivers use when they refuse an address because a blocklist lists it.
_BLOCKLIST_REPLY = re.compile(
    r"(?i)\b(blocked using|listed (?:in|on|at|by)|block ?list(?:ed)?|black ?list(?:ed)?|"
    r"dnsbl|rbl|spamhaus|spamcop|barracuda(?:central)?|sorbs|uceprotect|psbl)\b")
_SIGNAL_EVERY = 60.0  # seconds between reply-triggered checks of one source


def query_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        rev = ".".join(reversed(str(ip).split(".")))
    else:
        rev = ".".join(reversed(ip.exploded.replace(":", "")))
    return f"{rev}.{zone.strip('.')}"


class DnsblWatch:
    def __init__(self, cfg: Config, shaper: Any, lookup: Any, events: Any,
                 clock: Callable[[], float] = time.time) -> None:
        """`lookup`: a mta.dns Lookup (`await lookup.lookup(name, "A")` -> Answer)."""
        self.cfg = cfg.dnsbl
        self.shaper = shaper
        self.lookup = lookup
        self.events = events
        self.clock = clock
        self.listed: dict[str, dict[str, str]] = {}   # source -> zone -> return code
        self._clean: dict[str, int] = {}               # source -> clean rounds in a row
        self._sent: dict[str, deque[tuple[float, str, bool]]] = {}
        self._signalled: dict[str, float] = {}  # source -> last reply-triggered check
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if events is not None:
            events.listeners.append(self._observe)

    # --- who sent from which source ----------------------------------------------------
    def _observe(self, record: dict[str, Any]) -> None:
        if record.get("event") not in _SENT_EVENTS or not record.get("source"):
            return
        q = self._sent.setdefault(str(record["source"]), deque())
        now = float(record.get("time") or self.clock())
        q.append((now, str(record.get("tenant") or "default"),
                  record["event"] == "bounced"))
        while q and q[0][0] < now - _DAY:
            q.popleft()
        reply = record.get("reply")
        if record["event"] in ("bounced", "deferred") and isinstance(reply, str) and \
                _BLOCKLIST_REPLY.search(reply):
            self._blocklist_reply(str(record["source"]), record, now)

    def _blocklist_reply(self, source: str, record: dict[str, Any], now: float) -> None:
        if now - self._signalled.get(source, 0.0) < _SIGNAL_EVERY:
            return
        self._signalled[source] = now
        src = self.shaper.egress.sources.get(source)
        address = src.address if src is not None else ""
        log.warning("egress %s (%s): a receiver names a blocklist: %s", source,
                    address or "-", record.get("reply"))
        if self.events is not None:
            self.events.emit("dnsbl_reply", source=source, ip=address or None,
                             site=record.get("site"), tenant=record.get("tenant"),
                             reply=record.get("reply"), checking=bool(self.cfg.zones))
        self._poke.set()

    def senders(self, source: str) -> list[dict[str, Any]]:
        since = self.clock() - _DAY
        entries = [e for e in self._sent.get(source, ()) if e[0] >= since]
        volume = Counter(t for _, t, _ in entries)
        bounced = Counter(t for _, t, b in entries if b)
        return [{"tenant": t, "messages": n, "bounced": bounced[t],
                 "bounce_rate": round(bounced[t] / n, 4)}
                for t, n in sorted(volume.items(), key=lambda kv: (-kv[1], kv[0]))]

    # --- checking ------------------------------------------------------------------------
    def _sources(self) -> list[tuple[str, str]]:
        out = []
        for name, s in self.shaper.egress.sources.items():
            try:
                ipaddress.ip_address(s.address)
            except ValueError:
                continue  # "": the OS chooses; nothing to look up
            out.append((name, s.address))
        return out

    async def check(self) -> None:
        """One round over every source and zone."""
        for name, address in self._sources():
            found: dict[str, str] = {}
            unknown = False
            for zone in self.cfg.zones:
                answer = await self.lookup.lookup(query_name(address, zone), "A")
                if answer.status is Status.OK and answer.records:
                    found[zone] = str(answer.records[0])
                elif answer.status is Status.SERVFAIL:
                    unknown = True
            if found:
                self._clean[name] = 0
                for zone, code in found.items():
                    if zone not in self.listed.get(name, {}):
                        self._listed(name, address, zone, code)
                self.listed.setdefault(name, {}).update(found)
            elif name in self.listed and not unknown:
                self._clean[name] = self._clean.get(name, 0) + 1
                if self._clean[name] >= self.cfg.clean_checks:
                    self._delisted(name, address)

    def _listed(self, name: str, address: str, zone: str, code: str) -> None:
        first = name not in self.listed
        if self.events is not None:
            self.events.emit("dnsbl_listed", source=name, ip=address, zone=zone, code=code,
                             action=self.cfg.action, tenants=self.senders(name))
        log.warning("egress %s (%s) is listed in %s (%s): %s", name, address, zone, code,
                    self.cfg.action)
        if not first:
            return
        if self.cfg.action == "shift":
            self.shaper.egress.shifted.add(name)
        else:
            self.shaper.suspensions.suspend("source", name, f"listed in {zone} ({code})")

    def _delisted(self, name: str, address: str) -> None:
        zones = sorted(self.listed.pop(name, {}))
        self._clean.pop(name, None)
        self.shaper.egress.shifted.discard(name)
        self.shaper.egress.ramp(name, self.cfg.ramp)
        if self.cfg.action == "suspend":
            s = self.shaper.suspensions.is_suspended(source=name)
            if s is not None and s.reason.startswith("listed in "):
                self.shaper.suspensions.lift("source", name)
        if self.events is not None:
            self.events.emit("dnsbl_delisted", source=name, ip=address, zones=zones,
                             clean_checks=self.cfg.clean_checks)

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("blocklist check failed")
            self._poke.clear()
            # The interval, or sooner when a receiver's reply names a blocklist.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.cfg.interval)

    def start(self) -> DnsblWatch:
        """Run the checks while zones are configured (see `reload`)."""
        if self.cfg.zones and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(),
                                                                name="dnsbl-watch")
        return self

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reload(self, cfg: Config) -> None:
        """SIGHUP: new zones, interval, action. A listing in a zone no longer watched
        clears at the next round (clean_checks apply as usual)."""
        self.cfg = cfg.dnsbl
        if not self.cfg.zones:
            self.cancel()
        else:
            self.start()
            self._poke.set()
