"""[[content.rules]]: what each kind matches, how findings add up to one action, and the
config errors that name the rule and the key. Pure parts, no daemon (the end-to-end
behaviour through real SMTP is tests/integration/test_content_smtp.py)."""

from __future__ import annotations

import pytest

from mta.config import ConfigError, parse_config
from mta.content import ContentFilter, multi
from mta.content.blocklist import query_names
from mta.content.message import Facts, read_facts
from mta.content.rules import Rules
from mta.queue.envelope import Envelope, Recipient

MIXED = (b"From: a@tenant.test\r\nSubject: =?utf-8?q?You_are_a_WINNER?=\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
         b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"buy vi=\r\nagra at http://Sub.Bad.Example/x and HTTPS://user@[::1]/ and "
         b"http://192.0.2.7:8080/p\r\n"
         b"--b\r\nContent-Type: text/html\r\n\r\n<a href=\"https://www.good.test/a\">x</a>\r\n"
         b"--b\r\nContent-Type: application/octet-stream; name=\"invoice.pdf.EXE\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n")


def _content(rules: str, head: str = "workers = 0"):
    return parse_config(f"[content]\n{head}\n{rules}").content


def _errors(toml: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(toml)
    return e.value.errors


def test_message_facts_decode_headers_text_parts_and_attachments():
    f = read_facts(MIXED, scan_limit=1 << 20, max_hosts=20, want_hosts=True)
    assert f.header_values("subject") == ["You are a WINNER"]  # RFC 2047 decoded
    assert any("buy viagra" in t for t in f.texts)  # quoted-printable undone
    assert f.attachments == [("exe", "application/octet-stream")]
    assert f.parts == 4
    # Hosts lower-cased, IPv6 literals skipped, ports dropped, first seen first.
    assert f.hosts == ["sub.bad.example", "192.0.2.7", "www.good.test"]


def test_url_hosts_are_bounded_per_message():
    body = b"".join(b"http://h%d.spam.test/\r\n" % i for i in range(500))
    f = read_facts(b"Subject: x\r\n\r\n" + body, scan_limit=1 << 20, max_hosts=20,
                   want_hosts=True)
    assert len(f.hosts) == 20


def test_single_part_messages_read_like_the_full_parse():
    """The header-block fast path (mta.content.message._single_part) must give what the
    stdlib's full parse gives: every host found, word boundary kept, 8-bit bodies and
    transfer encodings undone, and odd header blocks sent to the full parse."""
    from mta.content import message

    def both(data: bytes) -> Facts:
        fast = read_facts(data, scan_limit=1 << 20, max_hosts=20, want_hosts=True)
        full = message.Facts(size=len(data))
        msg = message._PARSER.parsebytes(data)
        full.texts = [message._text(msg, 1 << 20)]
        for t in full.texts:
            message.url_hosts(t, 20, full.hosts)
        assert fast.texts == full.texts and fast.hosts == full.hosts, data
        return fast

    f = both(b"Subject: x\r\n\r\nGo to HTTP://Shop.Example/a and xhttp://no.example/ "
             b"or (https://u:p@Deal.Example:8443/x) https://shop.example/b\r\n")
    assert f.hosts == ["shop.example", "deal.example"]  # "xhttp://" is no URL
    f = both("Content-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9 http://b\xfccher.example/"
             .encode("latin-1"))
    assert f.texts == ["caf\xe9 http://b\xfccher.example/"]
    assert f.hosts == ["xn--bcher-kva.example"]
    f = both(b"Content-Transfer-Encoding: base64\r\n\r\naHR0cDovL2I2NC5leGFtcGxlLw==\r\n")
    assert f.hosts == ["b64.example"]
    # No blank line, a header block the parser ends early: still read as the full parse.
    both(b"Subject: x\r\nnot a header http://early.example/\r\n\r\nhttp://late.example/")
    both(b"Subject: only headers http://x.example/\r\n")


def test_body_patterns_see_only_the_scan_limit():
    text = b"a" * 5000 + b" needle"
    rules = Rules(_content('[[content.rules]]\nname = "n"\nbody = "needle"\n',
                           "workers = 0\nscan_limit = \"4KiB\""))
    assert rules.scan(b"Subject: x\r\n\r\n" + text).hits == ()
    assert rules.scan(b"Subject: x\r\n\r\nneedle " + text).hits == ("n",)


def test_each_kind_of_rule_matches_what_it_says():
    rules = Rules(_content("""
[[content.rules]]
name = "subject"
header = "Subject"
pattern = "(?i)winner"
[[content.rules]]
name = "body"
body = "(?i)v[i1]agra"
[[content.rules]]
name = "exe"
attachment_extensions = [".exe"]
[[content.rules]]
name = "zip-type"
attachment_types = ["application/x-zip*"]
[[content.rules]]
name = "big"
max_size = "1KiB"
[[content.rules]]
name = "parts"
max_parts = 3
[[content.rules]]
name = "no-date"
require_headers = ["From", "Date"]
[[content.rules]]
name = "no-from"
require_headers = ["From"]
"""))
    assert rules.scan(MIXED).hits == ("subject", "body", "exe", "parts", "no-date")
    plain = b"From: a@b.test\r\nDate: now\r\n\r\nhello\r\n"
    assert rules.scan(plain).hits == ()
    assert rules.scan(plain + b"x" * 2000).hits == ("big",)


def test_rfc5782_query_names():
    assert query_names("example.com") == ["example.com"]
    assert query_names("www.example.com") == ["www.example.com", "example.com"]
    assert query_names("a.b.c.example.com") == ["a.b.c.example.com", "c.example.com",
                                                "example.com"]
    assert query_names("192.0.2.7") == ["7.2.0.192"]  # RFC 5782 2.1: octets reversed


async def _verdict(content, data=MIXED):
    f = ContentFilter(content)
    try:
        return await f.check(Envelope("t", "a@tenant.test", [Recipient("b@dest.test")]),
                             data)
    finally:
        await f.aclose()


async def test_the_most_severe_action_wins_and_reject_says_the_rules_text():
    v = await _verdict(_content("""
[[content.rules]]
name = "tagme"
header = "Subject"
pattern = "(?i)winner"
action = "tag"
[[content.rules]]
name = "holdme"
body = "viagra"
action = "hold"
[[content.rules]]
name = "exe"
attachment_extensions = ["exe"]
text = "Executable attachments are not accepted"
"""))
    assert v.action == "reject"
    assert str(v.reply) == "550 5.7.1 Executable attachments are not accepted"
    assert v.rules == ["tagme", "holdme", "exe"]


async def test_scores_add_up_against_the_thresholds():
    rules = """
[[content.rules]]
name = "w"
header = "Subject"
pattern = "(?i)winner"
action = "score"
score = 2
[[content.rules]]
name = "v"
body = "viagra"
action = "score"
score = 1.5
"""
    v = await _verdict(_content(rules, "workers = 0\ntag_score = 1\nhold_score = 3.5\n"
                                       "reject_score = 10"))
    assert (v.action, v.score) == ("hold", 3.5)
    assert v.header == b"X-Mta-Content: w, v; score=3.5\r\n"
    assert v.hold_reply is not None and "score 3.5" in str(v.hold_reply)
    v = await _verdict(_content(rules, "workers = 0\ntag_score = 1\nhold_score = 4"))
    assert (v.action, v.header) == ("tag", b"X-Mta-Content: w, v; score=3.5\r\n")
    v = await _verdict(_content(rules, "workers = 0\nreject_score = 3"))
    assert (v.action, str(v.reply)) == ("reject", "550 5.7.1 Message refused by content "
                                                  "policy")
    v = await _verdict(_content(rules, "workers = 0\nreject_score = 30"))
    assert (v.action, v.rules, v.reply, v.header) == ("none", ["w", "v"], None, b"")


async def test_rules_run_in_a_worker_process():
    v = await _verdict(_content('[[content.rules]]\nname = "v"\nbody = "viagra"\n'
                                'action = "tag"\n', "workers = 1"))
    assert (v.action, v.rules) == ("tag", ["v"])


async def test_a_scan_over_rules_timeout_kills_the_worker_and_fails_as_configured():
    # A catastrophic pattern (exponential backtracking) on a short text: the worker is
    # killed at the timeout, and the next message gets a fresh worker. (`re` alone: the
    # one-pass prefilter sees that this text cannot match and never runs it, below.)
    evil = '[[content.rules]]\nname = "evil"\nbody = "^(a+)+$"\n'
    data = b"Subject: x\r\n\r\n" + b"a" * 40 + b"!\r\n"
    closed = _content(evil, 'workers = 1\nrules_timeout = "1s"\nmulti_pattern = false')
    f = ContentFilter(closed)
    try:
        v = await f.check(Envelope("t", "", [Recipient("b@x.test")]), data)
        assert (v.action, str(v.reply)) == ("tempfail", "451 4.7.1 Content check "
                                                        "unavailable, try again later")
        v = await f.check(Envelope("t", "", [Recipient("b@x.test")]),
                          b"Subject: x\r\n\r\nfine\r\n")
        assert v.action == "none"
    finally:
        await f.aclose()
    v = await _verdict(_content(evil, 'workers = 1\nrules_timeout = "1s"\n'
                                      'rules_fail = "open"\nmulti_pattern = false'), data)
    assert v.action == "none" and v.reason == "content rules did not finish"
    if multi.available():  # the prefilter rules it out in one linear pass
        v = await _verdict(_content(evil, 'workers = 1\nrules_timeout = "1s"'), data)
        assert v.action == "none" and not v.reason


@pytest.mark.parametrize(("rule", "error"), [
    ('name = "r1"\nbody = "(unclosed"',
     "content.rules[0]: rule 'r1': body: bad regex '(unclosed'"),
    ('name = "r1"\nbody = "x"\naction = "quarantine"',
     "content.rules[0]: rule 'r1': action: unknown action 'quarantine'"),
    ('name = "r1"\nheader = "Subject"',
     "content.rules[0]: rule 'r1': pattern: required with header"),
    ('name = "r1"\nbody = "x"\nmax_parts = 3',
     "content.rules[0]: rule 'r1': give exactly one of"),
    ('name = "r1"\nbody = "x"\naction = "score"',
     "content.rules[0]: rule 'r1': score: required"),
    ('name = "r1"\nurl_blocklist = "not a zone"',
     "content.rules[0]: rule 'r1': url_blocklist: not a DNS zone name"),
    ('name = "r1"\nbody = "x"\ntext = "two\\nlines"',
     "content.rules[0]: rule 'r1': text: printable ASCII"),
    ('body = "x"', "content.rules[0]: name: 1-64 of"),
    ('name = "r1"\nbody = "x"\nbogus = 1', "content.rules[0].bogus: unknown key"),
])
def test_config_errors_name_the_rule_and_the_key(rule, error):
    [line] = _errors(f"[[content.rules]]\n{rule}\n")
    assert error in line, line


def test_section_errors():
    assert "content: scanner_fail: must be \"open\" or \"closed\"" in _errors(
        '[content]\nscanner_fail = "maybe"\n')[0]
    assert "scanner_actions: unknown rspamd action 'spam'" in _errors(
        '[content]\nscanner_actions = { spam = "reject" }\n')[0]
    assert "duplicate rule name(s): a" in _errors(
        '[[content.rules]]\nname = "a"\nbody = "x"\n[[content.rules]]\nname = "a"\n'
        'body = "y"\n')[0]


def test_files_inside_a_zip_attachment_are_attachments_too():
    """invoice.zip holding invoice.pdf.exe is an .exe attachment; a zip bomb's data is
    never inflated (only its directory is read); a "zip" that is not one is just a zip."""
    import base64
    import io
    import zipfile

    def message(payload: bytes, name: str = "invoice.zip") -> bytes:
        b64 = base64.b64encode(payload).decode()
        return ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
                "--zz\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
                f"--zz\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; "
                f"filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
                "--zz--\r\n").encode()

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("docs/", "")
        z.writestr("docs/invoice.pdf.exe", b"MZ" + b"\0" * 100)
        z.writestr("bomb.txt", b"\0" * (50 * 1024 * 1024))  # 50 MB of zeros: ~50 kB zipped
    f = read_facts(message(buf.getvalue()), scan_limit=1 << 20, max_hosts=20,
                   want_hosts=False)
    assert f.attachments == [("zip", "application/zip"),
                             ("exe", "application/octet-stream"), ("txt", "text/plain")]
    rules = Rules(_content('[[content.rules]]\nname = "exe"\n'
                           'attachment_extensions = ["exe"]\n', "workers = 0"))
    assert rules.scan(message(buf.getvalue())).hits == ("exe",)
    # Not a zip inside: only the attachment itself.
    f = read_facts(message(b"PK\x03\x04 not really"), scan_limit=1 << 20, max_hosts=20,
                   want_hosts=False)
    assert f.attachments == [("zip", "application/zip")]
