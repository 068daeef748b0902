"""NOTIFY=SUCCESS and NOTIFY=DELAY honoured end to end, ORCPT and ENVID carried through.

Real SMTP into the daemon, a real DNS server, sink MX hosts on 127.0.0.x; the DSN that comes
back to the sender's MX is read with the project's own inbound parser (mta.bounce.parse),
the one the feedback loop uses on DSNs from other MTAs."""

from __future__ import annotations

import asyncio
import smtplib

from mta.bounce.parse import parse_dsn

ZONES = {
    "dest.test": """
@       IN MX 10 mx1.dest.test.
mx1     IN A 127.0.0.2
""",
    "sender.test": """
@       IN MX 10 mx.sender.test.
mx      IN A 127.0.0.4
""",
}


def _send(port: int, rcpts: list[tuple[str, list[str]]], *, envid: str | None = None,
          subject: str = "hello") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        code, _ = s.mail("s@sender.test", [f"ENVID={envid}"] if envid else [])
        assert code == 250
        for addr, opts in rcpts:
            code, msg = s.rcpt(addr, opts)
            assert code == 250, msg
        code, msg = s.data(f"From: s@sender.test\r\nTo: {rcpts[0][0]}\r\nSubject: {subject}"
                           f"\r\nMessage-ID: <{subject}@sender.test>\r\n\r\nbody\r\n".encode())
        assert code == 250, msg


async def _start(mta_factory, dns_server_factory, mx_factory, extra: str = ""):
    dns = dns_server_factory(ZONES)
    return await asyncio.to_thread(
        mta_factory, dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"\n' + extra)


async def test_notify_success_sends_a_relayed_dsn_with_the_mx_and_its_real_reply(
        mta_factory, dns_server_factory, mx_factory):
    """The MX does not offer DSN: we report success ourselves, as "relayed" (RFC 3461
    5.2.2, RFC 3464 2.3.3): nobody further down will report anything."""
    dest = await mx_factory("127.0.0.2", data_reply="250 2.0.0 Ok: queued as XYZ123")
    sender_mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(
        _send, mta.smtp_port,
        [("ok@dest.test", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig+2Btag@dest.test"]),
         ("quiet@dest.test", [])],  # no NOTIFY: no success DSN for this one
        envid="ENV+2B42")
    await dest.wait_for_messages(1, timeout=15)
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    assert dsn.mail_from == "<>" and dsn.rcpt_tos == ["s@sender.test"]
    report = parse_dsn(dsn.body)
    assert report is not None
    assert report.original_envelope_id == "ENV+42"  # xtext decoded once (RFC 3461 4.4)
    assert report.reporting_mta == "dns; mta.test"
    [r] = report.recipients
    assert r.final_recipient == "ok@dest.test"
    assert r.action == "relayed"
    assert r.status == "2.0.0"
    assert r.remote_mta == "dns; mx1.dest.test"  # the MX host, not the site
    assert r.original_recipient == "orig+tag@dest.test"
    assert r.diagnostic == "smtp; 250 2.0.0 Ok: queued as XYZ123"
    await asyncio.sleep(1)
    assert len(sender_mx.messages) == 1


async def test_mx_offering_dsn_gets_notify_and_orcpt_and_reports_success_itself(
        mta_factory, dns_server_factory, mx_factory):
    """RFC 3461 5.2.1: to a server that offers DSN, NOTIFY, ORCPT and ENVID go on with the
    message and the success DSN is its own to send: none from us (no duplicate)."""
    dest = await mx_factory("127.0.0.2", dsn=True)
    sender_mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(
        _send, mta.smtp_port,
        [("ok@dest.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;orig+2Btag@dest.test"])],
        envid="ENV+2B42")
    [got] = await dest.wait_for_messages(1, timeout=15)
    # (aiosmtpd upper-cases what it records.) xtext, as received: encoded once.
    assert "NOTIFY=SUCCESS" in got.rcpt_options
    assert "ORCPT=RFC822;ORIG+2BTAG@DEST.TEST" in got.rcpt_options
    assert "ENVID=ENV+2B42" in got.mail_options
    await asyncio.sleep(1.5)
    assert sender_mx.messages == []


async def test_no_success_dsn_without_notify_success(mta_factory, dns_server_factory,
                                                     mx_factory):
    dest = await mx_factory("127.0.0.2")
    sender_mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port, [("a@dest.test", ["NOTIFY=FAILURE"]),
                                                   ("b@dest.test", [])])
    await dest.wait_for_messages(1, timeout=15)
    await asyncio.sleep(1.5)
    assert sender_mx.messages == []


