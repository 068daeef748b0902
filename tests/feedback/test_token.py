"""Feedback tokens (mta/bounce/token.py): round trip, one purpose each, tampering, case
folding by a remote MTA, and garbage that never raises."""

from __future__ import annotations

import base64

import pytest

from mta.bounce.token import Ref, Tokens

QID = "018f3a2b4c5d000100"
T = Tokens("0123456789abcdef-secret")


def test_a_token_round_trips_and_is_url_and_local_part_safe():
    tok = T.make("b", QID, "shop", "Bob@Dest.test")
    assert T.verify("b", tok) == Ref(QID, "shop", "Bob@Dest.test")
    assert tok.isalnum() and tok == tok.lower()
    assert len(tok) <= 64  # b+TOKEN stays near RFC 5321's 64 octets for a short address
    assert T.verify("m", T.make("m", QID, "shop")) == Ref(QID, "shop", "")


def test_a_token_made_for_one_purpose_verifies_for_no_other():
    tok = T.make("m", QID, "shop")
    assert T.verify("u", tok) is None and T.verify("b", tok) is None
    assert T.verify("b", T.make("u", QID, "shop", "a@x.test")) is None


def test_another_secret_or_any_changed_bit_fails():
    tok = T.make("u", QID, "shop", "a@x.test")
    assert Tokens("another-secret-0123456789").verify("u", tok) is None
    raw = bytearray(base64.b32decode(tok.upper() + "=" * (-len(tok) % 8)))
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 1
        forged = base64.b32encode(bytes(bad)).decode().rstrip("=").lower()
        assert T.verify("u", forged) is None


def test_tenant_a_s_token_rewritten_for_tenant_b_is_refused():
    tok = T.make("u", QID, "shopa", "a@x.test")
    raw = base64.b32decode(tok.upper() + "=" * (-len(tok) % 8))
    forged = base64.b32encode(raw.replace(b"shopa", b"shopb")).decode().rstrip("=").lower()
    assert T.verify("u", forged) is None


def test_a_remote_mta_folding_the_case_does_not_break_it():
    tok = T.make("b", QID, "shop", "a@x.test")
    assert T.verify("b", tok.upper()) == Ref(QID, "shop", "a@x.test")


@pytest.mark.parametrize(
    "junk", ["", "x", "!!!", "a" * 5000, "ééé", "0" * 40, "mzxw6===", "b+" + "a" * 60]
)
def test_garbage_is_none_never_an_exception(junk):
    assert T.verify("b", junk) is None


def test_version_byte_is_checked():
    tok = T.make("b", QID, "shop", "a@x.test")
    raw = bytearray(base64.b32decode(tok.upper() + "=" * (-len(tok) % 8)))
    raw[0] = 2
    assert T.verify("b", base64.b32encode(bytes(raw)).decode().rstrip("=")) is None


def test_bad_inputs_to_make_are_refused():
    with pytest.raises(ValueError):
        T.make("b", "not-a-queue-id", "shop", "a@x.test")
    with pytest.raises(ValueError):
        Tokens("")


def test_a_rotated_secret_still_verifies_old_tokens_and_makes_new_ones():
    old = T.make("b", QID, "shop", "a@x.test")
    rotated = Tokens("the-new-secret-0123456789", previous=["0123456789abcdef-secret"])
    assert rotated.verify("b", old) == Ref(QID, "shop", "a@x.test")
    new = rotated.make("b", QID, "shop", "a@x.test")
    assert new != old and T.verify("b", new) is None
