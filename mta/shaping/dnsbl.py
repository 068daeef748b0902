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

Such replies also count on their own (mta/shaping/blocklist_reply.py tells which list a
reply names): once `reply_threshold` distinct sites said so about one source within
`reply_window`, the source is treated as listed by that list (`blocklist_reply`: address,
list, sites, a sample reply, the tenants as for a DNS listing) with the same action, for
`reply_hold`, measured on the daemon's policy clock (a test's clock file moves it). A DNS
listing found meanwhile takes over (the DNS rules then govern); otherwise at the end of
the hold the source comes back (`blocklist_reply_cleared`) and ramps up like a delisting.
Like DNS listings, this state is each process's own: every node watches its own replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from mta.clock import Clock, SystemClock
from mta.config import Config
from mta.dns.answer import Status
from mta.shaping.blocklist_reply import parse_reply

__all__ = ["DnsblWatch", "query_name"]

log = logging.getLogger("mta.shaping")

_DAY = 86400.0
_SENT_EVENTS = frozenset({"delivered", "bounced", "deferred", "expired"})
_SIGNAL_EVERY = 60.0  # seconds between reply-triggered checks of one source
_HOLD_POLL = 1.0  # seconds between looks at the reply holds' end (the clock may jump)
# Suspension reasons this watch sets ("suspend"): only these does it lift.
_DNS_REASON = "listed in "
_REPLY_REASON = "blocklist replies: "


def query_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        rev = ".".join(reversed(str(ip).split(".")))
    else:
        rev = ".".join(reversed(ip.exploded.replace(":", "")))
    return f"{rev}.{zone.strip('.')}"


