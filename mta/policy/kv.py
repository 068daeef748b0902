"""Small keyed records beside the policy state: the reputation guard's sending domains and
IP warm-up day counts live where the policy store lives, so they survive restarts (policy.db)
and are shared by every node (the cluster's Redis).

`kv_for(store)` wraps the engine's store:

    kv = kv_for(engine.store)
    await kv.put("domains", "acme\\0acme.example", json_text)
    await kv.items("domains")                  # {key: value}
    n = await kv.incr("warmup", "a:2026-12-05", 1, ttl=8 * 86400)  # the total after adding

On SQLite the operations run on the store's database thread, in order with its other
writes (table `kv`, migration v3). On Redis a namespace's records are one hash and each
counter one key with its own expiry. Counters and records use separate keys: never `get`
a counter.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol

__all__ = ["MemoryKV", "PolicyKV", "kv_for"]


class PolicyKV(Protocol):
    async def get(self, ns: str, key: str) -> str | None: ...
    async def put(self, ns: str, key: str, value: str) -> None: ...
    async def delete(self, ns: str, key: str) -> bool: ...
    async def items(self, ns: str) -> dict[str, str]: ...
    async def incr(self, ns: str, key: str, n: int, ttl: float) -> int: ...
    async def count(self, ns: str, key: str) -> int: ...
    async def counts(self, ns: str, keys: list[str]) -> list[int]: ...
    async def add_many(self, ns: str, items: list[tuple[str, int, float]]) -> None: ...


def kv_for(store: Any) -> PolicyKV:
    """The keyed records of a PolicyStore (SqliteStore or RedisStore); in memory otherwise."""
    from mta.policy.redis_store import RedisStore
    from mta.policy.sqlite_store import SqliteStore

    if isinstance(store, SqliteStore):
        return SqliteKV(store)
    if isinstance(store, RedisStore):
        return RedisKV(store._redis, store.prefix)
    return MemoryKV()


class MemoryKV:
    """For tests and stores that keep nothing: lives as long as the process."""

    def __init__(self) -> None:
        self._d: dict[tuple[str, str], str] = {}
        self._n: dict[tuple[str, str], tuple[int, float]] = {}

    async def get(self, ns: str, key: str) -> str | None:
        return self._d.get((ns, key))

    async def put(self, ns: str, key: str, value: str) -> None:
        self._d[(ns, key)] = value

    async def delete(self, ns: str, key: str) -> bool:
        return self._d.pop((ns, key), None) is not None

    async def items(self, ns: str) -> dict[str, str]:
        return {k: v for (n, k), v in sorted(self._d.items()) if n == ns}

    async def incr(self, ns: str, key: str, n: int, ttl: float) -> int:
        total = await self.count(ns, key) + n
        self._n[(ns, key)] = (total, time.time() + ttl)
        return total

    async def count(self, ns: str, key: str) -> int:
        total, expires = self._n.get((ns, key), (0, 0.0))
        return total if expires > time.time() else 0

    async def counts(self, ns: str, keys: list[str]) -> list[int]:
        return [await self.count(ns, k) for k in keys]

    async def add_many(self, ns: str, items: list[tuple[str, int, float]]) -> None:
        for key, n, ttl in items:
            await self.incr(ns, key, n, ttl)


class SqliteKV:
    # Counters live in the same table under "#" + namespace, so `items` never lists them.
    def __init__(self, store: Any) -> None:
        self._s = store

    async def get(self, ns: str, key: str) -> str | None:
        row = await self._s._read(lambda c: c.execute(
            "SELECT value FROM kv WHERE ns=? AND key=?", (ns, key)).fetchone())
        return None if row is None else str(row[0])

    async def put(self, ns: str, key: str, value: str) -> None:
        await self._s._call(lambda c: c.execute(
            "INSERT OR REPLACE INTO kv(ns, key, value, expires) VALUES(?,?,?,NULL)",
            (ns, key, value)))

    async def delete(self, ns: str, key: str) -> bool:
        return bool(await self._s._call(lambda c: c.execute(
            "DELETE FROM kv WHERE ns=? AND key=?", (ns, key)).rowcount > 0))

    async def items(self, ns: str) -> dict[str, str]:
        rows = await self._s._read(lambda c: c.execute(
            "SELECT key, value FROM kv WHERE ns=? ORDER BY key", (ns,)).fetchall())
        return {str(r[0]): str(r[1]) for r in rows}

    async def incr(self, ns: str, key: str, n: int, ttl: float) -> int:
        now = time.time()

        def op(c: sqlite3.Connection) -> int:
            c.execute("DELETE FROM kv WHERE ns=? AND expires IS NOT NULL AND expires<=?",
                      ("#" + ns, now))
            row = c.execute(
                "INSERT INTO kv(ns, key, value, expires) VALUES(?,?,?,?) ON CONFLICT(ns, key) "
                "DO UPDATE SET value=CAST(value AS INTEGER)+excluded.value RETURNING value",
                ("#" + ns, key, n, now + ttl)).fetchone()
            return int(row[0])
        return int(await self._s._call(op))

    async def count(self, ns: str, key: str) -> int:
        now = time.time()
        row = await self._s._read(lambda c: c.execute(
            "SELECT value FROM kv WHERE ns=? AND key=? AND (expires IS NULL OR expires>?)",
            ("#" + ns, key, now)).fetchone())
        return 0 if row is None else int(row[0])

    async def counts(self, ns: str, keys: list[str]) -> list[int]:
        """Many counters of one namespace in one read (0 for a missing or expired one)."""
        if not keys:
            return []
        now = time.time()
        rows = await self._s._read(lambda c: c.execute(
            f"SELECT key, value FROM kv WHERE ns=? AND key IN ({','.join('?' * len(keys))}) "
            "AND (expires IS NULL OR expires>?)", ("#" + ns, *keys, now)).fetchall())
        found = {str(k): int(v) for k, v in rows}
        return [found.get(k, 0) for k in keys]

    async def add_many(self, ns: str, items: list[tuple[str, int, float]]) -> None:
        """(key, n, ttl) increments in one trip to the database thread."""
        if not items:
            return
        now = time.time()

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM kv WHERE ns=? AND expires IS NOT NULL AND expires<=?",
                      ("#" + ns, now))
            c.executemany(
                "INSERT INTO kv(ns, key, value, expires) VALUES(?,?,?,?) ON CONFLICT(ns, key) "
                "DO UPDATE SET value=CAST(value AS INTEGER)+excluded.value, "
                "expires=excluded.expires",
                [("#" + ns, key, n, now + ttl) for key, n, ttl in items])
        await self._s._call(op)


class RedisKV:
    def __init__(self, client: Any, prefix: str) -> None:
        self._r = client
        self._p = prefix + "kv:"

    async def get(self, ns: str, key: str) -> str | None:
        v = await self._r.hget(self._p + ns, key)
        return None if v is None else str(v)

    async def put(self, ns: str, key: str, value: str) -> None:
        await self._r.hset(self._p + ns, key, value)

    async def delete(self, ns: str, key: str) -> bool:
        return bool(await self._r.hdel(self._p + ns, key))

    async def items(self, ns: str) -> dict[str, str]:
        d = await self._r.hgetall(self._p + ns)
        return {str(k): str(v) for k, v in sorted(d.items())}

    async def incr(self, ns: str, key: str, n: int, ttl: float) -> int:
        k = f"{self._p}#{ns}:{key}"
        async with self._r.pipeline(transaction=True) as p:
            p.incrby(k, n)
            p.expire(k, max(1, int(ttl)))
            total, _ = await p.execute()
        return int(total)

    async def count(self, ns: str, key: str) -> int:
        v = await self._r.get(f"{self._p}#{ns}:{key}")
        return 0 if v is None else int(v)

    async def counts(self, ns: str, keys: list[str]) -> list[int]:
        if not keys:
            return []
        values = await self._r.mget([f"{self._p}#{ns}:{k}" for k in keys])
        return [0 if v is None else int(v) for v in values]

    async def add_many(self, ns: str, items: list[tuple[str, int, float]]) -> None:
        if not items:
            return
        async with self._r.pipeline(transaction=False) as p:
            for key, n, ttl in items:
                k = f"{self._p}#{ns}:{key}"
                p.incrby(k, n)
                p.expire(k, max(1, int(ttl)))
            await p.execute()
