"""Webhooks: every event of the events log, batched per endpoint into the durable outbox,
then posted, retried, failed and replayed.

    events.emit ──> listener (append to a list: never blocks, never fails the mail flow)
                └─> every batch_wait: match endpoints (tenant chain, event filter), cut
                    batches of batch_size, write them to the outbox in one transaction
    one pump per enabled endpoint: oldest batch first, one POST at a time (order kept
                    while the receiver is healthy); a failure pauses the endpoint with
                    exponential backoff (Retry-After honoured) and retries the same
                    batch, same webhook id; batches older than retry_for while failing
                    go to the failed list; failing for disable_after disables it

A slow receiver only slows its own pump; SMTP and delivery only ever append to a list,
which is bounded (_MAX_BUFFER) like the outbox (`[webhooks] max_pending`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from mta.config.webhooks import WebhooksConfig
from mta.webhooks.endpoints import Endpoint, Endpoints
from mta.webhooks.outbox import Failing, Outbox
from mta.webhooks.sender import Result, Sender
from mta.webhooks.sign import new_webhook_id

__all__ = ["Webhooks"]

log = logging.getLogger("mta.webhooks")

# Events held in memory between two outbox writes; past it they are dropped and counted
# (the outbox thread cannot keep up: a disk problem).
_MAX_BUFFER = 200_000
_SUPERVISE = 1.0  # seconds between checks of the endpoint list
MAX_PER_TENANT = 20

Chain = Callable[[str], Awaitable[frozenset[str]]]


def payload(events: list[dict[str, Any]], kind: str = "mta.events") -> bytes:
    """The Standard Webhooks envelope: type, timestamp, data."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"type": kind, "timestamp": now, "data": {"events": events}},
                      separators=(",", ":"), default=str).encode()


