"""Suppression lists in the cluster's Redis ([cluster] redis_url): every node reads and
writes the same keys, so an entry added on one node applies on every other at its next RCPT.

Keys, under `prefix` (default "mta:policy:sup:", beside the policy store's own keys):

    e:{scope}        hash: address -> "reason|expires|created|source" (expires "" = never)
    z:{scope}        zset, score 0: the scope's addresses in order (paged listing)
    scopes           set: every scope that has had an entry
    strike:{scope}|{address}   string "n|since": hard bounces counted toward suppression
    log              stream: the addresses each add wrote, {g: sequence, a: addresses}
    log:seq          the last sequence number given

Every node keeps a filter of the addresses on any list (mta/suppress/bloom.py), filled from
the hashes at start and kept current by following `log` (XREAD, `additions`): a recipient
on no list costs a probe in memory, not a round trip. The log keeps the last ~10,000 adds;
a node that falls further behind (or finds the sequence broken: Redis lost its data, an
erasure emptied the log) sees a gap in `g` and fills its filter again.

The Lua scripts (check.lua, add.lua, strike.lua beside this module) are loaded with SCRIPT
LOAD and run by EVALSHA (redis-py's Script). Times are the caller's `now` (the policy
clock), kept in the values as Python's repr of the float: Lua only compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from mta.suppress.entry import Entry

__all__ = ["DEFAULT_PREFIX", "RedisBackend"]

DEFAULT_PREFIX = "mta:policy:sup:"
# Entries per EVALSHA of an import: large enough to amortise the round trip, small enough
# not to hold the Redis server for long (other nodes' RCPT checks wait behind a script).
_BATCH = 2_000
_PIPELINE = 16  # scripts per pipeline round trip
_SCAN = 5_000  # hash fields per HSCAN when a filter is filled


def _script(name: str) -> str:
    return (resources.files("mta.suppress") / name).read_text(encoding="utf-8")


def _value(e: Entry) -> str:
    expires = "" if e.expires_at is None else repr(float(e.expires_at))
    return f"{e.reason}|{expires}|{float(e.created_at)!r}|{e.source}"


def _entry(scope: str, address: str, value: str) -> Entry:
    reason, expires, created, source = value.split("|", 3)
    return Entry(scope, address, reason, source, float(created),
                 float(expires) if expires else None)


class RedisBackend:
    shared = True  # other nodes write too: every RCPT asks Redis

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._redis = client
        self._check = client.register_script(_script("check.lua"))
        self._add = client.register_script(_script("add.lua"))
        self._strike = client.register_script(_script("strike.lua"))
        self._forget_log = client.register_script(_script("forget_log.lua"))

    @classmethod
    async def open(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisBackend:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, decode_responses=True, socket_timeout=10,
                                   socket_connect_timeout=5)
        try:
            await client.ping()
        except Exception as e:
            await client.aclose()
            raise ConnectionError(f"[cluster] redis_url {url}: {e}") from None
        return cls(client, prefix)

    async def aclose(self) -> None:
        await self._redis.aclose()

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def scopes(self) -> set[str]:
        return set(await self._redis.smembers(self._k("scopes")))

    async def find(self, scopes: Sequence[str], targets: Sequence[str],
                   now: float) -> list[Entry]:
        hit = await self._check(keys=[self._k(f"e:{s}") for s in scopes],
                                args=[repr(float(now)), *targets])
        if not hit:
            return []
        i, address, value = hit
        return [_entry(scopes[int(i) - 1], address, value)]

    async def upsert(self, entries: Sequence[Entry], replace: bool = True) -> int:
        by_scope: dict[str, list[Entry]] = {}
        for e in entries:
            by_scope.setdefault(e.scope, []).append(e)
        calls: list[tuple[list[str], list[str]]] = []
        for scope, es in by_scope.items():
            keys = [self._k(f"e:{scope}"), self._k(f"z:{scope}"), self._k("scopes"),
                    self._k("log"), self._k("log:seq")]
            for i in range(0, len(es), _BATCH):
                args = [scope, "1" if replace else "0"]
                for e in es[i:i + _BATCH]:
                    args += (e.address, _value(e))
                calls.append((keys, args))
        n = 0
        # A pipeline of EVALSHAs: one round trip per _PIPELINE batches (redis-py loads the
        # script before it sends the pipeline).
        for i in range(0, len(calls), _PIPELINE):
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls[i:i + _PIPELINE]:
                await self._add(keys=keys, args=args, client=pipe)
            n += sum(int(x) for x in await pipe.execute())
        return n

    async def remove(self, scope: str, address: str) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._k(f"e:{scope}"), address)
        pipe.zrem(self._k(f"z:{scope}"), address)
        removed, _ = await pipe.execute()
        return bool(removed)

    async def page(self, scope: str | None, after: tuple[str, str] | None, limit: int,
                   now: float) -> list[Entry]:
        scopes = [scope] if scope is not None else sorted(await self.scopes())
        out: list[Entry] = []
        for s in scopes:
            if after is not None and s < after[0]:
                continue
            start = f"({after[1]}" if after is not None and s == after[0] else "-"
            while len(out) < limit:
                want = limit - len(out)
                addrs = await self._redis.zrangebylex(self._k(f"z:{s}"), start, "+", 0, want)
                if not addrs:
                    break
                values = await self._redis.hmget(self._k(f"e:{s}"), addrs)
                for a, v in zip(addrs, values, strict=True):
                    if v is not None:
                        e = _entry(s, a, v)
                        if e.active(now):
                            out.append(e)
                start = f"({addrs[-1]}"
                if len(addrs) < want:
                    break
            if len(out) >= limit:
                break
        return out

    async def forget(self, scopes: Sequence[str], address: str) -> None:
        """Drop the address's strikes in `scopes` and empty the additions log, which may
        name it (an erasure, mta.gdpr)."""
        await self._redis.delete(*[self._k(f"strike:{s}|{address}") for s in scopes])
        await self._forget_log(keys=[self._k("log"), self._k("log:seq")])

    # --- the address filter (mta.suppress.service) ----------------------------------------
    async def count(self) -> int:
        """Entries on every list (a filter's capacity)."""
        pipe = self._redis.pipeline(transaction=False)
        for s in await self.scopes():
            pipe.hlen(self._k(f"e:{s}"))
        return sum(int(n) for n in await pipe.execute())

    async def fill(self, bloom: Any) -> None:
        """Every address on any list into `bloom`."""
        for s in await self.scopes():
            cursor = 0
            while True:
                cursor, fields = await self._redis.hscan(self._k(f"e:{s}"), cursor,
                                                          count=_SCAN)
                bloom.update(fields)
                if not cursor:
                    break

    async def position(self) -> tuple[str, int]:
        """Where the additions log stands (its last id, the last sequence number), read
        before a filter is filled: what is added meanwhile is read again from here."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.xrevrange(self._k("log"), "+", "-", count=1)
        pipe.get(self._k("log:seq"))
        last, seq = await pipe.execute()
        return (last[0][0] if last else "0-0"), int(seq or 0)

    async def additions(self, after: str, block: float
                        ) -> list[tuple[str, int, list[str]]]:
        """The adds logged after id `after` as (id, sequence, addresses), waiting up to
        `block` seconds for one."""
        got = await self._redis.xread({self._k("log"): after}, count=100,
                                      block=int(block * 1000))
        return [(i, int(f["g"]), f["a"].split("\n") if f["a"] else [])
                for _, entries in got for i, f in entries]

    async def strike(self, scope: str, address: str, now: float, window: float) -> int:
        return int(await self._strike(keys=[self._k(f"strike:{scope}|{address}")],
                                      args=[repr(float(now)), repr(float(window))]))

    async def prune(self, now: float) -> int:
        return 0  # expired entries are skipped by every read; a scope's hash keeps them
