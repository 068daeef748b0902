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
