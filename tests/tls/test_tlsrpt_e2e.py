"""TLS-RPT (RFC 8460) end to end, as a receiving domain sees it: the real daemon delivers
to MX hosts on 127.0.0.x under MTA-STS policies (served over HTTPS by aiohttp with a test
CA, as in tests/integration/test_mta_sts.py), one of them with a certificate naming the
wrong host; the policy clock (MTA_POLICY_CLOCK) then moves past midnight, and the day's
reports arrive: by mail at the MX of the domain named in `_smtp._tls` TXT, and by HTTPS
POST at a receiver on 127.0.0.11. Each is gunzipped and checked against the RFC's schema
and against what was delivered.

    ok.test     enforce, MX right            rua=mailto:tlsrpt@reports.test
    bad.test    enforce, MX certificate bad  rua=mailto:tlsrpt@reports.test
    web.test    enforce, MX right            rua=https://rua.web.test:PORT/tlsrpt
    reports.test                             (the mailbox the mailed reports go to)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import gzip
import json
import smtplib
from email.policy import default

import pytest_asyncio

from mta.policy import FileClock
from mta.policy.clock import CLOCK_ENV
from tests.support.daemon import MtaProcess
from tests.support.sts import PolicyServer, policy_text
from tests.support.tls import TestCA
from tests.support.tlsrpt import ReportReceiver, check_report

DAY = dt.date(2026, 12, 7)
NOON = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
AFTER = dt.datetime(2026, 12, 8, 0, 0, 5, tzinfo=dt.UTC)
HTTPS = "127.0.0.10"
RUA_HOST = "127.0.0.11"
STS = f'_mta-sts IN TXT "v=STSv1; id=1;"\nmta-sts IN A {HTTPS}\n'
MAILTO = '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"\n'
POLICIES = {d: policy_text("enforce", f"mx.{d}") for d in ("ok.test", "bad.test", "web.test")}


def _zones(rua_port: int) -> dict[str, str]:
    return {
        "ok.test": "@ IN MX 10 mx.ok.test.\nmx IN A 127.0.0.2\n" + STS + MAILTO,
        "bad.test": "@ IN MX 10 mx.bad.test.\nmx IN A 127.0.0.3\n" + STS + MAILTO,
        "web.test": "@ IN MX 10 mx.web.test.\nmx IN A 127.0.0.4\n" + STS
                    + f'_smtp._tls IN TXT "v=TLSRPTv1; rua=https://rua.web.test:{rua_port}'
                      f'/tlsrpt"\nrua IN A {RUA_HOST}\n',
        "reports.test": "@ IN MX 10 mx.reports.test.\nmx IN A 127.0.0.6\n",
    }


@pytest_asyncio.fixture
async def world(tmp_path, dns_server_factory, mx_factory):
    ca = TestCA(tmp_path / "ca")
    srv = PolicyServer(ca.server_context(*(f"mta-sts.{d}" for d in POLICIES)), HTTPS)
    srv.policies.update(POLICIES)
    await srv.start()
    rx = ReportReceiver(ca.server_context("rua.web.test"), RUA_HOST)
    await rx.start()
    mx = {
        "ok": await mx_factory("127.0.0.2", starttls=True,
                               tls_context=ca.server_context("mx.ok.test")),
        "bad": await mx_factory("127.0.0.3", starttls=True,
                                tls_context=ca.server_context("wrong.test")),
        "web": await mx_factory("127.0.0.4", starttls=True,
                                tls_context=ca.server_context("mx.web.test")),
        "reports": await mx_factory("127.0.0.6", starttls=True,
                                    tls_context=ca.server_context("mx.reports.test")),
    }
    dns = dns_server_factory(_zones(rx.port))
    try:
        yield ca, srv, rx, dns, mx
    finally:
        await rx.stop()
        await srv.stop()


def _config(ca: TestCA, srv: PolicyServer, extra: str = "") -> str:
    return f"""{extra}
[tls]
ca_file = "{ca.ca_file}"
https_port = {srv.port}

