"""The feedback loop in the real daemon: a message delivered to a real MX with a VERP return
path, DKIM-signed over its X-Mta-Ref and List-Unsubscribe headers (verified by dkimpy
against the key in the real test DNS server); a real RFC 3464 DSN sent back by SMTP to
the VERP address suppressing the next message at RCPT (not charged); an RFC 5965 ARF
report suppressing for its tenant only; one-click unsubscribe over real HTTP (and a GET
that does not); the mailto form; and forged tokens, a malformed DSN, a 10 MB report and
mail that is no report, none of which records anything or stops the listener."""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
import time
import urllib.error
import urllib.request

import dkim

from mta.dkim.dnstxt import txt_lookup
from mta.dkim.keys import RSA, generate_key, txt_value
from mta.smtp.auth import hash_password
from tests.integration.test_delivery import ZONES
from tests.integration.test_policy_smtp import PW, _admin, _session
from tests.support.daemon import free_port
from tests.support.dnsserver import txt

BOUNCES = "bounces.mta.test"
SECRET = "feedback-test-secret-0123456789"


def _toml(key_path, http_port: int) -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[tenants.shop]
prepaid = true
[tenants.other]

[users.shop]
tenant = "shop"
password = "{pw}"
[users.other]
tenant = "other"
password = "{pw}"

[dkim."shop.test"]
selector = "s1"
key = "{key_path}"

[bounces]
domain = "{BOUNCES}"
secret = "{SECRET}"

[unsubscribe]
base_url = "http://127.0.0.1:{http_port}"
"""


def _msg(
    to: str, mid: str, cls: str = "transactional", sender: str = "a@shop.test", extra: str = ""
) -> bytes:
    return (
        f"From: Shop <{sender}>\r\nTo: {to}\r\nSubject: news\r\nMessage-ID: <{mid}>\r\n"
        f"X-Mta-Class: {cls}\r\n{extra}\r\nHello.\r\n"
    ).encode()


async def _setup(mta_factory, dns_server_factory, mx_factory, tmp_path, extra: str = ""):
    key, pem = generate_key(RSA)
    key_path = tmp_path / "shop.key"
    key_path.write_bytes(pem)
    key_path.chmod(0o600)
    zones = {
        **ZONES,
        "shop.test": f"""
@              IN MX 10 mx.shop.test.
mx             IN A 127.0.0.4
s1._domainkey  IN TXT {txt(txt_value(key))}
""",
    }
    dns = dns_server_factory(zones)
    mx = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    await mx_factory("127.0.0.4")
    http_port = free_port()
    # No relay networks: the reports come from an unauthenticated client, as from the
    # Internet; the tenants log in.
    mta = await asyncio.to_thread(
        mta_factory,
        _toml(key_path, http_port) + extra,
        dns=dns.nameserver,
        http_port=http_port,
        delivery_port=mx_factory.port,
        smtp_extra="relay_networks = []",
        delivery_extra='retry = ["1s"]\nmax_age = "1h"',
    )
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 20, "paid": True})
    return mta, dns, mx


def _send_as(mta, user: str, rcpt: str, msg: bytes) -> tuple[int, bytes]:
    with _session(mta.smtp_port, user) as s:
        s.mail(f"a@{user}.test")
        code, text = s.rcpt(rcpt)
        if code != 250:
            return code, text
        return s.data(msg)


def _report(mta, rcpt: str, data: bytes, sender: str = "") -> tuple[int, bytes]:
    """An unauthenticated client (a remote MTA, a feedback loop) sends one message."""
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=30) as s:
        s.ehlo("remote.example")
        code, text = s.mail(sender)
        assert code == 250, text
        code, text = s.rcpt(rcpt)
        if code != 250:
            return code, text
        return s.data(data)


def _balance(mta) -> int:
    return _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")["balance"]


def _dsn(final_recipient: str, original: bytes = b"", status: str = "5.1.1") -> bytes:
    """RFC 3464 appendix-style DSN, as a remote MTA writes it after accepting the mail."""
    return (
        b"From: MAILER-DAEMON@mx1.dest.test\r\nTo: <bounce>\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        b' boundary="BOUNDARY"\r\n\r\n'
        b"--BOUNDARY\r\nContent-Type: text/plain\r\n\r\n"
        b"Your message could not be delivered.\r\n\r\n"
        b"--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx1.dest.test\r\n"
        b"Arrival-Date: Sun, 6 Dec 2026 04:00:00 +0000\r\n\r\n"
        + f"Final-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\n"
        f"Status: {status}\r\nRemote-MTA: dns; store.dest.test\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{final_recipient}>: "
        f"Recipient address rejected: User unknown\r\n\r\n".encode()
        + b"--BOUNDARY\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + original
        + b"\r\n--BOUNDARY--\r\n"
    )


def _arf(headers: bytes, rcpt: str) -> bytes:
    """RFC 5965 appendix B.2's shape."""
    return (
        b"From: <abusedesk@dest.test>\r\nDate: Thu, 8 Mar 2005 17:40:36 EDT\r\n"
        b"Subject: FW: Earn money\r\nTo: <fbl@" + BOUNCES.encode() + b">\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
        b'report-type=feedback-report;\r\n boundary="part1_13d.2e68ed54_boundary"\r\n\r\n'
        b'--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset="US-ASCII"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n\r\n"
        b"This is an email abuse report for an email message received from IP\r\n"
        b"127.0.0.9 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n\r\n"
        b"--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        b"Original-Mail-From: <somespammer@example.net>\r\n"
        + f"Original-Rcpt-To: <{rcpt}>\r\n".encode()
        + b"Received-Date: Thu, 8 Mar 2005 14:00:00 EDT\r\nSource-IP: 127.0.0.9\r\n"
        b"Authentication-Results: mail.example.com; spf=fail smtp.mail=a@shop.test\r\n"
        b"Reported-Domain: shop.test\r\n\r\n"
        b"--part1_13d.2e68ed54_boundary\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + headers
        + b"\r\n--part1_13d.2e68ed54_boundary--\r\n"
    )


