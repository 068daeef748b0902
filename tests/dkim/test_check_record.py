"""Comparing a published DKIM key record with our private key (RFC 6376 3.6.1 tags)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mta.config import parse_config
from mta.dkim.check import check_main, check_record
from mta.dkim.keys import ED25519, RSA, load_private_key
from tests.dkim.helpers import Keys


def test_rfc6376_3_6_1_matching_records(keys: Keys) -> None:
    rsa1 = load_private_key(keys.path["rsa1"], RSA)
    assert check_record(keys.txt["rsa1"], rsa1) is None
    # k= defaults to rsa; whitespace inside p= is allowed (folded records)
    p = keys.txt["rsa1"].split(b"p=")[1]
    assert check_record(b"v=DKIM1; p=" + p[:40] + b" " + p[40:], rsa1) is None
    assert check_record(keys.txt["ed1"], load_private_key(keys.path["ed1"], ED25519)) is None


def test_pkcs1_rsa_public_key_in_record_matches(keys: Keys) -> None:
    rsa1 = load_private_key(keys.path["rsa1"], RSA)
    pub = serialization.load_pem_private_key(keys.path["rsa1"].read_bytes(), None).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    # Some generators publish RSAPublicKey (PKCS#1) instead of SubjectPublicKeyInfo;
    # receivers (dkimpy included) accept both, so the check compares the numbers.
    assert check_record(b"v=DKIM1; k=rsa; p=" + base64.b64encode(der), rsa1) is None


def test_mismatches_are_explained(keys: Keys) -> None:
    rsa1 = load_private_key(keys.path["rsa1"], RSA)
    assert check_record(keys.txt["rsa2"], rsa1) == "p= is a different key than the private key"
    assert "revoked" in (check_record(b"v=DKIM1; k=rsa; p=", rsa1) or "")
    assert "k=ed25519" in (check_record(keys.txt["ed1"], rsa1) or "")
    assert "h=sha1" in (check_record(keys.txt["rsa1"].replace(b"k=rsa;", b"k=rsa; h=sha1;"),
                                     rsa1) or "")
    assert "not a DKIM key record" in (check_record(b"hello world", rsa1) or "")
    assert "first tag" in (check_record(b"k=rsa; v=DKIM1; p=" + keys.txt["rsa1"].split(
        b"p=")[1], rsa1) or "")


def test_check_unknown_domain_is_exit_1(tmp_path: Path) -> None:
    cfg = parse_config('[dkim."example.com"]\n', str(tmp_path / "config.toml"), tmp_path)
    out = io.StringIO()
    assert check_main("example.org", cfg, ["127.0.0.1:9"], out=out) == 1
    assert "no [dkim" in out.getvalue()
