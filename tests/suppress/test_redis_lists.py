"""The Redis backend's Lua scripts against a real Redis: lookup order, expiry on the policy
clock, an automatic entry never shortening a longer one, an import run twice, strikes; and
each node's address filter, following the additions log every node writes."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from pathlib import Path

import redis.asyncio as aioredis

from mta.config import Config
from mta.config.sections import ClusterConfig
from mta.config.suppression import SuppressionConfig
from mta.policy.clock import ManualClock
from mta.policy.engine import PolicyTxn
from mta.policy.tenants import Tenant
from mta.suppress import GLOBAL, Suppressions
from mta.suppress.redis import RedisBackend

T0 = 1_800_000_000.0


async def _lists(redis_url: str, **cfg) -> Suppressions:
    url = redis_url.rsplit("/", 1)[0] + "/14"
    client = aioredis.from_url(url, decode_responses=True)
    await client.flushdb()
    return Suppressions(RedisBackend(client), SuppressionConfig(**cfg), ManualClock(T0))


async def test_lookup_expiry_and_longer_entries_win(redis_url):
    s = await _lists(redis_url)
    try:
        await s.add(s.entry("shop", "c@dest.test", "complaint"))
        await s.record("bounced", "shop", "c@dest.test", "q1")  # shorter: ignored
        await s.record("bounced", "shop", "b@dest.test", "q2")
        await s.add(s.entry(GLOBAL, "@dest.test", "manual", expires_at=T0 + 10))
        hit = await s.check(["sub", "shop", GLOBAL], "C@dest.test")
        assert (hit.scope, hit.reason, hit.expires_at) == ("shop", "complaint", None)
        assert (await s.check(["other", GLOBAL], "z@dest.test")).scope == GLOBAL
        s.clock.advance(10)
        assert await s.check(["other", GLOBAL], "z@dest.test") is None
        s.clock.advance(30 * 86400)
        assert await s.check(["shop"], "b@dest.test") is None  # the hard bounce expired
        assert await s.check(["shop"], "c@dest.test") is not None
        page, _ = await s.list("shop")
        assert [e.address for e in page] == ["c@dest.test"]
        first = s.entry("x", "i@dest.test", "import")
        await s.import_entries([first])
        s.clock.advance(5)
        await s.import_entries([s.entry("x", "i@dest.test", "import")])
        [again], _ = await s.list("x")
        assert again.created_at == first.created_at  # importing twice changes nothing
        assert await s.remove("x", "I@dest.test") and not await s.remove("x", "i@dest.test")
    finally:
        await s.aclose()


async def test_strikes_count_within_the_window(redis_url):
    s = await _lists(redis_url, hard_bounce_count=2, hard_bounce_window=60)
    try:
        assert await s.record("bounced", "shop", "x@dest.test") is None
        s.clock.advance(61)
        assert await s.record("bounced", "shop", "x@dest.test") is None
        s.clock.advance(30)
        assert (await s.record("bounced", "shop", "x@dest.test")).reason == "hard_bounce"
    finally:
        await s.aclose()


async def _node(url: str, state: Path) -> Suppressions:
    """One node's lists on the shared Redis, as the daemon opens them."""
    cfg = dataclasses.replace(Config(), cluster=ClusterConfig(redis_url=url))
    return await Suppressions.open(cfg, state, clock=ManualClock(T0))


async def _screen(s: Suppressions, rcpt: str) -> tuple[bool, object]:
    """(looked up in Redis, the answer) of RCPT `rcpt` from tenant shop."""
    answer = s.screen_rcpt(PolicyTxn("shop", "a@shop.test", chain=(Tenant(name="shop"),)),
                           rcpt, lambda: "charged")
    if inspect.isawaitable(answer):
        return True, await answer
    return False, answer


async def _within(ask, want, seconds: float = 3.0) -> bool:
    """Whether `await ask()` answers `want` within `seconds` (a node reads the log, or
    fills its filter, on its own time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await ask() == want:
            return True
        await asyncio.sleep(0.01)
    return False


async def _refused_within(s: Suppressions, rcpt: str) -> bool:
    async def code() -> object:
        return getattr((await _screen(s, rcpt))[1], "code", None)
    return await _within(code, 550)


async def test_each_node_follows_every_add_and_asks_redis_only_for_listed_addresses(
        redis_url, tmp_path):
    url = redis_url.rsplit("/", 1)[0] + "/52"
    raw = aioredis.from_url(url, decode_responses=True)
    await raw.flushdb()
    a = await _node(url, tmp_path / "a")
    await a.add(a.entry("shop", "old@dest.test", "complaint"))
    b = await _node(url, tmp_path / "b")  # fills its filter from the lists
    try:
        assert (await _screen(b, "old@dest.test"))[1].code == 550
        await raw.config_resetstat()
        for i in range(50):  # on no list: answered from memory, no script run
            assert await _screen(b, f"clean{i}@dest.test") == (False, "charged")
        assert "cmdstat_evalsha" not in await raw.info("commandstats")
        await a.add(a.entry("shop", "new@dest.test", "unsubscribe"))
        assert await _refused_within(b, "new@dest.test")  # read from the additions log
        # Redis loses its data and gets back entries the log never carried (an old
        # snapshot): the next add breaks the sequence, and b fills its filter again.
        await raw.flushdb()
        await raw.hset("mta:policy:sup:e:shop", "restored@dest.test", f"manual||{T0!r}|")
        await raw.sadd("mta:policy:sup:scopes", "shop")
        await a.add(a.entry("shop", "after@dest.test", "manual"))
        assert await _refused_within(b, "restored@dest.test")
        assert await _refused_within(b, "after@dest.test")
        # Looked up meanwhile; from memory again once the filter is filled.
        assert await _within(lambda: _screen(b, "clean0@dest.test"), (False, "charged"))
        assert (await _screen(b, "restored@dest.test"))[1].code == 550
    finally:
        await a.aclose()
        await b.aclose()
        await raw.aclose()
