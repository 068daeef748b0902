"""mta.dkim.canon: the fast parsing / relaxed canonicalization give exactly dkimpy's bytes
(dkimpy's functions are the reference twin), on hand-picked edge cases and random ones."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy, Relaxed

from mta.dkim.canon import canonicalize_headers, relaxed_body, split_message

BODIES = [
    b"", b"\r\n", b"\r\n\r\n\r\n", b"abc", b"abc  ", b"abc\r\n", b"abc \t \r\n\r\n",
    b" \r\n \r\n", b"\t\tx\t\ty\t\t\r\n", b"a" + b" " * 37 + b"b\r\n", b"a\rb \r c\r\n",
    b"line1   \r\n\r\n  line3\r\n\r\n", b"x\r\n \r\n\t\r\n", b"\r\n\r\nx", b"  \r\nx  ",
]
HEADER_VALUES = [b" plain\r\n", b"\t tabs\tand   spaces  \r\n", b" folded\r\n\tvalue\r\n",
                 b"\r\n continued only\r\n", b" a\nb\r\n", b"   \r\n", b" x\x0b y\r\n",
                 b" \x0c\r\n"]


def random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.choice(b"ab \t\r\n\n  .") for _ in range(n))


@pytest.mark.parametrize("body", BODIES)
def test_rfc6376_3_4_4_relaxed_body_matches_dkimpy(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_relaxed_body_matches_dkimpy_on_random_bodies() -> None:
    rng = random.Random(6376)
    for _ in range(500):
        body = b"\r\n".join(dkim.rfc822_parse(b"A: b\r\n\r\n" + random_bytes(rng, 60))[1:])
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


@pytest.mark.parametrize("value", HEADER_VALUES)
def test_rfc6376_3_4_2_relaxed_headers_match_dkimpy(value: bytes) -> None:
    relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    headers = [[b"Subject", value], [b"X-Y", value]]
    assert canonicalize_headers(relaxed, headers) == Relaxed.canonicalize_headers(headers)


@pytest.mark.parametrize("message", [
    b"A: 1\r\nB: 2\r\n continued\r\n\r\nbody\r\n",
    b"A: 1\nB: 2\n\nbody\nwith LF\n",
    b"A: 1\r\n\r\nmixed\nline\r\nends\r\n",
    b"A: 1\r\n\n\r\nbody after an LF-only blank line\r\n",
    b"From sender@example.com Sun Nov 22 00:00:00 2026\r\nA: 1\r\n\r\nmbox\r\n",
    b"A: 1\r\nB:\r\n\r\n",
    b"A: 1\r\nB: no blank line",
    b"\r\nno headers\r\n",
    b"A: 1\r\n\r\n\r\n\r\n",
])
def test_split_message_matches_rfc822_parse(message: bytes) -> None:
    assert split_message(message) == dkim.rfc822_parse(message)


@pytest.mark.parametrize("message", [b"Bad Header: x\r\n\r\nbody",
                                     b"A: 1\r\nno colon, no blank line",
                                     b" continuation first\r\nA: 1\r\n\r\nbody"])
def test_split_message_raises_like_dkimpy_on_bad_header(message: bytes) -> None:
    with pytest.raises(Exception) as reference:
        dkim.rfc822_parse(message)
    with pytest.raises(reference.type):
        split_message(message)


def test_split_message_matches_on_random_messages() -> None:
    rng = random.Random(5322)
    for _ in range(300):
        lines = [b"A: x\r\n", b" cont\r\n", b"B:y \t\r\n", b"C:\n"]
        lines = [b"A: x\r\n", b" cont\r\n", b"B:y \t\r\n", b"C:\n"]
        head = b"A: 1\r\n" + b"".join(rng.choice(lines) for _ in range(rng.randint(1, 5)))
        msg = head + b"\r\n" + random_bytes(rng, 40)
        try:
            expected = dkim.rfc822_parse(msg)
        except dkim.MessageFormatError:
            with pytest.raises(dkim.MessageFormatError):
                split_message(msg)
            continue
        assert split_message(msg) == expected, msg
