"""Policy decisions as data: what an operation checks and changes, written once.

The engine builds a `ReservePlan` from the tenant's effective limits, the licence and the
wallet (once per set of windows, not per recipient); the stores build the other plans from
what they read back. Each store applies a plan atomically with one generic interpreter, so
the rules live here and nowhere else:

    SqliteStore   in memory on the event loop, writes journalled (sqlite_store.py)
    RedisStore    apply.lua, one script run by EVALSHA on the Redis server

A reservation plan is an ordered list of guarded operations. Every guard is checked first, in this
order: the counts (the licence's first), the unique recipients, the credit; the first that
fails names the refusal and nothing is written. Then every effect runs:

    Count(key, limit)   guard: the counter is below `limit` (0 = no limit)
                        effect: counter += 1, kept at least until `expires`
    Unique(tenant, month, key, limit)
                        guard: the recipient is already among the month's, or `key` (their
                        number) is below `limit`; effect: the recipient's reference count
                        += 1, and `key` += 1 if it was new
    take (a wallet)     guard: one of its lots is paid, unexpired and not empty
                        effect: one credit from the lot that expires first, a ledger row
                        (`take_kind`, -1, "txn <id>"), one more credit held
    Alert(name, threshold, level)
                        after the counts: the first time the reported count (the licence
                        volume) reaches `threshold`, `name` is recorded and `level` answered
    record              a reservation row naming the counters, unique recipients and lot it
                        holds, which release and commit read back

Giving reservations back is a `SettlePlan` built from the store's own records of them (read
back from memory, or from Redis: then every record is a guard, "still as read", and a plan
whose records changed is built again):

    release (RSET, refusal, lost client, duplicate, reconciliation) and outcome (a held
    credit's end) give back, per record: each counter -1, the recipient's reference in
    each month's unique recipients -1 (and the month's count when it was the last), its
    credit to the lot it came from (a ledger row of the plan's `kind`; a lot that expired
    meanwhile takes it and expires it at once), and one credit fewer held

Credit lots change by `LotChange`s (a lot added, paid, expired): each names the ledger row
that explains it, whose credits are `per_credit` times the lot's remaining credits when the
change is applied (they move under reservations: a plan cannot fix the number), guarded by
the lot's flags being still as decided from.

A transaction's `CommitPlan` (the message is in the spool) settles its reservations: those
with a credit are held under the message until its outcome (`charge = "delivered"`) or
their credit is final (one fewer held); the rest is final already.

Duplicate suppression is a `DuplicatePlan` per (tenant, RFC 5322 Message-ID, recipient)
within `[policy] duplicate_window`:

    guard   no committed marker of the three at or after `since` (else: a duplicate,
            and nothing is written)
    effect  a pending marker of the transaction, written at `now`, its key kept `keep`
            seconds (a store that expires keys by time), the transaction's index of its
            markers kept `index_keep`

A marker stays pending until its transaction commits, so an aborted attempt never makes its
own retry a duplicate (two attempts in flight at once are both sent: at least once). The
transaction's commit plan commits its pending markers (time: the commit's), a release plan
drops the pending markers of the recipients it gives back. A pending marker whose
transaction never ended (the process died) lives ORPHAN_MARKER_AGE.

What varies per recipient (transaction, owner, tenant, recipient, time) is not in the plan:
it travels beside it in the `ReserveRequest`. The engine's `Planner` memoises the windows of
a set of limits and their plans: recipient after recipient, building a plan is an identity
check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from mta.policy.calendar import period_end, period_key
from mta.policy.store import Bucket, Lot, UniqueBucket
from mta.policy.tenants import LIMIT_PERIOD

__all__ = ["ORPHAN_MARKER_AGE", "Alert", "CommitPlan", "Count", "DuplicatePlan",
           "EffectiveLimit", "GiveBack", "LotChange", "Marker", "Planner", "ReservePlan",
           "SettlePlan", "Windows", "commit_plan", "duplicate_plan", "expiry_changes",
           "new_lot_change", "outcome_plan", "paid_change", "release_plan", "reserve_plan"]

# How long counter rows outlive their window (for usage reports and restarts near the edge).
_KEEP = {"hour": 2 * 86400.0, "day": 3 * 86400.0, "month": 62 * 86400.0}

# Ledger kinds: a credit taken at RCPT, given back unused, refunded after a failed delivery.
TAKE_KIND = "reserve"
RELEASE_KIND = "release"
REFUND_KIND = "refund"
# ... and a lot's own: bought, paid for, written off at its expiry.
ADD_KIND = "add"
PAID_KIND = "paid"
EXPIRE_KIND = "expire"


@dataclass(frozen=True, slots=True)
class Count:
    key: str
    limit: int  # 0 = count only
    expires: float
    refusal: str  # what a refusal names: "licence" or the counter key
    # Its count is the answer's `licence_used`; the others answer `filled` when they
    # reach their limit (the engine then refuses at MAIL FROM without asking).
    reported: bool = False


@dataclass(frozen=True, slots=True)
class Alert:
    name: str  # recorded once: "{licence key}|{volume}|{level}"
    threshold: int
    level: int


@dataclass(frozen=True)
class ReservePlan:
    counts: tuple[Count, ...]
    uniques: tuple[UniqueBucket, ...]  # refused under their `key`
    take: str | None  # the wallet one credit comes from; None = not prepaid
    alerts: tuple[Alert, ...]
    first_alert: float  # the lowest reported count that can raise an alert
    # The reservation row: counter keys, unique recipients (tenant, month, counter key).
    record_counters: tuple[str, ...]
    record_uniques: tuple[tuple[str, str, str], ...]
    take_kind: str = TAKE_KIND

    @cached_property
    def counters_json(self) -> str:
        return json.dumps(self.record_counters)

    @cached_property
    def uniques_json(self) -> str:
        return json.dumps(self.record_uniques)

    @cached_property
    def doc(self) -> str:
        """The plan as apply.lua reads it (floats as strings: cjson keeps 14 digits)."""
        d: dict[str, Any] = {
            "op": "reserve",
            "counts": [{"key": c.key, "limit": c.limit, "expires": repr(c.expires),
                        "refusal": c.refusal, "reported": c.reported} for c in self.counts],
            "uniques": [{"tenant": u.tenant, "month": u.month, "key": u.key,
                         "limit": u.limit, "expires": repr(u.expires)}
                        for u in self.uniques],
            "alerts": [{"name": a.name, "threshold": a.threshold, "level": a.level}
                       for a in self.alerts],
            "record": {"counters": list(self.record_counters),
                       "uniques": [list(u) for u in self.record_uniques]},
            "take_kind": self.take_kind}
        if self.take is not None:
            d["take"] = self.take
        return json.dumps(d)


def reserve_plan(licence: Bucket | None, buckets: Sequence[Bucket],
                 uniques: Sequence[UniqueBucket], wallet: str | None,
                 alert_levels: Sequence[int]) -> ReservePlan:
    """What reserving one recipient checks and changes: the licence volume, then every
    quota window, the month's unique recipients, one credit of `wallet`."""
    counts = [Count(b.key, b.limit, b.expires, b.key) for b in buckets]
    alerts: list[Alert] = []
    if licence is not None:
        counts.insert(0, Count(licence.key, licence.limit, licence.expires, "licence", True))
        if licence.limit:
            # Keyed by volume too: a bigger licence mid-month alerts afresh.
            alerts = [Alert(f"{licence.key}|{licence.limit}|{level}",
                            math.ceil(licence.limit * level / 100), level)
                      for level in alert_levels]
    return ReservePlan(
        counts=tuple(counts), uniques=tuple(uniques), take=wallet, alerts=tuple(alerts),
        first_alert=min((a.threshold for a in alerts), default=math.inf),
        record_counters=tuple(c.key for c in counts),
        record_uniques=tuple((u.tenant, u.month, u.key) for u in uniques))



