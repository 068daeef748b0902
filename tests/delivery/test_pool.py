"""Connection pools per (source, site) against real MX servers on loopback addresses."""

import asyncio
import time

import pytest

from mta.delivery.client import ClientSettings
from mta.delivery.pool import ConnectionPool, MxHost, SiteUnavailable
from mta.queue.envelope import Recipient
from tests.support.mx import DROP

SETTINGS = ClientSettings(ehlo_name="client.test", connect_timeout=2, greeting_timeout=2,
                          command_timeout=2, data_timeout=2)
BODY = b"Subject: pool\r\n\r\nbody\r\n"


def site(*hosts):
    """site(("mx1", "127.0.0.2"), ("mx2", "127.0.0.3", "127.0.0.4")) in preference order."""
    return [MxHost(h[0], tuple(h[1:])) for h in hosts]


def make_pool(port, hosts, **kw):
    kw.setdefault("idle_timeout", 5)
    return ConnectionPool(hosts, SETTINGS, port=port, **kw)


async def send_one(pool, rcpt="a@x.test"):
    async with pool.lease() as client:
        res = await client.send("s@a.test", [Recipient(rcpt)], BODY)
    return res.per_recipient[0]


async def test_connections_are_reused_across_leases(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")))
    for _ in range(5):
        assert (await send_one(pool)).code == 250
    assert len(mx.connections) == 1 and len(mx.messages) == 5
    assert pool.connects == 1 and pool.idle_count == 1
    await pool.aclose()
    await mx.wait_for_idle()
    assert mx.commands[-1] == "QUIT"  # RFC 5321 4.1.1.10: a polite goodbye


async def test_max_deliveries_per_connection_retires_the_connection(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), max_deliveries_per_connection=3)
    for i in range(7):
        assert (await send_one(pool, f"r{i}@x.test")).code == 250
    await pool.aclose()
    await mx.wait_for_idle()
    per_conn = {}
    for m in mx.messages:
        per_conn[m.peer] = per_conn.get(m.peer, 0) + 1
    assert sorted(per_conn.values()) == [1, 3, 3]


async def test_rfc5321_5_1_421_greeting_moves_to_the_next_mx(mx_factory):
    mx1 = await mx_factory("127.0.0.2", greeting="421 4.3.2 too busy")
    mx2 = await mx_factory("127.0.0.3")
    pool = make_pool(mx1.port, site(("mx1", "127.0.0.2"), ("mx2", "127.0.0.3")))
    assert (await send_one(pool)).code == 250
    assert len(mx1.connections) == 1 and len(mx2.messages) == 1
    (why,) = pool.last_attempts
    assert (why.host, why.address, str(why.reply)) == ("mx1", "127.0.0.2", "421 4.3.2 too busy")
    await pool.aclose()


async def test_connect_failure_moves_to_the_next_address_of_the_same_mx(mx_factory):
    mx = await mx_factory("127.0.0.3")  # nothing listens on 127.0.0.2 at this port
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2", "127.0.0.3")))
    assert (await send_one(pool)).code == 250
    assert pool.last_attempts[0].reply.enhanced == "4.4.1"
    await pool.aclose()


async def test_every_mx_failing_raises_site_unavailable_with_every_reason(mx_factory):
    mx1 = await mx_factory("127.0.0.2", greeting="421 4.3.2 too busy")
    pool = make_pool(mx1.port, site(("mx1", "127.0.0.2"), ("mx2", "127.0.0.3")))
    with pytest.raises(SiteUnavailable) as e:
        async with pool.lease():
            pass
    assert [a.reply.enhanced for a in e.value.attempts] == ["4.3.2", "4.4.1"]
    # What mx1 said, not that mx2 (a backup that is down) could not be reached.
    assert str(e.value.reply) == "421 4.3.2 too busy" and e.value.reply.is_transient
    assert pool.open_count == 0
    await pool.aclose()


async def test_every_mx_unreachable_reports_the_last_connect_failure(mx_factory):
    mx = await mx_factory("127.0.0.4")  # only to learn a port where 127.0.0.2/.3 are closed
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2"), ("mx2", "127.0.0.3")))
    with pytest.raises(SiteUnavailable) as e:
        await send_one(pool)
    assert e.value.reply.enhanced == "4.4.1" and "127.0.0.3" in e.value.reply.text
    await pool.aclose()


async def test_connection_limit_bounds_concurrent_sessions(mx_factory):
    mx = await mx_factory("127.0.0.2", delay=0.05)
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), connection_limit=2)
    async with asyncio.timeout(10):
        replies = await asyncio.gather(*(send_one(pool, f"r{i}@x.test") for i in range(6)))
    assert [r.code for r in replies] == [250] * 6
    assert mx.max_concurrent == 2 and len(mx.connections) == 2
    await pool.aclose()