def _head(body: bytes) -> bytes:
    return body.split(b"\r\n\r\n", 1)[0] + b"\r\n"


async def test_dsn_to_the_verp_address_suppresses_and_the_signature_covers_the_headers(
    mta_factory, dns_server_factory, mx_factory, tmp_path
):
    mta, dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path)
    code, _ = await asyncio.to_thread(
        _send_as, mta, "shop", "bob@dest.test", _msg("bob@dest.test", "m1@shop.test", "marketing")
    )
    assert code == 250
    [m] = await mx.wait_for_messages(1, timeout=15)
    # VERP: the envelope sender is b+TOKEN at the bounce domain; the From: is the tenant's.
    assert re.fullmatch(r"b\+[a-z2-7]+@" + re.escape(BOUNCES), m.mail_from), m.mail_from
    head = _head(m.body)
    assert b"From: Shop <a@shop.test>" in head and b"\r\nX-Mta-Ref: " in head
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
    unsub = re.search(
        rb"List-Unsubscribe: <(http://[^>]+)>,\r\n <mailto:(u\+[a-z2-7]+@"
        + re.escape(BOUNCES.encode())
        + rb")>",
        head,
    )
    assert unsub is not None, head
    # DKIM: the signature verifies against the published key and h= covers both headers.
    assert await asyncio.to_thread(dkim.verify, m.body, dnsfunc=txt_lookup([dns.nameserver]))
    sig = re.search(rb"DKIM-Signature: (.*?)\r\n(?![ \t])", m.body, re.S).group(1)
    signed = re.search(rb"h=([^;]+)", re.sub(rb"\s+", b"", sig)).group(1).lower().split(b":")
    assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
    assert b"x-mta-ref" in signed
    balance = await asyncio.to_thread(_balance, mta)

    # The receiving side bounces later: a real DSN by SMTP to the return path.
    code, text = await asyncio.to_thread(
        _report, mta, m.mail_from, _dsn("bob@dest.test", _head(m.body))
    )
    assert (code, text[:5]) == (250, b"2.0.0"), text
    [ev] = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "bounced" and e.get("async")
    )
    assert (ev["tenant"], ev["recipient"], ev["category"]) == (
        "shop",
        "bob@dest.test",
        "invalid_recipient",
    )
    assert ev["id"] and ev["reply"].startswith("550 5.1.1")
    assert await asyncio.to_thread(
        mta.wait_events,
        lambda e: e["event"] == "suppression_added" and e["address"] == "bob@dest.test",
    )
    # The next message to that recipient is refused at RCPT, and charged nothing.
    code, text = await asyncio.to_thread(
        _send_as, mta, "shop", "bob@dest.test", _msg("bob@dest.test", "m2@shop.test")
    )
    assert (code, text[:5]) == (550, b"5.7.1") and b"hard_bounce" in text
    assert await asyncio.to_thread(_balance, mta) == balance
    _, metrics = await asyncio.to_thread(_http, "GET", f"http://127.0.0.1:{mta.http_port}/metrics")
    assert 'mta_feedback_reports_total{kind="dsn",outcome="recorded"} 1.0' in metrics