class Reservation(Protocol):
    """A reservation record, as a store reads it back."""

    rcpt: str
    counters: Sequence[str]
    uniques: Sequence[Sequence[str]]  # (tenant, month, counter key)
    lot: int | None
    wallet: str | None
    msg_id: str | None


class Marker(NamedTuple):
    """A duplicate marker's subject: one recipient of one message of one tenant."""

    tenant: str
    message_id: str  # RFC 5322 Message-ID, as the message has it (stripped)
    rcpt: str  # normalised


# A pending marker whose transaction never ended (its process died) is dropped after this.
ORPHAN_MARKER_AGE = 2 * 86400.0
# Where markers expire with their key (Redis TTLs, extended at each write) rather than by
# pruning, a day beyond the last time a check can still find them.
_MARKER_SLACK = 86400.0


@dataclass(frozen=True, slots=True)
class DuplicatePlan:
    marker: Marker
    since: float  # guard: a committed marker at or after this makes a duplicate
    now: float  # effect: the transaction's pending marker, written at this time
    keep: float  # seconds the marker's key outlives its last write
    index_keep: float  # seconds the transaction's index of its markers outlives its write

    @property
    def doc(self) -> str:
        """The plan as apply.lua reads it (times in ms, as PEXPIRE takes them)."""
        return json.dumps({"op": "duplicate", "since": repr(self.since),
                           "keep_ms": math.ceil(self.keep * 1000),
                           "index_keep_ms": math.ceil(self.index_keep * 1000)})


