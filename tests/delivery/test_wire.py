"""Sans-IO half of the client: reply parsing, EHLO keywords, command lines, dot-stuffing."""

import pytest

from mta.delivery.wire import (
    Extensions,
    ProtocolError,
    ReplyParser,
    mail_command,
    prepare_body,
    rcpt_command,
)
from mta.rfc5321 import Reply


def test_rfc5321_4_2_1_multiline_reply_is_one_reply_even_when_split_across_reads():
    p = ReplyParser()
    assert p.feed(b"250-mx.test\r\n250-PIPEL") == []
    assert p.feed(b"INING\r\n250 SIZE 1000\r\n354 go") == [
        Reply(250, None, "mx.test\nPIPELINING\nSIZE 1000")]
    assert p.feed(b"\r\n") == [Reply(354, None, "go")]


def test_rfc2920_pipelined_replies_arrive_in_one_read():
    p = ReplyParser()
    got = p.feed(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
    assert [r.code for r in got] == [250, 250, 550, 354]
    assert got[2].enhanced == "5.1.1" and got[2].text == "no such user"


def test_bare_lf_line_ends_are_tolerated():
    assert ReplyParser().feed(b"220 hi\n") == [Reply(220, None, "hi")]


def test_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"HTTP/1.1 400 Bad Request\r\n")


def test_endless_line_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"2" * 10000)


def test_rfc5321_4_1_1_1_ehlo_keywords():
    ext = Extensions.from_ehlo(Reply.parse(
        "250-mx.test hello\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n250-dsn\n250 STARTTLS"))
    assert {"PIPELINING", "8BITMIME", "DSN", "STARTTLS"} <= set(ext.keywords)
    assert ext.size_limit == 1000
    assert "SMTPUTF8" not in ext
    assert Extensions.from_ehlo(Reply.parse("250-x\n250 SIZE 0")).size_limit is None


def test_mail_parameters_only_for_offered_extensions():
    none = Extensions.none()
    params = {"RET": "HDRS", "ENVID": "abc", "BODY": "8BITMIME"}
    assert mail_command("a@b.test", 10, none, params, True, False) == b"MAIL FROM:<a@b.test>\r\n"
    ext = Extensions({"SIZE": "", "8BITMIME": "", "DSN": "", "SMTPUTF8": ""})
    assert mail_command("a@b.test", 10, ext, params, True, False) == (
        b"MAIL FROM:<a@b.test> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=abc\r\n")
    assert mail_command("", 5, ext, {}, False, True) == b"MAIL FROM:<> SIZE=5 SMTPUTF8\r\n"


def test_rfc3461_rcpt_parameters_only_with_dsn():
    assert rcpt_command("x@y.test", Extensions.none(), "NEVER", None) == b"RCPT TO:<x@y.test>\r\n"
    assert rcpt_command("x@y.test", Extensions({"DSN": ""}), "SUCCESS,FAILURE",
                        "rfc822;x@y.test") == (
        b"RCPT TO:<x@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.test\r\n")


@pytest.mark.parametrize(("body", "wire"), [
    (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
    (b".lead\r\n", b"..lead\r\n.\r\n"),
    (b"no final crlf", b"no final crlf\r\n.\r\n"),
    (b"x\r\n.\r\ny\r\n", b"x\r\n..\r\ny\r\n.\r\n"),
    (b"", b".\r\n"),
])
def test_rfc5321_4_5_2_dot_stuffing(body, wire):
    assert prepare_body(body) == wire
