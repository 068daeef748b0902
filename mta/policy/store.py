"""The policy store interface: every piece of shared policy state, behind atomic operations.

The engine decides *what* to ask (which counters, which limits, which wallet: for RCPT, a
plan, plan.py); the store makes each operation atomic and durable. `SqliteStore`
(policy.db beside the spool) is the embedded implementation; `RedisStore` (Lua scripts,
apply.lua for plans) is the one every node of a cluster shares ([cluster] redis_url).

Reservation life cycle, per accepted recipient:
    reserve (RCPT) -> prepare (msg id known) -> durable (before 250) -> commit (after 250)
                   -> release (RSET, refused at DATA, duplicate, connection lost, or restart
                      reconciliation when the message never reached the spool)
and, when the credit is held until the outcome (charge = "delivered"):
    commit -> outcome: delivered (kept) | bounced/expired/suppressed (refunded)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from mta.policy.tenants import Tenant

if TYPE_CHECKING:
    from mta.policy.plan import DuplicatePlan, ReservePlan

__all__ = ["Bucket", "LedgerEntry", "Lot", "OperatorLimit", "PolicyStore", "ReserveRequest",
           "ReserveResult", "Snapshot", "Suspension", "UniqueBucket"]


@dataclass(frozen=True)
class Bucket:
    """A counter for one calendar window; `limit` 0 = count only."""

    key: str
    limit: int = 0
    expires: float = 0.0  # when the counter row may be pruned (unix time)


@dataclass(frozen=True)
class UniqueBucket:
    """Distinct recipients of one tenant in one calendar month."""

    tenant: str
    month: str
    limit: int = 0
    expires: float = 0.0

    @cached_property  # asked for several times per recipient
    def key(self) -> str:
        return f"{self.tenant}|unique|{self.month}"


# One of each per recipient: slotted, not frozen (a frozen dataclass costs ~3x as much to
# make). Treat them as values all the same.
@dataclass(slots=True)
class ReserveRequest:
    """Reserve one recipient: what varies per recipient, beside the plan (plan.py) of what
    to check and change, which recipients under the same windows share."""

    txn_id: str
    owner: str  # which worker / spool shard holds the message (for reconciliation)
    tenant: str
    recipient: str  # normalised (lower case)
    now: float
    plan: ReservePlan


@dataclass(slots=True)
class ReserveResult:
    ok: bool
    # When refused: "licence", "credit", or the key of the Bucket / UniqueBucket that is full.
    refused: str | None = None
    licence_used: int | None = None
    alerts: tuple[int, ...] = ()  # licence alert levels crossed by this reservation
    # Keys of the Buckets (not UniqueBuckets) this reservation brought to their limit: the
    # engine then refuses at MAIL FROM without asking the store.
    filled: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lot:
    id: int
    tenant: str
    amount: int
    remaining: int
    purchased: float
    expires: float
    paid: bool
    expired: bool
    note: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    time: float
    tenant: str
    lot: int
    delta: int  # credits added (+) or taken (-); 0 for "paid"
    kind: str  # add | paid | reserve | release | refund | expire
    msg_id: str = ""
    recipient: str = ""
    note: str = ""


@dataclass(frozen=True)
class Suspension:
    id: int
    tenant: str
    msg_class: str  # "*" = all mail
    reason: str
    since: float
    until: float | None  # None = until lifted


@dataclass(frozen=True)
class OperatorLimit:
    id: int
    tenant: str
    name: str  # one of tenants.LIMIT_NAMES
    value: int
    until: float
    reason: str
    since: float


@dataclass(frozen=True)
class Snapshot:
    """What MAIL FROM needs, read in one round trip."""

    suspensions: list[Suspension] = field(default_factory=list)
    limits: list[OperatorLimit] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def in_force(cls, suspensions: list[Suspension], limits: list[OperatorLimit],
                 counters: dict[str, int], now: float) -> Snapshot:
        """The snapshot of the suspensions and operator limits (as a store caches them)
        still in force at `now`."""
        return cls([s for s in suspensions if s.until is None or s.until > now],
                   [x for x in limits if x.until > now], counters)


class PolicyStore(Protocol):
    # True when nodes with spools of their own write this store (a cluster's Redis): their
    # queue ids may collide, so the engine qualifies transaction and message ids.
    shared: bool

    # --- tenants created at run time ---------------------------------------------------
    async def get_tenant(self, name: str) -> Tenant | None: ...
    async def put_tenant(self, tenant: Tenant) -> None: ...
    async def delete_tenant(self, name: str) -> bool: ...
    async def list_tenants(self) -> list[Tenant]: ...

    # --- suspensions and operator limits ------------------------------------------------
    async def add_suspension(self, tenant: str, msg_class: str, reason: str,
                             until: float | None, now: float) -> Suspension: ...
    async def lift_suspension(self, tenant: str, msg_class: str | None, now: float) -> int: ...
    async def set_operator_limit(self, tenant: str, name: str, value: int, until: float,
                                 reason: str, now: float) -> OperatorLimit: ...
    async def clear_operator_limit(self, tenant: str, name: str | None, now: float) -> int: ...
    async def snapshot(self, tenants: Sequence[str], counter_keys: Sequence[str],
                       now: float) -> Snapshot: ...

    # --- reservations -------------------------------------------------------------------
    async def reserve(self, req: ReserveRequest) -> ReserveResult: ...
    async def prepare(self, txn_id: str, msg_id: str) -> None: ...
    async def commit(self, txn_id: str, msg_id: str, hold_credit: bool, now: float) -> int: ...
    async def release(self, txn_id: str, now: float, recipient: str | None = None) -> int: ...
    async def outcome(self, msg_id: str, recipient: str, refund: bool, now: float) -> bool: ...
    async def durable(self, txn_id: str) -> None:
        """Return once the transaction's operations answered so far survive a crash (a
        store may answer them earlier); raise if they were lost."""
        ...
    async def open_reservations(self, owner: str) -> list[tuple[str, str | None]]: ...
    async def counters(self, keys: Sequence[str]) -> dict[str, int]: ...

    # --- credits ------------------------------------------------------------------------
    async def add_lot(self, tenant: str, amount: int, paid: bool, purchased: float,
                      expires: float, note: str) -> Lot: ...
    async def mark_paid(self, lot_id: int, now: float) -> Lot | None: ...
    async def lots(self, tenant: str) -> list[Lot]: ...
    async def held(self, tenant: str) -> int: ...
    async def history(self, tenant: str, limit: int) -> list[LedgerEntry]: ...
    async def expire_lots(self, now: float) -> list[Lot]: ...

    # --- duplicates ---------------------------------------------------------------------
    async def check_duplicate(self, txn_id: str, plan: DuplicatePlan) -> bool:
        """Apply a duplicate check plan (plan.py) atomically: True if its guard found a
        duplicate (nothing written), else its pending marker is written for `txn_id`."""
        ...

    async def prune(self, now: float, dedupe_since: float, uniq_before: str) -> None: ...
    async def aclose(self) -> None: ...
