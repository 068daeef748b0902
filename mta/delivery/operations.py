"""Queue operations for the admin API and `mta queue ...`: list, show, hold, release,
delete, bounce, flush, stats, explain.

Each keeps the spool (the truth) and the dispatcher's schedule in step: hold and delete
cancel scheduled work, release routes the message again, bounce finishes every queued
recipient as bounced with a DSN.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mta.delivery.dispatcher import Dispatcher
from mta.queue import MessageInfo, Recipient, Spool
from mta.rfc5321.reply import Reply

__all__ = ["QueueOperations", "message_json"]

ADMIN_BOUNCE = Reply(554, "5.0.0", "Message bounced by the administrator")


def message_json(info: MessageInfo) -> dict[str, Any]:
    """The JSON shape of a message: shared by the API and the CLI."""
    d = dataclasses.asdict(info)
    for r, ri in zip(d["recipients"], info.recipients, strict=True):
        r["last_reply"] = str(ri.last_reply) if ri.last_reply is not None else None
    return d


class QueueOperations:
    def __init__(self, spool: Spool, dispatcher: Dispatcher) -> None:
        self.spool = spool
        self.dispatcher = dispatcher

    async def queue_list(self, state: str | None, limit: int, after: str | None, *,
                         tenant: str | None = None, site: str | None = None) -> list[dict]:
        return [message_json(m) for m in await self.spool.list(
            state=state, limit=limit, after=after, tenant=tenant, site=site)]

    async def queue_show(self, msg_id: str) -> dict | None:
        info = await self.spool.get(msg_id)
        return message_json(info) if info is not None else None

    async def queue_hold(self, msg_id: str) -> bool:
        if not await self.spool.hold(msg_id):
            return False
        self.dispatcher.scheduler.cancel(msg_id)
        return True

    async def queue_release(self, msg_id: str) -> bool:
        if not await self.spool.release(msg_id):
            return False
        info = await self.spool.get(msg_id)
        if info is not None:
            self._reschedule(info)
        return True

    async def queue_delete(self, msg_id: str) -> bool:
        if not await self.spool.delete(msg_id):
            return False
        self.dispatcher.scheduler.cancel(msg_id)
        return True

    async def queue_bounce(self, msg_id: str) -> bool:
        info = await self.spool.get(msg_id)
        if info is None:
            return False
        self.dispatcher.scheduler.cancel(msg_id)
        await self.dispatcher.bounce_now(info, ADMIN_BOUNCE)
        return True

    async def queue_flush(self, msg_id: str | None) -> int:
        sites: list[str] = []
        if msg_id is not None:
            info = await self.spool.get(msg_id)
            if info is None:
                return -1
            sites = [r.site for r in info.recipients if r.site]
        return self.dispatcher.flush(msg_id, sites)

    async def queue_stats(self) -> dict[str, Any]:
        stats = await self.spool.stats()
        sched = self.dispatcher.scheduler
        return {
            "by_state": stats["recipients"],
            "messages": stats["messages"],
            "by_site": {site or "(unrouted)": n for site, n in stats["sites"].items()},
            "scheduler": {"ready": sched.ready_total, "deferred": sched.deferred_total},
        }

    async def queue_shape(self, edges: list[float], tenant: str | None) -> list[list]:
        """[site, held, bucket, recipients] rows (mta.queue.Spool.shape), now."""
        return [list(r) for r in await self.spool.shape(edges, time.time(), tenant)]

    async def queue_explain(self, msg_id: str) -> dict | None:
        info = await self.spool.get(msg_id)
        if info is None:
            return None
        return await self.dispatcher.explain(info)

    def _reschedule(self, info: MessageInfo) -> None:
        queued = [r for r in info.recipients if r.state == "queued"]
        if queued:
            self.dispatcher.route_indexes(info.id, info.tenant,
                                          [(r.index, Recipient(r.address)) for r in queued],
                                          pool=info.pool)