async def test_arf_complaint_suppresses_for_that_tenant_only(
    mta_factory, dns_server_factory, mx_factory, tmp_path
):
    mta, _dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path)
    assert (
        await asyncio.to_thread(
            _send_as, mta, "shop", "carol@dest.test", _msg("carol@dest.test", "a1@shop.test")
        )
    )[0] == 250
    [m] = await mx.wait_for_messages(1, timeout=15)
    # The feedback loop returns the headers (its Return-Path gone): X-Mta-Ref maps back.
    headers = _head(m.body)
    code, _ = await asyncio.to_thread(
        _report, mta, f"fbl@{BOUNCES}", _arf(headers, "carol@dest.test"), "abusedesk@dest.test"
    )
    assert code == 250
    [ev] = await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "complained")
    assert (ev["tenant"], ev["recipient"], ev["feedback_type"]) == (
        "shop",
        "carol@dest.test",
        "abuse",
    )
    assert await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "suppression_added")
    code, text = await asyncio.to_thread(
        _send_as, mta, "shop", "carol@dest.test", _msg("carol@dest.test", "a2@shop.test")
    )
    assert (code, text[:5]) == (550, b"5.7.1") and b"complaint" in text
    code, _ = await asyncio.to_thread(
        _send_as,
        mta,
        "other",
        "carol@dest.test",
        _msg("carol@dest.test", "o1@other.test", sender="a@other.test"),
    )
    assert code == 250  # another tenant's mail still goes


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_one_click_post_suppresses_and_get_does_not(
    mta_factory, dns_server_factory, mx_factory, tmp_path
):
    mta, _dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path)
    for who in ("dave", "erin"):
        assert (
            await asyncio.to_thread(
                _send_as,
                mta,
                "shop",
                f"{who}@dest.test",
                _msg(f"{who}@dest.test", f"{who}@shop.test", "marketing"),
            )
        )[0] == 250
    msgs = await mx.wait_for_messages(2, timeout=15)
    links = {
        m.rcpt_tos[0]: re.search(
            rb"List-Unsubscribe: <(http://[^>]+)>,\r\n <mailto:([^>]+)>", m.body
        ).groups()
        for m in msgs
    }
    url = links["dave@dest.test"][0].decode()
    status, page = await asyncio.to_thread(_http, "GET", url)
    assert status == 200 and '<form method="post">' in page and "dave@dest.test" in page
    await asyncio.sleep(0.5)
    assert not [e for e in mta.events() if e["event"] in ("unsubscribed", "suppression_added")]
    status, _ = await asyncio.to_thread(_http, "POST", url, b"List-Unsubscribe=One-Click")
    assert status == 200
    [ev] = await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "unsubscribed")
    assert (ev["tenant"], ev["recipient"], ev["via"]) == ("shop", "dave@dest.test", "one-click")
    assert await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "suppression_added")
    code, text = await asyncio.to_thread(
        _send_as, mta, "shop", "dave@dest.test", _msg("dave@dest.test", "d2@shop.test")
    )
    assert (code, text[:5]) == (550, b"5.7.1") and b"unsubscribe" in text
    # A forged link is 404; a POST without the one-click body does nothing.
    assert (
        await asyncio.to_thread(_http, "POST", url[:-4] + "aaaa", b"List-Unsubscribe=One-Click")
    )[0] == 404
    assert (await asyncio.to_thread(_http, "POST", url.replace("/u/", "/u/x")))[0] == 404
    # The mailto form, through the inbound path.
    code, _ = await asyncio.to_thread(
        _report,
        mta,
        links["erin@dest.test"][1].decode(),
        b"Subject: unsubscribe\r\n\r\nplease\r\n",
        "erin@dest.test",
    )
    assert code == 250
    assert await asyncio.to_thread(
        mta.wait_events,
        lambda e: (
            e["event"] == "unsubscribed"
            and e["recipient"] == "erin@dest.test"
            and e["via"] == "mailto"
        ),
    )


async def test_a_tenant_s_own_list_unsubscribe_is_kept(
    mta_factory, dns_server_factory, mx_factory, tmp_path
):
    mta, _dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path)
    own = "List-Unsubscribe: <https://shop.test/unsub/42>\r\n"
    assert (
        await asyncio.to_thread(
            _send_as,
            mta,
            "shop",
            "fred@dest.test",
            _msg("fred@dest.test", "f1@shop.test", "marketing", extra=own),
        )
    )[0] == 250
    [m] = await mx.wait_for_messages(1, timeout=15)
    head = _head(m.body)
    assert head.count(b"List-Unsubscribe:") == 1 and own.encode() in head
    assert b"List-Unsubscribe-Post" not in head


def _forge(token: str) -> str:
    """Tenant shop's token rewritten to name tenant other (the tag kept)."""
    raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    raw = raw.replace(b"shop\0", b"other\0")
    return base64.b32encode(raw).decode().rstrip("=").lower()


