"""Inbound reports: DSNs from other MTAs (RFC 3464) and ARF complaints (RFC 5965),
read from real-world-shaped samples in samples/."""

from __future__ import annotations

from pathlib import Path

from mta.bounce import (
    Category,
    Classifier,
    DeliveryReport,
    FeedbackReport,
    parse_arf,
    parse_dsn,
    parse_report,
)

SAMPLES = Path(__file__).parent / "samples"


def _sample(name: str, crlf: bool = False) -> bytes:
    data = (SAMPLES / name).read_bytes()
    return data.replace(b"\n", b"\r\n") if crlf else data


def test_postfix_dsn_per_recipient_results() -> None:
    for crlf in (False, True):
        report = parse_dsn(_sample("postfix_dsn.eml", crlf))
        assert report is not None
        assert report.reporting_mta == "dns; mx.example.com"
        assert report.arrival_date == "Mon, 6 May 2024 09:59:58 +0200 (CEST)"
        carol, dave = report.recipients
        assert (carol.final_recipient, carol.original_recipient, carol.action,
                carol.status, carol.remote_mta) == (
            "carol@example.com", "carol@example.com", "failed", "5.1.1",
            "dns; mailstore.example.com")
        assert carol.diagnostic == ("smtp; 550 5.1.1 <carol@example.com>: Recipient address "
                                    "rejected: User unknown in virtual mailbox table")
        assert (dave.action, dave.status) == ("delayed", "4.2.2")
        # The returned headers tell which of our messages bounced.
        assert report.original_message_id == "<q1.20240506@mta.example.net>"
        assert ("X-Mta-Queue-Id", "q1") in report.original_headers


def test_dsn_recipients_classify_like_smtp_replies() -> None:
    classifier = Classifier.load()
    report = parse_dsn(_sample("postfix_dsn.eml"))
    assert report is not None
    got = [classifier.classify(r.reply()).category for r in report.recipients]
    assert got == [Category.INVALID_RECIPIENT, Category.MAILBOX_FULL]
    exchange = parse_dsn(_sample("exchange_dsn.eml"))
    assert exchange is not None
    (erin,) = exchange.recipients
    assert classifier.classify(erin.reply()).category == Category.INVALID_RECIPIENT


def test_exchange_dsn_with_nested_alternative_and_full_original() -> None:
    report = parse_dsn(_sample("exchange_dsn.eml", crlf=True))
    assert report is not None
    assert report.reporting_mta == "dns;BN8NAM12HT123.mail.protection.outlook.com"
    (erin,) = report.recipients
    assert (erin.final_recipient, erin.status) == ("erin@contoso.com", "5.1.10")
    assert erin.reply().enhanced == "5.1.10"
    assert report.original_message_id == "<q7.inv@mta.example.net>"


def test_reply_from_status_when_diagnostic_is_not_smtp() -> None:
    data = _sample("postfix_dsn.eml").replace(
        b"Diagnostic-Code: smtp; 550 5.1.1", b"Diagnostic-Code: X-Postfix; 550 5.1.1")
    report = parse_dsn(data)
    assert report is not None
    reply = report.recipients[0].reply()
    assert (reply.code, reply.enhanced) == (550, "5.1.1")


def test_arf_rfc5965_example() -> None:
    report = parse_arf(_sample("arf_rfc5965.eml", crlf=True))
    assert report is not None
    assert (report.feedback_type, report.user_agent, report.version) == (
        "abuse", "SomeGenerator/1.0", "1")
    assert report.original_mail_from == "somespammer@example.net"
    assert report.original_rcpt_to == ("user@example.com",)
    assert report.recipients == ("user@example.com",)
    assert report.source_ip == "192.0.2.1"
    assert report.reported_domain == ("example.net",)
    assert report.reporting_mta == "dns; mail.example.com"
    assert report.original_message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"


def test_arf_without_original_rcpt_to_falls_back_to_returned_to_header() -> None:
    report = parse_arf(_sample("arf_yahoo_redacted.eml"))
    assert report is not None
    assert report.original_rcpt_to == ()
    assert report.recipients == ("frank@yahoo.example",)
    assert report.original_mail_from == "bounces+q9@mta.example.net"
    assert ("X-Mta-Queue-Id", "q9") in report.original_headers


def test_parse_report_tells_the_kinds_apart() -> None:
    assert isinstance(parse_report(_sample("postfix_dsn.eml")), DeliveryReport)
    assert isinstance(parse_report(_sample("arf_rfc5965.eml")), FeedbackReport)
    assert parse_report(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n") is None
    assert parse_report(b"\x00\xff garbage") is None
    assert parse_dsn(_sample("arf_rfc5965.eml")) is None
    assert parse_arf(_sample("postfix_dsn.eml")) is None


def test_report_forwarded_inside_another_message_is_found() -> None:
    inner = _sample("arf_rfc5965.eml")
    outer = (b"From: fbl@isp.example\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=OUT\r\n\r\n"
             b"--OUT\r\nContent-Type: text/plain\r\n\r\nForwarded report.\r\n"
             b"--OUT\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--OUT--\r\n")
    report = parse_arf(outer)
    assert report is not None and report.original_rcpt_to == ("user@example.com",)


def test_mangled_reports_give_none_or_a_report_never_an_exception() -> None:
    """Inbound reports are hostile input: bounded, seeded mutations of every sample."""
    import random
    rng = random.Random(5965)
    samples = [p.read_bytes() for p in sorted(SAMPLES.glob("*.eml"))]
    for _ in range(300):
        d = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 15)):
            pos = rng.randrange(len(d))
            op = rng.random()
            if op < 0.4:
                d[pos] = rng.randrange(256)
            elif op < 0.7:
                del d[pos:pos + rng.randint(1, 30)]
            else:
                d[pos:pos] = rng.choice([b";", b"\n", b"\r\n\r\n", b"=?utf-8?q?=FF?=", b'"',
                                         b"<", b"boundary=", b"--", b"Message-ID: <;x>\n"])
        result = parse_report(bytes(d))
        assert result is None or isinstance(result, DeliveryReport | FeedbackReport)
