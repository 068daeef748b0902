"""The console's view of the events stream (mta.observe.EventLog listeners): the recent
events for the Events page, live subscribers (SSE), and counts per minute and event type
(overall and per tenant) for the Overview chart. Counts start when the daemon starts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EventFeed", "Filter"]

OUTCOMES = ("delivered", "deferred", "bounced", "expired")
_MINUTES = 60
_QUEUE = 1000  # a slow browser loses events past this many, never slows the daemon


@dataclass(frozen=True, slots=True)
class Filter:
    tenant: str = ""
    recipient: str = ""
    id: str = ""
    event: str = ""

    def match(self, r: dict[str, Any]) -> bool:
        return ((not self.tenant or r.get("tenant") == self.tenant)
                and (not self.recipient or self.recipient.lower()
                     in str(r.get("recipient", "")).lower())
                and (not self.id or r.get("id") == self.id)
                and (not self.event or r.get("event") == self.event))


class EventFeed:
    def __init__(self, *, keep: int = 500, clock: Callable[[], float] = time.time) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._clock = clock
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        # minute (unix // 60) -> Counter of (event, tenant); (event, "") is the total.
        self._minutes: dict[int, Counter[tuple[str, str]]] = {}
        self.totals: Counter[tuple[str, str]] = Counter()
        self.started = clock()

    def listen(self, events: Any) -> None:
        events.listeners.append(self.on_event)

    def on_event(self, record: dict[str, Any]) -> None:
        # Called inside EventLog.emit, on the loop: only cheap, non-blocking work here.
        self.recent.append(record)
        minute = int(record.get("time", self._clock()) // 60)
        counts = self._minutes.get(minute)
        if counts is None:
            counts = self._minutes[minute] = Counter()
            for old in [m for m in self._minutes if m <= minute - _MINUTES]:
                del self._minutes[old]
        event, tenant = str(record.get("event", "")), str(record.get("tenant", ""))
        for key in ((event, ""), (event, tenant)):
            counts[key] += 1
            self.totals[key] += 1
        for q in self._subscribers:
            if q.qsize() < _QUEUE:
                q.put_nowait(record)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def tail(self, f: Filter, n: int = 100) -> list[dict[str, Any]]:
        return [r for r in self.recent if f.match(r)][-n:]

    def per_minute(self, events: Iterable[str], tenant: str = "") -> list[dict[str, Any]]:
        """The last hour, one entry per minute (oldest first): {minute, EVENT: count...}."""
        now = int(self._clock() // 60)
        out = []
        for m in range(now - _MINUTES + 1, now + 1):
            c = self._minutes.get(m, Counter())
            out.append({"minute": m, **{e: c[(e, tenant)] for e in events}})
        return out

    def last_hour(self, events: Iterable[str], tenant: str = "") -> dict[str, int]:
        now = int(self._clock() // 60)
        return {e: sum(c[(e, tenant)] for m, c in self._minutes.items()
                       if m > now - _MINUTES) for e in events}