class DnsblWatch:
    def __init__(self, cfg: Config, shaper: Any, lookup: Any, events: Any,
                 clock: Callable[[], float] = time.time,
                 hold_clock: Clock | None = None) -> None:
        """`lookup`: a mta.dns Lookup (`await lookup.lookup(name, "A")` -> Answer);
        `hold_clock`: what reply windows and holds are measured on (the policy clock)."""
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
        self.hold_clock: Clock = hold_clock or SystemClock()
        # source -> recent blocklist replies: (time, site, list, reply, tenant)
        self._replies: dict[str, deque[tuple[float, str, str, str, str]]] = {}
        # source -> the reply hold in force: list, since, until, sites, reply
        self.reply_holds: dict[str, dict[str, Any]] = {}
        self._hold_task: asyncio.Task[None] | None = None
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
        if record["event"] in ("bounced", "deferred") and isinstance(reply, str):
            named = parse_reply(reply)
            if named is not None:
                self._blocklist_reply(str(record["source"]), record, now)
                self._count_reply(str(record["source"]), record, named.list, reply)

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

    # --- replies as a listing --------------------------------------------------------------
    def _count_reply(self, source: str, record: dict[str, Any], name: str, reply: str) -> None:
        if self.cfg.reply_threshold <= 0 or source in self.reply_holds or \
                source in self.listed:
            return  # off, or already out of use: the DNS listing or the hold governs
        now = self.hold_clock.now()
        q = self._replies.setdefault(source, deque())
        q.append((now, str(record.get("site") or ""), name, reply,
                  str(record.get("tenant") or "default")))
        while q and q[0][0] < now - self.cfg.reply_window:
            q.popleft()
        sites = sorted({e[1] for e in q})
        if len(sites) >= self.cfg.reply_threshold:
            self._reply_listed(source, q, sites, now)

    def _reply_listed(self, name: str, q: deque[tuple[float, str, str, str, str]],
                      sites: list[str], now: float) -> None:
        # The list most replies named (the latest on a tie) is the one it is listed by.
        counts = Counter(e[2] for e in q)
        listed_by = max(reversed([e[2] for e in q]), key=lambda n: counts[n])
        sample = next(e[3] for e in reversed(q) if e[2] == listed_by)
        src = self.shaper.egress.sources.get(name)
        address = src.address if src is not None else ""
        until = now + self.cfg.reply_hold
        self.reply_holds[name] = {"list": listed_by, "lists": sorted(counts), "since": now,
                                  "until": until, "sites": sites, "reply": sample,
                                  "action": self.cfg.action}
        self._replies.pop(name, None)
        if self.events is not None:
            self.events.emit("blocklist_reply", source=name, ip=address or None,
                             list=listed_by, lists=sorted(counts), sites=sites,
                             reply=sample, action=self.cfg.action, until=until,
                             tenants=self.senders(name))
        log.warning("egress %s (%s): %d sites' replies name a blocklist (%s): %s until %s",
                    name, address or "-", len(sites), listed_by, self.cfg.action, until)
        self._take_out(name, f"{_REPLY_REASON}{listed_by} ({len(sites)} sites)",
                       self.cfg.reply_hold)
        if self._hold_task is None:
            self._hold_task = asyncio.get_running_loop().create_task(
                self._expire_holds(), name="dnsbl-reply-holds")

    async def _expire_holds(self) -> None:
        try:
            while self.reply_holds:
                await asyncio.sleep(_HOLD_POLL)
                now = self.hold_clock.now()
                for name, hold in list(self.reply_holds.items()):
                    if now >= hold["until"]:
                        self._reply_cleared(name, hold)
        finally:
            self._hold_task = None

    def _reply_cleared(self, name: str, hold: dict[str, Any]) -> None:
        del self.reply_holds[name]
        src = self.shaper.egress.sources.get(name)
        if self.events is not None:
            self.events.emit("blocklist_reply_cleared", source=name,
                             ip=(src.address if src is not None else "") or None,
                             list=hold["list"], since=hold["since"],
                             held=round(self.cfg.reply_hold, 3))
        log.info("egress %s: the blocklist-reply hold (%s) ended", name, hold["list"])
        self._put_back(name)

    # --- taking a source out and back (DNS listings and reply holds alike) ------------
    def _take_out(self, name: str, reason: str, duration: float | None = None) -> None:
        if self.cfg.action == "shift":
            self.shaper.egress.shifted.add(name)
        else:  # a reply hold's suspension ends by itself too (it outlives a restart)
            self.shaper.suspensions.suspend("source", name, reason, duration)
        self._describe(name)

    def _put_back(self, name: str) -> None:
        """Use the source again, gradually, unless a listing or hold still applies."""
        if name in self.listed or name in self.reply_holds:
            self._describe(name)
            return
        self.shaper.egress.shifted.discard(name)
        self.shaper.egress.ramp(name, self.cfg.ramp)
        s = self.shaper.suspensions.is_suspended(source=name)
        if s is not None and s.reason.startswith((_DNS_REASON, _REPLY_REASON)):
            self.shaper.suspensions.lift("source", name)
        self._describe(name)

    def _describe(self, name: str) -> None:
        """What explains show about the source (Egress.blocklist)."""
        state: dict[str, Any] = {}
        if name in self.listed:
            state["dns"] = dict(self.listed[name])
        if name in self.reply_holds:
            state["reply_hold"] = dict(self.reply_holds[name])
        if state:
            state["action"] = self.cfg.action
            self.shaper.egress.blocklist[name] = state
        else:
            self.shaper.egress.blocklist.pop(name, None)

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
                        self.listed.setdefault(name, {})[zone] = code
                self.listed[name].update(found)
                self._describe(name)
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
        # A DNS listing confirms a reply hold: the DNS rules govern from now on.
        self.reply_holds.pop(name, None)
        self._take_out(name, f"{_DNS_REASON}{zone} ({code})")

    def _delisted(self, name: str, address: str) -> None:
        zones = sorted(self.listed.pop(name, {}))
        self._clean.pop(name, None)
        self._put_back(name)
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
        if self._hold_task is not None:
            self._hold_task.cancel()
            self._hold_task = None

    def reload(self, cfg: Config) -> None:
        """SIGHUP: new zones, interval, action. A listing in a zone no longer watched
        clears at the next round (clean_checks apply as usual)."""
        self.cfg = cfg.dnsbl
        if not self.cfg.zones and self._task is not None:
            self._task.cancel()
            self._task = None
        else:
            self.start()
            self._poke.set()