def duplicate_plan(tenant: str, message_id: str | None, rcpt: str, window: float,
                   now: float) -> DuplicatePlan | None:
    """Is `rcpt` (normalised) a repeat of a message of `tenant` accepted within `window`
    seconds? None: a message without a Message-ID is never a duplicate."""
    mid = (message_id or "").strip()
    if not mid:
        return None
    # Committed markers must outlive the window; a pending one of a crashed session goes
    # with them.
    return DuplicatePlan(Marker(tenant, mid, rcpt), now - window, now,
                         max(window, ORPHAN_MARKER_AGE) + _MARKER_SLACK,
                         ORPHAN_MARKER_AGE + _MARKER_SLACK)


@dataclass(frozen=True, slots=True)
class GiveBack:
    record: Any  # the store's own record, which the plan removes
    rcpt: str
    msg_id: str  # as the ledger row names it
    counters: Sequence[str]  # each -1
    uniques: Sequence[Sequence[str]]  # each: the recipient's reference -1
    lot: int | None  # the lot its credit goes back to; None: no credit given back
    wallet: str
    unhold: bool  # one credit fewer held by the wallet


@dataclass(frozen=True, slots=True)
class SettlePlan:
    kind: str  # the ledger kind of the credits given back
    undos: tuple[GiveBack, ...]
    markers: tuple[Marker, ...] = ()  # pending duplicate markers dropped


def release_plan(records: Sequence[Reservation], recipient: str | None,
                 markers: Sequence[Marker] = ()) -> SettlePlan:
    """Every reservation of a transaction (of one `recipient`) given back whole, and its
    pending duplicate markers (`markers`: the transaction's) dropped: the message was not
    accepted, or the recipient was a duplicate."""
    return SettlePlan(RELEASE_KIND, tuple(
        GiveBack(r, r.rcpt, r.msg_id or "", r.counters, r.uniques, r.lot, r.wallet or "",
                 r.lot is not None)
        for r in records if recipient is None or r.rcpt == recipient),
        tuple(m for m in markers if recipient is None or m.rcpt == recipient))


def outcome_plan(record: Any, msg_id: str, rcpt: str, lot: int, wallet: str,
                 refund: bool) -> SettlePlan:
    """A credit held until the outcome: kept (delivered) or refunded; held no longer."""
    return SettlePlan(REFUND_KIND, (GiveBack(record, rcpt, msg_id, (), (),
                                             lot if refund else None, wallet, True),))



@dataclass(frozen=True, slots=True)
class CommitPlan:
    msg_id: str
    records: tuple[Any, ...]  # every reservation of the transaction: settled
    hold: tuple[Any, ...]  # of which, held under `msg_id` until their outcome
    final: tuple[Any, ...]  # of which, a credit charged for good: one fewer held
    markers: tuple[Marker, ...] = ()  # pending duplicate markers committed (time: now)


def commit_plan(records: Sequence[Reservation], msg_id: str, hold_credit: bool,
                markers: Sequence[Marker] = ()) -> CommitPlan:
    """The message is accepted: its reservations become charges, its pending duplicate
    markers (`markers`) committed. With `hold_credit` (charge = "delivered") the credit
    stays held until the outcome: delivered keeps it, a failure refunds it."""
    paid = tuple(r for r in records if r.lot is not None)
    return CommitPlan(msg_id, tuple(records), paid if hold_credit else (),
                      () if hold_credit else paid, tuple(markers))



@dataclass(frozen=True, slots=True)
class LotChange:
    lot: int  # its id; 0 = a lot to create
    kind: str  # the ledger row's
    per_credit: int  # the row's credits: this times the lot's remaining credits
    was_paid: bool  # guards: the lot's flags as decided from
    was_expired: bool
    paid: bool  # the lot's flags after
    expired: bool  # (an expired lot keeps no credit)
    time: float
    note: str = ""