async def test_forged_malformed_huge_and_non_reports_record_nothing(
    mta_factory, dns_server_factory, mx_factory, tmp_path
):
    mta, _dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path)
    assert (
        await asyncio.to_thread(
            _send_as, mta, "shop", "gus@dest.test", _msg("gus@dest.test", "g1@shop.test")
        )
    )[0] == 250
    [m] = await mx.wait_for_messages(1, timeout=15)
    verp = m.mail_from
    token = verp[2:].split("@")[0]
    cases = [
        ("b+" + "a" * 60 + "@" + BOUNCES, _dsn("gus@dest.test")),  # forged token
        (f"b+{_forge(token)}@{BOUNCES}", _dsn("gus@dest.test")),  # shop's, made other's
        (f"u+{_forge(token)}@{BOUNCES}", b"Subject: unsubscribe\r\n\r\n"),
        # A malformed DSN: a delivery-status part with no recipient in it.
        (verp, _dsn("gus@dest.test").replace(b"Final-Recipient", b"Xinal-Recipient")),
        # 10 MB: only the first [bounces] max_report_size bytes are read.
        (f"fbl@{BOUNCES}", _dsn("gus@dest.test") + b"x" * (10 * 1024 * 1024)),
        # A DSN that names no message of ours (no token, no X-Mta-Ref).
        (f"fbl@{BOUNCES}", _dsn("gus@dest.test")),
    ]
    for rcpt, data in cases:
        started = time.monotonic()
        code, text = await asyncio.to_thread(_report, mta, rcpt, data)
        assert (code, text[:5]) == (250, b"2.0.0"), (rcpt, text)
        assert time.monotonic() - started < 20
    # Mail to the domain that is no report: nobody reads it.
    code, text = await asyncio.to_thread(
        _report, mta, f"hello@{BOUNCES}", b"Subject: hi\r\n\r\njust saying hello\r\n"
    )
    assert (code, text[:5]) == (550, b"5.1.1")
    # No open relay for the unauthenticated client, and no mixing in one transaction.
    code, text = await asyncio.to_thread(_report, mta, "someone@dest.test", b"x\r\n")
    assert code == 554
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("remote.example")
        s.mail("")
        assert s.rcpt(f"fbl@{BOUNCES}")[0] == 250
        assert s.rcpt("someone@dest.test")[0] == 554
    deadline = time.monotonic() + 10
    while len(feedback := [e for e in mta.events() if e["event"] == "feedback"]) < 7:
        assert time.monotonic() < deadline, feedback
        await asyncio.sleep(0.1)
    assert len(feedback) == 7
    assert {e["outcome"] for e in feedback} == {"ignored", "refused"}
    assert not [
        e
        for e in mta.events()
        if e["event"] in ("bounced", "complained", "unsubscribed", "suppression_added")
    ]
    # The listener still serves everyone else.
    assert (
        await asyncio.to_thread(
            _send_as, mta, "shop", "gus@dest.test", _msg("gus@dest.test", "g2@shop.test")
        )
    )[0] == 250


def test_marketing_mail_with_no_way_to_unsubscribe_is_refused_at_data(mta_factory):
    mta = mta_factory()  # no [bounces], no [unsubscribe] base_url; required by default
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@shop.test")
        assert s.rcpt("r@dest.test")[0] == 250
        code, text = s.data(_msg("r@dest.test", "n1@shop.test", "marketing"))
        assert (code, text[:5]) == (550, b"5.7.0") and b"List-Unsubscribe" in text
        s.mail("a@shop.test")
        assert s.rcpt("r@dest.test")[0] == 250
        assert s.data(_msg("r@dest.test", "n2@shop.test"))[0] == 250  # transactional goes
    assert len(mta.queue_list()) == 1


def test_sighup_starts_taking_reports_for_a_new_bounce_domain(mta_factory):
    from tests.integration.test_reload import _reload

    mta = mta_factory(
        '[bounces]\ndomain = "old.mta.test"\nsecret = "' + SECRET + '"\n',
        smtp_extra="relay_networks = []",
    )
    data = b"Subject: hi\r\n\r\nno report\r\n"
    assert _report(mta, "x@new.mta.test", data)[0] == 554  # not ours (yet): no relay
    _reload(mta, 'domain = "old.mta.test"', 'domain = "new.mta.test"')
    code, text = _report(mta, "x@new.mta.test", data)
    assert (code, text[:5]) == (550, b"5.1.1")  # the new domain's listener reads it
    [ev] = mta.wait_events(lambda e: e["event"] == "feedback")
    assert (ev["kind"], ev["outcome"]) == ("other", "refused")