async def test_broken_connection_is_not_reused(mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("drop@x.test", DROP)
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")))
    assert (await send_one(pool, "drop@x.test")).enhanced == "4.4.2"
    assert pool.open_count == 0
    assert (await send_one(pool)).code == 250
    assert len(mx.connections) == 2
    await pool.aclose()


async def test_exception_inside_the_lease_discards_the_connection(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")))
    with pytest.raises(RuntimeError):
        async with pool.lease():
            raise RuntimeError("dispatcher bug")
    assert pool.open_count == 0
    await mx.wait_for_idle()
    await pool.aclose()


async def test_idle_connections_close_after_idle_timeout(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), idle_timeout=0.2)
    await send_one(pool)
    t0 = time.monotonic()
    await mx.wait_for_idle(timeout=3)
    assert 0.15 < time.monotonic() - t0 < 2.0  # 0.2s idle timeout, generous slack for CI
    assert pool.open_count == 0
    await pool.aclose()


async def test_each_idle_session_closes_idle_timeout_after_its_own_release(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), idle_timeout=0.5)
    first, second = pool.lease(), pool.lease()
    await first.__aenter__()
    await second.__aenter__()  # two sessions at once
    await first.__aexit__(None, None, None)
    t0 = time.monotonic()
    await asyncio.sleep(0.4)
    await second.__aexit__(None, None, None)  # idle 0.4 s after the first
    assert pool.idle_count == 2
    while pool.idle_count == 2 and time.monotonic() - t0 < 3:
        await asyncio.sleep(0.01)
    assert pool.idle_count == 1 and 0.45 < time.monotonic() - t0 < 0.85  # the first only
    while pool.idle_count and time.monotonic() - t0 < 3:
        await asyncio.sleep(0.01)
    assert pool.open_count == 0 and 0.85 < time.monotonic() - t0 < 3
    await pool.aclose()


async def test_idle_connection_closed_by_the_server_is_replaced(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")))
    await send_one(pool)
    mx.connections[0].transport.abort()  # the server hangs up while we are idle
    await asyncio.sleep(0.05)
    assert (await send_one(pool)).code == 250
    assert len(mx.connections) == 2
    await pool.aclose()


async def test_source_address_of_the_pool_is_what_the_server_sees(mx_factory):
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), source="127.0.0.7")
    await send_one(pool)
    assert mx.connections[0].peer[0] == "127.0.0.7"
    await pool.aclose()


async def test_renew_retires_idle_and_busy_sessions_so_the_next_uses_a_new_one(mx_factory):
    """A reload moved the pool to another source address: sessions opened from the old one
    (idle now, or busy and released later) carry no more messages."""
    mx = await mx_factory("127.0.0.2")
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), source="127.0.0.7")
    await send_one(pool)  # one idle session from .7
    async with pool.lease() as busy:
        pool.source = "127.0.0.8"
        pool.renew()
        assert pool.idle_count == 0
        await busy.send("s@a.test", [Recipient("b@x.test")], BODY)
    assert pool.idle_count == 0  # the busy one was retired on release too
    await send_one(pool, "c@x.test")
    assert [m.peer[0] for m in mx.messages] == ["127.0.0.7", "127.0.0.7", "127.0.0.8"]
    await pool.aclose()


async def test_rfc7435_opportunistic_tls_failure_falls_back_to_the_clear(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=True, tls_broken=True)
    pool = make_pool(mx.port, site(("mx1", "127.0.0.2")), max_deliveries_per_connection=1)
    assert (await send_one(pool)).code == 250
    assert pool.last_attempts[0].reply.enhanced == "4.7.5"
    assert not mx.messages[0].tls
    # remembered: the next connection does not try the broken handshake again
    assert (await send_one(pool)).code == 250
    assert mx.commands.count("STARTTLS") == 1
    await pool.aclose()


async def test_required_tls_failure_does_not_fall_back(mx_factory):
    mx = await mx_factory("127.0.0.2", starttls=True, tls_broken=True)
    settings = ClientSettings(ehlo_name="c.test", tls="required", command_timeout=2)
    pool = ConnectionPool(site(("mx1", "127.0.0.2")), settings, port=mx.port)
    with pytest.raises(SiteUnavailable) as e:
        await send_one(pool)
    assert e.value.reply.enhanced == "4.7.5" and mx.messages == []
    await pool.aclose()
