"""MTA-STS policy discovery (RFC 8461 3, 5.1): TXT record, HTTPS fetch, cache, refresh.

Owns `MtaSts.policy_for(domain)`, the policy a delivery to `domain` must apply now, or
None. Per question:
- `_mta-sts.<domain>` TXT through mta's resolver (which caches it to its TTL);
- a cached, unexpired policy fetched under the same id is used as it is; near its expiry
  (past half its max_age) a background fetch renews it;
- a new id with a cached policy: that policy still applies while a background fetch
  gets the new one (RFC 8461 5.1: a failed refresh keeps the cached policy);
- no cached policy: the fetch is waited for (one per domain at a time); when it fails,
  the domain has no policy (RFC 8461 5.1), and the next try waits `fetch_retry`;
- no TXT record (or a DNS failure, or a malformed record): the cached policy while it is
  valid (RFC 8461 3.1: a record can be stripped by an attacker), else none.
Mode "none" is cached like the others and means no policy. Fetches and their failures are
events (`mta_sts`), once per fetch, not per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mta.dns import DnsTemporaryError, Resolver
from mta.tls.cache import CachedPolicy, PolicyCache
from mta.tls.fetch import PolicyFetcher
from mta.tls.policy import StsPolicy, StsRecord, StsSyntaxError, parse_policy, select_record

__all__ = ["CACHE_FILE", "MtaSts"]

log = logging.getLogger("mta.tls")

CACHE_FILE = "mta-sts-policies.json"


class MtaSts:
    def __init__(self, resolver: Resolver, fetcher: PolicyFetcher, state_dir: Path, *,
                 retry: float = 300.0, clock: Callable[[], float] = time.time,
                 emit: Callable[..., Any] | None = None) -> None:
        self.resolver = resolver
        self.fetcher = fetcher
        self.cache = PolicyCache(Path(state_dir) / CACHE_FILE)
        self.retry = retry
        self.clock = clock
        self.emit = emit  # EventLog.emit
        self._fetching: dict[str, asyncio.Future[CachedPolicy | None]] = {}
        self._retry_at: dict[str, float] = {}  # domain -> no fetch before (after a failure)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[str] = set()  # background fetches spawned, maybe not started

    async def start(self) -> None:
        n = await self.cache.load(self.clock())
        if n:
            log.info("MTA-STS: %d cached polic%s", n, "y" if n == 1 else "ies")

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.cache.flush()
        await self.fetcher.aclose()

    def cached(self, domain: str) -> StsPolicy | None:
        """The cached policy in force, without any lookup (for explain)."""
        entry = self.cache.get(domain)
        if entry is None or not entry.valid(self.clock()) or entry.policy.mode == "none":
            return None
        return entry.policy

    async def policy_for(self, domain: str) -> StsPolicy | None:
        domain = domain.lower().rstrip(".")
        record = await self._record(domain)
        # The cache is read after the lookup: a refresh may have finished meanwhile.
        now = self.clock()
        entry = self.cache.get(domain)
        if entry is not None and not entry.valid(now):
            entry = None
        if record is None:
            return _applied(entry)
        if entry is not None:
            half_life = entry.fetched_at + entry.policy.max_age / 2
            if entry.id != record.id or now >= half_life:
                self._refresh_later(domain, record)
            return _applied(entry)
        return _applied(await self._fetch(domain, record))

    # --- internals ---------------------------------------------------------------------
    async def _record(self, domain: str) -> StsRecord | None:
        try:
            return select_record(await self.resolver.resolve_txt(f"_mta-sts.{domain}"))
        except DnsTemporaryError:
            return None
        except StsSyntaxError as e:
            log.debug("MTA-STS: _mta-sts.%s: %s", domain, e)
            return None

    def _refresh_later(self, domain: str, record: StsRecord) -> None:
        if domain in self._fetching or self._retry_at.get(domain, 0.0) > self.clock():
            return
        if domain in self._refreshing:
            return
        self._refreshing.add(domain)
        task = asyncio.get_running_loop().create_task(self._fetch(domain, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._refreshing.discard(domain))

    async def _fetch(self, domain: str, record: StsRecord) -> CachedPolicy | None:
        """Fetch, parse and cache the policy (one fetch per domain at a time)."""
        running = self._fetching.get(domain)
        if running is not None:
            return await asyncio.shield(running)
        if self._retry_at.get(domain, 0.0) > self.clock():
            return None
        future: asyncio.Future[CachedPolicy | None] = \
            asyncio.get_running_loop().create_future()
        self._fetching[domain] = future
        try:
            result = await self._fetch_once(domain, record)
            future.set_result(result)
            return result
        except BaseException as e:
            future.set_exception(e)
            with contextlib.suppress(BaseException):
                future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._fetching.pop(domain, None)

    async def _fetch_once(self, domain: str, record: StsRecord) -> CachedPolicy | None:
        try:
            policy = parse_policy(await self.fetcher.fetch(domain))
        except Exception as e:  # FetchError, StsSyntaxError; anything else is no policy too
            self._retry_at[domain] = self.clock() + self.retry
            log.info("MTA-STS: no policy for %s (id %s): %s", domain, record.id, e)
            self._event(domain, "failed", id=record.id, detail=str(e))
            return None
        now = self.clock()
        self._retry_at.pop(domain, None)
        entry = CachedPolicy(domain, record.id, policy, now, now + policy.max_age)
        self.cache.put(entry)
        self._event(domain, "fetched", id=record.id, mode=policy.mode,
                    mx=list(policy.mx), max_age=policy.max_age)
        return entry

    def _event(self, domain: str, outcome: str, **fields: Any) -> None:
        if self.emit is not None:
            self.emit("mta_sts", domain=domain, outcome=outcome, **fields)


def _applied(entry: CachedPolicy | None) -> StsPolicy | None:
    if entry is None or entry.policy.mode == "none":
        return None
    return entry.policy
