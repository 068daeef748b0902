"""Redis stores for throttles and leases, shared by every worker and node of a cluster.

Each decision is one Lua script, so it is atomic on the Redis server: no two nodes can both
take the last token or the last slot. Times come from the caller (`now`, epoch seconds from
the injected clock), so nodes must be NTP-synchronised; every key carries a TTL so idle
counters and dead holders' leases disappear on their own.

Keys: `{prefix}gcra:{counter key}` (a string holding the TAT) and `{prefix}lease:{key}` (a
sorted set of lease ids scored by expiry).
"""

from __future__ import annotations

from typing import Any

from mta.shaping.rate import Rate
from mta.shaping.throttle import EPSILON, ThrottleState, counter_key, effective, state_of

__all__ = ["RedisLeaseStore", "RedisThrottle"]

# Redis turns Lua numbers into integers, so fractional results travel as strings.
_GCRA = """
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local now, interval, burst, n, eps = tonumber(ARGV[1]), tonumber(ARGV[2]),
    tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if tat < now then tat = now end
local new_tat = tat + interval * n
local wait = new_tat - now - interval * burst
if wait > eps then return string.format('%.17g', wait) end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat),
           'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""

_LEASE_ACQUIRE = """
local now, limit, id, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], expiry, id)
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(expiry) - now) * 1000) + 1000)
return 1
"""

_LEASE_RENEW = """
local now, id, expiry = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local score = redis.call('ZSCORE', KEYS[1], id)
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], id)
  return 0
end
redis.call('ZADD', KEYS[1], expiry, id)
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(expiry) - now) * 1000) + 1000)
return 1
"""

_LEASE_COUNT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


def _f(x: float) -> str:
    return repr(float(x))


class RedisThrottle:
    def __init__(self, client: Any, prefix: str = "mta:shaping:") -> None:
        """`client`: a redis.asyncio.Redis."""
        self._redis = client
        self._prefix = prefix + "gcra:"
        self._script = client.register_script(_GCRA)

    async def try_acquire(self, key: str, rate: Rate, now: float, *, scale: float = 1.0,
                          n: int = 1) -> float:
        interval, burst = effective(rate, scale)
        out = await self._script(keys=[self._prefix + counter_key(key, rate)],
                                 args=[_f(now), _f(interval), burst, n, _f(EPSILON)])
        return float(out)

    async def state(self, key: str, rate: Rate, now: float, *,
                    scale: float = 1.0) -> ThrottleState:
        interval, burst = effective(rate, scale)
        raw = await self._redis.get(self._prefix + counter_key(key, rate))
        return state_of(float(raw) if raw is not None else now, now, interval, burst)


class RedisLeaseStore:
    def __init__(self, client: Any, prefix: str = "mta:shaping:") -> None:
        self._redis = client
        self._prefix = prefix + "lease:"
        self._acquire = client.register_script(_LEASE_ACQUIRE)
        self._renew = client.register_script(_LEASE_RENEW)
        self._count = client.register_script(_LEASE_COUNT)

    async def acquire(self, key: str, limit: int, lease_id: str, ttl: float,
                      now: float) -> bool:
        return bool(await self._acquire(keys=[self._prefix + key],
                                        args=[_f(now), limit, lease_id, _f(now + ttl)]))

    async def renew(self, key: str, lease_id: str, ttl: float, now: float) -> bool:
        return bool(await self._renew(keys=[self._prefix + key],
                                      args=[_f(now), lease_id, _f(now + ttl)]))

    async def release(self, key: str, lease_id: str) -> None:
        await self._redis.zrem(self._prefix + key, lease_id)

    async def count(self, key: str, now: float) -> int:
        return int(await self._count(keys=[self._prefix + key], args=[_f(now)]))
