"""Operator actions on policy state: credits, suspensions, temporary limits, tenants.

What `mta policy ...` and the admin HTTP API call. Every change is written to the store
(and so seen by running daemons at their next MAIL FROM) and announced as an event.

    mta policy credits add TENANT AMOUNT [--paid] [--expires DATE]  -> add_credits
    mta policy credits paid LOT                                     -> mark_paid
    mta policy credits show TENANT                                  -> credits
    mta policy credits history TENANT                               -> history
    mta policy suspend TENANT [--class C] [--until DATE] REASON     -> suspend
    mta policy suspend --sender-domain D [--until DATE] REASON      -> suspend_sender_domain
    mta policy resume --sender-domain D                             -> resume_sender_domain
    mta policy show --sender-domain D                               -> sender_domain_suspensions
    mta policy limit TENANT NAME VALUE --until DATE REASON          -> set_limit
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mta.policy.calendar import add_months, period_key
from mta.policy.directory import PolicyError
from mta.policy.engine import PolicyEngine
from mta.policy.sender_domain import SUBJECT_PREFIX, domain_subject, normalise_domain
from mta.policy.store import LedgerEntry, Lot, OperatorLimit, Suspension, UniqueBucket
from mta.policy.tenants import LIMIT_NAMES, LIMIT_PERIOD, Tenant

__all__ = ["CreditSummary", "PolicyAdmin", "Usage", "format_history"]


@dataclass(frozen=True)
class CreditSummary:
    tenant: str
    balance: int  # paid, unexpired, not reserved: what the next recipients can use
    held: int  # reserved for accepted or in-flight mail, not yet final
    unpaid: int  # bought but not yet paid: not usable
    lots: list[Lot]

    def format(self, tz: ZoneInfo | None = None) -> str:
        lines = [f"tenant {self.tenant}: balance {self.balance:,}, held {self.held:,}, "
                 f"unpaid {self.unpaid:,}"]
        for lot in self.lots:
            state = "expired" if lot.expired else ("paid" if lot.paid else "unpaid")
            exp = datetime.fromtimestamp(lot.expires, tz).strftime("%Y-%m-%d")
            lines.append(f"  lot {lot.id}: {lot.remaining:,}/{lot.amount:,} {state}, "
                         f"expires {exp}" + (f" ({lot.note})" if lot.note else ""))
        return "\n".join(lines)


def format_history(entries: list[LedgerEntry], tz: ZoneInfo | None = None) -> str:
    """`mta policy credits history TENANT`: one ledger row per line, oldest first."""
    lines = []
    for e in entries:
        when = datetime.fromtimestamp(e.time, tz).strftime("%Y-%m-%d %H:%M:%S")
        ref = " ".join(x for x in (e.msg_id, e.recipient, e.note) if x)
        lines.append(f"{e.id:>8} {when} lot {e.lot:<5} {e.delta:+6d} {e.kind:<8} {ref}".rstrip())
    return "\n".join(lines)


@dataclass(frozen=True)
class Usage:
    tenant: str
    name: str
    used: int
    limit: int  # 0 = unlimited
    source: str


class PolicyAdmin:
    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.store = engine.store
        self.tz = engine.tz

    def _now(self) -> float:
        return self.engine.clock.now()

    def _end_of(self, when: date | datetime | float) -> float:
        """A date means "through that day" (local): it ends at the next midnight."""
        if isinstance(when, datetime):
            return (when if when.tzinfo else when.replace(tzinfo=self.tz)).timestamp()
        if isinstance(when, date):
            return datetime.combine(when + timedelta(days=1), time(), self.tz).timestamp()
        return float(when)

    async def _require(self, tenant: str) -> Tenant:
        t = await self.engine.tenants.get(tenant)
        if t is None:
            raise PolicyError(f"unknown tenant {tenant!r}")
        return t

    def _emit(self, event: str, **fields: object) -> None:
        if self.engine.events:
            self.engine.events.emit(event, **fields)

    # --- credits --------------------------------------------------------------------------
    async def add_credits(self, tenant: str, amount: int, *, paid: bool = False,
                          expires: date | datetime | float | None = None,
                          note: str = "") -> Lot:
        await self._require(tenant)
        if amount <= 0:
            raise PolicyError("the amount of credits must be positive")
        now = self._now()
        if expires is None:
            bought = datetime.fromtimestamp(now, self.tz)
            exp = add_months(bought, self.engine.pc.credit_validity_months).timestamp()
        else:
            exp = self._end_of(expires)
        if exp <= now:
            raise PolicyError("the expiry date is in the past")
        lot = await self.store.add_lot(tenant, amount, paid, now, exp, note)
        self._emit("credits_added", tenant=tenant, lot=lot.id, amount=amount, paid=paid)
        return lot

    async def mark_paid(self, lot_id: int) -> Lot:
        try:
            lot = await self.store.mark_paid(lot_id, self._now())
        except ValueError as e:
            raise PolicyError(str(e)) from None
        if lot is None:
            raise PolicyError(f"no credit lot {lot_id}")
        self._emit("credits_paid", tenant=lot.tenant, lot=lot.id, amount=lot.remaining)
        return lot

    async def credits(self, tenant: str) -> CreditSummary:
        await self._require(tenant)
        await self.store.expire_lots(self._now())
        lots = await self.store.lots(tenant)
        now = self._now()
        live = [lot for lot in lots if not lot.expired and lot.expires > now]
        return CreditSummary(
            tenant=tenant,
            balance=sum(lot.remaining for lot in live if lot.paid),
            held=await self.store.held(tenant),
            unpaid=sum(lot.remaining for lot in live if not lot.paid),
            lots=lots)

    async def history(self, tenant: str, limit: int = 100) -> list[LedgerEntry]:
        return await self.store.history(tenant, limit)

    # --- suspensions ----------------------------------------------------------------------
    def _until(self, until: date | datetime | float | None,
               duration: float | None) -> date | datetime | float | None:
        """An end given as an instant or as a duration from now (policy clock)."""
        if duration is None:
            return until
        if until is not None:
            raise PolicyError("give an end date or a duration, not both")
        if duration <= 0:
            raise PolicyError("a duration must be positive")
        return self._now() + duration

    async def suspend(self, tenant: str, reason: str, *, msg_class: str | None = None,
                      until: date | datetime | float | None = None,
                      duration: float | None = None) -> Suspension:
        await self._require(tenant)
        until = self._until(until, duration)
        if msg_class is not None and msg_class not in self.engine.pc.class_max_age:
            raise PolicyError(f"unknown message class {msg_class!r}")
        s = await self.store.add_suspension(
            tenant, msg_class or "*", reason, None if until is None else self._end_of(until),
            self._now())
        self._emit("tenant_suspended", tenant=tenant, msg_class=s.msg_class, reason=reason,
                   until=s.until)
        return s

    async def unsuspend(self, tenant: str, msg_class: str | None = None) -> int:
        n = await self.store.lift_suspension(tenant, msg_class, self._now())
        if n:
            self._emit("tenant_unsuspended", tenant=tenant, msg_class=msg_class or "*")
        return n

    async def suspensions(self, tenant: str) -> list[Suspension]:
        """The tenant's own active suspensions (not its ancestors')."""
        await self._require(tenant)
        return await self._active(tenant)

    async def _active(self, subject: str) -> list[Suspension]:
        snap = await self.store.snapshot([subject], [], self._now())
        return [s for s in snap.suspensions if s.tenant == subject]

    # --- sender-domain suspensions (subject "@domain", see mta.policy.sender_domain) ------
    @staticmethod
    def _domain(domain: str) -> str:
        try:
            return normalise_domain(domain)
        except ValueError as e:
            raise PolicyError(str(e)) from None

    async def suspend_sender_domain(self, domain: str, reason: str, *,
                                    until: date | datetime | float | None = None,
                                    duration: float | None = None) -> Suspension:
        """Refuse MAIL FROM of exactly this domain, whatever the tenant."""
        d = self._domain(domain)
        until = self._until(until, duration)
        end = None if until is None else self._end_of(until)
        if end is not None and end <= self._now():
            raise PolicyError("the suspension would end in the past")
        s = await self.store.add_suspension(domain_subject(d), "*", reason, end, self._now())
        self._emit("sender_domain_suspended", domain=d, reason=reason, until=s.until)
        return s

    async def resume_sender_domain(self, domain: str) -> int:
        d = self._domain(domain)
        n = await self.store.lift_suspension(domain_subject(d), None, self._now())
        if n:
            self._emit("sender_domain_unsuspended", domain=d)
        return n

    async def sender_domain_suspensions(self, domain: str) -> list[Suspension]:
        return await self._active(domain_subject(self._domain(domain)))

    # --- temporary operator limits --------------------------------------------------------
    async def set_limit(self, tenant: str, name: str, value: int, *,
                        until: date | datetime | float, reason: str) -> OperatorLimit:
        await self._require(tenant)
        if name not in LIMIT_NAMES:
            raise PolicyError(f"unknown limit {name!r} (one of {', '.join(LIMIT_NAMES)})")
        if value < 0:
            raise PolicyError("a limit cannot be negative")
        end = self._end_of(until)
        if end <= self._now():
            raise PolicyError("the limit would end in the past")
        o = await self.store.set_operator_limit(tenant, name, value, end, reason, self._now())
        self._emit("limit_set", tenant=tenant, limit=name, value=value, until=end,
                   reason=reason)
        return o

    async def clear_limit(self, tenant: str, name: str | None = None) -> int:
        return await self.store.clear_operator_limit(tenant, name, self._now())

    # --- tenants and usage ----------------------------------------------------------------
    async def create_tenant(self, tenant: Tenant) -> None:
        if tenant.name.startswith(SUBJECT_PREFIX):
            # "@domain" names a sender-domain suspension in the store.
            raise PolicyError(f"a tenant name cannot start with {SUBJECT_PREFIX!r}")
        if tenant.plan and tenant.plan not in self.engine.cfg.plans:
            raise PolicyError(f"unknown plan {tenant.plan!r}")
        await self.engine.tenants.create(tenant)

    async def delete_tenant(self, name: str) -> bool:
        return await self.engine.tenants.delete(name)

    async def list_tenants(self) -> list[Tenant]:
        return await self.engine.tenants.all()

    async def usage(self, tenant: str) -> list[Usage]:
        """Current windows' counts against the effective limits, tenant and ancestors."""
        now = self._now()
        chain = await self.engine.tenants.chain(tenant)
        snap = await self.store.snapshot([t.name for t in chain], [], now)
        limits = self.engine.effective_limits(chain, snap.limits)
        keys = []
        for lim in limits:
            period = LIMIT_PERIOD[lim.name]
            if lim.name == "unique_recipients_per_month":
                keys.append(UniqueBucket(lim.tenant, period_key(period, now, self.tz)).key)
            else:
                keys.append(self.engine.counter_key(lim.tenant, period, now))
        counts = await self.store.counters(keys)
        return [Usage(lim.tenant, lim.name, counts[k], lim.value, lim.source)
                for lim, k in zip(limits, keys, strict=True)]
