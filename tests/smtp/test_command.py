"""The command parser, per RFC 5321 section (4.1.1 verbs, 4.1.2 paths, 4.1.3 literals),
RFC 6531 (UTF-8 addresses) and RFC 3461 (xtext)."""

from __future__ import annotations

import pytest

from mta.rfc5321.command import (
    CommandError,
    Verb,
    parse_command,
    xtext_decode,
    xtext_encode,
)


def reply_of(line: bytes) -> str:
    with pytest.raises(CommandError) as e:
        parse_command(line)
    return str(e.value.reply)


# --- 4.1.1: verbs ------------------------------------------------------------------------

@pytest.mark.parametrize("line,verb,arg", [
    (b"EHLO client.example", Verb.EHLO, "client.example"),
    (b"ehlo [192.0.2.1]", Verb.EHLO, "[192.0.2.1]"),
    (b"HELO x", Verb.HELO, "x"),
    (b"DATA", Verb.DATA, ""),
    (b"rset", Verb.RSET, ""),
    (b"NOOP anything", Verb.NOOP, "anything"),
    (b"QUIT", Verb.QUIT, ""),
    (b"VRFY Smith", Verb.VRFY, "Smith"),
    (b"HELP", Verb.HELP, ""),
    (b"STARTTLS", Verb.STARTTLS, ""),
    (b"AUTH PLAIN AGFsaWNlAHB3", Verb.AUTH, "PLAIN AGFsaWNlAHB3"),
])
def test_4_1_1_verbs_are_case_insensitive_with_their_argument(line, verb, arg):
    cmd = parse_command(line)
    assert (cmd.verb, cmd.arg) == (verb, arg)


def test_4_2_4_unknown_verb_is_500_5_5_2():
    assert reply_of(b"FOO bar") == "500 5.5.2 Error: command not recognized"
    assert reply_of(b"") == "500 5.5.2 Error: command not recognized"


def test_commands_without_arguments_refuse_one():
    assert reply_of(b"DATA now").startswith("501 5.5.2")
    assert reply_of(b"QUIT please").startswith("501 5.5.2")


def test_http_request_is_a_forbidden_command():
    assert parse_command(b"GET / HTTP/1.1").verb is Verb.FORBIDDEN
    assert parse_command(b"POST /x HTTP/1.0").verb is Verb.FORBIDDEN


def test_control_characters_are_refused():
    assert reply_of(b"EHLO a\rReceived: forged") == (
        "500 5.5.2 Error: control character in command")
    assert reply_of(b"MAIL FROM:<a@b.test>\x00").startswith("500 5.5.2")


def test_invalid_utf8_is_refused():
    assert reply_of(b"EHLO \xff\xfe").startswith("500 5.5.2")


# --- 4.1.1.2 / 4.1.1.3 / 4.1.2: MAIL and RCPT paths ---------------------------------------

def test_4_1_2_plain_path():
    cmd = parse_command(b"MAIL FROM:<alice@example.com>")
    assert (cmd.verb, cmd.address, cmd.params, cmd.utf8) == (
        Verb.MAIL, "alice@example.com", {}, False)


def test_4_1_1_2_null_reverse_path():
    assert parse_command(b"MAIL FROM:<>").address == ""


def test_4_1_1_3_null_forward_path_is_refused_with_5_1_3():
    assert reply_of(b"RCPT TO:<>") == "501 5.1.3 Bad recipient address syntax"


@pytest.mark.parametrize("line", [b"RCPT TO:<Postmaster>", b"RCPT TO:<postmaster>",
                                  b"rcpt to:<POSTMASTER>"])
def test_4_1_1_3_postmaster_without_domain_in_any_case(line):
    assert parse_command(line).address.lower() == "postmaster"


def test_postmaster_without_domain_is_not_a_reverse_path():
    assert reply_of(b"MAIL FROM:<Postmaster>") == "501 5.1.7 Bad sender address syntax"


def test_4_1_1_3_source_route_is_accepted_and_stripped():
    cmd = parse_command(b"RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>")
    assert cmd.address == "userc@d.bar.org"


