"""A policy decision as data: what reserving one recipient checks and changes, written once.

The engine builds a `ReservePlan` from the tenant's effective limits, the licence and the
wallet (once per set of windows, not per recipient); each store applies it atomically with
one generic interpreter, so the rules live here and nowhere else:

    SqliteStore   in memory on the event loop, writes journalled (sqlite_store.py)
    RedisStore    apply.lua, one script run by EVALSHA on the Redis server

A plan is an ordered list of guarded operations. Every guard is checked first, in this
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

What varies per recipient (transaction, owner, tenant, recipient, time) is not in the plan:
it travels beside it in the `ReserveRequest`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mta.policy.store import Bucket, UniqueBucket

__all__ = ["Alert", "Count", "ReservePlan", "reserve_plan"]

# The ledger kind of a credit taken at RCPT.
TAKE_KIND = "reserve"


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
