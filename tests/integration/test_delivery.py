"""Delivery end to end: SMTP ingress -> spool -> MX lookup on a real DNS server -> real
SMTP destinations on 127.0.0.x. Every path of the delivery engine a user would see:
delivered, deferred then delivered, next MX, DSN on 5xx and on expiry, partial
recipients, null MX / NXDOMAIN / no MX, and kill -9 in the middle of delivering."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import smtplib
import sqlite3
import time
import urllib.request

import pytest

# $TTL and the SOA (negative TTL 60 s) come from tests/support/dnsserver.py.
ZONES = {
    "dest.test": """
@       IN MX 10 mx1.dest.test.
@       IN MX 20 mx2.dest.test.
mx1     IN A 127.0.0.2
mx2     IN A 127.0.0.3
""",
    "sender.test": """
@       IN MX 10 mx.sender.test.
mx      IN A 127.0.0.4
""",
    "nomx.test": """
@       IN A 127.0.0.5
""",
    "nullmx.test": """
@       IN MX 0 .
""",
}

FAST_RETRY = 'retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"'


def _msg(subject: str, to: str = "rcpt@dest.test") -> bytes:
    return (f"From: Sender <s@sender.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@sender.test>\r\n\r\nbody of {subject}\r\n").encode()


def _send(port: int, rcpts: list[str], subject: str, sender: str = "s@sender.test") -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, reply = s.data(_msg(subject, rcpts[0]))
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


async def _start(mta_factory, dns_server_factory, mx_factory, extra: str = FAST_RETRY,
                 **kw):
    dns = dns_server_factory(ZONES)
    return await asyncio.to_thread(mta_factory, dns=dns.nameserver,
                                   delivery_port=mx_factory.port, delivery_extra=extra, **kw)


async def _wait_event(mta, predicate, timeout: float = 15.0) -> list[dict]:
    found = await asyncio.to_thread(mta.wait_events, predicate, timeout)
    assert found, f"no such event; events: {mta.events()}"
    return found


async def test_delivered_to_the_primary_mx_with_a_delivered_event(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    msg_id = await asyncio.to_thread(_send, mta.smtp_port, ["a@dest.test", "b@dest.test"],
                                     "hello")
    [received] = await mx1.wait_for_messages(1, timeout=15)
    assert received.mail_from == "s@sender.test"
    assert sorted(received.rcpt_tos) == ["a@dest.test", "b@dest.test"]  # one transaction
    assert b"Subject: hello" in received.body
    assert b"Received: from client.test" in received.body
    events = await _wait_event(mta, lambda e: e["event"] == "delivered" and e["id"] == msg_id)
    await _wait_event(mta, lambda e: e["event"] == "delivered" and len(
        [x for x in mta.events() if x["event"] == "delivered"]) == 2)
    e = events[0]
    assert e["tenant"] == "default" and e["attempt"] == 1
    assert e["site"] and e["source"] == "default"
    assert e["reply"].startswith("250")
    assert e["mx"] == "mx1.dest.test" and e["tls"] == "none"  # this MX offers no STARTTLS
    shown = await asyncio.to_thread(mta.cli, "queue", "show", msg_id)
    assert shown.returncode == 0
    assert '"state": "delivered"' in shown.stdout


async def test_primary_mx_down_goes_to_the_secondary(mta_factory, dns_server_factory,
                                                     mx_factory):
    mx2 = await mx_factory("127.0.0.3")  # nothing listens on mx1 (127.0.0.2)
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, ["a@dest.test"], "fallback")
    [received] = await mx2.wait_for_messages(1, timeout=15)
    assert received.rcpt_tos == ["a@dest.test"]


async def test_deferred_then_delivered_when_the_destination_recovers(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    mx2 = await mx_factory("127.0.0.3")
    for mx in (mx1, mx2):
        mx.script("slow@dest.test", "451 4.3.0 try again later")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    msg_id = await asyncio.to_thread(_send, mta.smtp_port, ["slow@dest.test"], "retry")
    deferred = await _wait_event(mta, lambda e: e["event"] == "deferred")
    assert deferred[0]["id"] == msg_id
    assert deferred[0]["reply"].startswith("451 4.3.0")
    assert deferred[0]["category"] and deferred[0]["attempt"] == 1
    for mx in (mx1, mx2):
        mx.script("slow@dest.test", "250 2.1.5 Ok")
    await mx1.wait_for_messages(1, timeout=15)
    delivered = await _wait_event(mta, lambda e: e["event"] == "delivered")
    assert delivered[0]["attempt"] >= 2


def _dsn_parts(body: bytes) -> tuple[email.message.EmailMessage, list[dict[str, str]]]:
    """The report and its per-recipient status fields, parsed as a client would."""
    msg = email.message_from_bytes(body, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    status = next(p for p in msg.iter_parts()
                  if p.get_content_type() == "message/delivery-status")
    blocks = status.get_payload()  # RFC 3464: per-message block, then one per recipient
    assert len(blocks) >= 2
    return msg, [{k: " ".join(str(v).split()) for k, v in b.items()} for b in blocks[1:]]


async def test_5xx_bounces_with_a_dsn_to_the_senders_mx(mta_factory, dns_server_factory,
                                                       mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    sender_mx = await mx_factory("127.0.0.4")
    mx1.script("nobody@dest.test", "550 5.1.1 The email account that you tried to reach "
                                   "does not exist")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    msg_id = await asyncio.to_thread(_send, mta.smtp_port,
                                     ["nobody@dest.test", "ok@dest.test"], "partial")
    # Partial: one recipient delivered, the other bounced.
    [ok] = await mx1.wait_for_messages(1, timeout=15)
    assert ok.rcpt_tos == ["ok@dest.test"]
    bounced = await _wait_event(mta, lambda e: e["event"] == "bounced" and e["id"] == msg_id)
    assert bounced[0]["recipient"] == "nobody@dest.test"
    assert bounced[0]["category"] == "invalid_recipient"

    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    assert dsn.mail_from == "<>"  # the null reverse-path, as aiosmtpd records it
    assert dsn.rcpt_tos == ["s@sender.test"]
    msg, [rcpt] = _dsn_parts(dsn.body)  # only the bounced recipient is reported
    assert rcpt["Final-Recipient"] == "rfc822; nobody@dest.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1 The email account")
    assert "Subject: partial" in msg.as_string()  # the original headers come back


async def test_expired_recipient_gets_a_dsn(mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    mx2 = await mx_factory("127.0.0.3")
    sender_mx = await mx_factory("127.0.0.4")
    for mx in (mx1, mx2):
        mx.script("late@dest.test", "451 4.2.0 mailbox busy")
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       extra='retry = ["1s"]\nmax_age = "3s"')
    await asyncio.to_thread(_send, mta.smtp_port, ["late@dest.test"], "expires")
    expired = await _wait_event(mta, lambda e: e["event"] == "expired", timeout=20)
    assert expired[0]["recipient"] == "late@dest.test"
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    _, [rcpt] = _dsn_parts(dsn.body)
    assert rcpt["Status"] == "4.4.7"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy"


@pytest.mark.parametrize(("rcpt", "status"), [
    ("x@nullmx.test", "5.1.10"), ("x@missing.dest.test", "5.1.2")])
async def test_dns_permanent_failures_bounce(mta_factory, dns_server_factory, mx_factory,
                                             rcpt, status):
    sender_mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, [rcpt], "dnsfail")
    bounced = await _wait_event(mta, lambda e: e["event"] == "bounced")
    assert bounced[0]["category"] == "dns_failure"
    assert status in bounced[0]["reply"]
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    assert _dsn_parts(dsn.body)[1][0]["Status"] == status


async def test_domain_without_mx_is_delivered_to_its_address(mta_factory, dns_server_factory,
                                                             mx_factory):
    await mx_factory("127.0.0.4")  # fixes the shared port
    implicit = await mx_factory("127.0.0.5")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, ["x@nomx.test"], "implicit")
    [m] = await implicit.wait_for_messages(1, timeout=15)
    assert m.rcpt_tos == ["x@nomx.test"]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _delivered_in_spool(spool_dir) -> set[tuple[str, str]]:
    out = set()
    for db in spool_dir.glob("spool-*.sqlite"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            out |= set(con.execute(
                "SELECT msg_id, address FROM recipients WHERE state = 'delivered'"))
        finally:
            con.close()
    return out


async def test_kill_9_mid_delivery_delivers_everything_and_nothing_recorded_twice(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2", delay=0.02)
    mx2 = await mx_factory("127.0.0.3", delay=0.02)
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    n = 60
    ids = []
    for i in range(n):
        ids.append(await asyncio.to_thread(_send, mta.smtp_port, [f"r{i}@dest.test"], f"m{i}"))
    while len(mx1.messages) + len(mx2.messages) < n // 3:
        await asyncio.sleep(0.01)
    mta.kill()
    recorded = _delivered_in_spool(mta.workdir / "spool")
    before = {(r, m.body) for mx in (mx1, mx2) for m in mx.messages for r in m.rcpt_tos}
    await asyncio.to_thread(mta.start)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {r for mx in (mx1, mx2) for m in mx.messages for r in m.rcpt_tos}
        if len(got) == n:
            break
        await asyncio.sleep(0.1)
    counts: dict[str, int] = {}
    for mx in (mx1, mx2):
        for m in mx.messages:
            for r in m.rcpt_tos:
                counts[r] = counts.get(r, 0) + 1
    assert set(counts) == {f"r{i}@dest.test" for i in range(n)}, "some recipient never arrived"
    recorded_rcpts = {addr for _, addr in recorded}
    assert recorded_rcpts, "the kill came before any delivery was recorded"
    for addr in recorded_rcpts:
        assert counts[addr] == 1, f"{addr} was recorded delivered and sent again"
    assert len(before) >= len(recorded_rcpts)


async def test_delay_warning_sends_one_delayed_dsn(mta_factory, dns_server_factory,
                                                   mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    mx2 = await mx_factory("127.0.0.3")
    sender_mx = await mx_factory("127.0.0.4")
    for mx in (mx1, mx2):
        mx.script("slow@dest.test", "451 4.2.0 mailbox busy")
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       extra='retry = ["1s"]\nmax_age = "1h"\ndelay_warning = "2s"')
    await asyncio.to_thread(_send, mta.smtp_port, ["slow@dest.test"], "waiting")
    [dsn] = await sender_mx.wait_for_messages(1, timeout=20)
    _, [rcpt] = _dsn_parts(dsn.body)
    assert rcpt["Action"] == "delayed"
    assert rcpt["Final-Recipient"] == "rfc822; slow@dest.test"
    assert "Will-Retry-Until" in rcpt
    # Only one warning per recipient, however many retries follow.
    await asyncio.sleep(3)
    assert len(sender_mx.messages) == 1


async def test_message_class_max_age_expires_marketing_sooner(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    mx2 = await mx_factory("127.0.0.3")
    await mx_factory("127.0.0.4")
    for mx in (mx1, mx2):
        mx.script("busy@dest.test", "451 4.2.0 mailbox busy")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(
        mta_factory, '[policy]\nclass_max_age = { transactional = "0s", marketing = "2s" }\n',
        dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"')

    def send_class(cls: str) -> str:
        msg = _msg(f"class-{cls}", "busy@dest.test").replace(
            b"\r\n\r\n", f"\r\nX-Mta-Class: {cls}\r\n"
            # Marketing mail needs one ([unsubscribe] required): the tenant's own.
            "List-Unsubscribe: <mailto:unsub@sender.test>\r\n\r\n".encode(), 1)
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
            s.ehlo("c")
            s.mail("s@sender.test")
            s.rcpt("busy@dest.test")
            code, reply = s.data(msg)
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[1]

    marketing = await asyncio.to_thread(send_class, "marketing")
    transactional = await asyncio.to_thread(send_class, "transactional")
    expired = await _wait_event(mta, lambda e: e["event"] == "expired", timeout=20)
    assert {e["id"] for e in expired} == {marketing}
    shown = json.loads((await asyncio.to_thread(mta.cli, "queue", "show", transactional)).stdout)
    assert shown["msg_class"] == "transactional"
    assert shown["recipients"][0]["state"] == "queued"


async def test_flush_ends_the_dead_site_timer(mta_factory, dns_server_factory, mx_factory):
    await mx_factory("127.0.0.4")  # fixes the shared port; nothing listens on .2 or .3 yet
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(
        mta_factory, '[shaping.default]\nsuspend_after = 1\nsuspend_duration = "1h"\n',
        dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1h"]\nconnect_timeout = "2s"')
    msg_id = await asyncio.to_thread(_send, mta.smtp_port, ["a@dest.test"], "dead")
    await _wait_event(mta, lambda e: e["event"] == "deferred")
    await _wait_event(mta, lambda e: e["event"] == "shaping" and e.get("kind") == "suspend")
    metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{mta.http_port}/metrics")
    assert 'mta_shaping_changes_total{kind="suspend"} 1.0' in metrics
    mx1 = await mx_factory("127.0.0.2")  # the destination is back
    flushed = await asyncio.to_thread(mta.cli, "queue", "flush")
    assert flushed.returncode == 0, flushed.stderr
    [m] = await mx1.wait_for_messages(1, timeout=15)
    assert m.rcpt_tos == ["a@dest.test"]
    assert (await _wait_event(mta, lambda e: e["event"] == "delivered"))[0]["id"] == msg_id


@pytest.mark.parametrize("domain", ["servfail.test", "timeout.test"])
async def test_dns_temporary_failure_defers(mta_factory, dns_server_factory, mx_factory,
                                           domain):
    """RFC 5321 5.1: SERVFAIL or no answer is not a verdict on the domain: defer."""
    await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    msg_id = await asyncio.to_thread(_send, mta.smtp_port, [f"x@{domain}"], "tempdns")
    [deferred] = await _wait_event(mta, lambda e: e["event"] == "deferred", timeout=20)
    assert deferred["id"] == msg_id
    assert deferred["category"] == "dns_failure"
    assert deferred["reply"].startswith("451 4.4.3")


async def test_mx_with_only_an_ipv6_address_is_reached_over_ipv6(
        mta_factory, dns_server_factory, mx_factory):
    mx6 = await mx_factory("::1")
    dns = dns_server_factory({**ZONES, "six.test": "@ MX 10 mx\nmx AAAA ::1\n"})
    mta = await asyncio.to_thread(mta_factory, dns=dns.nameserver,
                                  delivery_port=mx_factory.port, delivery_extra=FAST_RETRY)
    await asyncio.to_thread(_send, mta.smtp_port, ["x@six.test"], "ipv6")
    [m] = await mx6.wait_for_messages(1, timeout=15)
    assert m.rcpt_tos == ["x@six.test"]
    assert mx6.connections[0].peer[0] == "::1"


async def test_the_tls_of_each_delivery_is_in_its_event_and_metrics(
        mta_factory, dns_server_factory, mx_factory):
    await mx_factory("127.0.0.2", starttls=True)
    await mx_factory("127.0.0.3")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    msg_id = await asyncio.to_thread(_send, mta.smtp_port, ["a@dest.test"], "tls")
    (e,) = await _wait_event(mta, lambda e: e["event"] == "delivered" and e["id"] == msg_id)
    assert e["tls"] in ("TLSv1.2", "TLSv1.3") and e["tls_cipher"]
    assert e["tls_verified"] is False  # opportunistic: encrypted, not authenticated

    def scrape() -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics") as r:
            return r.read().decode()

    assert f'mta_delivered_tls_total{{tls="{e["tls"]}"}} 1.0' in await asyncio.to_thread(scrape)


async def test_tls_verify_delivers_to_a_named_mx_and_defers_a_wrong_name(
        mta_factory, dns_server_factory, mx_factory, mx_tls_files):
    # Every test MX presents a certificate naming mx.test; with [delivery] tls = "verify"
    # only a domain whose MX is mx.test gets its mail, and says so in its event.
    good = await mx_factory("127.0.0.2", starttls=True)
    dns = dns_server_factory({**ZONES, "named.test": "@ MX 10 mx.test.\n",
                              "mx.test": "@ A 127.0.0.2\n",
                              "misnamed.test": "@ MX 10 mx\nmx A 127.0.0.2\n"})
    ca = mx_tls_files[0]
    mta = await asyncio.to_thread(
        mta_factory, dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra=f'{FAST_RETRY}\ntls = "verify"\ntls_ca_file = "{ca}"')
    ok = await asyncio.to_thread(_send, mta.smtp_port, ["a@named.test"], "verified")
    bad = await asyncio.to_thread(_send, mta.smtp_port, ["a@misnamed.test"], "misnamed")
    (e,) = await _wait_event(mta, lambda e: e["event"] == "delivered" and e["id"] == ok)
    assert e["tls_verified"] is True and e["mx"] == "mx.test"
    (d, *_) = await _wait_event(mta, lambda e: e["event"] == "deferred" and e["id"] == bad)
    # mx.misnamed.test is the same server, but its certificate does not name it: deferred
    # with the reason, never a fallback to the clear.
    assert d["reply"].startswith("421 4.7.5") and "certificate" in d["reply"].lower()
    # dest.test: the same at mx1, and its backup mx2 does not listen; the event says why
    # mx1 failed, not only that mx2 could not be reached.
    two = await asyncio.to_thread(_send, mta.smtp_port, ["a@dest.test"], "two mx")
    (d, *_) = await _wait_event(mta, lambda e: e["event"] == "deferred" and e["id"] == two)
    assert d["reply"].startswith("421 4.7.5") and "mx1.dest.test" in d["reply"]
    assert [m.rcpt_tos for m in good.messages] == [["a@named.test"]]
