"""Signing: RFC 6376 (RSA), RFC 8463 (Ed25519), dual signatures, canonicalization, the
signing-domain choice, rotation, DSNs. Verified with dkimpy's own verifier, which fetches
the public keys from a real DNS server on loopback (the `published` fixture)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import dkim
import pytest
from dkim.util import parse_tag_value

from mta.config import DkimDomainConfig
from mta.dkim import DkimSigner, sign_async
from tests.dkim.helpers import MESSAGE, Keys, rsa_cfg, with_from

# dkimpy's verifier refuses t= more than 10 h ahead of the real clock, so the injected
# times stay at or before it.
NOW = float(int(time.time()) - 60)


def signer_for(**domains: DkimDomainConfig) -> DkimSigner:
    return DkimSigner.from_config({d.replace("_", "."): c for d, c in domains.items()},
                                  hostname="mta.example.net")


def sig_tags(signed: bytes, index: int = 0) -> dict[bytes, bytes]:
    headers, _ = dkim.rfc822_parse(signed)
    sigs = [v for k, v in headers if k.lower() == b"dkim-signature"]
    return parse_tag_value(b"".join(sigs[index].split()))


def verify_all(signed: bytes, dnsfunc) -> list[bool]:
    """dkimpy's verdict on each signature, top first (as `dkim.verify` gives for one)."""
    n = sum(1 for k, _ in dkim.DKIM(signed).headers if k.lower() == b"dkim-signature")
    out = []
    for i in range(n):
        try:
            out.append(dkim.DKIM(signed).verify(idx=i, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            out.append(False)
    return out


# --- RFC 6376: rsa-sha256 ----------------------------------------------------------------

def test_rfc6376_rsa_sha256_signature_verifies(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MESSAGE)
    assert verify_all(signed, dnsfunc) == [True]
    tags = sig_tags(signed)
    assert tags[b"a"] == b"rsa-sha256" and tags[b"d"] == b"example.com"
    assert tags[b"s"] == b"s1" and tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"t"] == str(int(NOW)).encode()  # the injected clock, not time.time()


def test_default_headers_signed_and_from_oversigned(keys: Keys) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    h = sig_tags(signed)[b"h"].split(b":")
    assert h == [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                 b"content-type", b"list-unsubscribe", b"list-unsubscribe-post", b"from"]


def test_rfc6376_8_15_added_second_from_breaks_signature(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    sig_end = signed.index(b"From: Alice")
    forged = signed[:sig_end] + b"From: ceo@example.com\r\n" + signed[sig_end:]
    assert verify_all(forged, dnsfunc) == [False]


def test_tampered_body_fails(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    assert verify_all(signed.replace(b"Noon", b"Ten "), dnsfunc) == [False]


def test_tampered_subject_fails(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    assert verify_all(signed.replace(b"Subject: Lunch", b"Subject: Wire money"),
                      dnsfunc) == [False]


def test_same_bytes_as_stock_dkimpy(keys: Keys) -> None:
    """Our seam (pre-parsed key, OpenSSL RSA, fast canonicalization) changes no byte."""
    for alg, key, cfg in (
        (b"rsa-sha256", "rsa1", rsa_cfg(keys)),
        (b"ed25519-sha256", "ed1", DkimDomainConfig(
            algorithms=["ed25519-sha256"], ed25519_selector="s1",
            ed25519_key=keys.path["ed1"])),
    ):
        for msg in (MESSAGE, MESSAGE.replace(b"\r\n", b"\n"),
                    MESSAGE + b"  tabs\tand  trailing \t\r\n\r\n\r\n"):
            stock = dkim.sign(msg, b"s1", b"example.com", keys.path[key].read_bytes(),
                              signature_algorithm=alg,
                              canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=sig_tags(
                                  signer_for(example_com=cfg).sign(msg, NOW))[b"h"]
                              .split(b":"),
                              linesep=b"\n" if b"\r\n" not in msg else b"\r\n")
            t = float(parse_tag_value(b"".join(stock.split(b":", 1)[1].split()))[b"t"])
            assert signer_for(example_com=cfg).sign(msg, t) == stock + msg


# --- RFC 8463: ed25519-sha256, and both at once -------------------------------------------

def test_rfc8463_ed25519_signature_verifies(keys: Keys, dnsfunc) -> None:
    cfg = DkimDomainConfig(algorithms=["ed25519-sha256"], ed25519_selector="e1",
                           ed25519_key=keys.path["ed1"])
    signed = signer_for(example_com=cfg).sign(MESSAGE, NOW)
    assert verify_all(signed, dnsfunc) == [True]
    assert sig_tags(signed)[b"a"] == b"ed25519-sha256"


def test_dual_signature_rsa_and_ed25519_both_verify(keys: Keys, dnsfunc) -> None:
    cfg = rsa_cfg(keys, algorithms=["rsa-sha256", "ed25519-sha256"],
                  ed25519_selector="e1", ed25519_key=keys.path["ed1"])
    signed = signer_for(example_com=cfg).sign(MESSAGE, NOW)
    assert verify_all(signed, dnsfunc) == [True, True]
    assert [sig_tags(signed, i)[b"a"] for i in (0, 1)] == [b"rsa-sha256", b"ed25519-sha256"]
    assert verify_all(signed.replace(b"Noon", b"Ten "), dnsfunc) == [False, False]


# --- RFC 6376 3.4: canonicalization -------------------------------------------------------

def refold_and_respace(signed: bytes) -> bytes:
    """What relays do: re-fold a header, change whitespace runs, add trailing space."""
    return (signed.replace(b"Subject: Lunch", b"Subject:   Lunch")
            .replace(b"Noon  at", b"Noon \t at")
            .replace(b"-- Alice\r\n", b"-- Alice  \r\n\r\n\r\n"))


def test_rfc6376_3_4_relaxed_survives_whitespace_changes(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    assert verify_all(refold_and_respace(signed), dnsfunc) == [True]


def test_rfc6376_3_4_simple_verifies_unchanged_but_not_respaced(
        keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys, canonicalization="simple/simple")).sign(
        MESSAGE, NOW)
    assert sig_tags(signed)[b"c"] == b"simple/simple"
    assert verify_all(signed, dnsfunc) == [True]
    assert verify_all(refold_and_respace(signed), dnsfunc) == [False]
    # simple body still ignores trailing empty lines (RFC 6376 3.4.3)
    assert verify_all(signed + b"\r\n\r\n", dnsfunc) == [True]


def test_relaxed_header_simple_body(keys: Keys, dnsfunc) -> None:
    signed = signer_for(example_com=rsa_cfg(keys, canonicalization="relaxed/simple")).sign(
        MESSAGE, NOW)
    assert verify_all(signed.replace(b"Subject: Lunch", b"Subject:  Lunch"),
                      dnsfunc) == [True]
    assert verify_all(signed.replace(b"Noon  at", b"Noon at"), dnsfunc) == [False]


def test_lf_only_message_is_signed_with_lf(keys: Keys, dnsfunc) -> None:
    msg = MESSAGE.replace(b"\r\n", b"\n")
    signed = signer_for(example_com=rsa_cfg(keys)).sign(msg, NOW)
    assert b"\r" not in signed
    assert verify_all(signed, dnsfunc) == [True]


# --- which domain signs -------------------------------------------------------------------

def test_from_domain_picks_its_section_case_insensitively(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys),
                   other_org=rsa_cfg(keys, selector="o1", key=keys.path["rsa2"]))
    signed = s.sign(with_from(MESSAGE, b'"Bob, Jr." <bob@Other.ORG>'), NOW)
    assert sig_tags(signed)[b"d"] == b"other.org" and sig_tags(signed)[b"s"] == b"o1"


def test_unconfigured_domain_is_returned_unchanged(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys))
    msg = with_from(MESSAGE, b"someone@example.net")
    assert s.sign(msg, NOW) is msg


def test_subdomain_signed_by_parent_only_with_subdomains_true(keys: Keys,
                                                              dnsfunc) -> None:
    msg = with_from(MESSAGE, b"news@mail.news.example.com")
    assert signer_for(example_com=rsa_cfg(keys)).sign(msg, NOW) is msg
    signed = signer_for(example_com=rsa_cfg(keys, subdomains=True)).sign(msg, NOW)
    assert sig_tags(signed)[b"d"] == b"example.com"
    assert verify_all(signed, dnsfunc) == [True]


def test_nearest_parent_with_subdomains_wins(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys, subdomains=True),
                   news_example_com=rsa_cfg(keys, selector="n1", key=keys.path["rsa2"],
                                            subdomains=True),
                   mail_news_example_com=rsa_cfg(keys, selector="x1"))  # subdomains off
    tags = sig_tags(s.sign(with_from(MESSAGE, b"a@eu.mail.news.example.com"), NOW))
    assert (tags[b"d"], tags[b"s"]) == (b"news.example.com", b"n1")
    tags = sig_tags(s.sign(with_from(MESSAGE, b"a@mail.news.example.com"), NOW))
    assert (tags[b"d"], tags[b"s"]) == (b"mail.news.example.com", b"x1")  # exact first


def test_no_from_or_two_froms_left_unsigned(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys))
    no_from = MESSAGE.split(b"\r\n", 1)[1]
    two = b"From: x@example.com\r\n" + MESSAGE
    assert s.sign(no_from, NOW) is no_from
    assert s.sign(two, NOW) is two


