"""The dispatcher: from the schedule to the wire and back to the spool.

Owns the delivery loop. Accepted messages are routed (recipient domain -> MX -> site) into
the scheduler's ready queues; one runner per site takes work from every tenant's queue of
that site in turn and delivers it over pooled connections (mta.delivery.pool) within the
site's shaping (mta.shaping); each recipient's reply is classified (mta.bounce) into
delivered, deferred (rescheduled with backoff), bounced (DSN to the sender) or expired;
outcomes are made durable in the spool (`Spool.record`) before anything else happens, then
written as events. A slow or dead site only ever occupies its own runner (no head-of-line
blocking between sites).

Shaping, per message: pick an egress source of the tenant's pool (weights, warm-up caps,
suspended and dead paths skipped), wait for the path's max_message_rate, then a pooled
connection; each NEW connection is admitted by the shaper (adaptive window and
max_connection_rate, as a lease held for the connection's life). Each attempt feeds one
signal back (`Shaper.record`): "slow down" replies shrink the window and the rate, repeated
ones start the dead-site timer. Work that shaping holds is put back in the schedule until
the hold ends, and `explain` names the limit that holds it and until when.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mta.bounce.classify import Action, Classifier
from mta.bounce.dsn import RecipientStatus, make_dsn
from mta.config import Config
from mta.delivery.client import ClientSettings
from mta.delivery.pool import ConnectionPool, Grant, MxHost, SiteUnavailable
from mta.dns import DnsFailure, Resolver, make_resolver
from mta.observe.events import EventLog
from mta.queue import (
    Envelope,
    MessageInfo,
    Outcome,
    Recipient,
    RecipientInfo,
    RetrySchedule,
    Scheduler,
    Spool,
    WorkItem,
)
from mta.rfc5321.reply import Reply
from mta.shaping import (
    SLOWDOWN_CATEGORIES,
    EgressSource,
    Hold,
    PathConfig,
    Shaper,
    Stores,
    SuspensionFile,
)
from mta.shaping.adaptive import Change
from mta.shaping.hold import at

__all__ = ["Dispatcher"]

log = logging.getLogger("mta.delivery")

# (tenant, queue id, recipient, outcome) once a recipient is delivered, bounced or expired.
FinalCallback = Callable[[str, str, str, str], Awaitable[None]]


@dataclass(slots=True)
class _Path:
    """One (egress source, site) path: its resolved rules and its connections."""

    source: EgressSource
    config: PathConfig
    pool: ConnectionPool


# Re-check for work held by something with no end time (a suspension until lifted).
_RECHECK = 60.0
# A connection refused by the licence's cap is asked for again after this many seconds.
_LICENCE_WAIT = 0.5
# Shaping keys resolved at start-up at once: a handful of DNS queries in flight.
_KEY_LOOKUPS = 8


class PathBlocked(Exception):
    """The path was suspended (or went dead) while a worker waited for a connection."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(hold.detail)
        self.hold = hold


@dataclass(slots=True)
class _Flight:
    """What a worker is doing with one message right now (for explain)."""

    stage: str             # "max_message_rate" | "connection" | "sending"
    path: _Path
    until: float | None = None


@dataclass(slots=True)
class _Site:
    """What the dispatcher knows of one site: where it is and who is working on it."""

    name: str
    hosts: list[MxHost]
    resolved_at: float
    paths: dict[str, _Path] = field(default_factory=dict)  # by source name
    workers: int = 0
    # Round-robin over the tenants that queue work for this site (never scans the schedule).
    tenants: deque[str] = field(default_factory=deque)
    known_tenants: set[str] = field(default_factory=set)
    worker_limit: int = 0  # 0: compute again
    inflight: dict[str, _Flight] = field(default_factory=dict)  # by queue id
    last_reply: Reply | None = None

    def add_tenant(self, tenant: str) -> None:
        if tenant not in self.known_tenants:
            self.known_tenants.add(tenant)
            self.tenants.append(tenant)


