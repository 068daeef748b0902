"""The policy engine: one question per SMTP stage, answered with a Reply or None.

Ingress calls, per message (Postfix smtpd_check style; business decisions never raise):

    txn = engine.transaction(tenant, sender)
    await engine.check_mail(txn)              MAIL FROM: tenant, licence, suspension, quotas
    await engine.check_rcpt(txn, rcpt)        RCPT TO: reserves quota, licence volume, credit
    await engine.check_data(txn, cls_header)  end of DATA: message class and its suspension
    await engine.is_duplicate(txn, msgid, rcpt)   drop (with 250) a repeat of a sent message
    await engine.prepare(txn, queue_id)       after the spool write: reservations durable
    await engine.commit(txn, queue_id)        after the spool fsync (250 sent)
    await engine.abort(txn)                   RSET, refused, connection lost: undo reservations

and delivery calls `on_outcome(...)` for each recipient's end. After a crash, `reconcile`
confirms the reservations whose message reached the spool and releases the others.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mta.config import Config
from mta.observe import EventLog
from mta.policy import replies
from mta.policy.calendar import period_key, period_reset
from mta.policy.clock import Clock, SystemClock
from mta.policy.directory import PolicyError, TenantDirectory
from mta.policy.licence_gate import LicenceGate, LicenceStatus
from mta.policy.plan import EffectiveLimit, Planner, Windows, duplicate_plan
from mta.policy.sender_domain import domain_subject, sender_domain
from mta.policy.sqlite_store import SqliteStore
from mta.policy.store import (
    OperatorLimit,
    PolicyStore,
    ReserveRequest,
    ReserveResult,
    Snapshot,
    Suspension,
)
from mta.policy.tenants import LIMIT_LABEL, LIMIT_NAMES, LIMIT_PERIOD, Tenant, egress_pool
from mta.rfc5321 import Reply

__all__ = ["OUTCOMES", "EffectiveLimit", "PolicyEngine", "PolicyTxn", "normalise_address"]

log = logging.getLogger("mta.policy")

OUTCOMES = ("delivered", "bounced", "expired", "suppressed", "deleted")

def normalise_address(address: str) -> str:
    """Recipients compare case-insensitively for counting and duplicates (RFC 5321 lets the
    local part be case-sensitive, but no mailbox provider uses that, and counting
    "Bob@x" and "bob@x" as two unique recipients would be an easy way round a limit)."""
    return address.strip().strip("<>").lower()


def _txn_id_source() -> Callable[[], str]:
    """Unique transaction ids without a system call each: uuid4() reads os.urandom, which
    cost ~100 us per MAIL FROM on the test VM. A random per-process prefix and a counter."""
    prefix = uuid.uuid4().hex[:12]
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):x}"


_txn_ids = _txn_id_source()


@dataclass(eq=False)
class PolicyTxn:
    """One message transaction (MAIL FROM to end of DATA) as policy sees it."""

    tenant: str
    sender: str
    id: str = field(default_factory=lambda: _txn_ids())
    chain: tuple[Tenant, ...] = ()  # the tenant and its ancestors, nearest first
    limits: tuple[EffectiveLimit, ...] = ()
    wallet: str | None = None  # tenant whose credits pay; None = not prepaid
    class_suspensions: dict[str, Suspension] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)  # reserved, normalised
    msg_class: str | None = None  # set by check_data
    max_age: float | None = None  # seconds this message may stay queued (by class)
    msg_id: str | None = None
    state: str = "new"  # new | open (MAIL ok) | committed | aborted
    unlimited: bool = False  # no limit, credit or licence applies: nothing to reserve
    reserved: bool = False  # the store holds reservations for this transaction

    @property
    def pool(self) -> str:
        """Egress pool: the tenant's, else the nearest ancestor's; "" = the default pool."""
        return egress_pool(self.chain)


class PolicyEngine:
    def __init__(self, cfg: Config, store: PolicyStore, *, clock: Clock | None = None,
                 events: EventLog | None = None, owner: str = "0") -> None:
        """`owner` names this worker's spool shard: reconciliation after a crash only
        touches reservations made by the same owner (other workers are still running)."""
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.events = events
        self.owner = owner
        # What only the embedded store offers (deciding RCPT without awaiting, starting its
        # COMMIT early), looked up once rather than per recipient and message.
        self._reserve_now = getattr(store, "reserve_now", None)
        self._sync_soon = getattr(store, "sync_soon", None)
        self._snapshot_now = getattr(store, "cached_snapshot", None)
        self._configure(cfg, self._licence_gate(cfg))
        self.licence.reload()

    def _licence_gate(self, cfg: Config) -> LicenceGate:
        pc = cfg.policy
        return LicenceGate(pc.licence_file, pc.licence_public_key, ZoneInfo(pc.timezone),
                           tuple(pc.licence_alert_levels), self.events)

    def _configure(self, cfg: Config, licence: LicenceGate) -> None:
        """Everything derived from the config, replaced whole (start-up, SIGHUP), with the
        caches computed from the old one. Transactions already open keep what they read."""
        self.cfg = cfg
        self.pc = cfg.policy
        self.tz = ZoneInfo(self.pc.timezone)
        self.tenants = TenantDirectory(cfg.tenants, self.store)
        self.licence = licence
        # Message windows known to be full (counter key -> the limit they reached), so MAIL
        # FROM refuses without asking the store; forgotten when a reservation is released.
        self._full: dict[str, int] = {}
        # Per MAIL FROM and RCPT TO, the same few answers: the effective limits of a tenant
        # chain under its operator limits, and (the planner's) the counters they reserve in
        # the current windows and the plan that does it.
        self.planner = Planner(self.tz, tuple(self.pc.licence_alert_levels))
        self._limits_memo: dict[tuple[object, ...], tuple[EffectiveLimit, ...]] = {}
        # The last answer, checked by identity first (hashing a tenant chain costs more than
        # the rest of the lookup).
        self._last_limits: tuple[tuple[Tenant, ...], list[OperatorLimit],
                                 tuple[EffectiveLimit, ...]] | None = None

    @classmethod
    async def open(cls, cfg: Config, state_dir: str | Path, *, clock: Clock | None = None,
                   events: EventLog | None = None, owner: str = "0",
                   redis_prefix: str = "mta:policy:") -> PolicyEngine:
        """Open the store and load the licence: with `[cluster] redis_url`, the Redis every
        node shares (keys under `redis_prefix`; fails fast if Redis is down), else
        (creating) `state_dir/policy.db`."""
        store: PolicyStore
        if cfg.cluster.redis_url:
            from mta.policy.redis_store import RedisStore

            store = await RedisStore.open(cfg.cluster.redis_url, prefix=redis_prefix)
        else:
            store = await SqliteStore.open(Path(state_dir) / "policy.db")
        engine = cls(cfg, store, clock=clock, events=events, owner=owner)
        await engine.refresh_licence_usage()
        return engine

    async def aclose(self) -> None:
        await self.store.aclose()

    # --- MAIL FROM ------------------------------------------------------------------------
    def transaction(self, tenant: str, sender: str, txn_id: str | None = None) -> PolicyTxn:
        """A new transaction. Ingress passes the queue id the message will have
        (`Spool.new_id()`) as `txn_id`: then `prepare` has nothing to record, because
        `reconcile` finds the message in the spool by the transaction's own id."""
        if txn_id is None:
            return PolicyTxn(tenant=tenant, sender=sender)
        return PolicyTxn(tenant=tenant, sender=sender, id=txn_id)

    async def check_mail(self, txn: PolicyTxn) -> Reply | None:
        """MAIL FROM: may this tenant send now? Loads its limits into `txn`."""
        answer = self.answer_mail(txn)
        return await answer if inspect.isawaitable(answer) else answer

    def answer_mail(self, txn: PolicyTxn) -> Reply | Awaitable[Reply | None] | None:
        """check_mail for ingress: answered at once (no task per MAIL) when the tenant
        chain and the store's suspensions and operator limits are cached, which they are
        but for a read a second; else an awaitable that reads them."""
        try:
            now = self.clock.now()
            refusal = self.licence.refusal(now)
            if refusal:
                return refusal
            chain = self.tenants.known_chain(txn.tenant)
            if chain is not None and self._snapshot_now is not None:
                domain, subject, names = self._mail_subjects(txn, chain)
                snap = self._snapshot_now(names, now)
                if snap is not None:
                    return self._mail_decision(txn, now, chain, snap, domain, subject)
        except Exception:
            return self._mail_failed()
        return self._read_mail(txn)

    async def _read_mail(self, txn: PolicyTxn) -> Reply | None:
        try:
            return await self._check_mail(txn)
        except Exception:
            return self._mail_failed()

    @staticmethod
    def _mail_failed() -> Reply:
        log.exception("policy: MAIL check failed; deferring")
        return replies.store_unavailable()

    @staticmethod
    def _mail_subjects(txn: PolicyTxn, chain: tuple[Tenant, ...]
                       ) -> tuple[str | None, str | None, list[str]]:
        """(sender domain, its suspension subject, the names whose suspensions apply)."""
        names = [t.name for t in chain]
        # A suspension of the MAIL FROM domain is stored under the subject "@domain" and
        # read in the same (cached) snapshot as the tenants' own.
        domain = sender_domain(txn.sender)
        subject = domain_subject(domain) if domain else None
        if subject:
            names.append(subject)
        return domain, subject, names

    async def _check_mail(self, txn: PolicyTxn) -> Reply | None:
        now = self.clock.now()
        refusal = self.licence.refusal(now)
        if refusal:
            return refusal
        try:
            chain = await self.tenants.chain(txn.tenant)
        except PolicyError as e:
            if not await self.tenants.get(txn.tenant):
                return replies.tenant_unknown(txn.tenant)
            log.error("policy: %s", e)
            return replies.policy_unavailable(str(e))
        domain, subject, names = self._mail_subjects(txn, chain)
        snap = await self.store.snapshot(names, (), now)  # cached: changes are rare
        return self._mail_decision(txn, now, chain, snap, domain, subject)

    def _mail_decision(self, txn: PolicyTxn, now: float, chain: tuple[Tenant, ...],
                       snap: Snapshot, domain: str | None, subject: str | None
                       ) -> Reply | None:
        """MAIL FROM's answer from the tenant chain and the store's snapshot."""
        for s in snap.suspensions:
            if s.msg_class == "*" and s.tenant != subject:
                return replies.suspended(s, self.tz)
        for s in snap.suspensions:  # the account's own suspension is named first
            if domain and s.tenant == subject:
                return replies.sender_domain_suspended(domain, s, self.tz)
        for t in chain:
            if t.status == "suspended":
                return replies.suspended_in_config(t.name)
        txn.chain = chain
        txn.limits = self._limits(chain, snap.limits)
        # Refuse early what this process already knows is full, without a store round trip
        # per MAIL: the licence count of the last reservation, and the message windows that
        # a reservation filled or found full. RCPT makes the exact check in the store.
        if self.licence.bucket(now) is not None:
            exhausted = self.licence.exhausted(self.licence.used_in(now), now)
            if exhausted:
                return exhausted
        if self._full:
            for key, lim in self._windows(txn, now):
                if self._full.get(key, 0) >= lim.value:
                    return self._limit_reply(lim, now)
        txn.wallet = next((t.name for t in chain if t.prepaid), None)
        # Nothing to count for this tenant: recipients pass without a store round trip.
        txn.unlimited = (txn.wallet is None and self.licence.bucket(now) is None
                         and not any(lim.value for lim in txn.limits))
        txn.class_suspensions = {s.msg_class: s for s in snap.suspensions
                                 if s.tenant != subject}
        txn.state = "open"
        return None

    # --- RCPT TO --------------------------------------------------------------------------
    async def check_rcpt(self, txn: PolicyTxn, recipient: str) -> Reply | None:
        """Reserve one recipient: licence volume, every quota of the tenant and its
        ancestors, one credit. All or nothing: a refused recipient is never charged."""
        answer = self.answer_rcpt(txn, recipient)
        return await answer if inspect.isawaitable(answer) else answer

    def answer_rcpt(self, txn: PolicyTxn, recipient: str
                    ) -> Reply | Awaitable[Reply | None] | None:
        """check_rcpt for ingress: answered at once (no task, no store round trip) when
        nothing is counted for this transaction or the recipient is already reserved in
        it; else an awaitable that reserves."""
        if txn.state != "open":
            raise RuntimeError("check_rcpt before a successful check_mail")
        rcpt = normalise_address(recipient)
        if rcpt in txn.recipients:
            return None  # already reserved in this transaction: not charged twice
        if txn.unlimited:
            txn.recipients.append(rcpt)
            return None
        if self._reserve_now is not None:  # the embedded store decides in memory
            try:
                now = self.clock.now()
                req, counted = self._request(txn, rcpt, now)
                if req is None:
                    return counted  # the licence's refusal
                res = self._reserve_now(req)
                if res is not None:
                    return self._reserved(txn, rcpt, res, counted, now)
            except Exception:
                return self._rcpt_failed()
        return self._reserve_rcpt(txn, rcpt)

    async def _reserve_rcpt(self, txn: PolicyTxn, rcpt: str) -> Reply | None:
        try:
            return await self._reserve(txn, rcpt)
        except Exception:
            return self._rcpt_failed()

    @staticmethod
    def _rcpt_failed() -> Reply:
        """Postfix smtpd_check style: a failed lookup defers, never accepts or crashes."""
        log.exception("policy: RCPT check failed; deferring")
        return replies.store_unavailable()

    async def _reserve(self, txn: PolicyTxn, rcpt: str) -> Reply | None:
        now = self.clock.now()
        req, counted = self._request(txn, rcpt, now)
        if req is None:
            return counted  # the licence's refusal
        return self._reserved(txn, rcpt, await self.store.reserve(req), counted, now)

    def _request(self, txn: PolicyTxn, rcpt: str, now: float
                 ) -> tuple[ReserveRequest, Windows] | tuple[None, Reply]:
        """What reserving `rcpt` asks of the store, and the counters it reserves; or no
        request and the licence's refusal."""
        refusal = self.licence.refusal(now)
        if refusal:
            return None, refusal
        counted = self.planner.windows(txn.limits, now)
        plan = self.planner.plan(counted, self.licence.bucket(now), txn.wallet)
        txn.reserved = True
        return ReserveRequest(self._sid(txn.id), self.owner, txn.tenant, rcpt, now,
                              plan), counted

    def _reserved(self, txn: PolicyTxn, rcpt: str, res: ReserveResult, counted: Windows,
                  now: float) -> Reply | None:
        """The store's answer as RCPT's reply; learns which windows are now full."""
        by_key = counted.by_key
        self.licence.observe(res.licence_used, now, res.alerts)
        for key in res.filled:
            self._full[key] = by_key[key].value
        if res.refused is not None and any(b.key == res.refused for b in counted.buckets):
            self._full[res.refused] = by_key[res.refused].value
        if res.ok:
            txn.recipients.append(rcpt)
            return None
        if res.refused == "licence":
            return self.licence.exhausted(res.licence_used or 0, now)
        if res.refused == "credit":
            return replies.credit_exhausted(txn.wallet or txn.tenant)
        return self._limit_reply(by_key[res.refused], now)

    # --- end of DATA ----------------------------------------------------------------------
    async def check_data(self, txn: PolicyTxn, class_header: str | None) -> Reply | None:
        """Decide the message class (the `[policy] class_header` value, else the tenant's
        default) and refuse it if not allowed or suspended. Sets txn.msg_class/max_age."""
        known = list(self.pc.class_max_age)
        value = (class_header or "").strip().lower()
        if not value:
            value = next((t.default_class for t in txn.chain if t.default_class),
                         self.pc.default_class)
        if value not in self.pc.class_max_age:
            return replies.class_unknown(value, known, self.pc.class_header)
        for t in txn.chain:
            if t.classes and value not in t.classes:
                return replies.class_forbidden(t.name, value)
        s = txn.class_suspensions.get(value)
        if s is not None and (s.until is None or s.until > self.clock.now()):
            return replies.suspended(s, self.tz)
        txn.msg_class = value
        txn.max_age = self.pc.class_max_age[value] or self.cfg.delivery.max_age
        return None

    async def is_duplicate(self, txn: PolicyTxn, message_id: str | None,
                           recipient: str) -> bool:
        """True if this tenant already had a message with this Message-ID accepted for this
        recipient within `duplicate_window`. The caller answers 250 but drops the recipient;
        its reservation is released here (not charged). A message without a Message-ID is
        never a duplicate."""
        rcpt = normalise_address(recipient)
        now = self.clock.now()
        plan = duplicate_plan(txn.tenant, message_id, rcpt, self.pc.duplicate_window, now)
        if plan is None:
            return False
        txn.reserved = True  # a marker row is written for this transaction
        try:
            dup = await self.store.check_duplicate(self._sid(txn.id), plan)
        except Exception:
            log.exception("policy: duplicate check failed; sending (at least once)")
            return False
        if dup:
            await self.store.release(self._sid(txn.id), now, rcpt)
            await self._released(txn)
            if rcpt in txn.recipients:
                txn.recipients.remove(rcpt)
            if self.events:  # the one event of this fact (ingress writes none)
                self.events.emit("duplicate", tenant=txn.tenant, recipient=rcpt,
                                 reason="duplicate", message_id=plan.marker.message_id)
        return dup

    # --- the message's fate ---------------------------------------------------------------
    async def prepare(self, txn: PolicyTxn, msg_id: str) -> Reply | None:
        """Make the transaction's reservations durable under the message's queue id.
        Ingress calls this after the spool write and answers 250 only when both are done:
        after a crash, `reconcile` finds every accepted message's reservations, and
        releases reservations without a message. A Reply means: do not accept the message;
        answer with it and abort()."""
        txn.msg_id = msg_id
        if not txn.reserved:
            return None  # nothing held
        try:
            if msg_id != txn.id:  # else the transaction id already names the message
                await self.store.prepare(self._sid(txn.id), self._sid(msg_id))
            await self.store.durable(self._sid(txn.id))
        except Exception:
            log.exception("policy: prepare of %s failed; deferring", msg_id)
            return replies.store_unavailable()
        return None

    def sync_soon(self, txn: PolicyTxn) -> None:
        """The message is about to be written: start making its reservations durable now,
        beside the spool's fsync, so that prepare() finds them durable already."""
        if txn.reserved and self._sync_soon is not None:
            self._sync_soon()

    async def commit(self, txn: PolicyTxn, msg_id: str) -> None:
        """The message is on disk (after fsync): reservations become charges."""
        if txn.state in ("committed", "aborted"):
            return
        txn.msg_id = msg_id
        txn.state = "committed"
        if not txn.reserved:
            return
        try:
            await self.store.commit(self._sid(txn.id), self._sid(msg_id),
                                    self.pc.charge == "delivered",
                                    self.clock.now())
        except Exception:
            # The message is safe in the spool; its reservations stay counted and are
            # confirmed by reconcile() at the next start (prepare() recorded the id).
            log.exception("policy: commit of %s failed; reconciled at next start", msg_id)

    def abort_now(self, txn: PolicyTxn) -> bool:
        """abort() without awaiting when nothing is reserved (True: done); False when the
        store must release reservations: await abort()."""
        if txn.state in ("committed", "aborted"):
            return True
        if txn.reserved:
            return False
        txn.state = "aborted"
        txn.recipients.clear()
        return True

    async def abort(self, txn: PolicyTxn) -> None:
        """The message was not accepted: give back everything reserved for it."""
        if txn.state in ("committed", "aborted"):
            return
        txn.state = "aborted"
        txn.recipients.clear()
        if not txn.reserved:
            return
        try:
            await self.store.release(self._sid(txn.id), self.clock.now())
            await self._released(txn)
        except Exception:
            # Held until reconcile() at the next start releases them (no such message).
            log.exception("policy: release of transaction %s failed", txn.id)

    async def on_outcome(self, tenant: str, msg_id: str, recipient: str,
                         outcome: str) -> None:
        """A recipient's final outcome. Under charge = "delivered" the held credit is kept
        on delivery and refunded otherwise; repeated calls change nothing."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if outcome == "delivered" and self.pc.charge == "accepted":
            return  # already charged at acceptance; nothing is held
        refunded = await self.store.outcome(self._sid(msg_id), normalise_address(recipient),
                                            outcome != "delivered", self.clock.now())
        if refunded and outcome != "delivered" and self.events:
            self.events.emit("credit_refunded", id=msg_id, tenant=tenant,
                             recipient=recipient, reason=outcome)

    async def reconcile(self, message_exists: Callable[[str], bool | Awaitable[bool]],
                        owner: str | None = None) -> tuple[int, int]:
        """At start-up, before serving: confirm reservations whose message is in the spool,
        release the others. Returns (transactions committed, transactions released).
        `owner` (default: this engine's) names whose reservations to settle."""
        committed = released = 0
        owner = owner or self.owner
        for txn_id, msg_id in await self.store.open_reservations(owner):
            # A prepared id, else the transaction's own id (ingress uses the queue id).
            msg_id = msg_id or txn_id
            found = message_exists(msg_id.removesuffix(f"@{owner}"))
            exists = bool(await found) if inspect.isawaitable(found) else bool(found)
            now = self.clock.now()
            if exists:
                await self.store.commit(txn_id, msg_id, self.pc.charge == "delivered", now)
                committed += 1
            else:
                await self.store.release(txn_id, now)
                released += 1
        if committed or released:
            log.info("policy: reconciled after restart: %d messages kept, %d released",
                     committed, released)
        return committed, released

    # --- status and housekeeping ----------------------------------------------------------
    def licence_status(self) -> LicenceStatus:
        """Cheap (no I/O): what the metrics module exports."""
        return self.licence.status(self.clock.now())

    async def refresh_licence_usage(self) -> None:
        now = self.clock.now()
        key = self.licence.key(now)
        self.licence.observe((await self.store.counters([key]))[key], now)

    async def reload(self, cfg: Config | None = None) -> None:
        """SIGHUP: take the new config (tenants, plans, limits, classes, duplicate window,
        licence settings) and re-read the licence file. The new licence is loaded aside (in
        a thread) and swapped in with the rest: a MAIL meanwhile sees the old one whole."""
        cfg = cfg or self.cfg
        licence = self._licence_gate(cfg)
        await asyncio.to_thread(licence.reload)
        self._configure(cfg, licence)
        await self.refresh_licence_usage()

    async def maintain(self) -> None:
        """Periodic (about once a minute): expire credit lots, prune old counters and
        duplicate markers."""
        now = self.clock.now()
        for lot in await self.store.expire_lots(now):
            if self.events and lot.paid and lot.remaining:
                self.events.emit("credits_expired", tenant=lot.tenant, lot=lot.id,
                                 amount=lot.remaining)
        # Unique-recipient sets of months before the previous one are no longer needed.
        last_month = period_key("month", period_reset("month", now, self.tz).timestamp()
                                - 40 * 86400, self.tz)
        await self.store.prune(now, now - self.pc.duplicate_window, last_month)
        self._full.clear()  # windows of past periods; the current ones are learnt again
        await self.refresh_licence_usage()

    # --- helpers --------------------------------------------------------------------------
    def _sid(self, queue_id: str) -> str:
        """How the store names a transaction or a message. Queue ids are unique within a
        node only (two nodes of a cluster hand out the same id in the same millisecond), so
        a store that several nodes share gets them qualified by their owner."""
        return f"{queue_id}@{self.owner}" if self.store.shared else queue_id

    def counter_key(self, tenant: str, period: str, now: float) -> str:
        return self.planner.counter_key(tenant, period, now)

    def _limits(self, chain: tuple[Tenant, ...], operator: list[OperatorLimit]
                ) -> tuple[EffectiveLimit, ...]:
        """effective_limits, memoised: the same chain (often the same tuple, see
        TenantDirectory) under the same operator limits, MAIL after MAIL."""
        last = self._last_limits
        if last is not None and last[0] is chain and last[1] == operator:
            return last[2]
        memo_key = (chain, tuple(operator))
        limits = self._limits_memo.get(memo_key)
        if limits is None:
            if len(self._limits_memo) >= 1024:
                self._limits_memo.clear()
            limits = self._limits_memo[memo_key] = tuple(
                self.effective_limits(chain, operator))
        self._last_limits = (chain, operator, limits)
        return limits

    def _windows(self, txn: PolicyTxn, now: float) -> list[tuple[str, EffectiveLimit]]:
        """The message-count windows that limit this transaction, by counter key."""
        return [(self.counter_key(lim.tenant, LIMIT_PERIOD[lim.name], now), lim)
                for lim in txn.limits if lim.value and lim.name.startswith("messages")]

    async def _released(self, txn: PolicyTxn) -> None:
        """A release gave room back: in this transaction's windows, and in the licence
        volume (re-read only when it looked exhausted, which is rare)."""
        now = self.clock.now()
        if self._full:
            for key, _ in self._windows(txn, now):
                self._full.pop(key, None)
        bucket = self.licence.bucket(now)
        if bucket is not None and bucket.limit and self.licence.used_in(now) >= bucket.limit:
            await self.refresh_licence_usage()

    def effective_limits(self, chain: tuple[Tenant, ...],
                        operator: list[OperatorLimit]) -> list[EffectiveLimit]:
        """Operator limit (latest wins) > tenant's own value > plan's; 0 = unlimited."""
        latest = {(o.tenant, o.name): o for o in operator}  # ordered by id: last wins
        out = []
        for t in chain:
            plan = self.cfg.plans.get(t.plan) if t.plan else None
            for name in LIMIT_NAMES:
                o = latest.get((t.name, name))
                own = getattr(t.limits, name)
                if o is not None:
                    until = datetime.fromtimestamp(o.until, self.tz).strftime(
                        "%Y-%m-%d %H:%M %Z")
                    src = f"operator limit until {until}" + (f": {o.reason}" if o.reason
                                                              else "")
                    value = o.value
                elif own is not None:
                    value, src = own, "tenant setting"
                elif plan is not None:
                    value, src = getattr(plan, name), f"plan {t.plan}"
                else:
                    value, src = 0, "no limit"
                out.append(EffectiveLimit(t.name, name, value, src))
        return out

    def _limit_reply(self, lim: EffectiveLimit, now: float) -> Reply:
        reset = period_reset(LIMIT_PERIOD[lim.name], now, self.tz).timestamp()
        return replies.limit_reached(LIMIT_LABEL[lim.name], lim.value, lim.tenant,
                                     lim.source, reset, self.tz)
