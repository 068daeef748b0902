"""The injection body -> envelope + RFC 5322 message (mta.http.compose), without I/O."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from mta.http.compose import ComposeError, Limits, compose

LIMITS = Limits(max_message_size=100_000, max_recipients=5, hostname="mta.test")
NOW = 1_700_000_000.0


def build(doc: object, limits: Limits = LIMITS):
    return compose(doc, limits=limits, client_ip="127.0.0.9", now=NOW)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def error(doc: object, limits: Limits = LIMITS) -> ComposeError:
    with pytest.raises(ComposeError) as e:
        build(doc, limits)
    return e.value


def test_raw_message_gets_crlf_received_first_and_rfc5322_date_and_message_id():
    sub = build({"raw": "From: a@s.test\nSubject: hi\n\nline one\nline two",
                 "from": "a@s.test", "to": "b@d.test"})
    assert sub.mail_from == "a@s.test" and sub.recipients == ["b@d.test"]
    assert b"\n" not in sub.data.replace(b"\r\n", b"")  # CRLF only
    assert sub.data.startswith(b"Received: from [127.0.0.9]\r\n\tby mta.test (mta) with HTTP")
    assert b"for <b@d.test>" in sub.data  # one recipient: RFC 5321 4.4 "for"
    msg = parse(sub.data)
    assert msg["Subject"] == "hi" and msg["Date"] and msg["Message-ID"].endswith("@mta.test>")
    assert sub.data.endswith(b"\r\n\r\nline one\r\nline two\r\n")
    assert sub.mail_params == {}


def test_raw_message_keeps_its_own_date_and_message_id():
    raw = "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n"
    sub = build({"raw": raw, "from": "a@s.test", "to": ["b@d.test", "c@d.test"]})
    assert sub.data.count(b"Message-ID:") == 1 and sub.data.count(b"Date:") == 1
    assert b"for <" not in sub.data  # several recipients: no "for" (would disclose Bcc)


def test_described_message_is_built_with_date_message_id_and_no_bcc_header():
    pdf = b"%PDF-1.4 not really"
    sub = build({
        "from": "Ann Example <ann@s.test>", "to": ["b@d.test"], "cc": "c@d.test",
        "bcc": ["hidden@d.test", "B@d.test"], "subject": "Invoice é",
        "text": "plain", "html": "<p>html</p>", "headers": {"Reply-To": "r@s.test"},
        "attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(pdf).decode()}]})
    # Envelope: to + cc + bcc, duplicates (case-insensitive) once.
    assert sub.recipients == ["b@d.test", "c@d.test", "hidden@d.test"]
    assert sub.mail_from == "ann@s.test"
    msg = parse(sub.data)
    assert msg["From"] == "Ann Example <ann@s.test>"
    assert msg["Cc"] == "c@d.test" and msg["Bcc"] is None and b"hidden" not in sub.data
    assert msg["Subject"] == "Invoice é" and msg["Reply-To"] == "r@s.test"
    assert msg["Date"] and msg["Message-ID"]
    assert msg.get_body(("plain",)).get_content().strip() == "plain"
    assert msg.get_body(("html",)).get_content().strip() == "<p>html</p>"
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "a.pdf" and att.get_content() == pdf


def test_utf8_addresses_ask_for_smtputf8_and_8bit_body_for_8bitmime():
    sub = build({"raw": "Subject: é\r\n\r\nbody é\r\n", "from": "ä@s.test", "to": "b@d.test"})
    assert sub.mail_params == {"SMTPUTF8": "", "BODY": "8BITMIME"}


@pytest.mark.parametrize(("doc", "code"), [
    ([1, 2], "bad_request"),
    ({"raw": "Subject: x\r\n\r\nb", "to": "b@d.test"}, "missing_field"),
    ({"raw": "", "from": "a@s.test", "to": "b@d.test"}, "bad_field"),
    ({"raw": "no header here", "from": "a@s.test", "to": "b@d.test"}, "bad_message"),
    ({"raw": "S: x\r\n\r\nb", "from": "a@s.test", "to": "b@d.test", "x": 1}, "unknown_field"),
    ({"to": "b@d.test", "text": "x"}, "missing_field"),
    ({"from": "a@s.test", "text": "x"}, "missing_field"),
    ({"from": "a@s.test", "to": "b@d.test", "colour": "red"}, "unknown_field"),
    ({"from": "not an address", "to": "b@d.test"}, "bad_address"),
    ({"from": "a@s.test", "to": "b@d.test, c@d.test"}, "bad_address"),
    ({"from": "a@s.test", "to": ["b@d.test\r\nBcc: x@y"]}, "bad_address"),
    ({"from": "a@s.test", "to": 42}, "bad_address"),
    ({"from": "a@s.test", "to": "b@d.test", "subject": 5}, "bad_field"),
    ({"from": "a@s.test", "to": "b@d.test", "headers": {"Bcc": "x@y.test"}}, "bad_header"),
    ({"from": "a@s.test", "to": "b@d.test", "headers": {"X-A": "1\r\nX-B: 2"}}, "bad_header"),
    ({"from": "a@s.test", "to": "b@d.test", "headers": {"Bad Name": "v"}}, "bad_header"),
    ({"from": "a@s.test", "to": "b@d.test", "headers": ["X-A: 1"]}, "bad_header"),
    ({"from": "a@s.test", "to": "b@d.test",
      "attachments": [{"filename": "a", "content_base64": "!!!"}]}, "bad_attachment"),
    ({"from": "a@s.test", "to": "b@d.test",
      "attachments": [{"filename": "a", "content_type": "pdf", "content_base64": ""}]},
     "bad_attachment"),
    ({"from": "a@s.test", "to": "b@d.test", "attachments": [{"content_base64": ""}]},
     "bad_attachment"),
    ({"from": "a@s.test", "to": [f"r{i}@d.test" for i in range(6)]}, "too_many_recipients"),
])
def test_every_bad_body_has_a_stable_code(doc, code):
    e = error(doc)
    assert (e.code, e.status) == (code, 400), e.message


def test_message_over_max_message_size_is_413_message_too_large():
    small = Limits(max_message_size=2_000, max_recipients=5, hostname="mta.test")
    e = error({"from": "a@s.test", "to": "b@d.test", "text": "x" * 3_000}, small)
    assert (e.code, e.status) == ("message_too_large", 413)
