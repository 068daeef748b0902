"""Two real nodes on one real Redis: an endpoint added through node A is posted to by node
B as well (the endpoints live in the shared store), and removing it on B stops A."""

from __future__ import annotations

import asyncio

import redis

from tests.support.receiver import WebhookReceiver
from tests.webhooks.test_webhooks import FAST, _add, _send


async def test_an_endpoint_added_on_one_node_is_used_by_every_node(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/7"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    cluster = FAST + f'\n[cluster]\nredis_url = "{url}"\n'
    rx = await WebhookReceiver.start()
    try:
        a = await asyncio.to_thread(mta_factory, cluster)
        b = await asyncio.to_thread(mta_factory, cluster)
        ep = await asyncio.to_thread(_add, a, rx, "--events", "received")
        await asyncio.sleep(6)  # B re-reads the endpoints every 5 s
        await asyncio.to_thread(_send, a, 2, "from-a@dest.test")
        await asyncio.to_thread(_send, b, 3, "from-b@dest.test")
        got = await rx.wait_events(lambda e: e["event"] == "received", 5)
        assert sorted(e["recipient"] for e in got) == ["from-a@dest.test"] * 2 + [
            "from-b@dest.test"] * 3
        out = await asyncio.to_thread(b.cli, "webhooks", "remove", ep)
        assert out.returncode == 0, out.stderr
        await asyncio.sleep(6)
        before = len(rx.events)
        await asyncio.to_thread(_send, a, 2, "late@dest.test")
        await asyncio.sleep(1.5)
        assert len(rx.events) == before
        added = a.wait_events(lambda e: e["event"] == "webhook_added")
        assert added and added[0]["endpoint"] == ep and added[0]["by"] == "operator"
    finally:
        await rx.stop()
