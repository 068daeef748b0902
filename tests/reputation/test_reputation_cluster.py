"""Two real nodes on one real Redis: neither node alone has a sample large enough, but
their outcomes add up in the shared counters; the state one node moves is what the other
node enforces and shows."""

from __future__ import annotations

import asyncio

import redis

from tests.integration.test_delivery import ZONES
from tests.reputation.test_reputation_smtp import _rep, _send, _toml, _wait_state


async def test_outcomes_on_two_nodes_add_up_and_the_state_is_shared(
        mta_factory, dns_server_factory, mx_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/6"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    for i in range(2):
        mx.script(f"gone{i}@dest.test", "550 5.1.1 no such user")
    extra = _toml() + f'\n[cluster]\nredis_url = "{url}"\n'
    kw = dict(dns=dns.nameserver, delivery_port=mx_factory.port,
              delivery_extra='retry = ["1s"]\nmax_age = "1h"')
    a = await asyncio.to_thread(mta_factory, extra, **kw)
    b = await asyncio.to_thread(mta_factory, extra, **kw)
    for i in range(8):
        assert await asyncio.to_thread(_send, a, "shop", f"ok{i}@dest.test") == 250
    for i in range(2):
        assert await asyncio.to_thread(_send, b, "shop", f"gone{i}@dest.test") == 250
    await mx.wait_for_messages(8, timeout=15)
    r = await _wait_state(a, "shop", "suspended_class")
    assert r["figures"][0]["sample"] == 10, r
    assert (await asyncio.to_thread(_rep, b, "shop"))["state"] == "suspended_class"
    # Node B refuses the class the guard suspended (whichever node moved it), once its
    # one-second policy cache has passed.
    for _ in range(30):
        code = await asyncio.to_thread(_send, b, "shop", "m@dest.test", "marketing")
        if code >= 500:
            break
        await asyncio.sleep(0.2)
    assert code >= 500
    assert await asyncio.to_thread(_send, a, "shop", "t@dest.test") == 250
