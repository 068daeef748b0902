"""Where blocklist replies and reply holds are kept (mta/shaping/dnsbl.py decides on them).

Keyed by the egress address (the identity receivers see; sources without one, where the
OS picks it, are not held), in the policy store once `attach(kv)` gave one: policy.db, or
the cluster's Redis, so every worker and node sending from an address counts the same
replies and sees the same hold, and a restart forgets neither. Without one: this process's
memory.

    ns "blocklist_reply_seen"   key ADDR\\0SITE -> {"t", "list", "reply", "tenant"} (latest)
    ns "blocklist_reply_hold"   key ADDR        -> {"list", "lists", "since", "until", ...}

Times are policy time (the hold clock). Sightings older than the window are deleted when
the address's sightings are next read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mta.policy.kv import PolicyKV

__all__ = ["ReplyHoldStore", "source_key"]

SEEN_NS = "blocklist_reply_seen"
HOLD_NS = "blocklist_reply_hold"


def source_key(name: str, address: str) -> str:
    return address or f"source:{name}"


class ReplyHoldStore:
    def __init__(self) -> None:
        from mta.policy.kv import MemoryKV  # a sibling room's: imported when first used

        self.kv: PolicyKV = MemoryKV()  # until the daemon attaches the policy store's

    def attach(self, kv: PolicyKV) -> None:
        self.kv = kv

    async def seen(self, key: str, site: str, record: dict[str, Any], now: float,
                   window: float) -> dict[str, dict[str, Any]]:
        """Record one site's blocklist reply about `key`; its sightings within `window`
        (site -> the latest), older ones deleted."""
        await self.kv.put(SEEN_NS, f"{key}\0{site}", json.dumps({**record, "t": now}))
        out: dict[str, dict[str, Any]] = {}
        for k, v in (await self.kv.items(SEEN_NS)).items():
            addr, _, s = k.partition("\0")
            seen = _load(v)
            if seen is None or float(seen.get("t", 0)) < now - window:
                await self.kv.delete(SEEN_NS, k)  # any address's: old ones go
            elif addr == key:
                out[s] = seen
        return out

    async def forget_seen(self, key: str) -> None:
        for k in await self.kv.items(SEEN_NS):
            if k.partition("\0")[0] == key:
                await self.kv.delete(SEEN_NS, k)

    async def hold(self, key: str) -> dict[str, Any] | None:
        v = await self.kv.get(HOLD_NS, key)
        return None if v is None else _load(v)

    async def holds(self) -> dict[str, dict[str, Any]]:
        out = {}
        for k, v in (await self.kv.items(HOLD_NS)).items():
            h = _load(v)
            if h is not None:
                out[k] = h
        return out

    async def put_hold(self, key: str, hold: dict[str, Any]) -> None:
        await self.kv.put(HOLD_NS, key, json.dumps(hold))

    async def end_hold(self, key: str) -> bool:
        """True for the one caller that ended it (it tells the world)."""
        return await self.kv.delete(HOLD_NS, key)


def _load(text: str) -> dict[str, Any] | None:
    try:
        v = json.loads(text)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None
