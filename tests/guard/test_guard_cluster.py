"""Two real nodes on one real Redis ([cluster] redis_url): a sending domain verified through
one node is enforced by the other, and a warm-up day count is one count over both."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter

import redis

from mta.smtp.auth import hash_password
from tests.guard.test_identity_smtp import PW, _cli_json, _try
from tests.integration.test_shaping import ZONES

DB = 9  # a Redis database of this file's own, flushed first


def _toml(url: str) -> str:
    return f"""
[cluster]
redis_url = "{url}"

[tenants.acme]
[users.acme]
tenant = "acme"
password = "{hash_password(PW, ln=10)}"

[[egress.source]]
name = "a"
address = "127.0.0.10"
warmup = [3]
warmup_start = "{dt.datetime.now(dt.UTC).date().isoformat()}"

[[egress.source]]
name = "b"
address = "127.0.0.11"

[egress.pool.default]
sources = {{ a = 100, b = 1 }}
"""


def _view(node) -> int:
    """Messages of source a today as `node` sees them (`mta shaping show`)."""
    proc = node.cli("shaping", "show", "dest.test", "--source", "a", "--json")
    assert proc.returncode == 0, proc.stderr
    return int(json.loads(proc.stdout)["egress"]["sent_today"])


async def _synced(url: str, *nodes) -> None:
    """Until every node has read the shared count (they read it every second)."""
    key = f"mta:policy:kv:#warmup:a:{dt.datetime.now(dt.UTC).date().isoformat()}"
    deadline = time.monotonic() + 20
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        while True:
            total = int(r.get(key) or 0)
            views = [await asyncio.to_thread(_view, n) for n in nodes]
            if all(v == total for v in views):
                return
            assert time.monotonic() < deadline, f"views {views} of the count {total}"
            await asyncio.sleep(0.2)


async def test_two_nodes_share_domains_and_the_warmup_count(mta_factory, dns_server_factory,
                                                              mx_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    zones = {**ZONES, "acme.test": "@ IN TXT \"v=spf1 -all\"\n"}
    dns = dns_server_factory(zones)
    mx = await mx_factory("127.0.0.2")
    a, b = [await asyncio.to_thread(mta_factory, _toml(url), dns=dns.nameserver,
                                    delivery_port=mx_factory.port,
                                    delivery_extra='retry = ["1s"]') for _ in range(2)]

    rc, reg = await asyncio.to_thread(_cli_json, a, "add", "acme", "acme.test")
    await asyncio.to_thread(dns.set_zones, {**zones, "acme.test": (
        f"@ IN TXT \"v=spf1 -all\"\n@ IN TXT \"mta-verify={reg['token']}\"\n")})
    rc, rec = await asyncio.to_thread(_cli_json, a, "verify", "acme", "acme.test")
    assert rc == 0 and rec["verified"]
    # Node b reads the records again within seconds: wait until it refuses another domain.
    deadline = time.monotonic() + 20
    accepted = 0  # messages that got their 250: the MX sees each once
    while True:
        code, text = await asyncio.to_thread(_try, b.smtp_port, "s@bigbank.test",
                                             "s@acme.test")
        if code == 550:
            break
        accepted += 1
        assert time.monotonic() < deadline, "node b never saw the registration"
        await asyncio.sleep(0.2)
    assert "5.7.1" in text and "bigbank.test" in text
    code, _ = await asyncio.to_thread(_try, b.smtp_port, "s@acme.test", "s@acme.test")
    assert code == 250
    accepted += 1

    # Warm-up cap 3 for source a over both nodes (without the shared count each node would
    # send 3 from it): 3 more messages per node, one at a time, each delivered before the next.
    await mx.wait_for_messages(accepted, timeout=30)
    for node in (a, b, a, b, a, b):
        await _synced(url, a, b)
        code, _ = await asyncio.to_thread(_try, node.smtp_port, "s@acme.test", "s@acme.test")
        assert code == 250
        accepted += 1
        await mx.wait_for_messages(accepted, timeout=30)
    assert Counter(m.peer[0] for m in mx.messages)["127.0.0.10"] == 3
