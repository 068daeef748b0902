"""Warm-up day counts outlive a restart: the real daemon sends part of a source's daily cap,
is killed (-9) and started again on the same spool; the rest of the day it sends only what
is left of the cap, the others go from the source without a warm-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

from tests.integration.test_shaping import ZONES, _send

SOURCES = f"""
[[egress.source]]
name = "a"
address = "127.0.0.10"
warmup = [4, 50]
warmup_start = "{dt.datetime.now(dt.UTC).date().isoformat()}"

[[egress.source]]
name = "b"
address = "127.0.0.11"

# b takes a message only once a is at its cap (the pick is weighted at random: at 100:1,
# one in fifty runs sent a message from b before the restart).
[egress.pool.default]
sources = {{ a = 1000000, b = 1 }}
"""
DELIVERY = 'retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"\nidle_timeout = "1s"'


async def test_a_restart_mid_day_keeps_the_warmup_count(mta_factory, dns_server_factory,
                                                         mx_factory):
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, SOURCES, dns=dns.nameserver,
                                  delivery_port=mx_factory.port, delivery_extra=DELIVERY)
    await _send(mta, ["r0@other.test", "r1@other.test"], "before")
    await mx.wait_for_messages(2, timeout=30)
    assert Counter(m.peer[0] for m in mx.messages) == {"127.0.0.10": 2}
    # Recorded as delivered (the event follows the spool's record): the kill must not
    # bring them back for a second try.
    deadline = time.monotonic() + 30
    while len([e for e in mta.events() if e["event"] == "delivered"]) < 2:
        assert time.monotonic() < deadline, "no delivered events"
        await asyncio.sleep(0.1)

    await asyncio.to_thread(mta.kill)
    await asyncio.to_thread(mta.start)
    await _send(mta, [f"r{i}@other.test" for i in range(2, 8)], "after")
    await mx.wait_for_messages(8, timeout=30)
    # Without the stored count the restarted daemon would send 4 more from a (6 in all).
    assert Counter(m.peer[0] for m in mx.messages) == {"127.0.0.10": 4, "127.0.0.11": 4}