def test_folded_from_header_is_understood(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys))
    msg = with_from(MESSAGE, b"Alice Example\r\n <alice@example.com>")
    assert sig_tags(s.sign(msg, NOW))[b"d"] == b"example.com"


def test_dsn_from_mailer_daemon_signed_by_sign_dsn_domain(keys: Keys,
                                                          dnsfunc) -> None:
    s = signer_for(example_com=rsa_cfg(keys, sign_dsn=True))
    dsn = with_from(MESSAGE, b"Mail Delivery System <MAILER-DAEMON@mta.example.net>")
    signed = s.sign(dsn, NOW)
    assert sig_tags(signed)[b"d"] == b"example.com"
    assert verify_all(signed, dnsfunc) == [True]
    other = with_from(MESSAGE, b"postmaster@mta.example.net")
    assert s.sign(other, NOW) is other


# --- rotation -----------------------------------------------------------------------------

def test_rotation_switches_selector_at_switch_at(keys: Keys, dnsfunc) -> None:
    switch = NOW - 7200
    s = signer_for(example_com=rsa_cfg(keys, next_selector="s2", next_key=keys.path["rsa2"],
                                       switch_at=switch))
    before, at, after = (s.sign(MESSAGE, t) for t in (switch - 1, switch, switch + 3600))
    assert [sig_tags(m)[b"s"] for m in (before, at, after)] == [b"s1", b"s2", b"s2"]
    assert sig_tags(at)[b"t"] == str(int(switch)).encode()
    assert all(verify_all(m, dnsfunc) == [True] for m in (before, at, after))