async def test_explicit_notify_delay_gets_a_delay_dsn_never_and_failure_do_not(
        mta_factory, dns_server_factory, mx_factory):
    dest = await mx_factory("127.0.0.2")
    sender_mx = await mx_factory("127.0.0.4")
    for who in ("wants@dest.test", "never@dest.test", "failonly@dest.test",
                "default@dest.test"):
        dest.script(who, "451 4.2.0 mailbox busy")
    # [delivery] delay_warning is 0 (the default): only an explicit DELAY gets a warning.
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(
        _send, mta.smtp_port,
        [("wants@dest.test", ["NOTIFY=DELAY,FAILURE", "ORCPT=rfc822;wants@dest.test"]),
         ("never@dest.test", ["NOTIFY=NEVER"]), ("failonly@dest.test", ["NOTIFY=FAILURE"]),
         ("default@dest.test", [])], envid="E1")
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    report = parse_dsn(dsn.body)
    assert report is not None and report.original_envelope_id == "E1"
    [r] = report.recipients
    assert (r.final_recipient, r.action, r.status) == ("wants@dest.test", "delayed", "4.2.0")
    assert r.original_recipient == "wants@dest.test"
    assert r.remote_mta == "dns; mx1.dest.test"
    assert r.diagnostic == "smtp; 451 4.2.0 mailbox busy"
    await asyncio.sleep(3)  # retries every second: still one warning, no other recipient
    assert len(sender_mx.messages) == 1


async def test_delay_warning_setting_with_notify(mta_factory, dns_server_factory,
                                                 mx_factory):
    """With [delivery] delay_warning set, no NOTIFY and explicit DELAY are both warned,
    after that wait; a NOTIFY without DELAY is not."""
    dest = await mx_factory("127.0.0.2")
    sender_mx = await mx_factory("127.0.0.4")
    for who in ("default@dest.test", "explicit@dest.test", "failonly@dest.test"):
        dest.script(who, "451 4.2.0 mailbox busy")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, 'delay_warning = "2s"')
    await asyncio.to_thread(
        _send, mta.smtp_port,
        [("default@dest.test", []), ("explicit@dest.test", ["NOTIFY=DELAY"]),
         ("failonly@dest.test", ["NOTIFY=FAILURE"])])
    await asyncio.sleep(1)
    assert sender_mx.messages == []  # not before delay_warning
    await sender_mx.wait_for_messages(1, timeout=15)
    await asyncio.sleep(2.5)
    reports = [parse_dsn(m.body) for m in sender_mx.messages]
    assert sorted((r.final_recipient, r.action) for rep in reports if rep
                  for r in rep.recipients) == [
        ("default@dest.test", "delayed"), ("explicit@dest.test", "delayed")]


async def test_bounce_carries_orcpt_and_envid(mta_factory, dns_server_factory, mx_factory):
    dest = await mx_factory("127.0.0.2")
    sender_mx = await mx_factory("127.0.0.4")
    dest.script("gone@dest.test", "550 5.1.1 no such user")
    mta = await _start(mta_factory, dns_server_factory, mx_factory)
    await asyncio.to_thread(_send, mta.smtp_port,
                            [("gone@dest.test", ["ORCPT=rfc822;Alias+2Bx@dest.test"])],
                            envid="QQ+2B1")
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    report = parse_dsn(dsn.body)
    assert report is not None and report.original_envelope_id == "QQ+1"
    [r] = report.recipients
    assert (r.action, r.status, r.original_recipient) == ("failed", "5.1.1",
                                                          "Alias+x@dest.test")
    assert r.remote_mta == "dns; mx1.dest.test"
