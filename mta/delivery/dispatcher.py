"""The dispatcher: from the schedule to the wire and back to the spool.

Owns the delivery loop. Accepted messages are routed (recipient domain -> MX -> site) into
the scheduler's ready queues; one runner per site takes work from every tenant's queue of
that site in turn and delivers it over pooled connections (mta.delivery.pool) within the
site's shaping (mta.shaping); each recipient's reply is classified (mta.bounce) into
delivered, deferred (rescheduled with backoff), bounced (DSN to the sender) or expired;
outcomes are made durable in the spool (`Spool.record`) before anything else happens, then
written as events. A slow or dead site only ever occupies its own runner (no head-of-line
blocking between sites).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from mta.bounce.classify import Action, Classifier
from mta.bounce.dsn import RecipientStatus, make_dsn
from mta.config import Config
from mta.delivery.client import ClientSettings
from mta.delivery.pool import ConnectionPool, MxHost, SiteUnavailable
from mta.dns import DnsFailure, Resolver, make_resolver
from mta.observe.events import EventLog
from mta.queue import (
    Envelope,
    MessageInfo,
    Outcome,
    Recipient,
    RetrySchedule,
    Scheduler,
    Spool,
    WorkItem,
)
from mta.rfc5321.reply import Reply
from mta.shaping import EgressSource, PathConfig, Shaper

__all__ = ["Dispatcher"]

log = logging.getLogger("mta.delivery")

# Items a runner takes from one tenant's queue before looking at the next tenant's, so one
# tenant's backlog cannot starve another's on the same site.

# (tenant, queue id, recipient, outcome) once a recipient is delivered, bounced or expired.
FinalCallback = Callable[[str, str, str, str], Awaitable[None]]


@dataclass(slots=True)
class _Path:
    """One (egress source, site) path: its resolved rules and its connections."""

    source: EgressSource
    config: PathConfig
    pool: ConnectionPool


@dataclass(slots=True)
class _Site:
    """What the dispatcher knows of one site: where it is and who is working on it."""

    name: str
    hosts: list[MxHost]
    resolved_at: float
    paths: dict[str, _Path] = field(default_factory=dict)  # by source name
    workers: int = 0
    tenants: list[str] = field(default_factory=list)  # round-robin over queues with work
    last_reply: Reply | None = None


class Dispatcher:
    def __init__(self, cfg: Config, *, spool: Spool, events: EventLog,
                 resolver: Resolver | None = None, classifier: Classifier | None = None,
                 shaper: Shaper | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 on_final: FinalCallback | None = None) -> None:
        self.cfg = cfg
        self.on_final = on_final
        self.spool = spool
        self.events = events
        self.resolver = resolver or make_resolver(cfg.dns)
        self.classifier = classifier or Classifier.from_config(cfg)
        self.shaper = shaper or Shaper(cfg, on_change=self._shaping_changed)
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry = RetrySchedule.from_config(cfg.delivery, rand=self.rng.random)
        self.scheduler = Scheduler()
        self.sites: dict[str, _Site] = {}
        self.settings = ClientSettings.from_config(cfg.delivery, cfg.server.hostname)
        self.inject_dsn: Callable[[str, bytes], object] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the schedule from the spool, streaming it, then start the loop."""
        now = self.clock()
        restored = 0
        async for batch in self.spool.iter_pending():
            restored += self.scheduler.restore(batch, now)
        if restored:
            log.info("recovered %d queued work item(s) from the spool", restored)
        self._loop_task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a drain deadline
        """Finish the deliveries in progress (within `timeout`), then close connections.
        What is not finished stays queued in the spool for the next start."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for site in self.sites.values():
            for p in site.paths.values():
                await p.pool.aclose()

    @property
    def connection_count(self) -> int:
        """Outbound SMTP connections open now, over every path."""
        return sum(p.pool.open_count for s in self.sites.values() for p in s.paths.values())

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.retry = RetrySchedule.from_config(cfg.delivery, rand=self.rng.random)
        self.settings = ClientSettings.from_config(cfg.delivery, cfg.server.hostname)

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- intake --------------------------------------------------------------------------

    def accepted(self, msg_id: str, envelope: Envelope) -> None:
        """A message is durable in the spool: route its recipients, grouped by domain."""
        self.route_indexes(msg_id, envelope.tenant, enumerate(envelope.recipients))

    def route_indexes(self, msg_id: str, tenant: str,
                      recipients: Iterable[tuple[int, Recipient]]) -> None:
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i, r in recipients:
            by_domain[r.address.rpartition("@")[2].lower()].append(i)
        for domain, indexes in by_domain.items():
            item = WorkItem(msg_id, tuple(indexes), tenant, domain)
            site = self._known_site(domain)
            if site is not None:
                self._enqueue(item, site)
            else:
                self._spawn(self._route(item, domain), f"route {domain}")

    def _known_site(self, domain: str) -> str | None:
        """The site of a domain from the resolver's cache, without waiting."""
        cached = self.resolver.cached_site(domain)
        return cached if cached in self.sites else None

    async def _route(self, item: WorkItem, domain: str) -> None:
        """Resolve the domain's MX into a site, then queue the item there."""
        result = await self.resolver.resolve_mx(domain)
        now = self.clock()
        if isinstance(result, DnsFailure):
            reply = result.reply()
            await self._finish(item, [reply] * len(item.indexes), None, site=domain)
            return
        name = result.site
        hosts = [MxHost(h.name, tuple(h.addresses)) for h in result.hosts if h.addresses]
        site = self.sites.get(name)
        if site is None:
            site = self.sites[name] = _Site(name, hosts, now)
        else:
            site.hosts, site.resolved_at = hosts, now
            for p in site.paths.values():
                p.pool.hosts = hosts
        self._enqueue(item, name)

    def _enqueue(self, item: WorkItem, site: str) -> None:
        self.scheduler.enqueue(item, site=site)
        self._start_workers(site)

    # --- the loop: retries come due, sites get workers -----------------------------------

    async def _loop(self) -> None:
        while True:
            now = self.clock()
            self.scheduler.due(now)
            if self.scheduler.ready_total:
                for tenant, site in self.scheduler.ready_keys():
                    if site in self.sites:
                        self._start_workers(site)
                    else:
                        # Restored or retried work whose site this process has not
                        # resolved yet: the site name is (or stands for) a domain.
                        for item in self.scheduler.take((tenant, site), 1_000_000):
                            self._spawn(self._route_restored(item), f"route {site}")
            nxt = self.scheduler.next_due()
            delay = 60.0 if nxt is None else max(0.0, min(60.0, nxt - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _route_restored(self, item: WorkItem) -> None:
        info = await self.spool.get(item.msg_id)
        if info is None:
            return
        rcpts = {r.index: r for r in info.recipients}
        live = [i for i in item.indexes if i in rcpts and rcpts[i].state == "queued"]
        if not live:
            return
        domain = rcpts[live[0]].address.rpartition("@")[2].lower()
        await self._route(WorkItem(item.msg_id, tuple(live), item.tenant, domain), domain)

    def poke(self) -> None:
        """New deferred work or a flush: let the loop recompute its sleep."""
        self._wake.set()

    def _start_workers(self, name: str) -> None:
        """Enough workers for the site's backlog, within what its paths may carry."""
        site = self.sites[name]
        if self._stopping:
            return
        backlog = sum(n for (_, s), n in self.scheduler.counts().items() if s == name)
        if site.paths:
            limit = sum(p.config.connection_limit for p in site.paths.values())
        else:
            limit = self.shaper.path("default", name).connection_limit
        while site.workers < limit and site.workers < backlog:
            site.workers += 1
            self._spawn(self._worker(site), f"deliver {name}")

    def _path(self, site: _Site, source: EgressSource) -> _Path:
        p = site.paths.get(source.name)
        if p is None:
            config = self.shaper.path(source.name, site.name)
            pool = ConnectionPool(
                site.hosts, self._settings_for(config, source), port=self.cfg.delivery.port,
                source=source.address or None, connection_limit=config.connection_limit,
                max_deliveries_per_connection=config.max_deliveries_per_connection,
                idle_timeout=self.cfg.delivery.idle_timeout, name=f"{source.name}->{site.name}")
            p = site.paths[source.name] = _Path(source, config, pool)
        return p

    def _settings_for(self, p: PathConfig, source: EgressSource) -> ClientSettings:
        return ClientSettings(
            ehlo_name=source.ehlo_name or self.settings.ehlo_name, tls=p.tls,
            connect_timeout=p.connect_timeout, greeting_timeout=p.greeting_timeout,
            command_timeout=p.command_timeout, data_timeout=p.data_timeout,
            max_recipients_per_transaction=p.max_recipients_per_transaction)

    # --- delivery ------------------------------------------------------------------------

    def _next_item(self, site: _Site) -> WorkItem | None:
        keys = [k for k in self.scheduler.ready_keys() if k[1] == site.name]
        if not keys:
            return None
        # Round-robin over the tenants with work for this site.
        keys.sort(key=lambda k: site.tenants.index(k[0]) if k[0] in site.tenants else -1)
        for key in keys:
            items = self.scheduler.take(key, 1)
            if key[0] in site.tenants:
                site.tenants.remove(key[0])
            site.tenants.append(key[0])
            if items:
                return items[0]
        return None

    async def _worker(self, site: _Site) -> None:
        try:
            while not self._stopping:
                item = self._next_item(site)
                if item is None:
                    return
                tenant_cfg = self.cfg.tenants.get(item.tenant)
                source = self.shaper.choose_source(
                    (tenant_cfg.pool if tenant_cfg else "") or "default", self.rng,
                    site=site.name, tenant=item.tenant)
                if source is None:  # every source suspended or at today's warm-up cap
                    self.scheduler.defer(item, self.clock() + 60.0)
                    self.poke()
                    continue
                path = self._path(site, source)
                suspended = self.shaper.blocked(path.config, item.tenant)
                if suspended is not None:
                    self.scheduler.defer(item, suspended.until or (self.clock() + 60.0))
                    self.poke()
                    continue
                wait = await self.shaper.message_wait(path.config)
                while wait > 0 and not self._stopping:
                    await asyncio.sleep(wait)
                    wait = await self.shaper.message_wait(path.config)
                # The adaptive window (Postfix-style feedback) caps the connections.
                path.pool.connection_limit = max(1, min(
                    path.config.connection_limit, self.shaper.adaptive.window(path.config)))
                await self._deliver(site, path, item)
        finally:
            site.workers -= 1

    async def _deliver(self, site: _Site, path: _Path, item: WorkItem) -> None:
        info = await self.spool.get(item.msg_id)
        if info is None or info.state != "queued":
            return  # deleted, held or finished since it was queued
        rcpts = {r.index: r for r in info.recipients}
        indexes = [i for i in item.indexes if i in rcpts and rcpts[i].state == "queued"]
        if not indexes:
            return
        try:
            body = await self.spool.read_body(item.msg_id)
        except KeyError:
            return
        recipients = [rcpts[i] for i in indexes]
        try:
            async with path.pool.lease() as client:
                result = await client.send(info.mail_from, recipients, body,
                                           params=info.mail_params)
            replies = list(result.per_recipient)
        except SiteUnavailable as e:
            replies = [e.reply] * len(indexes)
            self.shaper.record(path.config, "connection_failure", e.reply)
        site.last_reply = replies[-1]
        done = WorkItem(item.msg_id, tuple(indexes), item.tenant, site.name)
        await self._finish(done, replies, info, site=site.name, body=body, path=path)

    # --- outcomes ------------------------------------------------------------------------

    async def _finish(self, item: WorkItem, replies: list[Reply], info: MessageInfo | None,
                      *, site: str, body: bytes | None = None,
                      path: _Path | None = None) -> None:
        """Classify each reply, make the outcomes durable, then reschedule, notify, log."""
        if info is None:
            info = await self.spool.get(item.msg_id)
            if info is None:
                return
        now = self.clock()
        rcpts = {r.index: r for r in info.recipients}
        outcomes: list[Outcome] = []
        retry_at: dict[float, list[int]] = defaultdict(list)
        failed: list[tuple[int, Reply, str, str]] = []  # (index, reply, action, category)
        events: list[tuple[str, int, Reply, str]] = []
        shaping = path.config if path is not None else None
        for index, reply in zip(item.indexes, replies, strict=True):
            r = rcpts.get(index)
            if r is None or r.state != "queued":
                continue
            attempt = r.attempts + 1
            if reply.is_positive:
                outcomes.append(Outcome(item.msg_id, index, "delivered", reply, site=site))
                events.append(("delivered", index, reply, ""))
                if shaping is not None:
                    self.shaper.record(shaping, "delivered")
                continue
            c = self.classifier.classify(reply)
            if shaping is not None:
                self.shaper.record(shaping, str(c.category), reply)
            if c.action == Action.RETRY:
                if self.retry.expired(info.received_at, now):
                    outcomes.append(Outcome(item.msg_id, index, "expired", reply, site=site))
                    failed.append((index, reply, "expired", str(c.category)))
                else:
                    at = self.retry.next_retry(attempt, now)
                    outcomes.append(Outcome(item.msg_id, index, "deferred", reply,
                                            next_attempt=at, site=site))
                    retry_at[at].append(index)
                    events.append(("deferred", index, reply, str(c.category)))
            else:
                outcomes.append(Outcome(item.msg_id, index, "bounced", reply, site=site))
                failed.append((index, reply, "bounced", str(c.category)))
        if not outcomes:
            return
        if failed and body is None and info.mail_from:
            # The spool drops a body once its last recipient is final: read it for the
            # DSN before recording.
            with contextlib.suppress(KeyError):
                body = await self.spool.read_body(info.id)
        # Durable first: a crash after this line never resends a delivered recipient.
        await self.spool.record(outcomes)
        for at, indexes in retry_at.items():
            self.scheduler.defer(WorkItem(item.msg_id, tuple(indexes), item.tenant, site), at)
        if retry_at:
            self.poke()
        emit = self.events.emit
        base = {"id": item.msg_id, "tenant": item.tenant, "site": site,
                "source": path.source.name if path is not None else None}
        for event, index, reply, category in events:
            emit(event, **base, recipient=rcpts[index].address, reply=str(reply),
                 category=category or None, attempt=rcpts[index].attempts + 1)
        for index, reply, event, category in failed:
            emit(event, **base, recipient=rcpts[index].address, reply=str(reply),
                 category=category, attempt=rcpts[index].attempts + 1)
        if self.on_final is not None:
            for o in outcomes:
                if o.state != "deferred":
                    await self.on_final(item.tenant, item.msg_id, rcpts[o.index].address,
                                        o.state)
        if failed:
            await self._send_dsn(info, [(rcpts[i], reply, ev) for i, reply, ev, _ in failed],
                                 body, site)

    async def _send_dsn(self, info: MessageInfo, failed: Iterable[tuple], body: bytes | None,
                        site: str) -> None:
        """RFC 3464 DSN to the envelope sender, through the same queue (never for <>)."""
        if not info.mail_from or self.inject_dsn is None:
            return
        statuses = [RecipientStatus.from_reply(r.address, reply, action="failed",
                                               orcpt=r.orcpt, notify=r.notify,
                                               remote_mta=site, expired=(event == "expired"))
                    for r, reply, event in failed]
        dsn = make_dsn(info, statuses, body,
                       reporting_mta=self.cfg.bounce.reporting_mta or self.cfg.server.hostname,
                       max_returned_size=self.cfg.bounce.max_returned_size, now=self.clock())
        if dsn is not None:
            await self.inject_dsn(info.tenant, info.mail_from, dsn)  # type: ignore[misc]

    async def bounce_now(self, info: MessageInfo, reply: Reply) -> None:
        """Administrative bounce: every unfinished recipient bounces now, with a DSN."""
        open_rcpts = [r for r in info.recipients if r.state in ("queued", "held")]
        if not open_rcpts:
            return
        body = None
        if info.mail_from:
            with contextlib.suppress(KeyError):
                body = await self.spool.read_body(info.id)
        await self.spool.record([Outcome(info.id, r.index, "bounced", reply, attempted=False)
                                 for r in open_rcpts])
        for r in open_rcpts:
            self.events.emit("bounced", id=info.id, tenant=info.tenant, recipient=r.address,
                             reply=str(reply), category="administrative", site=r.site,
                             source=None, attempt=r.attempts)
            if self.on_final is not None:
                await self.on_final(info.tenant, info.id, r.address, "bounced")
        await self._send_dsn(info, [(r, reply, "bounced") for r in open_rcpts], body,
                             "(administrative)")

    async def explain(self, info: MessageInfo) -> dict:
        """Why each recipient of a message is where it is, and what holds it."""
        now = self.clock()
        out: list[dict] = []
        for r in info.recipients:
            entry: dict = {"recipient": r.address, "state": r.state, "site": r.site,
                           "attempts": r.attempts,
                           "last_reply": str(r.last_reply) if r.last_reply else None}
            if r.state == "held" or info.state == "held":
                entry["waiting_for"] = "held by an administrator (mta queue release)"
            elif r.state != "queued":
                entry["waiting_for"] = None
            elif r.next_attempt > now:
                entry["waiting_for"] = "retry"
                entry["until"] = r.next_attempt
            else:
                site = self.sites.get(r.site or "")
                if site is None:
                    entry["waiting_for"] = "routing (MX lookup)"
                else:
                    paths = list(site.paths.values()) or [None]
                    configs = [p.config if p else self.shaper.path("default", site.name)
                               for p in paths]
                    entry["shaping"] = [await self.shaper.explain(c, info.tenant)
                                        for c in configs]
                    blocked = [b for c in configs
                               if (b := self.shaper.blocked(c, info.tenant)) is not None]
                    if blocked and len(blocked) == len(configs):
                        b = min(blocked, key=lambda x: x.until or float("inf"))
                        entry["waiting_for"] = f"suspension of {b.scope} {b.name}: {b.reason}"
                        entry["until"] = b.until
                    else:
                        entry["waiting_for"] = (f"a delivery slot for site {site.name} "
                                                f"({site.workers} worker(s) busy)")
            out.append(entry)
        return {"id": info.id, "tenant": info.tenant, "state": info.state, "now": now,
                "recipients": out}

    def _shaping_changed(self, change: object) -> None:
        self.events.emit("shaping", **{k: getattr(change, k) for k in (
            "path", "kind", "window", "rate_scale", "category", "until")})
