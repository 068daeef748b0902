"""`mta serve`: builds every part from the config, runs them, and takes them down in order.

Lifecycle (aiohttp web_runner style): open in order - events log, spool, delivery, HTTP,
SMTP listeners - and close in reverse, also after a start-up that failed halfway.
SIGTERM/SIGINT: stop listening, let in-flight sessions and deliveries finish within
`[server] shutdown_timeout`, close the spool (every commit is already fsynced), exit 0.
SIGHUP: reload the config (limits, users, TLS, policy, shaping, HTTP API keys and rates) and
reopen the events log;
a bad new config is refused and the old one kept. With NOTIFY_SOCKET set (systemd
Type=notify or notify-reload): READY=1 with a STATUS= line once every listener is bound,
RELOADING=1 ... READY=1 around each reload, STOPPING=1 at SIGTERM, and WATCHDOG=1 from the
event loop when systemd asks for it (WatchdogSec=; mta.observe.systemd).
What a config must load to be served is preflight.py's; this process's place in its node
(reservation owner, events file, supervisor) node.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from mta.bounce.feedback import Feedback
from mta.bounce.inbound import Inbound
from mta.config import Config, ConfigError, load_config
from mta.console import Console
from mta.content import ContentFilter
from mta.content.runtime import RuntimeRules
from mta.dbupgrade import SchemaTooNewError
from mta.delivery.dispatcher import Dispatcher
from mta.delivery.operations import QueueOperations
from mta.dkim.pool import start_pool
from mta.dkim.signer import DkimConfigError, DkimSigner
from mta.dns import make_resolver
from mta.embedded_store import with_store
from mta.gdpr import Gdpr
from mta.http.app import make_app
from mta.http.ratelimit import reload_limits
from mta.http.relay import relay_socket
from mta.http.shards import PEERS, MergedMetrics, ShardedQueueOps, worker_socket
from mta.http.state import API_KEYS
from mta.http.unix import admin_socket_path, bind_admin_socket, release_admin_socket
from mta.ingress import Ingress, NotQueued
from mta.node import events_path, node_owner, tell_supervisor
from mta.observe.events import EventLog
from mta.observe.logs import setup_logging
from mta.observe.metrics import Metrics
from mta.observe.rotate import prune_older
from mta.observe.systemd import notify, reloading, watchdog, watchdog_interval
from mta.policy import PolicyAdmin, PolicyEngine, clock_from_env, egress_pool
from mta.policy.identity import open_identity
from mta.policy.kv import kv_for
from mta.preflight import validate_runtime
from mta.queue import Envelope, Spool
from mta.reputation import ReputationGuard
from mta.shaping import memory_stores, redis_stores
from mta.shaping.dnsbl import DnsblWatch
from mta.smtp.auth import RuntimeUsers
from mta.smtp.intake import Intake
from mta.smtp.server import SmtpServer
from mta.supervisor import SHARD_ENV
from mta.suppress import Suppressions
from mta.tls import TlsReporter
from mta.webhooks import Endpoints, Webhooks
from mta.webhooks.outbox import Outbox

__all__ = ["Daemon", "serve"]

log = logging.getLogger("mta")


def config_api_keys(cfg: Config) -> dict[str, str]:
    """API key -> tenant for POST /api/v1/messages: [tenants.X] api_keys (run-time keys
    live in the policy store, mta.http.inject.ApiKeys)."""
    return {key: name for name, t in cfg.tenants.items() for key in t.api_keys}


class IngressDsnSink:
    """The DsnSink delivery writes DSNs to: the one ingest service (`Ingress.submit_dsn`),
    without policy (DSNs are not the tenant's sending)."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress

    async def submit(self, envelope: Envelope, body: bytes) -> str:
        try:
            return await self.ingress.submit_dsn(envelope, body)
        except NotQueued as e:
            log.error("could not queue a DSN to %s: %s", envelope.recipients[0].address,
                      e.reply)
            return ""


class Daemon:
    """One process: one event loop, one spool shard, every listener."""

    def __init__(self, cfg: Config, *, shard: int = 0) -> None:
        self.cfg = cfg
        self.shard = shard
        self._stop = asyncio.Event()
        self.smtp: SmtpServer | None = None
        # `mta drain` / `mta intake resume`: one switch for SMTP, HTTP and /readyz.
        self.intake = Intake()
        self.http_runner: web.AppRunner | None = None
        self.ready = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None

    async def run(self) -> None:
        pinger: asyncio.Task[None] | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(self._components())
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self._stop.set)
                loop.add_signal_handler(signal.SIGHUP, self.reload)
                loop.add_signal_handler(signal.SIGUSR1, self.events.reopen)  # logrotate
                notify(f"READY=1\nSTATUS={self.status()}")
                # From ready (systemd arms the watchdog then) through the drain: a loop
                # stuck while draining must be noticed too.
                interval = watchdog_interval()
                if interval is not None:
                    pinger = asyncio.create_task(watchdog(interval), name="watchdog")
                self.ready.set()
                log.info("mta ready (pid %d)", os.getpid())
                await self._stop.wait()
                # /readyz says 503 and injection refuses while the sessions drain.
                self.intake.set(False, "shutting down")
                notify("STOPPING=1\nSTATUS=draining sessions and deliveries")
                log.info("stopping: draining sessions and deliveries")
        finally:
            if pinger is not None:
                pinger.cancel()

    def status(self) -> str:
        """The one line `systemctl status` shows: where it listens, what is queued."""
        smtp = ", ".join(f"{h}:{p}" for h, p in self.cfg.smtp.listen)
        http = ", ".join(f"{h}:{p}" for h, p in self.cfg.http.listen)
        sched = self.delivery.scheduler
        queued = sched.ready_total + sched.deferred_total
        return f"serving SMTP {smtp}, HTTP {http}; {queued} recipient(s) queued"

    def stop(self) -> None:
        self._stop.set()

    @contextlib.asynccontextmanager
    async def _components(self) -> AsyncIterator[None]:
        cfg = self.cfg
        async with contextlib.AsyncExitStack() as stack:
            self.events = EventLog(events_path(cfg, self.shard), rotate=cfg.log.rotate)
            stack.push_async_callback(self.events.aclose)

            self.spool = await Spool.open(cfg.spool.dir, max_batch=cfg.spool.max_batch,
                                          shard=self.shard, max_size=cfg.spool.max_size,
                                          commit_wait=cfg.spool.commit_wait)
            stack.push_async_callback(self.spool.close)

            # Metrics: counters from the events stream (attached before anything can
            # emit), gauges read at each scrape.
            self.metrics = Metrics(tenants=["default", *cfg.tenants])
            self.metrics.attach(self.events)
            self.spool.observe_commit = self.metrics.observe_commit

            # Policy state lives beside this shard's spool, or in the cluster's Redis;
            # reservations of messages that never got their 250 (a crash) are released.
            self.policy = await PolicyEngine.open(cfg, cfg.spool.dir, events=self.events,
                                                  clock=clock_from_env(),  # None: real time
                                                  owner=await asyncio.to_thread(
                                                      node_owner, cfg.spool.dir, self.shard))
            stack.push_async_callback(self.policy.aclose)
            kept, released = await self.policy.reconcile(self._message_exists)
            if not cfg.cluster.redis_url:
                # Before node ids, this shard's policy.db named the owner by shard alone.
                old = await self.policy.reconcile(self._message_exists, str(self.shard))
                kept, released = kept + old[0], released + old[1]
            if kept or released:
                log.info("policy: %d reservation(s) confirmed, %d released", kept, released)
            self.policy_admin = PolicyAdmin(self.policy)
            # Suppression lists beside the policy state; fed by the feedback events.
            self.suppressions = await Suppressions.open(cfg, cfg.spool.dir, events=self.events,
                                                        clock=self.policy.clock)
            stack.push_async_callback(self.suppressions.aclose)
            self.suppressions.listen(self.events)
            # Webhooks: every event from here on, through this shard's durable outbox.
            self.webhooks = await self._open_webhooks(cfg)
            if self.webhooks is not None:
                stack.push_async_callback(self.webhooks.aclose)

            signer = DkimSigner.from_config(cfg.dkim, hostname=cfg.server.hostname,
                                            file=str(cfg.path)) if cfg.dkim else None
            await start_pool(signer, cfg.dkim, hostname=cfg.server.hostname,
                             file=str(cfg.path), workers=cfg.signing.workers)
            # Throttles and connection leases: in this process, or shared by every node
            # through Redis ([cluster] redis_url; fails fast if Redis is unreachable).
            stores = (await redis_stores(cfg.cluster.redis_url) if cfg.cluster.redis_url
                      else memory_stores())
            stack.push_async_callback(stores.aclose)
            resolver = make_resolver(cfg.dns, observe=self.metrics.observe_dns)
            # Content rules (worker processes started now) and scanner, at end of DATA.
            self.content = ContentFilter(cfg.content, resolver=resolver, events=self.events,
                                         hostname=cfg.server.hostname)
            stack.push_async_callback(self.content.aclose)
            # Rules added at run time, from the policy store (every node's), after the file's.
            self.content.runtime = RuntimeRules(kv_for(self.policy.store), self.content,
                                                events=self.events,
                                                poll=cfg.content.rules_poll)
            await self.content.runtime.load()
            stack.push_async_callback(self.content.runtime.start().aclose)
            self.content.warm()
            self.delivery = Dispatcher(cfg, spool=self.spool, events=self.events,
                                       resolver=resolver,
                                       on_final=self._on_final, shaping_stores=stores,
                                       licence_connections=self._licence_connections,
                                       resolve_pool=self._tenant_pool)
            # Warm-up day counts live in the policy store: a restart never resets them.
            await self.delivery.shaper.egress.attach(kv_for(self.policy.store))
            stack.push_async_callback(self.delivery.shaper.egress.flush)
            # Blocklist watch of our own egress addresses ([dnsbl], mta/shaping/dnsbl.py).
            self.dnsbl = DnsblWatch(cfg, self.delivery.shaper, resolver.backend,
                                    self.events, hold_clock=self.policy.clock)
            # Reply holds live in the policy store: shared by nodes, kept over restarts.
            self.dnsbl.attach(kv_for(self.policy.store))
            self.dnsbl.start()
            stack.callback(self.dnsbl.cancel)
            self.ingress = Ingress(spool=self.spool, events=self.events,
                                   on_accepted=self.delivery.accepted, signer=signer,
                                   policy=self.policy,
                                   observe_ingest=self.metrics.observe_ingest,
                                   observe_dkim=self.metrics.observe_dkim,
                                   content=self.content,
                                   suppressions=self.suppressions)
            self.delivery.dsn_sink = IngressDsnSink(self.ingress)
            # TLS-RPT (RFC 8460): sessions counted into the policy store, reported daily
            # (closed after delivery stops: its last sessions are counted and stored).
            self.tls_reports: TlsReporter | None = None
            if cfg.tls.reports.enabled:
                self.tls_reports = TlsReporter(
                    cfg, kv_for(self.policy.store), resolver, clock=self.policy.clock,
                    emit=self.events.emit, submit=self.delivery.dsn_sink.submit,
                    sts_policy=self.delivery.tls.sts.cached, leader=self.shard == 0)
                self.tls_reports.register_metrics(self.metrics)
                self.events.listeners.append(self.tls_reports.sessions.on_event)
                self.delivery.tls_sessions = self.tls_reports.sessions
                stack.push_async_callback(self.tls_reports.start().aclose)
            # The feedback loop: headers before signing, reports for the bounce domains.
            self.ingress.feedback = Feedback(cfg)
            self.ingress.inbound = Inbound(self.ingress.feedback, self.events,
                                           self.delivery.classifier)
            # Tenants' sending domains and forged trace removal (mta/policy/identity.py).
            self.ingress.identity = await open_identity(cfg, self.policy.store, resolver,
                                                        self.events)
            stack.callback(self.ingress.identity.start().cancel)
            await self.delivery.start()
            stack.push_async_callback(self.delivery.stop, cfg.server.shutdown_timeout)
            self.queue_ops = QueueOperations(self.spool, self.delivery)
            # Export and erasure of one address; with an erasure key already made, RCPT
            # looks erased addresses up by their hash from the first connection on.
            self.gdpr = await Gdpr.open(
                cfg, cfg.spool.dir, spool=self.spool, dispatcher=self.delivery,
                events=self.events, policy_store=self.policy.store,
                suppressions=self.suppressions, webhooks=self.webhooks, shard=self.shard)
            admin_queue: Any = self.queue_ops
            admin_metrics: Any = self.metrics
            if cfg.server.workers > 1 and self.shard == 0:
                # One admin API and one /metrics for the whole daemon (mta.http.shards).
                peers = {i: worker_socket(cfg.spool.dir, i)
                         for i in range(1, cfg.server.workers)}
                admin_queue = ShardedQueueOps(self.queue_ops, 0, peers)
                admin_metrics = MergedMetrics(self.metrics, 0, peers)
            # The escalation ladder: outcomes counted from the events, states in the store.
            self.reputation: ReputationGuard | None = None
            if cfg.reputation.enabled:
                self.reputation = ReputationGuard(
                    cfg.reputation, kv_for(self.policy.store), self.policy_admin,
                    events=self.events, hold_queue=self._hold_tenant)
                self.reputation.listen(self.events)
                self.reputation.register_metrics(self.metrics, ["default", *cfg.tenants])
                self.reputation.start()
                stack.push_async_callback(self.reputation.aclose)
            maintenance = asyncio.create_task(self._maintain(), name="maintenance")
            stack.callback(maintenance.cancel)

            from mta.http.app import Limits, RequestLimits
            self.metrics.watch_queue(self.spool, self.delivery.scheduler)
            self.metrics.add_gauge("mta_smtp_connections", "Inbound SMTP connections open.",
                                   lambda: self.smtp.connection_count if self.smtp else 0)
            self.metrics.add_gauge(
                "mta_outbound_connections", "Outbound SMTP connections open.",
                lambda: self.delivery.connection_count)
            self.metrics.add_gauge("mta_intake_accepting",
                                   "1 while new mail is accepted, 0 while draining.",
                                   lambda: int(self.intake.accepting))
            self._watch_policy()
            self.delivery.observe_throttle = self.metrics.observe_throttle
            # Run-time SMTP AUTH users (mta users add), in the policy store like the keys.
            users = RuntimeUsers(kv_for(self.policy.store))
            await users.refresh()
            stack.callback(users.start().cancel)
            # The operator console (mta/console): its own view of the events stream.
            self.console = Console(cfg.console, events=self.events,
                                   spool_dir=Path(cfg.spool.dir))
            relay_sock = None  # worker 0's, with several: where the others relay to
            if cfg.server.workers > 1 and self.shard == 0:
                relay = relay_socket(cfg.spool.dir)
                relay_sock, inode = await asyncio.to_thread(bind_admin_socket, relay)
                stack.callback(release_admin_socket, relay, inode)
            app = make_app(admin_token=cfg.http.admin_token, users=users,
                           console=self.console,
                           queue_ops=admin_queue, reputation=self.reputation,
                           ingress=self.ingress, metrics=admin_metrics,
                           api_keys=config_api_keys(cfg),
                           policy_admin=self.policy_admin, shaper=self.delivery.shaper,
                           suppressions=self.suppressions, inbound=self.ingress.inbound,
                           webhooks=self.webhooks, gdpr=self.gdpr,
                           intake=self.intake, events=self.events,
                           limits=Limits(cfg.smtp.max_message_size, cfg.smtp.max_recipients,
                                         cfg.server.hostname),
                           request_limits=RequestLimits.from_config(cfg),
                           relay_to=(relay_socket(cfg.spool.dir)
                                     if cfg.server.workers > 1 and self.shard else None),
                           relay_name=relay_sock.getsockname() if relay_sock else "")
            self.http_app = app
            if cfg.server.workers > 1 and self.shard == 0:
                app[PEERS] = {i: worker_socket(cfg.spool.dir, i)
                              for i in range(1, cfg.server.workers)}
            self.http_runner = web.AppRunner(app, access_log=None)
            await self.http_runner.setup()
            stack.push_async_callback(self.http_runner.cleanup)
            # Every worker accepts HTTP; with several, what is the whole daemon's goes on
            # to worker 0 over its relay socket (mta.http.relay).
            for host, port in cfg.http.listen:
                await web.TCPSite(self.http_runner, host, port,
                                  reuse_port=cfg.server.workers > 1).start()
            log.info("http listening on %s", ", ".join(f"{h}:{p}" for h, p in cfg.http.listen))
            if relay_sock is not None:
                await web.SockSite(self.http_runner, relay_sock).start()
            if cfg.server.workers > 1:
                # This worker's own admin socket: worker 0 reaches its shard through it.
                own = worker_socket(cfg.spool.dir, self.shard)
                sock, inode = await asyncio.to_thread(bind_admin_socket, own)
                stack.callback(release_admin_socket, own, inode)
                await web.SockSite(self.http_runner, sock).start()
            # The local admin socket: same app, no token (trusted by its mode, 0660).
            self.admin_socket = admin_socket_path(cfg) if self.shard == 0 else None
            if self.admin_socket:
                sock, inode = await asyncio.to_thread(bind_admin_socket, self.admin_socket)
                # Removed before the listeners close (reverse order): no client finds a
                # socket file that no longer answers.
                stack.callback(release_admin_socket, self.admin_socket, inode)
                await web.SockSite(self.http_runner, sock).start()
                log.info("admin socket %s", self.admin_socket)

            self.smtp = SmtpServer(cfg, self.ingress, events=self.events,
                                   reuse_port=cfg.server.workers > 1, intake=self.intake,
                                   users=users)
            await self.smtp.start()
            stack.push_async_callback(self.smtp.stop, cfg.server.shutdown_timeout)
            tell_supervisor()
            yield

    async def _open_webhooks(self, cfg: Config) -> Webhooks | None:
        if not cfg.webhooks.enabled:
            return None
        outbox = await Outbox.open(cfg.spool.dir / f"webhooks-{self.shard:02d}.sqlite")
        policy = self.policy

        async def family(tenant: str) -> frozenset[str]:
            return frozenset(t.name for t in await policy.tenants.chain(tenant))

        hooks = Webhooks(cfg.webhooks, Endpoints(kv_for(policy.store)), outbox,
                         events=self.events, chain=family)
        hooks.listen(self.events)
        hooks.register_metrics(self.metrics)
        await hooks.start()
        return hooks

    def _watch_policy(self) -> None:
        """Scrape-time gauges of the commercial state: licence use, credits and quotas of
        the configured tenants (bounded labels: configured tenants only)."""
        m, policy = self.metrics, self.policy
        m.add_gauge("mta_licence_used_recipients",
                    "Recipients counted against the volume licence this month.",
                    lambda: policy.licence_status().used)
        m.add_gauge("mta_licence_volume_recipients",
                    "Monthly volume of the licence (0: no licence).",
                    lambda: policy.licence_status().volume)
        m.add_gauge("mta_tenant_credits", "Paid, unexpired credits a prepaid tenant can spend.",
                    self._credit_gauge, labels=("tenant",))
        m.add_gauge("mta_tenant_quota_used",
                    "Use of each limited quota of a tenant in its current window.",
                    self._quota_gauge, labels=("tenant", "limit"))

    async def _credit_gauge(self) -> dict[tuple[str, ...], float]:
        return {(name,): float((await self.policy_admin.credits(name)).balance)
                for name, t in self.cfg.tenants.items() if t.prepaid}

    async def _quota_gauge(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for name in self.cfg.tenants:
            for u in await self.policy_admin.usage(name):
                if u.limit and u.tenant == name:
                    out[(name, u.name)] = float(u.used)
        return out

    async def _hold_tenant(self, tenant: str) -> int:
        """Hold every queued message of a tenant (a terminated account): `mta queue
        release` sends them if the operator decides so."""
        held, after = 0, None
        while True:
            page = await self.spool.list(state="queued", limit=1000, after=after)
            if not page:
                return held
            for m in page:
                if m.tenant == tenant and await self.queue_ops.queue_hold(m.id):
                    held += 1
            after = page[-1].id

    async def _message_exists(self, msg_id: str) -> bool:
        return await self.spool.get(msg_id) is not None

    async def _on_final(self, tenant: str, msg_id: str, recipient: str, outcome: str) -> None:
        """A recipient's fate is final: under charge = "delivered" policy refunds or keeps
        the credit it held."""
        await self.policy.on_outcome(tenant, msg_id, recipient, outcome)

    async def _tenant_pool(self, tenant: str) -> str:
        """Egress pool of a message queued without one (before the spool recorded it):
        what policy decides now, through the tenant chain (run-time tenants too)."""
        return egress_pool(await self.policy.tenants.chain(tenant)) or "default"

    def _licence_connections(self) -> int:
        """The volume licence's cap on concurrent outbound connections (0: none)."""
        return self.policy.licence_status().max_connections or 0

    async def _maintain(self) -> None:
        """Once a minute: expire credit lots, prune counters, drop finished messages that
        are older than the retention window from the spool; once an hour, drop expired
        suppression entries (a hard bounce's 30 days)."""
        minutes = 0
        while True:
            await asyncio.sleep(60)
            minutes += 1
            try:
                await self.policy.maintain()
                keep = self.cfg.retention.metadata or self.cfg.spool.keep_done
                await self.spool.purge(time.time() - keep)
                if minutes % 60 == 0:
                    await self._hourly()
            except Exception:
                log.exception("periodic maintenance failed; trying again in a minute")

    async def _hourly(self) -> None:
        """Expired suppression entries; [retention] of rotated events files and of failed
        webhook batches."""
        n = await self.suppressions.prune()
        if n:
            log.info("suppression: %d expired entries removed", n)
        r, now = self.cfg.retention, time.time()
        path = events_path(self.cfg, self.shard)
        if r.events and path:
            n = await asyncio.to_thread(prune_older, Path(path), now - r.events)
            if n:
                log.info("retention: %d rotated events file(s) removed", n)
        if self.webhooks is not None and r.webhook_failed:
            await self.webhooks.outbox.purge_failed(now - r.webhook_failed)

    def reload(self) -> None:
        """SIGHUP: re-read the config file; keep the old config if the new one is bad."""
        reloading()
        task = asyncio.get_running_loop().create_task(self._reload(), name="reload")
        self._reloading = task  # keep a reference until it finishes

    async def _reload(self) -> None:
        # Files are read in a thread: the loop keeps serving while keys and certificates load.
        try:
            new = with_store(await asyncio.to_thread(load_config, self.cfg.path))
            errors = await asyncio.to_thread(validate_runtime, new)
            if errors:
                raise ConfigError(errors)
            signer = await asyncio.to_thread(
                DkimSigner.from_config, new.dkim, hostname=new.server.hostname,
                file=str(new.path)) if new.dkim else None
            await start_pool(signer, new.dkim, hostname=new.server.hostname,
                             file=str(new.path), workers=new.signing.workers)
        except (ConfigError, DkimConfigError) as e:
            for line in e.errors:
                log.error("reload refused: %s", line)
            notify("READY=1")
            return
        # Policy first: tenants, plans and limits (and the licence file, which may have
        # been replaced) are in place before a new user of a new tenant can log in.
        await self.policy.reload(new)
        self.suppressions.reload(new)
        if self.webhooks is not None:
            self.webhooks.reload(new.webhooks)
        if self.reputation is not None:
            self.reputation.reload(new.reputation)
        if self.smtp is not None:
            self.smtp.reload(new)
        self.delivery.reload(new)
        self.dnsbl.reload(new)
        if self.tls_reports is not None:
            self.tls_reports.reload(new)
        retired = self.ingress.signer
        self.ingress.reload(signer)
        if retired is not None and retired is not signer and retired.pool is not None:
            retired.pool.close()  # its workers finish what they have, then exit
        self.ingress.feedback = Feedback(new)
        if self.ingress.inbound is not None:
            self.ingress.inbound.reload(self.ingress.feedback)
        self.content.reload(new.content)
        if self.content.runtime is not None:
            self.content.runtime.poll = new.content.rules_poll
        # HTTP: the config's API keys (a removed key is refused from now on) and the
        # request rates; run-time keys live in the policy store and need no reload.
        self.http_app[API_KEYS].reload(config_api_keys(new))
        reload_limits(self.http_app, new)
        self.console.reload(new.console)
        if self.ingress.identity is not None:
            self.ingress.identity.reload(new)
        self.events.reopen()
        self.cfg = new
        log.info("configuration reloaded from %s", new.path)
        notify(f"READY=1\nSTATUS={self.status()}")


# The cyclic collector's first threshold (Python's default is 700). Almost everything a
# message allocates is freed by reference counting, yet at 700 net allocations the
# collector ran about 50 times per 1,000 relayed messages (gen 0, 1 and 2 together ~16 us
# of CPU per message, measured with gc.callbacks under bench/profile.py's load); at 10,000
# it runs a few times per 10,000 messages (~0.5 us per message). Garbage in cycles waits
# for at most that many allocations, a few MB at worst.
GC_THRESHOLD0 = 10_000


def serve(cfg: Config) -> int:
    """Run in the foreground until SIGTERM; exit status 0 after a clean drain. With
    `[server] workers` > 1 this process supervises that many workers (mta.supervisor)."""
    import uvloop

    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])

    setup_logging(cfg.log.level, cfg.log.format, sys.stderr)
    shard = os.environ.get(SHARD_ENV)
    if cfg.server.workers > 1 and shard is None:
        from mta.supervisor import supervise

        return supervise(cfg)
    try:
        uvloop.run(Daemon(with_store(cfg), shard=int(shard or 0)).run())
    except SchemaTooNewError as e:
        # A spool or policy.db written by a newer mta: waiting will not help, so not 71.
        log.error("cannot start: %s", e)
        return 78  # EX_CONFIG
    except OSError as e:
        # Address in use, permission denied on a port or the spool: an operator error,
        # said in one line (no traceback).
        log.error("cannot start: %s", e)
        return 71  # EX_OSERR
    return 0