def test_rotation_of_dual_signature_switches_both(keys: Keys) -> None:
    cfg = rsa_cfg(keys, algorithms=["rsa-sha256", "ed25519-sha256"],
                  ed25519_selector="e1", ed25519_key=keys.path["ed1"],
                  next_selector="s2", next_key=keys.path["rsa2"],
                  next_ed25519_selector="e2", next_ed25519_key=keys.path["ed2"],
                  switch_at=NOW)
    s = signer_for(example_com=cfg)
    before, after = s.sign(MESSAGE, NOW - 1), s.sign(MESSAGE, NOW)
    assert [sig_tags(before, i)[b"s"] for i in (0, 1)] == [b"s1", b"e1"]
    assert [sig_tags(after, i)[b"s"] for i in (0, 1)] == [b"s2", b"e2"]


# --- off the event loop --------------------------------------------------------------------

async def test_sign_async_signs_in_a_thread_and_matches_sign(keys: Keys) -> None:
    s = signer_for(example_com=rsa_cfg(keys))
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = s.sign_as

    def spy(*a):
        seen.append(threading.get_ident())
        return real(*a)

    s.sign_as = spy  # type: ignore[method-assign]
    signed = await asyncio.wait_for(sign_async(s, MESSAGE, NOW), 10)
    assert signed == real(s.match(MESSAGE), MESSAGE, NOW)
    assert seen and seen[0] != loop_thread
    unsigned = with_from(MESSAGE, b"x@example.net")
    assert await asyncio.wait_for(sign_async(s, unsigned, NOW), 10) is unsigned
    assert len(seen) == 1  # no thread hop for mail nobody signs


def test_malformed_header_raises_dkim_sign_error(keys: Keys) -> None:
    from mta.dkim import DkimSignError
    s = signer_for(example_com=rsa_cfg(keys))
    bad = MESSAGE.replace(b"Subject: Lunch", b"Sub ject: Lunch")
    with pytest.raises(DkimSignError):
        s.sign(bad, NOW)


def test_signature_header_lines_fold_within_78_chars(keys: Keys) -> None:
    signed = signer_for(example_com=rsa_cfg(keys)).sign(MESSAGE, NOW)
    header = signed[:signed.index(b"From: Alice")]
    assert all(len(line) <= 78 for line in re.split(rb"\r\n", header))
