"""Tenants' sending domains: registered with a token, verified by a DNS TXT record.

    reg = DomainRegistry(kv, lookup_txt, cfg.identity, clock=time.time, events=events)
    rec = await reg.add("acme", "acme.example")     # rec.token: publish "mta-verify=TOKEN"
    rec = await reg.verify("acme", "acme.example")  # looks the record up now
    reg.allowed("acme", "news.acme.example")        # a verified domain or its subdomain

Records live in the policy store's keyed records (mta/policy/kv.py, namespace "domains"):
policy.db, or the cluster's Redis, so every node sees a verification. Each node keeps a copy
in memory for MAIL FROM (no store round trip per message), changed at once by the changes
made here and read again in the background every few seconds (`refresh_soon`): a message
never waits for that read, which on SQLite queues behind the group commit's fsync.
`run()` re-checks verified domains every `[identity] recheck_interval`; a record that is
gone (NXDOMAIN, NODATA, another token) unverifies the domain, a temporary DNS failure keeps
its state for the next round.

Events: domain_added, domain_verified, domain_unverified (reason), domain_removed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from mta.config.identity import IdentityConfig
from mta.policy.kv import PolicyKV
from mta.policy.sender_domain import normalise_domain

__all__ = ["VERIFY_PREFIX", "DomainRecord", "DomainRegistry", "UnknownDomain"]

log = logging.getLogger("mta.policy")

NS = "domains"
VERIFY_PREFIX = "mta-verify="
_REFRESH = 2.0  # seconds a node trusts its copy of the records (changes on other nodes)
_PASSES_MAX = 20_000  # remembered passes (~3 MB at most)

# (name) -> the TXT strings there; raises on a temporary failure. An empty list: none.
LookupTxt = Callable[[str], Awaitable[list[str]]]


class UnknownDomain(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class DomainRecord:
    tenant: str
    domain: str
    token: str
    added: float
    verified: bool = False
    verified_at: float | None = None
    checked_at: float | None = None
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(tenant: str, domain: str) -> str:
    return f"{tenant}\t{domain}"


class DomainRegistry:
    def __init__(self, kv: PolicyKV, lookup_txt: LookupTxt, cfg: IdentityConfig, *,
                 clock: Callable[[], float] = time.time, events: Any = None) -> None:
        self.kv = kv
        self.lookup_txt = lookup_txt
        self.cfg = cfg
        self.clock = clock
        self.events = events
        self._by_tenant: dict[str, dict[str, DomainRecord]] = {}
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[None] | None = None
        self._changes = 0  # changes made here: a read begun before one is stale
        # (tenant, sender) keys SenderIdentity found allowed by this copy; emptied whenever
        # the copy changes.
        self.passed: set[tuple[Any, ...]] = set()

    # --- the copy in memory --------------------------------------------------------------
    async def load(self) -> None:
        changes = -1
        while changes != self._changes:  # a change made here while reading: read again
            changes = self._changes
            items = await self.kv.items(NS)
        by: dict[str, dict[str, DomainRecord]] = {}
        for value in items.values():
            try:
                r = DomainRecord(**json.loads(value))
            except (TypeError, ValueError) as e:
                log.warning("ignoring an unreadable sending-domain record: %s", e)
                continue
            by.setdefault(r.tenant, {})[r.domain] = r
        if by != self._by_tenant:
            self._by_tenant = by
            self.passed.clear()
        self._loaded_at = time.monotonic()

    def remember_pass(self, key: tuple[Any, ...]) -> None:
        if len(self.passed) >= _PASSES_MAX:  # many distinct senders: start again
            self.passed.clear()
        self.passed.add(key)

    def forget_passes(self) -> None:
        self.passed.clear()

    def is_fresh(self) -> bool:
        """This node's copy is recent enough to decide on without reading it again."""
        return time.monotonic() - self._loaded_at < _REFRESH

    def refresh_soon(self) -> None:
        """Start reading the records again, in the background, if this node's copy is
        older than a few seconds; the caller decides on the copy it has meanwhile."""
        if self.is_fresh() or (self._loading is not None and not self._loading.done()):
            return
        self._loading = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self.load()
        except Exception as e:  # the store is down: keep deciding on the last copy
            log.warning("sending domains not re-read: %s", e)
            self._loaded_at = time.monotonic()

    def domains(self, tenant: str) -> dict[str, DomainRecord]:
        return dict(self._by_tenant.get(tenant, {}))

    def has_any(self, tenant: str) -> bool:
        return bool(self._by_tenant.get(tenant))

    def allowed(self, tenant: str, domain: str) -> DomainRecord | None:
        """The verified record covering `domain` (itself or a parent), or None."""
        mine = self._by_tenant.get(tenant)
        if not mine:
            return None
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            r = mine.get(".".join(labels[i:]))
            if r is not None and r.verified:
                return r
        return None

    # --- operator actions ----------------------------------------------------------------
    def record_name(self, domain: str) -> str:
        label = self.cfg.verify_label.strip(".")
        return f"{label}.{domain}" if label else domain

    async def add(self, tenant: str, domain: str) -> DomainRecord:
        """Register (idempotent: an existing record keeps its token and state)."""
        domain = normalise_domain(domain)
        await self.load()
        old = self._by_tenant.get(tenant, {}).get(domain)
        if old is not None:
            return old
        rec = DomainRecord(tenant, domain, secrets.token_urlsafe(18), self.clock())
        await self._put(rec)
        self._emit("domain_added", rec)
        return rec

    async def remove(self, tenant: str, domain: str) -> bool:
        domain = normalise_domain(domain)
        self._changes += 1
        gone = await self.kv.delete(NS, _key(tenant, domain))
        await self.load()
        if gone and self.events is not None:
            self.events.emit("domain_removed", tenant=tenant, domain=domain)
        return gone

    async def get(self, tenant: str, domain: str) -> DomainRecord:
        domain = normalise_domain(domain)
        await self.load()
        rec = self._by_tenant.get(tenant, {}).get(domain)
        if rec is None:
            raise UnknownDomain(f"tenant {tenant!r} has not registered {domain}")
        return rec

    async def list(self, tenant: str | None = None) -> list[DomainRecord]:
        await self.load()
        tenants = [tenant] if tenant is not None else sorted(self._by_tenant)
        return [r for t in tenants for _, r in sorted(self._by_tenant.get(t, {}).items())]

    async def verify(self, tenant: str, domain: str) -> DomainRecord:
        """Look the TXT record up now (uncached); the record after the check."""
        rec = await self.get(tenant, domain)
        return await self._check(rec)

    # --- checking ------------------------------------------------------------------------
    async def _check(self, rec: DomainRecord) -> DomainRecord:
        name = self.record_name(rec.domain)
        now = self.clock()
        try:
            found = await self.lookup_txt(name)
        except Exception as e:  # temporary: the state stays as it was
            new = replace(rec, checked_at=now, last_error=f"DNS lookup of {name} failed: {e}")
            await self._put(new)
            return new
        want = VERIFY_PREFIX + rec.token
        ok = any(t.strip().strip('"') == want for t in found)
        error = "" if ok else (f"no TXT \"{want}\" at {name}" + (
            f" (found: {'; '.join(found[:3])})" if found else ""))
        new = replace(rec, verified=ok, checked_at=now, last_error=error,
                      verified_at=(rec.verified_at if rec.verified and ok else
                                   now if ok else None))
        await self._put(new)
        if ok and not rec.verified:
            self._emit("domain_verified", new)
        elif rec.verified and not ok:
            self._emit("domain_unverified", new, reason=error)
        return new

    async def recheck(self) -> int:
        """Check every verified domain whose last check is older than the interval."""
        await self.load()
        now = self.clock()
        due = [r for t in self._by_tenant.values() for r in t.values()
               if r.verified and (r.checked_at or 0) + self.cfg.recheck_interval <= now]
        for r in due:
            await self._check(r)
        return len(due)

    async def run(self) -> None:
        """Re-check verified domains forever (a task of the daemon)."""
        pause = min(60.0, self.cfg.recheck_interval)
        while True:
            try:
                await self.recheck()
            except Exception:
                log.exception("sending-domain re-check failed")
            await asyncio.sleep(pause)

    async def _put(self, rec: DomainRecord) -> None:
        self._changes += 1
        await self.kv.put(NS, _key(rec.tenant, rec.domain), json.dumps(rec.as_dict()))
        self._by_tenant.setdefault(rec.tenant, {})[rec.domain] = rec
        self.passed.clear()

    def _emit(self, event: str, rec: DomainRecord, **extra: Any) -> None:
        if self.events is not None:
            self.events.emit(event, tenant=rec.tenant, domain=rec.domain, **extra)
