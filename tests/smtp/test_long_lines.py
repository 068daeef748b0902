"""DATA lines over 998 octets (RFC 5322 2.1.1): [smtp] long_lines = "wrap" (the default)
folds/breaks them before signing, "reject" answers 550 5.6.0. Real SMTP sessions into the
daemon, delivery to a sink MX, the DKIM signature checked against the test DNS server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib

import dkim
import pytest

from mta.config import ConfigError, parse_config
from mta.dkim.dnstxt import txt_lookup
from mta.dkim.keys import RSA, generate_key, txt_value
from mta.smtp.longlines import has_long_line, wrap_long_lines
from tests.support.dnsserver import txt

WORDS = " ".join(f"word{i:05d}" for i in range(1500))  # ~15,000 octets, spaces inside
BLOB = "x" * 5000  # no white space at all
UTF8 = "é" * 1200  # 2,400 octets of two-byte characters


def _longest(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


def test_wrap_keeps_short_mail_untouched_and_breaks_at_white_space():
    short = b"Subject: hi\r\n\r\nbody\r\n"
    assert wrap_long_lines(short) is short
    assert not has_long_line(b"a" * 998 + b"\r\n") and has_long_line(b"a" * 999 + b"\r\n")
    msg = (f"Subject: {WORDS}\r\nX-Blob: {BLOB}\r\n\r\n{WORDS}\r\n{BLOB}\r\n{UTF8}\r\n"
           ).encode()
    out = wrap_long_lines(msg)
    assert _longest(out) <= 998
    head, _, body = out.partition(b"\r\n\r\n")
    parsed = email.message_from_bytes(out, policy=email.policy.compat32)
    # The folded Subject unfolds to the same words (RFC 5322 2.2.3).
    assert " ".join(parsed["Subject"].split()) == WORDS
    assert all(line[:1] in (b" ", b"\t") for line in head.split(b"\r\n")[1:]
               if not line.startswith(b"X-Blob:"))
    # Body: broken before a space, so joining the lines gives back the words.
    lines = body.split(b"\r\n")
    n = len(WORDS) // 998 + 1
    assert b"".join(lines[:n]).decode() == WORDS
    assert b"".join(lines).decode().count("x") == 5000
    assert UTF8 in b"".join(lines).decode()  # never cut inside a character


async def _start(mta_factory, dns_server_factory, mx_factory, tmp_path, smtp_extra=""):
    key, pem = generate_key(RSA)
    path = tmp_path / "k.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    dns = dns_server_factory({
        "dest.test": "@ IN MX 10 mx1.dest.test.\nmx1 IN A 127.0.0.2\n",
        "signer.test": f"@ IN MX 10 mx.signer.test.\nmx IN A 127.0.0.4\n"
                       f"s1._domainkey IN TXT {txt(txt_value(key))}\n"})
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(
        mta_factory, f'[dkim."signer.test"]\nselector = "s1"\nkey = "{path}"\n',
        dns=dns.nameserver, delivery_port=mx_factory.port, delivery_extra='retry = ["1s"]',
        smtp_extra=smtp_extra)
    return mta, dns, mx


MSG = (f"From: a@signer.test\r\nTo: b@dest.test\r\nSubject: {WORDS[:3000]}\r\n"
       f"Message-ID: <long@signer.test>\r\n\r\n<html><body>{WORDS}</body></html>\r\n"
       f"{BLOB}\r\nend\r\n").encode()


def _send(port: int, msg: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@signer.test")
        s.rcpt("b@dest.test")
        return s.data(msg)


async def test_wrap_by_default_no_long_line_goes_out_and_dkim_verifies(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, dns, mx = await _start(mta_factory, dns_server_factory, mx_factory, tmp_path)
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, MSG)
    assert code == 250
    [m] = await mx.wait_for_messages(1, timeout=15)
    assert _longest(m.body) <= 998
    assert m.body.startswith(b"DKIM-Signature: ")
    assert await asyncio.to_thread(dkim.verify, m.body, dnsfunc=txt_lookup([dns.nameserver]))
    parsed = email.message_from_bytes(m.body, policy=email.policy.compat32)
    assert " ".join(parsed["Subject"].split()) == WORDS[:3000].strip()
    assert b"".join(parsed.get_payload().encode().split(b"\n")).count(b"x") >= 5000


async def test_reject_answers_550_5_6_0_and_the_session_goes_on(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, _, mx = await _start(mta_factory, dns_server_factory, mx_factory, tmp_path,
                              'long_lines = "reject"')

    def session() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("a@signer.test")
            s.rcpt("b@dest.test")
            refused = s.data(MSG)
            s.mail("a@signer.test")
            s.rcpt("b@dest.test")
            line998 = b"y" * 998
            return refused, s.data(b"Subject: ok\r\n\r\n" + line998 + b"\r\n")

    refused, accepted = await asyncio.to_thread(session)
    assert refused == (550, b"5.6.0 line longer than 998 octets")
    assert accepted[0] == 250  # exactly 998 octets is allowed
    [m] = await mx.wait_for_messages(1, timeout=15)
    assert b"y" * 998 + b"\r\n" in m.body
    assert await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "rejected" and e["reason"] == "long_line")


def test_config_accepts_wrap_and_reject_only():
    assert parse_config("").smtp.long_lines == "wrap"
    assert parse_config('[smtp]\nlong_lines = "reject"\n').smtp.long_lines == "reject"
    with pytest.raises(ConfigError, match=r'smtp\.long_lines: must be "wrap" or "reject"'):
        parse_config('[smtp]\nlong_lines = "split"\n')