def test_4_1_2_quoted_local_part():
    cmd = parse_command(b'RCPT TO:<"John \\"Q\\" Public"@example.com>')
    assert cmd.address == '"John \\"Q\\" Public"@example.com'


@pytest.mark.parametrize("literal", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "[IPv6:::1]"])
def test_4_1_3_address_literals(literal):
    cmd = parse_command(f"RCPT TO:<user@{literal}>".encode())
    assert cmd.address == f"user@{literal}"


@pytest.mark.parametrize("literal", ["[192.0.2]", "[IPv6:zz::1]", "[300.1.1.1]"])
def test_4_1_3_bad_address_literals_are_5_1_3(literal):
    assert reply_of(f"RCPT TO:<u@{literal}>".encode()).startswith("501 5.1.3")


@pytest.mark.parametrize("path", [
    "<alice@example.com", "alice@example.com", "<alice>", "<a..b@example.com>",
    "<.a@example.com>", "<a@example..com>", "<a@-example.com>", "<a b@example.com>",
    "<a@b>junk",
])
def test_4_1_2_bad_sender_paths_are_501_5_1_7(path):
    assert reply_of(f"MAIL FROM:{path}".encode()) == "501 5.1.7 Bad sender address syntax"


def test_4_1_1_2_missing_from_keyword_is_501_5_5_2():
    assert reply_of(b"MAIL <a@b.example>").startswith("501 5.5.2")
    assert reply_of(b"RCPT FROM:<a@b.example>").startswith("501 5.5.2")


def test_space_after_colon_is_tolerated():
    assert parse_command(b"MAIL FROM: <a@b.example>").address == "a@b.example"


def test_overlong_path_is_refused():
    local = "a" * 300
    assert reply_of(f"MAIL FROM:<{local}@example.com>".encode()).startswith("501 5.1.7")


# --- RFC 6531: UTF-8 addresses are parsed and flagged -------------------------------------

def test_rfc6531_utf8_address_is_flagged():
    cmd = parse_command("MAIL FROM:<jösé@bücher.example> SMTPUTF8".encode())
    assert cmd.address == "jösé@bücher.example"
    assert cmd.utf8 is True
    assert cmd.params == {"SMTPUTF8": ""}


# --- 4.1.2 Mail-parameters / Rcpt-parameters ---------------------------------------------

def test_4_1_2_esmtp_parameters_are_all_parsed_keys_upper_cased():
    cmd = parse_command(b"MAIL FROM:<a@b.example> size=1000 BODY=8BITMIME RET=HDRS "
                        b"ENVID=QQ314159 X-FUTURE=1")
    assert cmd.params == {"SIZE": "1000", "BODY": "8BITMIME", "RET": "HDRS",
                          "ENVID": "QQ314159", "X-FUTURE": "1"}


def test_rcpt_dsn_parameters():
    cmd = parse_command(b"RCPT TO:<b@c.example> NOTIFY=SUCCESS,FAILURE "
                        b"ORCPT=rfc822;b+2Bx@c.example")
    assert cmd.params == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b+2Bx@c.example"}


@pytest.mark.parametrize("params", ["SIZE=", "=1", "SIZE=1=2", "-X=1"])
def test_bad_parameter_syntax_is_501_5_5_4(params):
    assert reply_of(f"MAIL FROM:<a@b.example> {params}".encode()).startswith("501 5.5.4")


def test_rfc1869_duplicate_parameter_is_refused():
    assert reply_of(b"MAIL FROM:<a@b.example> SIZE=1 size=2").startswith("501 5.5.4")


# --- RFC 3461 4: xtext -----------------------------------------------------------------------

def test_rfc3461_xtext_round_trip():
    assert xtext_decode("b+2Bx+3Dy@c.example") == "b+x=y@c.example"
    assert xtext_encode("b+x=y @c") == "b+2Bx+3Dy+20@c"
    assert xtext_decode(xtext_encode("ünï+=")) == "ünï+=".encode().decode("latin-1")


def test_rfc3461_bad_xtext_is_an_error():
    with pytest.raises(ValueError):
        xtext_decode("a+2")
    with pytest.raises(ValueError):
        xtext_decode("a=b")
