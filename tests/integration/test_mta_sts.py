"""MTA-STS (RFC 8461) end to end, the way an operator sees it: the real daemon, the
policies in Unbound (`_mta-sts` TXT, mta-sts.<domain> A) and on an HTTPS server on
127.0.0.10 with a certificate from a test CA, and MX hosts on 127.0.0.x presenting
certificates from that CA, some of which name the wrong host.

    ok.test        enforce, MX named in the policy, its certificate right: delivered
    badcert.test   enforce, MX certificate names another host: deferred, with the reason
    badname.test   enforce, the MX is not one the policy names: deferred, with the reason
    testing.test   testing, MX certificate wrong: delivered, the failure recorded
    plain.test     no policy: opportunistic STARTTLS, as before
"""

from __future__ import annotations

import asyncio
import json
import smtplib

import pytest_asyncio

from tests.support.sts import PolicyServer, policy_text
from tests.support.tls import TestCA

HTTPS = "127.0.0.10"
STS = f'_mta-sts IN TXT "v=STSv1; id=20261207;"\nmta-sts IN A {HTTPS}\n'
ZONES = {
    "ok.test": "@ IN MX 10 mx.ok.test.\nmx IN A 127.0.0.2\n" + STS,
    "badcert.test": "@ IN MX 10 mx.badcert.test.\nmx IN A 127.0.0.3\n" + STS,
    "badname.test": "@ IN MX 10 mx.elsewhere.test.\n" + STS,
    "elsewhere.test": "mx IN A 127.0.0.4\n",
    "testing.test": "@ IN MX 10 mx.testing.test.\nmx IN A 127.0.0.3\n" + STS,
    "plain.test": "@ IN MX 10 mx.plain.test.\nmx IN A 127.0.0.5\n",
}
POLICIES = {
    "ok.test": policy_text("enforce", "mx.ok.test"),
    "badcert.test": policy_text("enforce", "mx.badcert.test"),
    "badname.test": policy_text("enforce", "mx.badname.test"),
    "testing.test": policy_text("testing", "mx.testing.test"),
}


@pytest_asyncio.fixture
async def world(tmp_path, dns_server_factory, mx_factory):
    ca = TestCA(tmp_path / "ca")
    srv = PolicyServer(ca.server_context(*(f"mta-sts.{d}" for d in POLICIES)), HTTPS)
    srv.policies.update(POLICIES)
    await srv.start()
    mx = {
        "ok": await mx_factory("127.0.0.2", starttls=True,
                               tls_context=ca.server_context("mx.ok.test")),
        "wrong": await mx_factory("127.0.0.3", starttls=True,
                                  tls_context=ca.server_context("wrong.test")),
        "elsewhere": await mx_factory("127.0.0.4", starttls=True,
                                      tls_context=ca.server_context("mx.elsewhere.test")),
        "plain": await mx_factory("127.0.0.5", starttls=True,
                                  tls_context=ca.server_context("mx.plain.test")),
    }
    dns = dns_server_factory(ZONES)
    try:
        yield ca, srv, dns, mx
    finally:
        await srv.stop()


def _config(ca: TestCA, srv: PolicyServer, extra: str = "") -> str:
    return f'[tls]\nca_file = "{ca.ca_file}"\nhttps_port = {srv.port}\n{extra}'


