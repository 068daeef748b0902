"""The Redis backend's Lua scripts against a real Redis: lookup order, expiry on the policy
clock, an automatic entry never shortening a longer one, an import run twice, strikes."""

from __future__ import annotations

import redis.asyncio as aioredis

from mta.config.suppression import SuppressionConfig
from mta.policy.clock import ManualClock
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