def new_lot_change(paid: bool, purchased: float, note: str) -> LotChange:
    """A lot bought: unpaid credits are not spendable, they enter the balance with the
    "paid" row."""
    return LotChange(0, ADD_KIND, 1 if paid else 0, False, False, paid, False, purchased, note)


def paid_change(lot: Lot, now: float) -> LotChange | None:
    """A lot paid for: its credits become spendable. None if it was paid already; an
    expired lot cannot be paid (ValueError)."""
    if lot.paid:
        return None
    if lot.expired or lot.expires <= now:
        raise ValueError(f"credit lot {lot.id} has expired")
    return LotChange(lot.id, PAID_KIND, 1, False, False, True, False, now)


def expiry_changes(lots: Sequence[Lot], now: float) -> list[LotChange]:
    """Lots past their expiry: what is left of them is written off (nothing, if unpaid)."""
    return [LotChange(lot.id, EXPIRE_KIND, -1 if lot.paid else 0, lot.paid, False, lot.paid,
                      True, now)
            for lot in lots if not lot.expired and lot.expires <= now]


@dataclass(frozen=True)
class EffectiveLimit:
    tenant: str
    name: str  # one of LIMIT_NAMES
    value: int  # 0 = unlimited
    source: str  # "plan free", "tenant setting", "operator limit until ...: reason"


@dataclass(frozen=True)
class Windows:
    """What one recipient reserves under a set of limits, valid for the current windows
    (`valid_from` is when it was computed: the policy clock may be moved back in tests)."""

    buckets: tuple[Bucket, ...]
    uniques: tuple[UniqueBucket, ...]
    by_key: dict[str, EffectiveLimit]
    valid_from: float
    valid_until: float
    # The reservation plan under these windows, per (licence bucket, wallet).
    plans: dict[tuple[Bucket | None, str | None], ReservePlan] = field(default_factory=dict)


class Planner:
    """Windows and plans, memoised: the same few per MAIL FROM and RCPT TO."""

    def __init__(self, tz: ZoneInfo, alert_levels: tuple[int, ...]) -> None:
        self.tz = tz
        self.alert_levels = alert_levels
        self._memo: dict[tuple[EffectiveLimit, ...], Windows] = {}
        # The last answer of each, checked by identity first (hashing a tuple of limits
        # costs more than the rest of the lookup).
        self._last_windows: tuple[tuple[EffectiveLimit, ...], Windows] | None = None
        self._last_plan: tuple[Windows, Bucket | None, str | None, ReservePlan] | None = None

    def counter_key(self, tenant: str, period: str, now: float) -> str:
        return f"{tenant}|{period}|{period_key(period, now, self.tz)}"

    def windows(self, limits: tuple[EffectiveLimit, ...], now: float) -> Windows:
        """The counters a recipient reserves under `limits` now (memoised per window)."""
        last = self._last_windows
        if last is not None and last[0] is limits and last[1].valid_from <= now < \
                last[1].valid_until:
            return last[1]
        hit = self._memo.get(limits)
        if hit is not None and hit.valid_from <= now < hit.valid_until:
            self._last_windows = (limits, hit)
            return hit
        buckets, uniques, by_key, ends = [], [], {}, []
        for lim in limits:
            period = LIMIT_PERIOD[lim.name]
            end = period_end(period, now, self.tz)
            ends.append(end)
            if lim.name == "unique_recipients_per_month":
                u = UniqueBucket(lim.tenant, period_key("month", now, self.tz), lim.value,
                                 end + _KEEP[period])
                uniques.append(u)
                by_key[u.key] = lim
            else:
                b = Bucket(self.counter_key(lim.tenant, period, now), lim.value,
                           end + _KEEP[period])
                buckets.append(b)
                by_key[b.key] = lim
        if len(self._memo) >= 1024:
            self._memo.clear()
        counted = self._memo[limits] = Windows(
            tuple(buckets), tuple(uniques), by_key, now, min(ends, default=float("inf")))
        self._last_windows = (limits, counted)
        return counted

    def plan(self, windows: Windows, licence: Bucket | None, wallet: str | None
             ) -> ReservePlan:
        """The plan that reserves one recipient in `windows`, the licence and `wallet`."""
        last = self._last_plan
        if last is not None and last[0] is windows and last[1] is licence and \
                last[2] == wallet:
            return last[3]
        plan = windows.plans.get((licence, wallet))
        if plan is None:
            plan = windows.plans[(licence, wallet)] = reserve_plan(
                licence, windows.buckets, windows.uniques, wallet, self.alert_levels)
        self._last_plan = (windows, licence, wallet, plan)
        return plan
