"""TLS-RPT session counts in the policy store: kept over restarts, shared by workers and nodes.

Owns the stored form of the counts (mta.policy.kv, as the warm-up day counts and the
reply holds use it: policy.db on one node, the cluster's Redis otherwise):

    records  "tlsrpt"       "<day>|<domain>|<h>" -> {"p": policy, "f": failure or null}
    counters "tlsrpt"       "<day>|<domain>|<h>" -> sessions (expire after 10 days)

`<h>` is a hash of the record: one counter per (UTC day, policy domain, policy, failure
detail; null: the successful sessions). `add()` only counts in memory; `flush()` writes
what was counted since the last flush in one trip for the counters (plus one per record
never written before), so a delivery costs no store round trip. Several processes adding
to one counter is exact: the store adds (INCRBY, or UPDATE ... value + n).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from mta.tls.report import FailureDetail, PolicyCounts, ReportPolicy

if TYPE_CHECKING:
    from mta.policy.kv import PolicyKV

__all__ = ["NS", "SessionCounts"]

log = logging.getLogger("mta.tls")

NS = "tlsrpt"
_TTL = 10 * 86400.0  # long enough for a report that waited out a DNS or store outage


class SessionCounts:
    def __init__(self, kv: PolicyKV) -> None:
        self.kv = kv
        self._pending: dict[str, int] = defaultdict(int)
        self._records: dict[str, str] = {}  # to write at the next flush
        self._written: set[str] = set()  # keys whose record this process wrote already

    def add(self, day: dt.date, policy: ReportPolicy, failure: FailureDetail | None,
            n: int = 1) -> None:
        value = json.dumps({"p": policy.to_json(),
                            "f": failure.to_json() if failure is not None else None},
                           sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(value.encode()).hexdigest()[:16]
        key = f"{day.isoformat()}|{policy.domain}|{h}"
        if key not in self._written:
            self._records[key] = value
        self._pending[key] += n

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    async def flush(self) -> None:
        """Write the counts added since the last flush. On a store error they stay
        pending for the next one (and the error propagates)."""
        if not self._pending and not self._records:
            return
        records, self._records = self._records, {}
        pending, self._pending = self._pending, defaultdict(int)
        try:
            # The record first: a counter whose record is missing would never be reported.
            for key, value in records.items():
                await self.kv.put(NS, key, value)
                self._written.add(key)
            await self.kv.add_many(NS, [(k, n, _TTL) for k, n in pending.items()])
        except BaseException:
            for k, v in records.items():
                if k not in self._written:
                    self._records.setdefault(k, v)
            for k, n in pending.items():
                self._pending[k] += n
            raise
        self._forget_old()

    def _forget_old(self) -> None:
        """`_written` holds this day's and yesterday's keys, not every key ever seen."""
        if len(self._written) < 4096:
            return
        oldest = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)).isoformat()
        self._written = {k for k in self._written if k >= oldest}

    # --- reading back (the daily job) --------------------------------------------------
    async def days(self) -> dict[tuple[dt.date, str], dict[str, str]]:
        """Every stored (day, domain) -> its records (key -> value)."""
        out: dict[tuple[dt.date, str], dict[str, str]] = defaultdict(dict)
        for key, value in (await self.kv.items(NS)).items():
            day, _, rest = key.partition("|")
            domain = rest.rpartition("|")[0]
            try:
                out[(dt.date.fromisoformat(day), domain)][key] = value
            except ValueError:
                log.warning("TLS-RPT: ignoring a malformed stored key %r", key)
        return dict(out)

    async def load(self, records: dict[str, str]) -> list[PolicyCounts]:
        """The counts of one (day, domain)'s records, per policy."""
        keys = sorted(records)
        counts = await self.kv.counts(NS, keys)
        policies: dict[ReportPolicy, PolicyCounts] = {}
        for key, n in zip(keys, counts, strict=True):
            try:
                d = json.loads(records[key])
                policy = ReportPolicy.from_json(d["p"])
                failure = FailureDetail.from_json(d["f"]) if d["f"] is not None else None
            except (ValueError, KeyError, TypeError):
                log.warning("TLS-RPT: ignoring a malformed stored record %r", key)
                continue
            pc = policies.setdefault(policy, PolicyCounts(policy))
            if failure is None:
                pc.successes += n
            else:
                pc.failures[failure] = pc.failures.get(failure, 0) + n
        return list(policies.values())

    async def forget(self, records: dict[str, str]) -> None:
        """A reported day's records (its counters expire on their own)."""
        for key in records:
            await self.kv.delete(NS, key)