class Dispatcher:
    def __init__(self, cfg: Config, *, spool: Spool, events: EventLog,
                 resolver: Resolver | None = None, classifier: Classifier | None = None,
                 shaper: Shaper | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 on_final: FinalCallback | None = None,
                 shaping_stores: Stores | None = None,
                 licence_connections: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.on_final = on_final
        # Called with (seconds, limit name) each time a message waits for a rate (metrics).
        self.observe_throttle: Callable[[float, str], None] | None = None
        self.licence_connections = licence_connections  # 0 or None: no licence cap
        self.spool = spool
        self.events = events
        self.resolver = resolver or make_resolver(cfg.dns)
        self.classifier = classifier or Classifier.from_config(cfg)
        # Deferred work that a suspension held back: ready again when one is lifted.
        self._suspended_work: set[WorkItem] = set()
        self.shaper = shaper or Shaper(cfg, stores=shaping_stores,
                                       on_change=self._shaping_changed,
                                       persist=self._persist_suspension)
        # Administrative suspensions outlive restarts (operators expect a suspended
        # site to stay suspended), in a file beside the spool.
        self._suspension_file = SuspensionFile(cfg.spool.dir / "shaping-suspensions.json")
        self.shaper.suspensions.load(self._suspension_file.load())
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
        self._rescan = True  # the loop's first pass looks at every queue (restored work)
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
        self._spawn(self._learn_rule_sites(), "shaping key lookups")

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
        self.shaper.reload(cfg)
        for site in self.sites.values():
            self._refresh_paths(site)
        self._spawn(self._learn_rule_sites(), "shaping key lookups")

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
        if self.shaper.note_domain_site(domain, name):
            self._refresh_paths(site)
        self._enqueue(item, name)

    async def _learn_rule_sites(self) -> None:
        """Resolve each [shaping."domain"] key once, so its rules govern its site (and
        every domain rolled up into it) before the first message there is resolved."""
        keys = self.shaper.rate_keys()
        gate = asyncio.Semaphore(_KEY_LOOKUPS)

        async def learn(key: str) -> None:
            async with gate:
                result = await self.resolver.resolve_mx(key)
            if not isinstance(result, DnsFailure) and result.site and \
                    self.shaper.note_domain_site(key, result.site) and \
                    result.site in self.sites:
                self._refresh_paths(self.sites[result.site])

        await asyncio.gather(*(learn(k) for k in keys), return_exceptions=True)

    def _refresh_paths(self, site: _Site) -> None:
        """The site's rules changed (a shaping key was resolved, a reload): re-resolve the
        paths it has; their pools keep their connections."""
        site.worker_limit = 0
        for p in site.paths.values():
            p.config = self.shaper.path(p.source.name, site.name)
            p.pool.settings = self._settings_for(p.config, p.source)
            p.pool.max_deliveries = p.config.max_deliveries_per_connection
            self._fit_window(p)

    def _enqueue(self, item: WorkItem, site: str) -> None:
        self.scheduler.enqueue(item, site=site)
        self.sites[site].add_tenant(item.tenant)
        self._start_workers(site, 1)

    # --- the loop: retries come due, sites get workers -----------------------------------

    async def _loop(self) -> None:
        while True:
            now = self.clock()
            # Only the queues that retries just filled; every queue after a start (restored
            # work) or a flush. Work enqueued by routing has its workers started already.
            ready = self.scheduler.due_by_key(now)
            if self._rescan:
                self._rescan = False
                ready = collections.Counter(self.scheduler.counts())
            if ready:
                for (tenant, site), n in ready.items():
                    if site in self.sites:
                        self.sites[site].add_tenant(tenant)
                        self._start_workers(site, n)
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

    def flush(self, msg_id: str | None, sites: Iterable[str] = ()) -> int:
        """Retry now (`mta queue flush [ID]`): deferred work becomes ready, and the
        dead-site timers of the paths concerned end (all paths without an ID)."""
        if msg_id is None:
            self.shaper.adaptive.revive()
        else:
            keys = [p.config.key for name in sites if name in self.sites
                    for p in self.sites[name].paths.values()]
            self.shaper.adaptive.revive(keys)
        n = self.scheduler.flush(msg_id)
        self._rescan = True
        self.poke()
        return n

    def poke(self) -> None:
        """New deferred work or a flush: let the loop recompute its sleep."""
        self._wake.set()

    def _start_workers(self, name: str, more: int) -> None:
        """Up to `more` more workers for the site (the work just made ready there), within
        what its paths may carry at once. O(1): workers that find nothing left exit."""
        site = self.sites[name]
        if self._stopping:
            return
        if not site.worker_limit:
            # Every source may carry up to its path's connection_limit to this site.
            site.worker_limit = max(1, sum(
                self.shaper.path(src, name).connection_limit
                for src in self.shaper.egress.sources))
        for _ in range(min(more, site.worker_limit - site.workers)):
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
            pool.admit = self._admitter(p)
        return p

    def _admitter(self, path: _Path) -> Callable[[], Awaitable[Grant | float]]:
        """The pool's admission hook: the shaper's lease for each new connection."""
        async def admit() -> Grant | float:
            blocked = self.shaper.blocked(path.config)
            if blocked is not None:
                raise PathBlocked(Hold("suspension", blocked.until, blocked.reason))
            # The volume licence caps outbound connections over all paths together.
            cap = self.licence_connections() if self.licence_connections else 0
            # connection_count includes the slot this request already holds in its pool.
            if cap and self.connection_count > cap:
                return _LICENCE_WAIT
            return await self.shaper.admit_connection(path.config)
        return admit

    def _fit_window(self, path: _Path) -> None:
        """The adaptive window (Postfix-style feedback) caps the pool's connections."""
        path.pool.connection_limit = max(1, min(
            path.config.connection_limit, self.shaper.adaptive.window(path.config)))

    def _settings_for(self, p: PathConfig, source: EgressSource) -> ClientSettings:
        return ClientSettings(
            ehlo_name=source.ehlo_name or self.settings.ehlo_name, tls=p.tls,
            connect_timeout=p.connect_timeout, greeting_timeout=p.greeting_timeout,
            command_timeout=p.command_timeout, data_timeout=p.data_timeout,
            max_recipients_per_transaction=p.max_recipients_per_transaction)

    # --- delivery ------------------------------------------------------------------------

    def _next_item(self, site: _Site) -> WorkItem | None:
        """The next item for the site, round-robin over its tenants, so one tenant's
        backlog cannot starve another's on the same site."""
        for _ in range(len(site.tenants)):
            tenant = site.tenants[0]
            site.tenants.rotate(-1)
            items = self.scheduler.take((tenant, site.name), 1)
            if items:
                return items[0]
        return None

    async def _worker(self, site: _Site) -> None:
        try:
            while not self._stopping:
                item = self._next_item(site)
                if item is None:
                    return
                try:
                    await self._attempt(site, item)
                finally:
                    site.inflight.pop(item.msg_id, None)
        finally:
            site.workers -= 1

    async def _attempt(self, site: _Site, item: WorkItem) -> None:
        """One item through shaping onto the wire, or back into the schedule while a
        limit holds it."""
        pool_name = self._pool_of(item.tenant)
        source = self.shaper.choose_source(pool_name, self.rng, site=site.name,
                                           tenant=item.tenant)
        if source is None:  # every source suspended, dead or at today's warm-up cap
            self._hold_back(item, [h for hs in (await self._source_holds(
                site, item.tenant, pool_name)).values() for h in hs])
            return
        path = self._path(site, source)
        # Rates across paths first ([rate_limits]): each admits this message once, in
        # order, so a wait on a later one never counts the message twice on an earlier.
        for name, key, rate in self.shaper.rate_limits(item.tenant, site.name):
            while (wait := await self.shaper.throttle.try_acquire(
                    key, rate, self.shaper.clock.time())) > 0:
                if self._stopping:
                    return
                site.inflight[item.msg_id] = _Flight(name, path, self.clock() + wait)
                self._waited(wait, name)
                await asyncio.sleep(wait)
        while True:
            blocked = self.shaper.blocked(path.config, item.tenant)
            if blocked is not None:  # went dead while we waited for the rate
                self._hold_back(item, [Hold("suspension", blocked.until, blocked.reason)])
                return
            wait = await self.shaper.message_wait(path.config)
            if wait <= 0:
                break
            if self._stopping:
                return  # still queued in the spool: the next start takes it
            site.inflight[item.msg_id] = _Flight("max_message_rate", path,
                                                 self.clock() + wait)
            self._waited(wait, "max_message_rate")
            await asyncio.sleep(wait)
        self._fit_window(path)
        await self._deliver(site, path, item)

    def _waited(self, seconds: float, limit: str) -> None:
        if self.observe_throttle is not None:
            self.observe_throttle(seconds, limit)

    def _pool_of(self, tenant: str) -> str:
        tenant_cfg = self.cfg.tenants.get(tenant)
        return (tenant_cfg.pool if tenant_cfg else "") or "default"

    def _hold_back(self, item: WorkItem, holds: list[Hold]) -> None:
        """Put shaped-off work back in the schedule until the earliest hold ends (a hold
        with no end time, such as a suspension until lifted, is looked at again soon).
        Work held by a suspension is remembered, so that lifting it sends at once."""
        if any(h.limit == "suspension" for h in holds):
            self._suspended_work.add(item)
        now = self.clock()
        ends = [h.until for h in holds if h.until is not None]
        at = min(ends) if ends and len(ends) == len(holds) else now + min([_RECHECK, *(
            e - now for e in ends)])
        self.scheduler.defer(item, max(at, now + 0.01))
        self.poke()

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
        feedback = True
        flight = site.inflight[item.msg_id] = _Flight("connection", path)
        try:
            async with path.pool.lease() as client:
                flight.stage = "sending"
                result = await client.send(info.mail_from, recipients, body,
                                           params=info.mail_params)
            replies = list(result.per_recipient)
        except PathBlocked as e:
            self._hold_back(item, [e.hold])
            return
        except SiteUnavailable as e:
            replies = [e.reply] * len(indexes)
            # One signal for the attempt, whatever each recipient's reply says.
            self.shaper.record(path.config, "connection_failure", e.reply)
            feedback = False
        site.last_reply = replies[-1]
        done = WorkItem(item.msg_id, tuple(indexes), item.tenant, site.name)
        await self._finish(done, replies, info, site=site.name, body=body, path=path,
                           feedback=feedback)

    # --- outcomes ------------------------------------------------------------------------

    async def _finish(self, item: WorkItem, replies: list[Reply], info: MessageInfo | None,
                      *, site: str, body: bytes | None = None,
                      path: _Path | None = None, feedback: bool = True) -> None:
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
        signals: list[tuple[str, Reply | None]] = []  # (category, reply) for shaping
        delayed: list[tuple[RecipientInfo, Reply]] = []  # due a "delayed" DSN
        for index, reply in zip(item.indexes, replies, strict=True):
            r = rcpts.get(index)
            if r is None or r.state != "queued":
                continue
            attempt = r.attempts + 1
            if reply.is_positive:
                outcomes.append(Outcome(item.msg_id, index, "delivered", reply, site=site))
                events.append(("delivered", index, reply, ""))
                signals.append(("delivered", None))
                continue
            c = self.classifier.classify(reply)
            signals.append((str(c.category), reply))
            if c.action == Action.RETRY:
                if now >= self._expires_at(info):
                    outcomes.append(Outcome(item.msg_id, index, "expired", reply, site=site))
                    failed.append((index, reply, "expired", str(c.category)))
                else:
                    at = self.retry.next_retry(attempt, now)
                    warn = self._warn_now(info, r, now)
                    outcomes.append(Outcome(item.msg_id, index, "deferred", reply,
                                            next_attempt=at, site=site, warned=warn))
                    retry_at[at].append(index)
                    events.append(("deferred", index, reply, str(c.category)))
                    if warn:
                        delayed.append((r, reply))
            else:
                outcomes.append(Outcome(item.msg_id, index, "bounced", reply, site=site))
                failed.append((index, reply, "bounced", str(c.category)))
        if path is not None and feedback and signals:
            # One signal per attempt (a 421 refusing 50 recipients is one "slow down", not
            # 50): the first slow-down reply if any, else the attempt counts as answered.
            slow = next((sg for sg in signals if sg[0] in SLOWDOWN_CATEGORIES), signals[0])
            self.shaper.record(path.config, *slow)
        if not outcomes:
            return
        if (failed or delayed) and body is None and info.mail_from:
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
        if delayed:
            await self._send_dsn(info, [(r, reply, "delayed") for r, reply in delayed],
                                 body, site)

    def _expires_at(self, info: MessageInfo) -> float:
        """When the message's recipients expire: its class's max age (set by policy at
        acceptance), else [delivery] max_age."""
        return info.expires_at or info.received_at + self.cfg.delivery.max_age

    def _warn_now(self, info: MessageInfo, r: RecipientInfo, now: float) -> bool:
        """[delivery] delay_warning: one "delayed" DSN per recipient, once it has waited
        that long (Postfix's delay_warning_time)."""
        after = self.cfg.delivery.delay_warning
        return bool(after) and not r.warned and now - info.received_at >= after

    async def _send_dsn(self, info: MessageInfo, failed: Iterable[tuple], body: bytes | None,
                        site: str) -> None:
        """RFC 3464 DSN to the envelope sender, through the same queue (never for <>).
        `failed` holds (recipient, reply, event) with event bounced, expired or delayed."""
        if not info.mail_from or self.inject_dsn is None:
            return
        until = self._expires_at(info)
        statuses = [RecipientStatus.from_reply(
                        r.address, reply, action="delayed" if event == "delayed" else "failed",
                        orcpt=r.orcpt, notify=r.notify, remote_mta=site,
                        expired=(event == "expired"),
                        will_retry_until=until if event == "delayed" else None)
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
        """Why each recipient of a message is where it is: `waiting_for` names the one
        limit that holds it (retry, suspension, warmup_cap, max_message_rate,
        connection_limit, max_connection_rate, ...), `until` when it ends (epoch seconds,
        None when it is not a time), `detail` says it in words, and `shaping` lists every
        hold of every source the message may leave from."""
        now = self.clock()
        out: list[dict] = []
        for r in info.recipients:
            entry: dict[str, Any] = {
                "recipient": r.address, "state": r.state, "site": r.site,
                "attempts": r.attempts,
                "last_reply": str(r.last_reply) if r.last_reply else None}
            if r.state == "held" or info.state == "held":
                entry.update(waiting_for="held", until=None,
                             detail="held by an administrator (mta queue release)")
            elif r.state != "queued":
                entry["waiting_for"] = None
            elif r.next_attempt > now:
                entry.update(waiting_for="retry", until=r.next_attempt, detail=(
                    f"attempt {r.attempts + 1} at {at(r.next_attempt)} (retry schedule)"
                    + (f" after {r.last_reply}" if r.last_reply else "")))
            else:
                domain = r.address.rpartition("@")[2].lower()
                site = self.sites.get(r.site or "") or self.sites.get(
                    self.resolver.cached_site(domain) or "")
                if site is None:
                    entry.update(waiting_for="routing", until=None,
                                 detail=f"MX lookup of {domain}")
                else:
                    entry["site"] = site.name
                    entry.update(await self._explain_at(site, info, now))
            out.append(entry)
        return {"id": info.id, "tenant": info.tenant, "state": info.state, "now": now,
                "recipients": out}

    async def _source_holds(self, site: _Site, tenant: str,
                            pool_name: str) -> dict[str, list[Hold]]:
        """Per source of the pool (weight > 0): what holds a message on its path now. An
        idle connection of the path lifts the connection limits (no new one is needed)."""
        out: dict[str, list[Hold]] = {}
        for name, weight in self.shaper.egress.pools.get(pool_name, ()):
            if weight <= 0:
                continue
            holds = await self.shaper.holds(self.shaper.path(name, site.name), tenant)
            p = site.paths.get(name)
            if p is not None and p.pool.idle_count:
                holds = [h for h in holds
                         if h.limit not in ("connection_limit", "max_connection_rate")]
            out[name] = holds
        return out

    async def _explain_at(self, site: _Site, info: MessageInfo, now: float) -> dict:
        by_source = await self._source_holds(site, info.tenant, self._pool_of(info.tenant))
        shaping = {name: [h.as_dict() for h in holds] for name, holds in by_source.items()}
        flight = site.inflight.get(info.id)
        if flight is not None:
            path = flight.path.config
            if flight.stage == "sending":
                return {"waiting_for": "sending", "until": None, "shaping": shaping,
                        "detail": f"in an SMTP transaction on {path.key}"}
            if flight.stage == "max_message_rate":
                return {"waiting_for": "max_message_rate", "until": flight.until,
                        "shaping": shaping, "detail": (
                            f"max_message_rate {path.max_message_rate} on {path.key}: "
                            f"this message goes at {at(flight.until or now)}")}
            conn = [h for h in by_source.get(path.source, [])
                    if h.limit in ("connection_limit", "max_connection_rate", "suspension")]
            if conn:
                return {"waiting_for": conn[0].limit, "until": conn[0].until,
                        "shaping": shaping, "detail": conn[0].detail}
            return {"waiting_for": "connection", "until": None, "shaping": shaping,
                    "detail": f"opening a connection on {path.key}"}
        if not by_source:
            return {"waiting_for": "egress", "until": None, "shaping": shaping,
                    "detail": f"egress pool {self._pool_of(info.tenant)!r} has no usable "
                              "source"}
        if any(not holds for holds in by_source.values()):
            return {"waiting_for": "worker", "until": None, "shaping": shaping,
                    "detail": f"next in line for site {site.name} "
                              f"({site.workers} worker(s) busy)"}
        # Every source is held: the message leaves by the one whose first hold ends first.
        first = min((holds[0] for holds in by_source.values()),
                    key=lambda h: float("inf") if h.until is None else h.until)
        return {"waiting_for": first.limit, "until": first.until, "shaping": shaping,
                "detail": first.detail}

    def _persist_suspension(self, suspension: object, active: bool) -> None:
        """A suspension was set or lifted: rewrite the file, off the event loop. A lift
        makes the work it held ready now (any other hold sends it back again)."""
        items = self.shaper.suspensions.active()
        self._spawn(asyncio.to_thread(self._suspension_file.save, items), "save suspensions")
        if not active and self._suspended_work:
            held, self._suspended_work = self._suspended_work, set()
            if self.scheduler.flush(items=held):
                self._rescan = True
                self.poke()

    def _shaping_changed(self, change: Change) -> None:
        source, _, site = change.path.partition("->")
        self.events.emit("shaping", path=change.path, source=source, site=site,
                         kind=change.kind, window=change.window,
                         rate_scale=round(change.rate_scale, 4),
                         category=change.category or None,
                         reply=str(change.reply) if change.reply else None,
                         until=change.until)
