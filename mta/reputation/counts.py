"""Per-tenant delivery outcomes in rolling windows, shared by every node.

Each window is cut into BUCKETS buckets; an outcome adds 1 to the current bucket of each
window. Counts gather in memory and are added to the policy store's counters
(mta/policy/kv.py: policy.db, or the cluster's Redis, where every node adds to the same
keys) at each `flush`, a few keys per tenant; `figures` reads a window's buckets in one
call. A bucket expires from the store after its window has passed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from mta.policy.kv import PolicyKV
from mta.reputation.ladder import Figures

__all__ = ["FIELDS", "Counts", "classify"]

NS = "reputation-counts"
BUCKETS = 12
FIELDS = ("delivered", "bounced", "attempts", "hard_bounce", "spam_block", "complaint")


def classify(record: dict[str, Any]) -> tuple[str, ...]:
    """The fields one events-log record adds 1 to (empty: it does not count)."""
    event, category = record.get("event"), record.get("category")
    if event == "delivered":
        return ("delivered", "attempts")
    if event == "bounced":
        if category == "administrative":  # an operator's `mta queue bounce`
            return ()
        extra = {"invalid_recipient": ("hard_bounce",), "spam_block": ("spam_block",)}
        return ("bounced", "attempts", *extra.get(category, ()))
    if event == "deferred":
        return ("attempts", "spam_block") if category == "spam_block" else ("attempts",)
    if event == "complained":
        return ("complaint",)
    return ()


class Counts:
    def __init__(self, kv: PolicyKV, windows: list[float]) -> None:
        self.kv = kv
        self.windows = list(windows)
        self._pending: dict[tuple[str, str, int, int], int] = defaultdict(int)
        self.active: set[str] = set()  # tenants with outcomes since the last take_active()

    def _width(self, window: float) -> float:
        return window / BUCKETS

    def add(self, tenant: str, fields: tuple[str, ...], now: float) -> None:
        self.active.add(tenant)
        for w, window in enumerate(self.windows):
            bucket = math.floor(now / self._width(window))
            for f in fields:
                self._pending[(tenant, f, w, bucket)] += 1

    async def flush(self) -> None:
        pending, self._pending = self._pending, defaultdict(int)
        await self.kv.add_many(NS, [
            (_key(tenant, f, w, bucket), n,
             self.windows[w] + 2 * self._width(self.windows[w]))
            for (tenant, f, w, bucket), n in pending.items()])

    def take_active(self) -> set[str]:
        active, self.active = self.active, set()
        return active

    async def figures(self, tenant: str, now: float, since: float = 0.0) -> list[Figures]:
        """Each window's counts up to `now`, leaving out buckets that began before `since`."""
        out = []
        for w, window in enumerate(self.windows):
            width = self._width(window)
            last = math.floor(now / width)
            first = max(last - BUCKETS + 1, math.ceil(since / width) if since else 0)
            buckets = range(first, last + 1)
            keys = [_key(tenant, f, w, b) for f in FIELDS for b in buckets]
            values = await self.kv.counts(NS, keys) if keys else []
            n = len(buckets)
            sums = {f: sum(values[i * n:(i + 1) * n]) for i, f in enumerate(FIELDS)}
            out.append(Figures(window=window, **sums))
        return out


def _key(tenant: str, field: str, window: int, bucket: int) -> str:
    return f"{tenant}\0{field}\0{window}\0{bucket}"