[tls.reports]
enabled = true
organization = "mta test platform"
contact = "mailto:postmaster@mta.test"
report_from = "tlsrpt@mta.test"
send_after = "0s"
flush_interval = "100ms"
check_interval = "100ms"
http_retry = "100ms"
"""


def _send(port: int, rcpt: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        assert s.rcpt(rcpt)[0] == 250
        code, reply = s.data(f"From: s@sender.test\r\nTo: {rcpt}\r\nSubject: rpt\r\n\r\n"
                             "hello\r\n".encode())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def _start(world, mx_factory, tmp_path, extra: str = "") -> tuple[MtaProcess, FileClock]:
    ca, srv, _, dns, _ = world
    clock_file = tmp_path / "policy-clock"
    clock_file.write_text(f"{NOON.timestamp()!r}\n")
    workdir = tmp_path / "mta"
    workdir.mkdir()
    mta = MtaProcess(workdir, _config(ca, srv, extra), dns=dns.nameserver,
                     delivery_port=mx_factory.port,
                     delivery_extra='retry = ["1h"]\nconnect_timeout = "3s"')
    mta.env[CLOCK_ENV] = str(clock_file)
    return mta, FileClock(clock_file)


def _metrics(mta: MtaProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics",
                                timeout=10) as r:
        return r.read().decode()


def _report_of(message) -> tuple[email.message.EmailMessage, dict]:
    msg = email.message_from_bytes(message.body, policy=default)
    [attachment] = [p for p in msg.iter_attachments()]
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    return msg, json.loads(gzip.decompress(attachment.get_content()))


async def _wait(predicate, what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_day_of_sessions_is_reported_to_each_rua(mx_factory, world, tmp_path):
    _, _, rx, _, mx = world
    mta, clock = _start(world, mx_factory, tmp_path)
    try:
        await asyncio.to_thread(mta.start)
        for rcpt in ("a@ok.test", "b@ok.test", "c@bad.test", "d@web.test"):
            await asyncio.to_thread(_send, mta.smtp_port, rcpt)
        await _wait(lambda: len(mx["ok"].messages) == 2 and len(mx["web"].messages) == 1,
                    "deliveries")
        await _wait(lambda: any(e["event"] == "deferred" for e in mta.events()),
                    "the refused delivery")
        # A restart in the middle of the day: the counts so far are in policy.db.
        assert await asyncio.to_thread(mta.terminate) == 0
        await asyncio.to_thread(mta.start)
        assert not mx["reports"].messages and not rx.posts

        clock.set(AFTER)  # the UTC day is over
        await mx["reports"].wait_for_messages(2, timeout=30)
        await _wait(lambda: len(rx.posts) == 1, "the https report")
        await _wait(lambda: len([e for e in mta.events()
                                 if e["event"] == "tls_report_sent"]) == 3, "the events")
        metrics = await asyncio.to_thread(_metrics, mta)
    finally:
        mta.kill()
    assert 'mta_tls_reports_total{method="mailto",outcome="sent"} 2.0' in metrics
    assert 'mta_tls_reports_total{method="https",outcome="sent"} 1.0' in metrics

    reports = {}
    for message in mx["reports"].messages:
        assert message.rcpt_tos == ["tlsrpt@reports.test"]
        assert message.mail_from == "tlsrpt@mta.test"
        msg, report = _report_of(message)
        domain = msg["TLS-Report-Domain"]
        assert msg["TLS-Report-Submitter"] == "mta.test"
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "tlsrpt"
        assert msg["Subject"] == (f"Report Domain: {domain} Submitter: mta.test "
                                  f"Report-ID: <{report['report-id']}>")
        [attachment] = list(msg.iter_attachments())
        name = attachment.get_filename()
        assert name.startswith(f"mta.test!{domain}!1796601600!1796687999!"), name
        assert name.endswith(".json.gz")
        check_report(report, domain=domain, day=DAY)
        assert report["organization-name"] == "mta test platform"
        assert report["contact-info"] == "mailto:postmaster@mta.test"
        reports[domain] = report
    assert set(reports) == {"ok.test", "bad.test"}

    # ok.test: every session the MX saw (some messages may have shared one) succeeded.
    [ok] = reports["ok.test"]["policies"]
    assert ok["policy"] == {"policy-type": "sts", "policy-domain": "ok.test",
                            "policy-string": ["version: STSv1", "mode: enforce",
                                              "mx: mx.ok.test", "max_age: 86400"],
                            "mx-host": ["mx.ok.test"]}
    sessions = len(mx["ok"].connections)
    assert 1 <= sessions <= 2
    assert ok["summary"] == {"total-successful-session-count": sessions,
                             "total-failure-session-count": 0}
    assert "failure-details" not in ok

    # bad.test: the one attempt, refused for the certificate, with where it went.
    [bad] = reports["bad.test"]["policies"]
    assert bad["summary"] == {"total-successful-session-count": 0,
                              "total-failure-session-count": 1}
    [detail] = bad["failure-details"]
    assert detail["result-type"] == "certificate-host-mismatch"
    assert detail["receiving-mx-hostname"] == "mx.bad.test"
    assert detail["receiving-ip"] == "127.0.0.3"
    assert "mismatch" in detail["failure-reason-code"].lower(), detail
    assert not mx["bad"].messages

    # web.test: POSTed as application/tlsrpt+gzip.
    [(path, ctype, body)] = rx.posts
    assert path == "/tlsrpt" and ctype == "application/tlsrpt+gzip"
    web = json.loads(gzip.decompress(body))
    check_report(web, domain="web.test", day=DAY)
    assert web["policies"][0]["summary"] == {"total-successful-session-count": 1,
                                             "total-failure-session-count": 0}

    sent = {(e["domain"], e["method"]) for e in mta.events() if e["event"] == "tls_report_sent"}
    assert sent == {("ok.test", "mailto"), ("bad.test", "mailto"), ("web.test", "https")}


async def test_workers_count_into_one_report(mx_factory, world, tmp_path):
    """`[server] workers = 2`: both workers deliver and count (through the embedded shared
    store); worker 0 sends the one report, with every session of both."""
    _, _, _, _, mx = world
    mta, clock = _start(world, mx_factory, tmp_path)
    mta.config_path.write_text(mta.config_path.read_text().replace(
        "[server]\n", "[server]\nworkers = 2\n", 1))
    try:
        await asyncio.to_thread(mta.start, notified=True)  # READY=1: both workers listen
        ids = [await asyncio.to_thread(_send, mta.smtp_port, f"r{i}@ok.test")
               for i in range(40)]
        assert {i[-2:] for i in ids} == {"00", "01"}, ids  # both workers took mail
        await mx["ok"].wait_for_messages(40, timeout=30)
        clock.set(AFTER)
        [message] = await mx["reports"].wait_for_messages(1, timeout=30)
    finally:
        await asyncio.to_thread(mta.terminate)
    _, report = _report_of(message)
    check_report(report, domain="ok.test", day=DAY)
    [ok] = report["policies"]
    assert ok["summary"] == {"total-successful-session-count": len(mx["ok"].connections),
                             "total-failure-session-count": 0}
    assert len(mx["reports"].messages) == 1
