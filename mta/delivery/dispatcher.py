"""The dispatcher: from the schedule to the wire and back to the spool.

Owns the delivery loop. Accepted messages are routed (recipient domain -> MX -> site) into
the scheduler's ready queues; one runner per site takes work from every tenant's queue of
that site in turn and delivers it over pooled connections (mta.delivery.paths) within the
site's shaping (mta.shaping); each recipient's reply gets its fate (mta.delivery.fate),
which mta.delivery.outcomes applies: durable in the spool first, then rescheduled, logged,
and the DSN handed to the DsnSink. A slow or dead site only ever occupies its own runner
(no head-of-line blocking between sites). `mta queue explain` is mta.delivery.explain.

Routing is decided once, at acceptance: the message's egress pool travels on its envelope
and work items (`Envelope.pool`); delivery takes it as it is (`pool_for` falls back to the
tenant's for messages that carry none).

Shaping, per message: pick an egress source of the pool (weights, warm-up caps, suspended
and dead paths skipped), pass the shaper's gate (`Shaper.gate`: [rate_limits] and the
path's max_message_rate), then a pooled connection; each NEW connection is admitted by the
shaper (the licence's connection cap, the adaptive window and max_connection_rate, as a
lease held for the connection's life). Each attempt feeds one signal back
(`Shaper.record`). Work that shaping holds is put back in the schedule until the hold ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from mta.bounce.classify import Classifier
from mta.bounce.feedback import Feedback
from mta.config import Config
from mta.delivery import explain as _explain
from mta.delivery.fate import RetryRules
from mta.delivery.outcomes import FinalCallback, Outcomes
from mta.delivery.paths import EgressPath, PathTable, config_pool
from mta.delivery.pool import Grant, MxHost, SiteUnavailable
from mta.delivery.sink import DsnSink
from mta.delivery.tls_choice import TlsChoice, tls_outcome
from mta.dns import DnsFailure, Resolver, make_resolver
from mta.observe.events import EventLog
from mta.queue import (
    Envelope,
    MessageInfo,
    Recipient,
    RetrySchedule,
    Scheduler,
    Spool,
    WorkItem,
)
from mta.queue.names import split_ready_queue_name
from mta.rfc5321.reply import Reply
from mta.shaping import Hold, Shaper, Stores, SuspensionFile
from mta.shaping.adaptive import Change
from mta.shaping.shaper import Ticket
from mta.tls import TlsRequirement, TlsSessions

__all__ = ["Dispatcher", "FinalCallback", "PoolResolver"]

log = logging.getLogger("mta.delivery")

# tenant -> its egress pool, for messages that carry no routing decision (see paths.py).
PoolResolver = Callable[[str], Awaitable[str]]

# Re-check for work held by something with no end time (a suspension until lifted).
_RECHECK = 60.0
# Shaping keys resolved at start-up at once: a handful of DNS queries in flight.
_KEY_LOOKUPS = 8


class PathBlocked(Exception):
    """The path was suspended (or went dead) while a worker waited for a connection."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(hold.detail)
        self.hold = hold


@dataclass(slots=True)
class Flight:
    """What a worker is doing with one message right now (for explain)."""

    stage: str             # "gate" | "connection" | "sending"
    path: EgressPath
    hold: Hold | None = None  # at the gate: the rate it waits out


