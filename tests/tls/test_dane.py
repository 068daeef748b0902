"""DANE matching as values (mta.tls.dane) and the requirement it makes (mta.tls.requirement),
named after the RFC sections they check: RFC 6698 2 (TLSA), RFC 7672 3.1 (usages), 3.2
(names), 2.2 (when DANE applies) and RFC 8461 2 (DANE before MTA-STS). No I/O: the
certificates are made here with `cryptography`."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mta.dns import TlsaAnswer
from mta.tls import (
    DaneHost,
    StsPolicy,
    TlsaRecord,
    TlsaSyntaxError,
    choose,
    dane_host,
    parse_tlsa,
    verify_chain,
)

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str = "test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca, *names: str, expired: bool = False) -> x509.Certificate:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    end = NOW - DAY if expired else NOW + 30 * DAY
    return (x509.CertificateBuilder().subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 10 * DAY).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def tlsa(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> TlsaRecord:
    data = der(cert) if selector == 0 else spki(cert)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TlsaRecord(usage, selector, mtype, data)


CA = _ca()
LEAF = _leaf(CA, "mx.example.test")
CHAIN = [der(LEAF), der(CA[0])]

# --- RFC 6698 2.2: the presentation form ------------------------------------------------

def test_rfc6698_2_2_parse_with_the_hex_split_by_spaces():
    record = parse_tlsa("3 1 1 ABCD ef01")
    assert record == TlsaRecord(3, 1, 1, bytes.fromhex("abcdef01"))
    assert record.text == "3 1 1 abcdef01"


@pytest.mark.parametrize("text", ["3 1 1", "3 1 x abcd", "3 1 1 zz", "256 1 1 ab", ""])
def test_rfc6698_2_2_malformed_rdata(text):
    with pytest.raises(TlsaSyntaxError):
        parse_tlsa(text)


# --- RFC 7672 3.1.3: which records are usable ---------------------------------------------

@pytest.mark.parametrize(("record", "usable"), [
    (TlsaRecord(3, 1, 1, b"x" * 32), True),
    (TlsaRecord(2, 0, 2, b"x" * 64), True),
    (TlsaRecord(3, 0, 0, b"cert"), True),
    (TlsaRecord(0, 0, 1, b"x" * 32), False),  # PKIX-TA: unusable for SMTP
    (TlsaRecord(1, 1, 1, b"x" * 32), False),  # PKIX-EE: unusable for SMTP
    (TlsaRecord(3, 2, 1, b"x" * 32), False),  # unknown selector
    (TlsaRecord(3, 1, 3, b"x" * 32), False),  # unknown matching type
    (TlsaRecord(3, 1, 1, b"x" * 31), False),  # a SHA-256 of the wrong length
    (TlsaRecord(3, 1, 0, b""), False),
])
def test_rfc7672_3_1_3_usable_records(record, usable):
    assert record.usable is usable


def test_rfc7672_3_1_3_all_records_unusable_means_tls_without_authentication():
    answer = TlsaAnswer("mx.example.test", "secure", ("0 0 1 " + "ab" * 32, "1 1 1 zz"),
                        ("mx.example.test",), "_25._tcp.mx.example.test")
    host = dane_host(answer)
    assert host.state == "unusable" and host.result_type == "tlsa-invalid"
    req = choose("example.test", "opportunistic", None, dane=True, dane_hosts=(host,))
    assert req.connect_modes("mx.example.test") == ("required",)  # never the clear
    assert req.accepts("mx.example.test", tls_active=True, tls_verified=False,
                       verify_tried=False)
    assert not req.accepts("mx.example.test", tls_active=False, tls_verified=False,
                           verify_tried=False)


# --- RFC 7672 3.1.1: DANE-EE ----------------------------------------------------------------

@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_rfc7672_3_1_1_dane_ee_every_selector_and_matching_type(selector, mtype):
    result = verify_chain([tlsa(3, selector, mtype, LEAF)], CHAIN, ["mx.example.test"])
    assert result.ok, result


def test_rfc7672_3_1_1_dane_ee_checks_neither_name_nor_expiry():
    old = _leaf(CA, "some.other.name", expired=True)
    assert verify_chain([tlsa(3, 1, 1, old)], [der(old)], ["mx.example.test"]).ok


def test_dane_ee_mismatch_is_a_validation_failure():
    other = _leaf(CA, "mx.example.test")
    result = verify_chain([tlsa(3, 1, 1, other)], CHAIN, ["mx.example.test"])
    assert not result.ok and result.result_type == "validation-failure"
    assert "no TLSA record matches" in result.detail


def test_unusable_records_never_match():
    assert not verify_chain([tlsa(1, 1, 1, LEAF), tlsa(0, 0, 1, CA[0])], CHAIN,
                            ["mx.example.test"]).ok


# --- RFC 7672 3.1.2 and 3.2.2: DANE-TA --------------------------------------------------------

@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 2), (1, 0)])
def test_rfc7672_3_1_2_dane_ta_a_chain_cert_matches_and_the_leaf_chains_to_it(selector,
                                                                            mtype):
    result = verify_chain([tlsa(2, selector, mtype, CA[0])], CHAIN, ["mx.example.test"])
    assert result.ok and "DANE-TA" in result.detail, result


def test_rfc7672_3_2_2_dane_ta_checks_the_mx_host_name():
    result = verify_chain([tlsa(2, 0, 1, CA[0])], CHAIN, ["mx.elsewhere.test"])
    assert not result.ok and result.result_type == "certificate-host-mismatch"
    assert "names none of mx.elsewhere.test" in result.detail


def test_rfc7672_3_2_2_either_reference_identifier_and_wildcards():
    wild = _leaf(CA, "*.example.test")
    chain = [der(wild), der(CA[0])]
    # The CNAME target (second name) is a reference identifier too.
    assert verify_chain([tlsa(2, 0, 1, CA[0])], chain, ["mx.alias.test", "a.example.test"]).ok
    assert not verify_chain([tlsa(2, 0, 1, CA[0])], chain, ["a.b.example.test"]).ok


def test_rfc7672_3_1_2_the_trust_anchor_must_be_in_the_presented_chain():
    assert not verify_chain([tlsa(2, 0, 1, CA[0])], [der(LEAF)], ["mx.example.test"]).ok


def test_dane_ta_the_leaf_itself_is_no_trust_anchor():
    assert not verify_chain([tlsa(2, 0, 1, LEAF)], CHAIN, ["mx.example.test"]).ok


def test_dane_ta_a_leaf_of_another_ca_does_not_chain():
    stranger = _leaf(_ca("another CA"), "mx.example.test")
    result = verify_chain([tlsa(2, 0, 1, CA[0])], [der(stranger), der(CA[0])],
                          ["mx.example.test"])
    assert not result.ok and result.result_type == "validation-failure"


def test_dane_ta_checks_expiry():
    old = _leaf(CA, "mx.example.test", expired=True)
    assert not verify_chain([tlsa(2, 0, 1, CA[0])], [der(old), der(CA[0])],
                            ["mx.example.test"]).ok


def test_no_certificate_at_all():
    result = verify_chain([tlsa(3, 1, 1, LEAF)], [], ["mx.example.test"])
    assert not result.ok and "no certificate" in result.detail


# --- RFC 7672 2.2 and RFC 8461 2: the requirement ----------------------------------------------

USABLE = DaneHost("mx1.a.test", "usable", (tlsa(3, 1, 1, LEAF),), ("mx1.a.test",))
FAILED = DaneHost("mx2.a.test", "failed", detail="TLSA lookup of _25._tcp.mx2.a.test failed",
                  result_type="dnssec-invalid")
NONE = DaneHost("mx3.a.test", "none", detail="mx3.a.test publishes no TLSA record")
INSECURE = DaneHost("mx4.a.test", "insecure", detail="not DNSSEC-validated")
HOSTS = (USABLE, FAILED, NONE, INSECURE)
ENFORCE = StsPolicy("enforce", 86400, ("mx3.a.test",))


def test_a_host_with_usable_tlsa_is_dialled_with_dane_only():
    req = choose("a.test", "opportunistic", None, dane=True, dane_hosts=HOSTS)
    assert req.label == "dane"
    assert req.connect_modes("MX1.a.test.") == ("dane",)
    assert not req.accepts("mx1.a.test", tls_active=True, tls_verified=True,
                           verify_tried=True)  # PKIX is not DANE
    assert req.accepts("mx1.a.test", tls_active=True, tls_verified=False,
                       verify_tried=False, dane_verified=True)
    # Hosts DANE does not decide for stay as the path would send, under its label.
    assert req.connect_modes("mx3.a.test") == ("opportunistic", "disabled")
    assert req.label_for("mx3.a.test") == "opportunistic" and req.label_for("mx1.a.test") \
        == "dane"
    assert req.connect_modes("mx4.a.test") == ("opportunistic", "disabled")


def test_rfc7672_2_2_a_failed_tlsa_lookup_refuses_the_host():
    req = choose("a.test", "opportunistic", None, dane=True, dane_hosts=HOSTS)
    assert not req.may_use("mx2.a.test")
    text, result_type = req.refusal("mx2.a.test")
    assert text == ("DANE for MX host mx2.a.test of a.test: TLSA lookup of "
                    "_25._tcp.mx2.a.test failed")
    assert result_type == "dnssec-invalid"


def test_rfc8461_2_dane_wins_over_mta_sts_for_the_hosts_that_publish_it():
    req = choose("a.test", "opportunistic", ENFORCE, dane=True, dane_hosts=HOSTS)
    # mx1 is not in the MTA-STS policy, but DANE decides for it.
    assert req.may_use("mx1.a.test") and req.connect_modes("mx1.a.test") == ("dane",)
    assert req.failure("mx1.a.test", tls_verified=False, tls_error="") == ""
    # mx3 (no TLSA) is MTA-STS's: verified and named in the policy.
    assert req.may_use("mx3.a.test") and req.connect_modes("mx3.a.test") == ("verify",)
    assert not req.may_use("mx4.a.test")  # not in the policy, no DANE
    assert req.refusal("mx4.a.test")[0].startswith("MTA-STS policy of a.test (enforce)")


def test_dane_only_refuses_every_host_without_usable_tlsa():
    req = choose("a.test", "opportunistic", None, "dane-only", dane_hosts=HOSTS)
    assert req.label == "dane-only" and req.may_use("mx1.a.test")
    for host, why in [("mx3.a.test", "mx3.a.test publishes no TLSA record"),
                      ("mx4.a.test", "not DNSSEC-validated"),
                      ("mx9.a.test", "no usable TLSA record for mx9.a.test")]:
        text, result_type = req.refusal(host)
        assert text == f"DANE (dane-only) for MX host {host} of a.test: {why}", text
        assert result_type == "dane-required"


def test_policy_dane_is_dane_else_opportunistic_without_mta_sts():
    req = choose("a.test", "verify", ENFORCE, "dane", dane_hosts=HOSTS)
    assert req.sts == "" and req.connect_modes("mx1.a.test") == ("dane",)
    assert req.connect_modes("mx3.a.test") == ("opportunistic", "disabled")


@pytest.mark.parametrize("override", ["verify", "required", "opportunistic", "disabled"])
def test_a_fixed_mode_replaces_dane(override):
    req = choose("a.test", "opportunistic", None, override, dane=True, dane_hosts=HOSTS)
    assert req.dane_for("mx1.a.test") is None and req.may_use("mx2.a.test")
    assert req.label == override


def test_dane_off_ignores_the_records():
    req = choose("a.test", "opportunistic", None, dane=False, dane_hosts=HOSTS)
    assert req.label == "opportunistic" and req.may_use("mx2.a.test")
    assert req.connect_modes("mx1.a.test") == ("opportunistic", "disabled")


def test_nothing_published_keeps_the_paths_label():
    req = choose("a.test", "opportunistic", None, dane=True, dane_hosts=(NONE, INSECURE))
    assert req.label == "opportunistic"
