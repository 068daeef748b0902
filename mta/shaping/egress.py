"""Egress: the sending addresses, their pools, and IP warm-up caps.

`[[egress.source]]` names a local address (IPv4 or IPv6) and the EHLO name to use from it;
`[egress.pool.NAME]` lists sources with weights. For each message the dispatcher asks
`choose(pool, rng)`: a weighted pick among the pool's sources that are not skipped (the
caller skips suspended ones) and not yet at today's warm-up cap. Given the same random
source the pick is the same, so tests and replays are deterministic.

Warm-up: a new address earns reputation by sending a little more each day. `warmup` lists
the cap per UTC day from `warmup_start` (day 1 = the start date); after the last day there
is no cap, before the start the cap is 0. Today's counts are kept in memory and, once
`attach(kv)` gave them a home (the policy store: policy.db, or Redis in a cluster), written
through to it and loaded back at start, so a restart never resets a day's count; in a
cluster every node adds to the same count and learns the total from each increment.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mta.clock import Clock
from mta.config import EgressConfig

if TYPE_CHECKING:
    from mta.policy.kv import PolicyKV

__all__ = ["DEFAULT_SOURCE", "Egress", "EgressSource"]

DEFAULT_SOURCE = "default"
# A source returning after a blocklist listing starts at this share of its weight.
RAMP_FLOOR = 0.1
WARMUP_NS = "warmup"
_WARMUP_TTL = 3 * 86400.0  # a day's count is only read on its own UTC day
_REFRESH = 1.0  # seconds between reads of the shared counts

log = logging.getLogger("mta.shaping")


@dataclass(frozen=True, slots=True)
class EgressSource:
    name: str
    address: str                 # "" = the OS chooses
    ehlo_name: str               # "" = [delivery] ehlo_name / [server] hostname
    warmup: tuple[int, ...] = ()
    warmup_start: dt.date | None = None

    def cap_on(self, day: dt.date) -> int | None:
        """Messages allowed on `day` (UTC), or None for no cap."""
        if not self.warmup or self.warmup_start is None:
            return None
        index = (day - self.warmup_start).days
        if index < 0:
            return 0
        return self.warmup[index] if index < len(self.warmup) else None


class Egress:
    def __init__(self, cfg: EgressConfig, clock: Clock) -> None:
        self.clock = clock
        self.sources: dict[str, EgressSource] = {}
        self.pools: dict[str, tuple[tuple[str, float], ...]] = {}
        self._configure(cfg)
        self._day = self.today()
        self._sent: dict[str, int] = {}
        self._kv: PolicyKV | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        # Sources pools avoid while others are usable (mta/shaping/dnsbl.py "shift").
        self.shifted: set[str] = set()
        # Sources coming back after a listing: source -> (start, end) of their ramp.
        self.ramping: dict[str, tuple[float, float]] = {}
        # Why a source is out of use (mta/shaping/dnsbl.py): its DNS listings and reply
        # hold, as explains show them.
        self.blocklist: dict[str, dict[str, object]] = {}

    def _configure(self, cfg: EgressConfig) -> None:
        sources: dict[str, EgressSource] = {}
        for s in cfg.source:
            start = dt.date.fromisoformat(s.warmup_start) if s.warmup_start else None
            sources[s.name] = EgressSource(s.name, s.address, s.ehlo_name,
                                           tuple(s.warmup), start)
        if not sources:
            sources[DEFAULT_SOURCE] = EgressSource(DEFAULT_SOURCE, "", "")
        pools = {name: tuple(p.sources.items()) for name, p in cfg.pool.items()}
        pools.setdefault("default", tuple((n, 1.0) for n in sources))
        self.sources, self.pools = sources, pools  # swapped whole: a pick sees one or the other

    def reload(self, cfg: EgressConfig) -> None:
        """SIGHUP: the new sources and pools. What is known of a source by its name stays:
        today's counts, a blocklist shift, ramp or listing."""
        self._configure(cfg)
        if self._kv is not None and self._refresher is None and any(
                s.warmup for s in self.sources.values()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def attach(self, kv: PolicyKV) -> None:
        """Persist warm-up counts in `kv` from now on; today's stored counts are loaded."""
        self._kv = kv
        await self._load()
        if any(s.warmup for s in self.sources.values()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _load(self) -> None:
        assert self._kv is not None
        self._roll()
        day = self._day
        for name, s in self.sources.items():
            if s.warmup:
                stored = await self._kv.count(WARMUP_NS, f"{name}:{day.isoformat()}")
                if day == self._day:
                    self._sent[name] = max(self._sent.get(name, 0), stored)

    async def _refresh(self) -> None:
        """Other nodes' messages count too: read the shared counts every second (so nodes
        overshoot a cap by at most what they assign within that second)."""
        while True:
            await asyncio.sleep(_REFRESH)
            try:
                await self._load()
            except Exception as e:
                log.warning("warm-up counts not re-read: %s", e)

    async def flush(self) -> None:
        """Wait for the counts written so far and stop reading (shutdown, tests)."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        while self._writes:
            await asyncio.wait(list(self._writes))

    def _write(self, source: str, day: dt.date, n: int) -> None:
        kv = self._kv
        assert kv is not None

        async def run() -> None:
            try:
                total = await kv.incr(WARMUP_NS, f"{source}:{day.isoformat()}", n, _WARMUP_TTL)
            except Exception as e:  # the store is down: memory still caps this process
                log.warning("warm-up count of %s not stored: %s", source, e)
                return
            if day == self._day:  # other nodes' messages count too
                self._sent[source] = max(self._sent.get(source, 0), total)
        task = asyncio.get_running_loop().create_task(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.UTC).date()

    def _roll(self) -> None:
        day = self.today()
        if day != self._day:
            self._day, self._sent = day, {}

    def next_day(self) -> float:
        """Epoch seconds of the next UTC midnight, when today's warm-up counts restart."""
        tomorrow = self.today() + dt.timedelta(days=1)
        return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day,
                           tzinfo=dt.UTC).timestamp()

    def warmup_day(self, source: str) -> int | None:
        """Day number of the source's warm-up (1 = the start date), or None without one."""
        s = self.sources[source]
        if not s.warmup or s.warmup_start is None:
            return None
        return (self.today() - s.warmup_start).days + 1

    def cap_today(self, source: str) -> int | None:
        s = self.sources[source]
        if not s.warmup:  # most sources: no warm-up, no date arithmetic per message
            return None
        return s.cap_on(self.today())

    def sent_today(self, source: str) -> int:
        self._roll()
        return self._sent.get(source, 0)

    def record_sent(self, source: str, n: int = 1) -> None:
        """Count messages handed to a source (call when a message is assigned to it)."""
        self._roll()
        self._sent[source] = self._sent.get(source, 0) + n
        src = self.sources.get(source)
        if self._kv is not None and src is not None and src.warmup:
            self._write(source, self._day, n)

    def under_cap(self, source: str) -> bool:
        cap = self.cap_today(source)
        return cap is None or self.sent_today(source) < cap

    def ramp(self, source: str, duration: float) -> None:
        """Bring a source back gradually: its weight grows from RAMP_FLOOR of its share to
        all of it over `duration` (receivers that just delisted an address watch it)."""
        if duration > 0:
            now = self.clock.now()
            self.ramping[source] = (now, now + duration)

    def ramp_factor(self, source: str) -> float:
        r = self.ramping.get(source)
        if r is None:
            return 1.0
        start, end = r
        now = self.clock.now()
        if now >= end:
            del self.ramping[source]
            return 1.0
        return RAMP_FLOOR + (1.0 - RAMP_FLOOR) * max(0.0, now - start) / (end - start)

    def choose(self, pool: str, rng: random.Random,
               skip: Callable[[str], bool] | None = None) -> EgressSource | None:
        """Weighted pick of a usable source from `pool`; None if none is usable now."""
        members = self.pools.get(pool)
        if members is None:
            raise KeyError(f"unknown egress pool {pool!r}")
        usable = [(n, w) for n, w in members
                  if w > 0 and self.under_cap(n) and not (skip and skip(n))]
        if self.shifted:  # listed on a blocklist: the others carry its traffic, if any
            usable = [(n, w) for n, w in usable if n not in self.shifted] or usable
        if self.ramping:
            usable = [(n, w * self.ramp_factor(n)) for n, w in usable]
        if not usable:
            return None
        point = rng.random() * sum(w for _, w in usable)
        for name, weight in usable:
            point -= weight
            if point < 0:
                return self.sources[name]
        return self.sources[usable[-1][0]]  # float rounding at the very top

    def explain(self, source: str) -> dict[str, object]:
        s = self.sources[source]
        return {"address": s.address, "ehlo_name": s.ehlo_name,
                "warmup_cap_today": self.cap_today(source),
                "ramp_factor": round(self.ramp_factor(source), 3),
                "sent_today": self.sent_today(source),
                "blocklist": self.blocklist.get(source)}
