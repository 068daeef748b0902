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
Sightings and holds live in the policy store by address (mta/shaping/reply_hold.py): every
process sending from an address counts the same replies and follows one hold (`sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from mta.clock import Clock, SystemClock
from mta.config import Config
from mta.dns.answer import Status
from mta.shaping.blocklist_reply import parse_reply
from mta.shaping.reply_hold import ReplyHoldStore, source_key

if TYPE_CHECKING:
    from mta.policy.kv import PolicyKV

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
        # Blocklist replies and reply holds, shared through the policy store (`attach`).
        self.store = ReplyHoldStore()
        # source -> the reply hold this process applies: list, since, until, sites, reply
        self.reply_holds: dict[str, dict[str, Any]] = {}
        self._hold_task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._counting = asyncio.Lock()
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
    def attach(self, kv: PolicyKV) -> None:
        """Keep reply sightings and holds in the policy store (shared, durable)."""
        self.store.attach(kv)

    def _key(self, name: str) -> str:
        src = self.shaper.egress.sources.get(name)
        return source_key(name, src.address if src is not None else "")

    def _count_reply(self, source: str, record: dict[str, Any], name: str, reply: str) -> None:
        if self.cfg.reply_threshold <= 0 or source in self.reply_holds or \
                source in self.listed:
            return  # off, or already out of use: the DNS listing or the hold governs
        src = self.shaper.egress.sources.get(source)
        if src is None or not src.address:
            return  # the OS chooses the address (each node its own): nothing to hold
        seen = {"list": name, "reply": reply, "tenant": str(record.get("tenant") or "default")}
        self._spawn(self._reply_seen(source, str(record.get("site") or ""), seen))

    async def settle(self) -> None:
        """Wait for the replies counted so far (tests, shutdown)."""
        while self._jobs:
            await asyncio.wait(list(self._jobs))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _reply_seen(self, name: str, site: str, seen: dict[str, str]) -> None:
        async with self._counting:  # one check-and-hold at a time in this process
            await self._reply_seen_locked(name, site, seen)

    async def _reply_seen_locked(self, name: str, site: str, seen: dict[str, str]) -> None:
        try:
            key = self._key(name)
            now = self.hold_clock.now()
            sightings = await self.store.seen(key, site, seen, now, self.cfg.reply_window)
            if len(sightings) < self.cfg.reply_threshold or name in self.reply_holds or \
                    name in self.listed:
                return
            if await self.store.hold(key) is not None:
                return  # another process held it a moment ago: the sync adopts it
            hold = self._new_hold(sightings, now)
            await self.store.put_hold(key, hold)
            await self.store.forget_seen(key)
        except Exception:
            log.exception("blocklist reply of %s not counted", name)
            return
        if name not in self.reply_holds and name not in self.listed:
            self._reply_listed(name, hold, announce=True)
        self._start_sync()

    def _new_hold(self, sightings: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
        # The list most sites named (the latest on a tie) is the one it is listed by.
        latest = sorted(sightings.values(), key=lambda e: float(e["t"]))
        counts = Counter(str(e["list"]) for e in latest)
        listed_by = max(reversed([str(e["list"]) for e in latest]), key=lambda n: counts[n])
        sample = next(str(e["reply"]) for e in reversed(latest) if e["list"] == listed_by)
        return {"list": listed_by, "lists": sorted(counts), "since": now,
                "until": now + self.cfg.reply_hold, "sites": sorted(sightings),
                "reply": sample, "action": self.cfg.action}

    def _reply_listed(self, name: str, hold: dict[str, Any], announce: bool) -> None:
        """Take the source out for the hold; `announce`: this process made the hold (the
        others adopt it silently)."""
        self.reply_holds[name] = hold
        src = self.shaper.egress.sources.get(name)
        address = src.address if src is not None else ""
        if announce and self.events is not None:
            self.events.emit("blocklist_reply", source=name, ip=address or None,
                             list=hold["list"], lists=hold["lists"], sites=hold["sites"],
                             reply=hold["reply"], action=self.cfg.action,
                             until=hold["until"], tenants=self.senders(name))
        if announce:
            log.warning("egress %s (%s): %d sites' replies name a blocklist (%s): %s until "
                        "%s", name, address or "-", len(hold["sites"]), hold["list"],
                        self.cfg.action, hold["until"])
        remaining = max(1.0, float(hold["until"]) - self.hold_clock.now())
        self._take_out(name, f"{_REPLY_REASON}{hold['list']} ({len(hold['sites'])} sites)",
                       remaining)

    def _start_sync(self) -> None:
        if self._hold_task is None and self.cfg.reply_threshold > 0:
            self._hold_task = asyncio.get_running_loop().create_task(
                self._sync_loop(), name="dnsbl-reply-holds")

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("blocklist reply holds not read")
            await asyncio.sleep(_HOLD_POLL)

    async def sync(self) -> None:
        """Follow the shared holds: adopt one another process made, end the ones that are
        over (the process whose delete wins emits `blocklist_reply_cleared`), put back a
        source whose hold another process ended."""
        holds = await self.store.holds()
        now = self.hold_clock.now()
        for name in list(self.shaper.egress.sources):
            key = self._key(name)
            hold = holds.get(key)
            if hold is not None and now >= float(hold.get("until", 0)):
                if await self.store.end_hold(key) and not hold.get("confirmed"):
                    self._emit_cleared(name, hold)
                hold = None
            if hold is None and name in self.reply_holds:
                log.info("egress %s: the blocklist-reply hold ended", name)
                del self.reply_holds[name]
                self._put_back(name)
            elif hold is not None and name not in self.reply_holds and \
                    name not in self.listed and not hold.get("confirmed"):
                self._reply_listed(name, hold, announce=False)

    def _emit_cleared(self, name: str, hold: dict[str, Any]) -> None:
        src = self.shaper.egress.sources.get(name)
        if self.events is not None:
            self.events.emit("blocklist_reply_cleared", source=name,
                             ip=(src.address if src is not None else "") or None,
                             list=hold.get("list"), since=hold.get("since"),
                             held=round(float(hold["until"]) - float(hold["since"]), 3))

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
        # A DNS listing confirms a reply hold: the DNS rules govern from now on (other
        # processes keep theirs until it ends, then follow their own checks).
        if self.reply_holds.pop(name, None) is not None:
            self._spawn(self._confirm(name))
        self._take_out(name, f"{_DNS_REASON}{zone} ({code})")

    async def _confirm(self, name: str) -> None:
        key = self._key(name)
        with contextlib.suppress(Exception):
            hold = await self.store.hold(key)
            if hold is not None:
                await self.store.put_hold(key, {**hold, "confirmed": True})

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
        """Run the checks while zones are configured (see `reload`), and follow the
        reply holds (shared ones may exist from before a restart or another node)."""
        self._start_sync()
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
        for job in list(self._jobs):
            job.cancel()

    def reload(self, cfg: Config) -> None:
        """SIGHUP: new zones, interval, action. A listing in a zone no longer watched
        clears at the next round (clean_checks apply as usual)."""
        self.cfg = cfg.dnsbl
        self._start_sync()
        if not self.cfg.zones and self._task is not None:
            self._task.cancel()
            self._task = None
        else:
            self.start()
            self._poke.set()
