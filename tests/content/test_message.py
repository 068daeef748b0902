"""The fast header-block reader (mta.content.message._plain_headers) against its twin, the
stdlib's BytesParser with compat32: whatever the fast path accepts, it must read exactly as
the stdlib does, and the facts the rules see must not depend on which one ran."""

from __future__ import annotations

import email.parser
import email.policy
import itertools

import pytest

from mta.content import message as m

_STDLIB = email.parser.BytesParser(policy=email.policy.compat32)

FIELDS = [
    b"From: Shop <orders@shop.test>",
    b"To: a@b.test,\r\n\tc@d.test",
    b"Subject: =?utf-8?q?caf=C3=A9?= order",
    b"Subject:no space",
    b"Subject:   \r\n folded after nothing",
    b"X-Empty:",
    b"X-Trailing: value  ",
    b"X-Colons:: a: b",
    b"Content-Type: multipart/mixed;\r\n boundary=\"b1\"",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Disposition: attachment; filename=\"x.exe\"",
    b"MIME-Version: 1.0",
    b"Received: from x (x [192.0.2.1])\r\n\tby y; Sat, 05 Dec 2026 12:00:00 +0000",
]
ODD = [  # the fast path leaves these to the stdlib (defects, bare line ends, non-ASCII)
    b"From sender@x Sat Dec  5 12:00:00 2026\r\nSubject: x\r\n\r\n",
    b" continued first\r\nSubject: x\r\n\r\n",
    b"Subject : spaced name\r\n\r\n",
    b"no colon here\r\nSubject: x\r\n\r\n",
    b"Subject: bare\nFrom: lf\n\n",
    b"Subject: a\rb\r\n\r\n",
    b"Subject: caf\xc3\xa9\r\n\r\n",
    b":empty name\r\n\r\n",
]


def _blocks() -> list[bytes]:
    out = [b"\r\n".join(combo) + b"\r\n\r\n"
           for n in (1, 2, 3) for combo in itertools.permutations(FIELDS, n)]
    return out[:3000] + ODD


def _same(a: object, b: object) -> None:
    assert a._headers == b._headers  # type: ignore[attr-defined]
    assert a.get_payload() == b.get_payload()  # type: ignore[attr-defined]
    assert a.defects == b.defects  # type: ignore[attr-defined]
    assert a.get_unixfrom() == b.get_unixfrom()  # type: ignore[attr-defined]
    assert a.get_content_type() == b.get_content_type()  # type: ignore[attr-defined]


@pytest.mark.parametrize("chunk", range(4))
def test_fast_header_reader_reads_as_the_stdlib_does(chunk: int) -> None:
    blocks = _blocks()[chunk::4]
    fast = 0
    for head in blocks:
        ours = m._plain_headers(head)
        if ours is None:
            continue
        fast += 1
        _same(ours, _STDLIB.parsebytes(head, headersonly=True))
    assert fast > len(blocks) // 2  # the common case does take the fast path


def test_odd_header_blocks_go_to_the_stdlib() -> None:
    assert all(m._plain_headers(head) is None for head in ODD)


@pytest.mark.parametrize("head", _blocks()[::97] + ODD)
def test_facts_do_not_depend_on_the_reader(head: bytes,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = head + b"Hello, see https://shop.example/x and http://1.2.3.4/y\r\n"
    kw = {"scan_limit": 100_000, "max_hosts": 10, "want_hosts": True}
    ours = m.read_facts(data, **kw)
    monkeypatch.setattr(m, "_plain_headers", lambda head: None)
    assert m.read_facts(data, **kw) == ours


# --- the one-text-part reader (mta.content.message._one_text_part) -----------------------

_TYPES = [None, b"text/plain", b"text/plain; charset=utf-8", b"TEXT/HTML; Charset=\"ISO-8859-1\"",
          b"text/plain; format=flowed; charset=us-ascii; delsp=yes",
          b"text/plain;\r\n\tcharset=windows-1252", b"text/plain; charset=x-unknown-charset",
          b"text/plain; charset=\"\"", b"text/plain; charset*=utf-8''caf%C3%A9",
          b"text/plain; name=\"x.txt\"", b"text/calendar; method=REQUEST",
          b"application/pdf", b"image/png; charset=utf-8", b"multipart/alternative; boundary=b",
          b"message/rfc822", b"text", b"text/plain/extra", b"text/plain; charset=utf-8;",
          b"text/plain; charset=utf-8 garbage", b"text/plain; charset=\"utf\\-8\""]
_CTES = [None, b"7bit", b"8bit", b"quoted-printable", b"Base64", b"base64 ", b"x-uuencode",
         b"binary"]
_BODIES = [b"Plain words and https://shop.example/a link.\r\n",
           b"caf\xc3\xa9 \xe9t\xe9 http://xn--caf-dma.example/\r\n",
           b"Q29mZmVlIGF0IGh0dHBzOi8vc2hvcC5leGFtcGxlLw==\r\n",  # base64 of a URL
           b"bad base64 ***\r\n", b"soft=\r\nbreak =E9t=C3=A9 http://qp.example/=3Dx\r\n",
           b"begin 644 x\r\n#86)C\r\n`\r\nend\r\n", b""]


def _messages() -> list[bytes]:
    out = []
    for i, (ctype, cte, body) in enumerate(itertools.product(_TYPES, _CTES, _BODIES)):
        head = [b"From: Shop <orders@shop.test>", b"Subject: =?utf-8?q?caf=C3=A9?= " +
                str(i).encode()]
        if ctype is not None:
            head.append(b"Content-Type: " + ctype)
        if cte is not None:
            head.append(b"Content-Transfer-Encoding: " + cte)
        if i % 11 == 0:
            head.append(b"Content-Disposition: inline")
        if i % 13 == 0:
            head.append(b"Content-Type: text/html")  # a second one: the first counts
        out.append(b"\r\n".join(head) + b"\r\n\r\n" + body)
    return out


@pytest.mark.parametrize("want_hosts", [True, False])
@pytest.mark.parametrize("limit", [8, 100_000])
def test_one_text_part_reads_as_the_stdlib_path(want_hosts: bool, limit: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"scan_limit": limit, "max_hosts": 10, "want_hosts": want_hosts}
    messages = _messages()
    ours = [m.read_facts(data, **kw) for data in messages]
    fast = sum(m._one_text_part(data, m.Facts(), **kw) for data in messages)
    assert fast > len(messages) // 3  # the common case does take the fast path
    monkeypatch.setattr(m, "_one_text_part", lambda *a: False)
    for data, facts in zip(messages, ours, strict=True):
        assert m.read_facts(data, **kw) == facts, data