@dataclass(slots=True)
class SiteState:
    """What the dispatcher knows of one site: where it is and who is working on it."""

    name: str
    hosts: list[MxHost]
    resolved_at: float
    workers: int = 0
    # Round-robin over the tenants that queue work for this site (never scans the schedule).
    tenants: deque[str] = field(default_factory=deque)
    known_tenants: set[str] = field(default_factory=set)
    worker_limit: int = 0  # 0: compute again
    inflight: dict[str, Flight] = field(default_factory=dict)  # by queue id
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
                 licence_connections: Callable[[], int] | None = None,
                 dsn_sink: DsnSink | None = None,
                 resolve_pool: PoolResolver | None = None) -> None:
        self.cfg = cfg
        # Called with (seconds, limit name) each time a message waits for a rate (metrics).
        self.observe_throttle: Callable[[float, str], None] | None = None
        self.licence_connections = licence_connections  # 0 or None: no licence cap
        self.resolve_pool = resolve_pool
        self.spool = spool
        self.events = events
        self.resolver = resolver or make_resolver(cfg.dns)
        self.classifier = classifier or Classifier.from_config(cfg)
        self.feedback = Feedback(cfg)  # the VERP return path ([bounces])
        # Deferred work that a suspension held back: ready again when one is lifted.
        self._suspended_work: set[WorkItem] = set()
        self.shaper = shaper or Shaper(cfg, stores=shaping_stores,
                                       on_change=self._shaping_changed,
                                       persist=self._persist_suspension)
        self.shaper.connection_cap = self._connection_cap
        # Administrative suspensions outlive restarts (operators expect a suspended
        # site to stay suspended), in a file beside the spool.
        self._suspension_file = SuspensionFile(cfg.spool.dir / "shaping-suspensions.json")
        self.shaper.suspensions.load(self._suspension_file.load())
        self.clock = clock
        self.rng = rng or random.Random()
        self.scheduler = Scheduler()
        self.sites: dict[str, SiteState] = {}
        self.paths = PathTable(cfg, self.shaper, self._admitter)
        self.outcomes = Outcomes(cfg, spool=spool, events=events, scheduler=self.scheduler,
                                 classifier=self.classifier, shaper=self.shaper,
                                 rules=self._retry_rules(cfg), clock=clock, poke=self.poke,
                                 on_final=on_final)
        self.outcomes.dsn_sink = dsn_sink
        # Which TLS each delivery needs: [tls] policy, MTA-STS, DANE (mta.tls).
        self.tls = TlsChoice(cfg, self.resolver, clock=clock, emit=events.emit)
        # TLS-RPT (RFC 8460): told each session's TLS outcome ([tls.reports], mta.tls).
        self.tls_sessions: TlsSessions | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._rescan = True  # the loop's first pass looks at every queue (restored work)
        self._stopping = False

    @property
    def dsn_sink(self) -> DsnSink | None:
        return self.outcomes.dsn_sink

    @dsn_sink.setter
    def dsn_sink(self, sink: DsnSink | None) -> None:
        self.outcomes.dsn_sink = sink

    def _retry_rules(self, cfg: Config) -> RetryRules:
        return RetryRules(RetrySchedule.from_config(cfg.delivery, rand=self.rng.random),
                          cfg.delivery.delay_warning)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the schedule from the spool, streaming it, then start the loop."""
        now = self.clock()
        restored = 0
        # The schedule is millions of small long-lived objects after a restart with a big
        # queue: without this, the cyclic collector rescans all of them again and again
        # while they are made (a third of the restore), and then on every full collection.
        gc.disable()
        try:
            async for batch in self.spool.iter_pending(10_000):
                restored += self.scheduler.restore(batch, now)
        finally:
            gc.enable()
        gc.freeze()
        await self.tls.sts.start()
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
        await self.paths.aclose()
        await self.tls.sts.aclose()

    @property
    def connection_count(self) -> int:
        """Outbound SMTP connections open now, over every path."""
        return self.paths.connection_count

    def _connection_cap(self) -> tuple[int, int]:
        """(the volume licence's cap on outbound connections, 0 = none; open now)."""
        cap = self.licence_connections() if self.licence_connections else 0
        return (cap, self.paths.connection_count) if cap else (0, 0)

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.outcomes.cfg = cfg
        self.feedback = Feedback(cfg)
        self.outcomes.rules = self._retry_rules(cfg)
        self.shaper.reload(cfg)
        for site in self.sites.values():
            site.worker_limit = 0
        self.paths.reload(cfg)
        self._spawn(self.tls.reload(cfg).aclose(), "close the old MTA-STS fetcher")
        self._spawn(self._learn_rule_sites(), "shaping key lookups")

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- intake and routing --------------------------------------------------------------

    def accepted(self, msg_id: str, envelope: Envelope) -> None:
        """A message is durable in the spool: route its recipients, grouped by domain."""
        self.route_indexes(msg_id, envelope.tenant, enumerate(envelope.recipients),
                           pool=envelope.pool, parents=envelope.parents)

    def route_indexes(self, msg_id: str, tenant: str,
                      recipients: Iterable[tuple[int, Recipient]], *, pool: str = "",
                      parents: tuple[str, ...] = ()) -> None:
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i, r in recipients:
            by_domain[r.address.rpartition("@")[2].lower()].append(i)
        for domain, indexes in by_domain.items():
            item = WorkItem(msg_id, tuple(indexes), tenant, domain, pool, parents)
            site = self._known_site(domain)
            if site is not None:
                self._enqueue(item, site)
            else:
                self._spawn(self._route(item, domain), f"route {domain}")

    async def pool_for(self, tenant: str, pool: str) -> str:
        """The egress pool a message leaves from: the one decided at acceptance, else
        (a message that carries none) the tenant's, as policy would decide it."""
        if pool:
            return pool
        if self.resolve_pool is not None:
            with contextlib.suppress(Exception):  # an unknown tenant: the config's answer
                return await self.resolve_pool(tenant) or "default"
        return config_pool(self.cfg.tenants, tenant)

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
            await self.outcomes.finish(item, [reply] * len(item.indexes), None, site=domain)
            return
        name = result.site
        hosts = [MxHost(h.name, tuple(h.addresses)) for h in result.hosts if h.addresses]
        site = self.sites.get(name)
        if site is None:
            site = self.sites[name] = SiteState(name, hosts, now)
        else:
            site.hosts, site.resolved_at = hosts, now
        self.paths.set_hosts(name, hosts)
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

    def _refresh_paths(self, site: SiteState) -> None:
        """The site's rules changed (a shaping key was resolved): re-resolve the paths it
        has; their pools keep their connections."""
        site.worker_limit = 0
        self.paths.refresh(site.name)

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
        await self._route(WorkItem(item.msg_id, tuple(live), item.tenant, domain,
                                   item.pool or info.pool, item.parents or info.parents),
                          domain)

    def flush(self, msg_id: str | None, sites: Iterable[str] = ()) -> int:
        """Retry now (`mta queue flush [ID]`): deferred work becomes ready, and the
        dead-site timers of the paths concerned end (all paths without an ID)."""
        if msg_id is None:
            self.shaper.adaptive.revive()
        else:
            self.shaper.adaptive.revive(self.paths.keys(list(sites)))
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
            site.worker_limit = self.paths.capacity(name)
        for _ in range(min(more, site.worker_limit - site.workers)):
            site.workers += 1
            self._spawn(self._worker(site), f"deliver {name}")

    def _admitter(self, path: EgressPath) -> Callable[[], Awaitable[Grant | float]]:
        """The pool's admission hook: the shaper's lease for each new connection (it
        also applies the licence's cap over every path)."""
        async def admit() -> Grant | float:
            blocked = self.shaper.blocked(path.config)
            if blocked is not None:
                raise PathBlocked(Hold("suspension", blocked.until, blocked.reason))
            return await self.shaper.admit_connection(path.config)
        return admit

    # --- delivery ------------------------------------------------------------------------

    def _next_item(self, site: SiteState) -> WorkItem | None:
        """The next item for the site, round-robin over its tenants, so one tenant's
        backlog cannot starve another's on the same site."""
        for _ in range(len(site.tenants)):
            tenant = site.tenants[0]
            site.tenants.rotate(-1)
            items = self.scheduler.take((tenant, site.name), 1)
            if items:
                return items[0]
        return None

    async def _worker(self, site: SiteState) -> None:
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

    async def _attempt(self, site: SiteState, item: WorkItem) -> None:
        """One item through the shaper's gate onto the wire, or back into the schedule
        while a limit holds it."""
        pool_name = await self.pool_for(item.tenant, item.pool)
        source = self.shaper.choose_source(pool_name, self.rng, site=site.name,
                                           tenant=item.tenant, parents=item.parents)
        if source is None:  # every source suspended, dead or at today's warm-up cap
            self._hold_back(item, [h for hs in (await _explain.source_holds(
                self, site, item.tenant, pool_name, item.parents)).values() for h in hs])
            return
        path = self.paths.get(site.name, source)
        ticket = Ticket(path.config, item.tenant, item.parents)
        while holds := await self.shaper.gate(ticket):
            hold = holds[0]
            if hold.limit == "suspension":  # went dead or suspended meanwhile
                self._hold_back(item, holds)
                return
            if self._stopping:
                return  # still queued in the spool: the next start takes it
            wait = max(0.0, (hold.until or 0.0) - self.shaper.clock.now())
            site.inflight[item.msg_id] = Flight("gate", path, hold)
            self._waited(wait, hold.limit)
            await asyncio.sleep(wait)
        self.paths.fit_window(path)
        await self._deliver(site, path, item)

    def _waited(self, seconds: float, limit: str) -> None:
        if self.observe_throttle is not None:
            self.observe_throttle(seconds, limit)

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

    async def _deliver(self, site: SiteState, path: EgressPath, item: WorkItem) -> None:
        info, body = await self.spool.get_with_body(item.msg_id)  # one trip, not two
        if info is None or info.state != "queued" or body is None:
            return  # deleted, held or finished since it was queued
        rcpts = {r.index: r for r in info.recipients}
        indexes = [i for i in item.indexes if i in rcpts and rcpts[i].state == "queued"]
        if not indexes:
            return
        # The TLS requirement is the recipient domain's; an item is one domain's, except
        # after a restart (items are rebuilt per site): one lease per requirement then.
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i in indexes:
            by_domain[rcpts[i].address.rpartition("@")[2].lower()].append(i)
        groups: dict[TlsRequirement, list[int]] = defaultdict(list)
        base = path.settings.client.tls
        for domain, idx in by_domain.items():
            groups[await self.tls.requirement(domain, base, site.hosts)] += idx
        for req, idx in groups.items():
            await self._deliver_group(site, path, item, info, body, sorted(idx), req)

    async def _deliver_group(self, site: SiteState, path: EgressPath, item: WorkItem,
                             info: MessageInfo, body: bytes, indexes: list[int],
                             req: TlsRequirement) -> None:
        rcpts = {r.index: r for r in info.recipients}
        recipients = [rcpts[i] for i in indexes]
        feedback = True
        remote_mta = ""  # the MX host that answered (the DSNs' Remote-MTA)
        remote_dsn = False  # it offered DSN: NOTIFY went on with the message (RFC 3461)
        tls: dict[str, object] = {"tls_policy": req.label}  # the session's TLS, for events
        flight = site.inflight[item.msg_id] = Flight("connection", path)
        try:
            async with path.pool.lease(req) as client:
                if self.tls_sessions is not None:
                    self.tls_sessions.used(req, client, sender=info.mail_from)
                flight.stage = "sending"
                remote_mta = client.host
                verp = self.feedback.return_paths(info.id, info.tenant, info.mail_from,
                                                  recipients)
                if verp is None:
                    result = await client.send(info.mail_from, recipients, body,
                                               params=info.mail_params)
                    replies = list(result.per_recipient)
                else:  # VERP: a transaction per recipient, each with its own return path
                    replies = []
                    for sender, r in zip(verp, recipients, strict=True):
                        result = await client.send(sender, [r], body, params=info.mail_params)
                        replies += result.per_recipient
                remote_dsn = "DSN" in client.extensions
                tls = tls_outcome(client, req)
        except PathBlocked as e:
            self._hold_back(item, [e.hold])
            return
        except SiteUnavailable as e:
            if self.tls_sessions is not None:
                self.tls_sessions.refused(req, e.attempts, path.source.address,
                                          sender=info.mail_from)
            replies = [e.reply] * len(indexes)
            # One signal for the attempt, whatever each recipient's reply says; none when
            # only our TLS policy refused the hosts (the site itself is fine).
            if not e.policy_only:
                self.shaper.record(path.config, "connection_failure", e.reply)
            feedback = False
            if e.result_type:
                tls["tls_result"] = e.result_type  # RFC 8460 result type (TLS-RPT)
        site.last_reply = replies[-1]
        done = WorkItem(item.msg_id, tuple(indexes), item.tenant, site.name, item.pool,
                        item.parents)
        await self.outcomes.finish(done, replies, info, site=site.name, body=body, path=path,
                                   feedback=feedback, remote_mta=remote_mta,
                                   remote_dsn=remote_dsn, tls=tls)

    # --- outcomes, explain ---------------------------------------------------------------

    async def bounce_now(self, info: MessageInfo, reply: Reply) -> None:
        """Administrative bounce: every unfinished recipient bounces now, with a DSN."""
        await self.outcomes.bounce_now(info, reply)

    async def explain(self, info: MessageInfo) -> dict:
        """Why each recipient of a message is where it is (mta.delivery.explain)."""
        return await _explain.explain(self, info)

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
        source, site = split_ready_queue_name(change.path)
        self.events.emit("shaping", path=change.path, source=source, site=site,
                         kind=change.kind, window=change.window,
                         rate_scale=round(change.rate_scale, 4),
                         category=change.category or None,
                         reply=str(change.reply) if change.reply else None,
                         until=change.until)
