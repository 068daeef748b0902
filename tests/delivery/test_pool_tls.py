"""Connection pools under a TLS requirement (mta.tls: MTA-STS enforce/testing), against
real MX servers on loopback that present certificates from a test CA."""

import dataclasses

from mta.delivery.client import ClientSettings
from mta.delivery.pool import ConnectionPool, MxHost, SiteUnavailable
from mta.queue.envelope import Recipient
from mta.tls import StsPolicy, choose
from tests.support.tls import TestCA

SETTINGS = ClientSettings(ehlo_name="client.test", connect_timeout=2, greeting_timeout=2,
                          command_timeout=2, data_timeout=2)
BODY = b"Subject: sts\r\n\r\nbody\r\n"
ENFORCE = choose("a.test", "opportunistic", StsPolicy("enforce", 86400, ("mx.a.test",)))
TESTING = choose("a.test", "opportunistic", StsPolicy("testing", 86400, ("mx.a.test",)))


async def send(pool, req=None):
    async with pool.lease(req) as client:
        res = await client.send("s@b.test", [Recipient("r@a.test")], BODY)
        return res.per_recipient[0], client


def make_pool(ca, port, *hosts, **kw):
    settings = dataclasses.replace(SETTINGS, tls_ca_file=str(ca.ca_file))
    return ConnectionPool([MxHost(n, (a,)) for n, a in hosts], settings, port=port,
                          idle_timeout=5, **kw)


async def test_enforce_reuses_only_verified_sessions_and_frees_the_slot(tmp_path, mx_factory):
    ca = TestCA(tmp_path)
    mx = await mx_factory("127.0.0.2", starttls=True,
                          tls_context=ca.server_context("mx.a.test"))
    pool = make_pool(ca, mx.port, ("mx.a.test", "127.0.0.2"), connection_limit=1)
    reply, client = await send(pool)  # opportunistic: encrypted, not verified
    assert reply.code == 250 and client.tls_active and not client.tls_verified
    # At the limit, the idle unverified session gives its slot to the enforce delivery.
    reply, client = await send(pool, ENFORCE)
    assert reply.code == 250 and client.tls_verified
    await mx.wait_for_messages(2)
    assert len(mx.connections) == 2 and pool.open_count == 1
    # The verified session carries both kinds of mail from now on.
    for req in (ENFORCE, None, ENFORCE):
        assert (await send(pool, req))[0].code == 250
    assert len(mx.connections) == 2
    await pool.aclose()


async def test_enforce_refuses_wrong_certificates_and_unnamed_hosts(tmp_path, mx_factory):
    ca = TestCA(tmp_path)
    wrong = await mx_factory("127.0.0.2", starttls=True,
                             tls_context=ca.server_context("wrong.test"))
    other = await mx_factory("127.0.0.3", starttls=True,
                             tls_context=ca.server_context("mx.b.test"))
    pool = make_pool(ca, wrong.port, ("mx.a.test", "127.0.0.2"), ("mx.b.test", "127.0.0.3"))
    try:
        await send(pool, ENFORCE)
        raise AssertionError("delivered")
    except SiteUnavailable as e:
        assert e.policy_only  # our policy refused: no shaping signal against the site
        a1, a2 = e.attempts
        assert a1.host == "mx.a.test" and "certificate" in a1.reply.text.lower()
        assert a1.reply.text.startswith("MTA-STS policy of a.test (enforce): ")
        assert a2.address == "" and "mx.b.test does not match" in a2.reply.text
    assert not wrong.messages and not other.connections
    await pool.aclose()


async def test_testing_falls_back_once_and_remembers_the_failure(tmp_path, mx_factory):
    ca = TestCA(tmp_path)
    mx = await mx_factory("127.0.0.2", starttls=True,
                          tls_context=ca.server_context("wrong.test"))
    pool = make_pool(ca, mx.port, ("mx.a.test", "127.0.0.2"), max_deliveries_per_connection=1)
    reply, client = await send(pool, TESTING)
    assert reply.code == 250 and client.tls_active and not client.tls_verified
    assert "certificate" in TESTING.failure(client.host, tls_verified=False,
                                            tls_error=client.tls_error).lower()
    assert len(mx.connections) == 2  # the verify attempt, then opportunistic
    # The next session skips the handshake known to fail, and still reports it.
    reply, client = await send(pool, TESTING)
    assert reply.code == 250 and "certificate" in client.tls_error.lower()
    assert len(mx.connections) == 3
    await pool.aclose()