class Webhooks:
    def __init__(self, cfg: WebhooksConfig, endpoints: Endpoints, outbox: Outbox, *,
                 events: Any = None, chain: Chain | None = None) -> None:
        self.cfg = cfg
        self.endpoints = endpoints
        self.outbox = outbox
        self.events = events
        self._chain = chain
        self.sender = Sender(timeout=cfg.timeout, allow_private=cfg.allow_private)
        self._buffer: list[dict[str, Any]] = []
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._failing: dict[str, Failing] = {}
        self._pending: dict[str, int] = defaultdict(int)  # events in the outbox, per endpoint
        self._tasks: list[asyncio.Task[None]] = []
        # Counters exported as metrics.
        self.posts: dict[str, int] = defaultdict(int)  # outcome -> n
        self.dropped = 0
        self.queued = 0

    # --- intake ---------------------------------------------------------------------------

    def listen(self, events: Any) -> None:
        events.listeners.append(self.on_event)

    def on_event(self, record: dict[str, Any]) -> None:
        if not self.endpoints.cached:
            return  # no endpoint anywhere: keep nothing
        if len(self._buffer) >= _MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append(record)

    async def _ancestors(self, tenant: str, cache: dict[str, frozenset[str]]) -> frozenset[str]:
        known = cache.get(tenant)
        if known is None:
            known = frozenset((tenant,))
            if self._chain is not None:
                with contextlib.suppress(Exception):  # an unknown tenant: itself only
                    known = await self._chain(tenant)
            cache[tenant] = known
        return known

    async def flush(self) -> None:
        """Write what the buffer holds to the outbox, as batches per endpoint."""
        records, self._buffer = self._buffer, []
        targets = [ep for ep in self.endpoints.cached.values() if ep.enabled]
        if not records or not targets:
            return
        cache: dict[str, frozenset[str]] = {}
        per: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rec in records:
            name = rec.get("event", "")
            tenant = rec.get("tenant")
            family = (await self._ancestors(tenant, cache)
                      if isinstance(tenant, str) else frozenset())
            for ep in targets:
                if ep.wants(name) and (ep.tenant is None or ep.tenant in family):
                    per[ep.id].append(rec)
        rows = []
        now = time.time()
        size = self.cfg.batch_size
        for ep_id, recs in per.items():
            room = self.cfg.max_pending - self._pending[ep_id]
            if room < len(recs):
                self.dropped += len(recs) - max(0, room)
                if room <= 0:
                    log.warning("webhooks: outbox of endpoint %s is full (%d events); "
                                "dropping new events", ep_id, self._pending[ep_id])
                recs = recs[:max(0, room)]
            for i in range(0, len(recs), size):
                chunk = recs[i:i + size]
                rows.append((ep_id, new_webhook_id(), payload(chunk), len(chunk), now))
        if rows:
            await self.outbox.add(rows)  # one transaction: all of them, or none
            for ep_id, _wid, _body, n, _t in rows:
                self._pending[ep_id] += n
                self.queued += n
            for ep_id in per:
                self._wake[ep_id].set()

    async def _batcher(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.batch_wait)
            taken = list(self._buffer)
            try:
                await self.flush()
            except Exception:
                # Put them back in front (bounded like the buffer): the next round retries.
                self._buffer[:0] = taken[:max(0, _MAX_BUFFER - len(self._buffer))]
                log.exception("webhooks: cannot write to the outbox; events kept in memory")

    # --- lifecycle ------------------------------------------------------------------------

    def reload(self, cfg: WebhooksConfig) -> None:
        """SIGHUP: new batching, timeouts and retry rules from the next batch on."""
        self.cfg = cfg
        self.sender.timeout = cfg.timeout
        self.sender.allow_private = cfg.allow_private

    async def start(self) -> None:
        self._failing = await self.outbox.failing()
        for ep_id, (pending, _failed, _oldest) in (await self.outbox.depth()).items():
            self._pending[ep_id] = pending
        with contextlib.suppress(Exception):  # the store answers later: the supervisor retries
            await self.endpoints.refresh(force=True)
        self._tasks = [asyncio.create_task(self._batcher(), name="webhooks-batcher"),
                       asyncio.create_task(self._supervisor(), name="webhooks-supervisor")]

    async def aclose(self) -> None:
        for t in [*self._tasks, *self._pumps.values()]:
            t.cancel()
        for t in [*self._tasks, *self._pumps.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks, self._pumps = [], {}
        try:
            await self.flush()  # the last events, written before the outbox closes
        except Exception:
            log.exception("webhooks: last events not written to the outbox")
        await self.sender.aclose()
        await self.outbox.close()

    async def _supervisor(self) -> None:
        while True:
            try:
                await self._supervise()
            except Exception:
                log.exception("webhooks: cannot read the endpoints; trying again")
            await asyncio.sleep(_SUPERVISE)

    async def _supervise(self) -> None:
        eps = await self.endpoints.refresh()
        for ep_id, ep in eps.items():
            task = self._pumps.get(ep_id)
            if ep.enabled and (task is None or task.done()):
                self._pumps[ep_id] = asyncio.create_task(self._pump(ep_id),
                                                         name=f"webhooks-{ep_id}")
        # Removed (here or on another node): their batches go with them.
        for ep_id in [e for e in self._pending if e not in eps]:
            task = self._pumps.pop(ep_id, None)
            if task is not None:
                task.cancel()
            await self.outbox.drop_endpoint(ep_id)
            self._pending.pop(ep_id, None)
            self._failing.pop(ep_id, None)

    def wake(self, ep_id: str | None = None) -> None:
        for key in ([ep_id] if ep_id else list(self._wake)):
            self._wake[key].set()

    async def _sleep(self, ep_id: str, seconds: float) -> None:
        ev = self._wake[ep_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), max(0.0, seconds))
        ev.clear()

    # --- posting --------------------------------------------------------------------------

    async def _pump(self, ep_id: str) -> None:
        while True:
            ep = self.endpoints.cached.get(ep_id)
            if ep is None or not ep.enabled:
                return
            state = self._failing.get(ep_id)
            now = time.time()
            if state is not None and state.retry_at > now:
                await self._sleep(ep_id, state.retry_at - now)
                state = self._failing.get(ep_id)
                if state is not None and state.retry_at > time.time():
                    continue  # woken early (new batches): still paused
            batches = await self.outbox.next(ep_id)
            if not batches:
                await self._sleep(ep_id, 30.0)
                continue
            for b in batches:
                result = await self.sender.post(ep, b.webhook_id, b.body)
                if result.ok:
                    await self.outbox.delivered(b.seq)
                    self._pending[ep_id] -= b.events
                    self.posts["delivered"] += 1
                    if ep_id in self._failing:
                        del self._failing[ep_id]
                        await self.outbox.set_failing(ep_id, None)
                        log.info("webhooks: endpoint %s answers again", ep_id)
                    continue
                self.posts["failed"] += 1
                await self.outbox.attempt_failed(b.seq, result.error)
                await self._failed(ep, result)
                break

    async def _failed(self, ep: Endpoint, result: Result) -> None:
        now = time.time()
        old = self._failing.get(ep.id)
        failures = (old.failures if old else 0) + 1
        since = old.failing_since if old else now
        delay = min(self.cfg.retry_initial * 2 ** (failures - 1), self.cfg.retry_max)
        delay = max(delay, min(result.retry_after, self.cfg.retry_max))
        state = Failing(since, failures, now + delay)
        self._failing[ep.id] = state
        await self.outbox.set_failing(ep.id, state)
        if failures == 1:
            log.warning("webhooks: endpoint %s (%s) failed: %s; retrying", ep.id, ep.url,
                        result.error)
        n = await self.outbox.fail_older(ep.id, now - self.cfg.retry_for, result.error)
        if n:
            self._pending[ep.id] = (await self.outbox.depth()).get(ep.id, (0, 0, 0.0))[0]
            log.warning("webhooks: %d batch(es) for endpoint %s failed for good after "
                        "%g s of retries (mta webhooks failed)", n, ep.id, self.cfg.retry_for)
        reason = ""
        if result.gone:
            reason = "the receiver answered 410 Gone"
        elif now - since >= self.cfg.disable_after:
            first = dt.datetime.fromtimestamp(since, dt.UTC)
            reason = f"failing since {first:%Y-%m-%d %H:%M:%S} UTC"
        if reason:
            await self.endpoints.set_enabled(ep.id, False, reason)
            log.error("webhooks: endpoint %s disabled: %s", ep.id, reason)
            if self.events is not None:
                self.events.emit("webhook_disabled", endpoint=ep.id, tenant=ep.tenant,
                                 url=ep.url, reason=reason)

    # --- operator actions -----------------------------------------------------------------

    async def test(self, ep: Endpoint) -> Result:
        """Post one `webhook_test` event now, outside the outbox; the receiver's answer."""
        body = payload([{"time": round(time.time(), 6), "event": "webhook_test",
                         "endpoint": ep.id, "tenant": ep.tenant}], kind="webhook.test")
        return await self.sender.post(ep, new_webhook_id(), body)

    async def replay(self, ep_id: str | None = None, webhook_ids: list[str] | None = None) -> int:
        n = await self.outbox.replay(ep_id, webhook_ids)
        if n:
            for e, (pending, _f, _o) in (await self.outbox.depth()).items():
                self._pending[e] = pending
            for e in ([ep_id] if ep_id else list(self._failing) + list(self._pending)):
                if e in self._failing:
                    state = self._failing[e]
                    self._failing[e] = Failing(state.failing_since, state.failures, 0.0)
                self.wake(e)
        return n

    async def enabled(self, ep_id: str) -> None:
        """An endpoint enabled again: a fresh start, without the old failure streak."""
        self._failing.pop(ep_id, None)
        await self.outbox.set_failing(ep_id, None)
        await self._supervise()
        self.wake(ep_id)

    # --- metrics --------------------------------------------------------------------------

    def register_metrics(self, metrics: Any) -> None:
        async def depth() -> dict[tuple[str, ...], float]:
            return {(ep,): float(p) for ep, (p, _f, _o) in (await self.outbox.depth()).items()}

        async def failed() -> dict[tuple[str, ...], float]:
            return {(ep,): float(f) for ep, (_p, f, _o) in (await self.outbox.depth()).items()}

        async def oldest() -> dict[tuple[str, ...], float]:
            now = time.time()
            return {(ep,): max(0.0, now - o) if p else 0.0
                    for ep, (p, _f, o) in (await self.outbox.depth()).items()}

        metrics.add_gauge("mta_webhook_outbox_events", "Events waiting in the webhook "
                          "outbox, by endpoint.", depth, ["endpoint"])
        metrics.add_gauge("mta_webhook_failed_events", "Events whose batch failed for good "
                          "(mta webhooks failed|replay), by endpoint.", failed, ["endpoint"])
        metrics.add_gauge("mta_webhook_outbox_oldest_seconds", "Age of the oldest event "
                          "waiting for an endpoint.", oldest, ["endpoint"])
        metrics.add_gauge("mta_webhook_posts", "Webhook POSTs by outcome (delivered, failed).",
                          lambda: {(k,): float(v) for k, v in self.posts.items()},
                          ["outcome"], kind="counter")
        metrics.add_gauge("mta_webhook_events_queued", "Events written to the webhook outbox.",
                          lambda: float(self.queued), kind="counter")
        metrics.add_gauge("mta_webhook_dropped_events", "Events dropped because an "
                          "endpoint's outbox was full.", lambda: float(self.dropped),
                          kind="counter")
        metrics.add_gauge("mta_webhook_endpoints_failing", "Endpoints in a failure streak.",
                          lambda: float(len(self._failing)))
