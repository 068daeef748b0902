"""DSN generation (RFC 3464 / RFC 6522 / RFC 3461), checked by parsing the result back
with the stdlib email parser, field by field."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from mta.bounce import RecipientStatus, make_dsn, notify_wants, parse_dsn
from mta.queue.envelope import Envelope
from mta.rfc5321 import Reply

ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <q1.123@example.org>\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1;\r\n"
    b"\tbh=abc=; b=def=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello Bob, caf\xc3\xa9.\r\n"
    b".leading dot line\r\n"
)
GMAIL_NO_SUCH_USER = Reply.parse(
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
    "550 5.1.1 double-checking the recipient's email address. - gsmtp")
T0 = 1_700_000_000.0  # injected clock values (unix time)


def _envelope(mail_from: str = "alice@example.org", **params: str) -> Envelope:
    return Envelope(tenant="t1", mail_from=mail_from, recipients=[], client_ip="",
                    helo="", mail_params=params, received_at=T0 - 60)


BOB_FAILED = RecipientStatus("bob@example.com", "failed", GMAIL_NO_SUCH_USER,
                             remote_mta="gmail-smtp-in.l.google.com", last_attempt=T0 - 1)


def _dsn(recipients: list[RecipientStatus] | None = None, envelope: Envelope | None = None,
         original: bytes | None = ORIGINAL, **kw: object) -> EmailMessage:
    data = make_dsn(envelope or _envelope(), recipients or [BOB_FAILED], original,
                    reporting_mta="mx1.example.net", now=T0, **kw)  # type: ignore[arg-type]
    assert data is not None
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends with CRLF"
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def _parts(msg: EmailMessage) -> list[EmailMessage]:
    return list(msg.iter_parts())  # type: ignore[arg-type]


def _blocks(msg: EmailMessage) -> list[dict[str, str]]:
    status = _parts(msg)[1]
    return [{k: " ".join(str(v).split()) for k, v in b.items()}
            for b in status.get_payload()]  # type: ignore[union-attr]


def test_rfc6522_multipart_report_with_three_parts() -> None:
    msg = _dsn()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in _parts(msg)] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert not msg.defects and not any(p.defects for p in _parts(msg))


def test_headers_from_mailer_daemon_to_sender_auto_submitted() -> None:
    msg = _dsn()
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx1.example.net"
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 3834 5
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Date"].datetime.timestamp() == T0
    assert msg["Message-ID"].endswith("@mx1.example.net>")
    assert msg["References"] == "<q1.123@example.org>"


def test_rfc3464_per_message_and_per_recipient_fields() -> None:
    env = _envelope(ENVID="Q+2B42")
    env.helo, env.client_ip = "client.example.org", "192.0.2.1"
    msg = _dsn(envelope=env, recipients=[RecipientStatus(
                   "bob@example.com", "failed", GMAIL_NO_SUCH_USER,
                   remote_mta="gmail-smtp-in.l.google.com",
                   orcpt="rfc822;Bob+2BTag@Example.com", last_attempt=T0 - 1)])
    per_message, bob = _blocks(msg)
    assert per_message == {
        "Reporting-MTA": "dns; mx1.example.net",
        "Original-Envelope-Id": "Q+42",  # xtext decoded (RFC 3461 4)
        "Received-From-MTA": "dns; client.example.org ([192.0.2.1])",
        "Arrival-Date": "Tue, 14 Nov 2023 22:12:20 +0000",
    }
    assert bob == {
        "Original-Recipient": "rfc822; Bob+Tag@Example.com",
        "Final-Recipient": "rfc822; bob@example.com",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; gmail-smtp-in.l.google.com",
        "Diagnostic-Code": "smtp; 550-5.1.1 The email account that you tried to reach does "
                           "not exist. Please try 550 5.1.1 double-checking the recipient's "
                           "email address. - gsmtp",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 22:13:19 +0000",
    }


def test_delayed_recipient_has_will_retry_until_and_4xx_status() -> None:
    msg = _dsn(recipients=[RecipientStatus(
        "bob@example.com", "delayed", Reply.parse("452 4.2.2 Mailbox full"),
        will_retry_until=T0 + 86400)])
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    bob = _blocks(msg)[1]
    assert (bob["Action"], bob["Status"]) == ("delayed", "4.2.2")
    assert bob["Will-Retry-Until"] == "Wed, 15 Nov 2023 22:13:20 +0000"
    # RFC 3461 4.3: no failure in this DSN, so only the headers come back.
    assert _parts(msg)[2].get_content_type() == "text/rfc822-headers"


def test_status_without_enhanced_code_follows_the_action_and_reply_class() -> None:
    msg = _dsn(recipients=[
        RecipientStatus("a@example.com", "failed", Reply(550, None, "no")),
        RecipientStatus("b@example.com", "failed", Reply(451, None, "try later")),
        RecipientStatus("c@example.com", "failed", Reply(554, None, "x"), status="5.7.1"),
        # RFC 3463 4.4.7: the queue gave up on a transient failure; the reply stays the
        # diagnostic.
        RecipientStatus.from_reply("d@example.com", Reply(452, "4.2.2", "full"),
                                   expired=True),
    ])
    blocks = _blocks(msg)[1:]
    assert [b["Status"] for b in blocks] == ["5.0.0", "4.0.0", "5.7.1", "4.4.7"]
    assert blocks[3]["Diagnostic-Code"] == "smtp; 452 4.2.2 full"


def test_ret_full_returns_the_original_byte_for_byte() -> None:
    data = make_dsn(_envelope(RET="FULL"), [BOB_FAILED], ORIGINAL,
                    reporting_mta="mx1.example.net", now=T0)
    assert data is not None and ORIGINAL in data
    returned = _parts(BytesParser(policy=policy.default).parsebytes(data))[2]  # type: ignore[arg-type]
    inner = returned.get_payload()[0]  # type: ignore[index]
    assert inner["Subject"] == "Quarterly report"


def test_ret_hdrs_returns_only_the_headers() -> None:
    msg = _dsn(envelope=_envelope(RET="HDRS"))
    part = _parts(msg)[2]
    assert part.get_content_type() == "text/rfc822-headers"
    text = part.get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"Message-ID: <q1.123@example.org>" in text and b"Hello Bob" not in text


def test_original_over_the_size_cap_returns_only_the_headers() -> None:
    msg = _dsn(envelope=_envelope(RET="FULL"), max_returned_size=len(ORIGINAL) - 1)
    assert _parts(msg)[2].get_content_type() == "text/rfc822-headers"
    msg = _dsn(envelope=_envelope(RET="FULL"), max_returned_size=len(ORIGINAL))
    assert _parts(msg)[2].get_content_type() == "message/rfc822"


def test_null_sender_never_gets_a_dsn() -> None:
    """RFC 3461 6.2 / RFC 5321 4.5.5: no DSN about a message sent from <>."""
    for sender in ("", "<>"):
        assert make_dsn(_envelope(sender), [BOB_FAILED], ORIGINAL,
                        reporting_mta="mx1.example.net") is None


def test_notify_never_suppresses_the_dsn() -> None:
    never = RecipientStatus("bob@example.com", "failed", GMAIL_NO_SUCH_USER, notify="NEVER")
    assert make_dsn(_envelope(), [never], ORIGINAL, reporting_mta="mx1.example.net") is None


def test_notify_selects_recipients_by_action() -> None:
    """RFC 3461 4.1: FAILURE, DELAY, SUCCESS; default FAILURE (and DELAY at our choice)."""
    assert notify_wants(None, "failed") and notify_wants(None, "delayed")
    assert not notify_wants(None, "delivered")
    assert notify_wants("SUCCESS", "delivered") and not notify_wants("SUCCESS", "failed")
    assert not notify_wants("failure", "delayed") and notify_wants("failure", "failed")
    assert notify_wants("FAILURE,DELAY", "delayed")
    msg = _dsn(recipients=[
        RecipientStatus("a@example.com", "failed", GMAIL_NO_SUCH_USER, notify="DELAY"),
        RecipientStatus("b@example.com", "failed", GMAIL_NO_SUCH_USER, notify="FAILURE"),
        RecipientStatus("c@example.com", "delivered", Reply(250, "2.0.0", "ok"),
                        notify="SUCCESS,FAILURE"),
    ])
    assert [b["Final-Recipient"] for b in _blocks(msg)[1:]] == [
        "rfc822; b@example.com", "rfc822; c@example.com"]


def test_success_only_dsn() -> None:
    msg = _dsn(recipients=[RecipientStatus("c@example.com", "delivered",
                                           Reply(250, "2.0.0", "ok queued"),
                                           notify="SUCCESS")])
    assert msg["Subject"] == "Successful Mail Delivery Report"
    assert _blocks(msg)[1]["Status"] == "2.0.0"
    assert _parts(msg)[2].get_content_type() == "text/rfc822-headers"


def test_non_ascii_recipient_uses_rfc6533_utf8_address_type() -> None:
    msg = _dsn(recipients=[RecipientStatus("josé@example.com", "failed",
                                           Reply(550, "5.1.1", "unknown"))])
    assert _blocks(msg)[1]["Final-Recipient"] == "utf-8; jos\\x{E9}@example.com"


def test_human_readable_part_names_recipient_and_reply() -> None:
    text = _parts(_dsn())[0].get_content()
    assert "<bob@example.com>" in text and "gmail-smtp-in.l.google.com" in text
    assert "550 5.1.1" in text
    assert all(len(line) <= 78 for line in text.splitlines() if " " in line)


def test_generated_dsn_round_trips_through_the_inbound_parser() -> None:
    bob = RecipientStatus.from_reply("bob@example.com", GMAIL_NO_SUCH_USER,
                                     orcpt="rfc822;bob@example.com")
    data = make_dsn(_envelope(), [bob], ORIGINAL, reporting_mta="mx1.example.net", now=T0)
    assert data is not None
    report = parse_dsn(data)
    assert report is not None
    assert report.original_message_id == "<q1.123@example.org>"
    (bob,) = report.recipients
    assert (bob.final_recipient, bob.action, bob.status) == ("bob@example.com", "failed",
                                                             "5.1.1")
    assert bob.reply().code == 550 and bob.reply().enhanced == "5.1.1"


def test_broken_8bit_original_is_returned_verbatim_with_crlf() -> None:
    broken = (b"From: x@example.org\nContent-Type: multipart/mixed; boundary=B\n\n"
              b"--B\nContent-Type: text/plain\n\n\xff\xfe not utf-8\n--B")  # no end marker
    data = make_dsn(_envelope(), [BOB_FAILED], broken, reporting_mta="mx1.example.net",
                    now=T0)
    assert data is not None
    assert broken.replace(b"\n", b"\r\n") in data
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "message/rfc822"]


def test_dsn_config_defaults() -> None:
    from mta.config import parse_config
    cfg = parse_config("", "c.toml")
    assert (cfg.bounce.rules, cfg.bounce.reporting_mta, cfg.bounce.max_returned_size) == (
        None, "", 50_000)
    cfg = parse_config('[bounce]\nreporting_mta = "mx.example.net"\n'
                       'max_returned_size = "1MiB"\n', "c.toml")
    assert (cfg.bounce.reporting_mta, cfg.bounce.max_returned_size) == (
        "mx.example.net", 1024 * 1024)
