"""Key management: `mta dkim keygen` output and files, loading keys, clear errors."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mta.dkim import DkimKeyError, keygen_main, load_private_key
from mta.dkim.check import check_record
from mta.dkim.keys import ED25519, RSA, txt_value
from tests.dkim.helpers import MESSAGE, Keys


def txt_strings(record: str) -> list[str]:
    return re.findall(r'"([^"]*)"', record)


@pytest.mark.parametrize("alg", ["rsa", "ed25519"])
def test_keygen_writes_0600_key_and_prints_publishable_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str) -> None:
    out = tmp_path / "keys"
    assert keygen_main("Example.COM.", "s2026", alg, out) == 0
    path = out / "example.com.s2026.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    record = next(line for line in printed.splitlines(keepends=True)
                  if line.startswith("s2026._domainkey.example.com. IN TXT"))
    record += printed.split(record, 1)[1]
    strings = txt_strings(record)
    # RFC 1035 3.3.14: each character-string is at most 255 bytes.
    assert strings and all(len(s.encode()) <= 255 for s in strings)
    value = "".join(strings)
    assert value.startswith(f"v=DKIM1; k={alg}; p=")
    key = load_private_key(path, RSA if alg == "rsa" else ED25519)
    assert check_record(value.encode(), key) is None
    if alg == "rsa":
        assert len(strings) == 2  # 2048-bit SPKI is ~400 characters


def test_keygen_key_files_are_what_stock_dkimpy_signs_with(tmp_path: Path) -> None:
    """The ed25519 file is dknewkey's base64 seed; the RSA file is PKCS#1 PEM."""
    assert keygen_main("example.com", "r", "rsa", tmp_path) == 0
    assert keygen_main("example.com", "e", "ed25519-sha256", tmp_path) == 0
    for sel, alg in (("r", b"rsa-sha256"), ("e", b"ed25519-sha256")):
        pem = (tmp_path / f"example.com.{sel}.key").read_bytes()
        assert dkim.sign(MESSAGE, sel.encode(), b"example.com", pem,
                         signature_algorithm=alg).startswith(b"DKIM-Signature:")


def test_keygen_never_overwrites_an_existing_key(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert keygen_main("example.com", "s1", "rsa", tmp_path) == 0
    before = (tmp_path / "example.com.s1.key").read_bytes()
    assert keygen_main("example.com", "s1", "rsa", tmp_path) == 1
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "example.com.s1.key").read_bytes() == before


def test_keygen_rejects_unknown_algorithm(tmp_path: Path) -> None:
    assert keygen_main("example.com", "s1", "dsa", tmp_path) == 1
    assert not list(tmp_path.iterdir())


def test_load_missing_key_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match=r"cannot read .*nope\.key: No such file"):
        load_private_key(tmp_path / "nope.key", RSA)


def test_load_unreadable_key_names_the_file(tmp_path: Path) -> None:
    # We run as root, so mode 000 would still read: a directory cannot be read anywhere.
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(DkimKeyError, match=r"cannot read .*dir\.key: Is a directory"):
        load_private_key(tmp_path / "dir.key", RSA)


@pytest.mark.parametrize("content, alg, problem", [
    (b"not a key\n", RSA, "not a PEM RSA private key"),
    (b"not a key\n", ED25519, "expected base64 of a 32-byte seed"),
    (b"c2hvcnQ=\n", ED25519, "holds 5 bytes"),
    (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n", RSA, "encrypted"),
])
def test_load_invalid_key_says_why(tmp_path: Path, content: bytes, alg: str,
                                   problem: str) -> None:
    p = tmp_path / "bad.key"
    p.write_bytes(content)
    with pytest.raises(DkimKeyError, match=re.escape(problem)):
        load_private_key(p, alg)


def test_load_wrong_key_type(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(DkimKeyError, match="not an Ed25519 private key"):
        pem = serialization.load_pem_private_key(keys.path["rsa1"].read_bytes(), None)
        p = tmp_path / "rsa-pkcs8.pem"
        p.write_bytes(pem.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        load_private_key(p, ED25519)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    p = tmp_path / "ec.pem"
    p.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(DkimKeyError, match="not an RSA private key"):
        load_private_key(p, RSA)


def test_rfc8301_rsa_key_below_1024_bits_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    # cryptography will not generate keys under 1024 bits: the 512-bit one is embedded.
    p = tmp_path / "k1024.pem"
    p.write_bytes(small.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    assert load_private_key(p, RSA).bits == 1024  # type: ignore[attr-defined]
    p512 = tmp_path / "k512.pem"
    p512.write_bytes(_RSA_512_PEM)
    with pytest.raises(DkimKeyError, match="RFC 8301"):
        load_private_key(p512, RSA)


def test_txt_value_forms(keys: Keys) -> None:
    rsa_key = load_private_key(keys.path["rsa1"], RSA)
    ed_key = load_private_key(keys.path["ed1"], ED25519)
    assert txt_value(rsa_key).startswith("v=DKIM1; k=rsa; p=MII")
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", txt_value(ed_key))


# `openssl genrsa -traditional 512`: a throwaway test key, too small for any real use.
_RSA_512_PEM = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOQIBAAJBAORmrpjI4gdsfi5znRfEbxA+G3EKmWLgdrN28EbvULjGxZ6/RPtc
8xGOo2re1vZXCPeTuRKolU7MBgt0vQgkhAcCAwEAAQJAXUHL0lhbadqTntXX86di
Dci+HabNQEEUVmye6Oe4FulUeb0Uzl7N3Ts+SViXg1M75YlFvIp6u8qS0pHvJCfS
CQIhAP5baXaY2nhJfRFUyegiUwt5zJC+8Ca/rhHoFM9WwubTAiEA5eBZ2QdGLWd/
5BGYl/Y1w7gbBxfvWkjE0qI0gdg7lX0CIFawUQFalxrn8Pg3LZkwGZ2PpWivqqmK
Kolvz6faqhKBAiA7WSjZN1+O6WHDaCeVVCOdXDLeKffJv2/RUb9spn77oQIgc2M6
gojgEzl4fS6LIi2lME85tc3Wjm8Jmbw1MPJvzMk=
-----END RSA PRIVATE KEY-----
"""