async def _start(mta_factory, world, mx_factory, extra: str = ""):
    ca, srv, dns, _ = world
    return await asyncio.to_thread(
        mta_factory, _config(ca, srv, extra), dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"')


def _send(port: int, rcpt: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        assert s.rcpt(rcpt)[0] == 250
        code, reply = s.data(f"From: s@sender.test\r\nTo: {rcpt}\r\nSubject: sts\r\n\r\n"
                             "hello\r\n".encode())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


async def _event(mta, kind: str, rcpt: str, n: int = 1) -> dict:
    found = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == kind and e.get("recipient") == rcpt
        and len([x for x in mta.events() if x["event"] == kind
                 and x.get("recipient") == rcpt]) >= n, 20)
    assert found, f"no {kind} event for {rcpt}; events: {mta.events()}"
    return found[n - 1] if len(found) >= n else found[-1]


async def test_enforce_delivers_only_over_a_verified_matching_mx(
        mta_factory, mx_factory, world):
    mx = world[3]
    mta = await _start(mta_factory, world, mx_factory)
    ok_id = await asyncio.to_thread(_send, mta.smtp_port, "rcpt@ok.test")
    bad_id = await asyncio.to_thread(_send, mta.smtp_port, "rcpt@badcert.test")
    name_id = await asyncio.to_thread(_send, mta.smtp_port, "rcpt@badname.test")

    delivered = await _event(mta, "delivered", "rcpt@ok.test")
    assert delivered["tls_policy"] == "mta-sts-enforce"
    assert delivered["tls_verified"] is True and delivered["tls"].startswith("TLSv1.")
    assert delivered["tls_cipher"] and "tls_failure" not in delivered
    [msg] = mx["ok"].messages
    assert msg.tls and msg.rcpt_tos == ["rcpt@ok.test"]

    bad = await _event(mta, "deferred", "rcpt@badcert.test")
    assert bad["tls_policy"] == "mta-sts-enforce" and bad["category"] == "tls_failure"
    assert "MTA-STS policy of badcert.test (enforce)" in bad["reply"], bad
    assert "certificate" in bad["reply"].lower(), bad
    name = await _event(mta, "deferred", "rcpt@badname.test")
    assert ("MTA-STS policy of badname.test (enforce): MX host mx.elsewhere.test does "
            "not match the policy (mx: mx.badname.test)") in name["reply"], name
    # Never a byte of the refused mail to those hosts; the non-matching one not even dialled.
    assert not mx["wrong"].messages and not mx["elsewhere"].connections

    # What `mta queue explain` says about the deferred one.
    proc = await asyncio.to_thread(mta.cli, "queue", "explain", bad_id)
    assert proc.returncode == 0, proc.stderr
    [r] = json.loads(proc.stdout)["recipients"]
    assert r["tls_policy"] == "mta-sts-enforce"
    assert "MTA-STS policy of badcert.test (enforce)" in r["last_reply"], r
    listed = {m["id"]: m for m in await asyncio.to_thread(mta.queue_list)}
    assert listed[bad_id]["state"] == listed[name_id]["state"] == "queued", listed
    assert ok_id not in listed or listed[ok_id]["state"] != "queued", listed

    # The metric: by policy and verification.
    metrics = await asyncio.to_thread(_metrics, mta)
    assert 'mta_delivery_tls_total{policy="mta-sts-enforce",verified="true"} 1.0' in metrics
    assert 'mta_delivery_tls_total{policy="mta-sts-enforce",verified="false"}' in metrics


async def test_testing_delivers_and_records_and_no_policy_is_opportunistic(
        mta_factory, mx_factory, world):
    _, srv, _, mx = world
    mta = await _start(mta_factory, world, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, "rcpt@testing.test")
    await asyncio.to_thread(_send, mta.smtp_port, "rcpt@plain.test")
    testing = await _event(mta, "delivered", "rcpt@testing.test")
    assert testing["tls_policy"] == "mta-sts-testing"
    assert testing["tls_verified"] is False and testing["tls"].startswith("TLSv1.")
    assert "certificate" in testing["tls_failure"].lower(), testing
    plain = await _event(mta, "delivered", "rcpt@plain.test")
    assert plain["tls_policy"] == "opportunistic" and plain["tls_verified"] is False
    assert "tls_failure" not in plain
    assert [m.rcpt_tos for m in mx["wrong"].messages] == [["rcpt@testing.test"]]
    assert [m.rcpt_tos for m in mx["plain"].messages] == [["rcpt@plain.test"]]
    assert srv.requests.count("testing.test") == 1 and "plain.test" not in srv.requests


async def test_the_policy_cache_survives_a_restart(mta_factory, mx_factory, world):
    _, srv, _, mx = world
    mta = await _start(mta_factory, world, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, "rcpt@badcert.test")
    await _event(mta, "deferred", "rcpt@badcert.test")
    assert await asyncio.to_thread(mta.terminate) == 0
    # The policy web server is gone: without the cache, the next attempt would find no
    # policy and deliver to the MX whose certificate is wrong.
    await srv.stop()
    before = len([e for e in mta.events() if e["event"] == "deferred"])
    await asyncio.to_thread(mta.start)
    later = await _event(mta, "deferred", "rcpt@badcert.test", n=before + 1)
    assert "MTA-STS policy of badcert.test (enforce)" in later["reply"], later
    assert not mx["wrong"].messages


async def test_per_domain_policy_and_mta_sts_off(mta_factory, mx_factory, world):
    srv = world[1]
    mta = await _start(mta_factory, world, mx_factory, 'mta_sts = false\npolicy = { '
                       '"badname.test" = "mta-sts", "plain.test" = "verify" }\n')
    for rcpt in ("rcpt@badcert.test", "rcpt@badname.test", "rcpt@plain.test"):
        await asyncio.to_thread(_send, mta.smtp_port, rcpt)
    # MTA-STS off: badcert.test's enforce policy is not even fetched.
    off = await _event(mta, "delivered", "rcpt@badcert.test")
    assert off["tls_policy"] == "opportunistic" and off["tls_verified"] is False
    # ... but a domain listed as "mta-sts" keeps its policy.
    kept = await _event(mta, "deferred", "rcpt@badname.test")
    assert "MTA-STS policy of badname.test (enforce)" in kept["reply"], kept
    verified = await _event(mta, "delivered", "rcpt@plain.test")
    assert verified["tls_policy"] == "verify" and verified["tls_verified"] is True
    assert "badcert.test" not in srv.requests and "badname.test" in srv.requests


def _metrics(mta) -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics",
                                timeout=10) as r:
        return r.read().decode()
