"""DANE for SMTP (RFC 7672, RFC 7671, RFC 6698) as values: TLSA records and their match.

Owns, without I/O:
- `parse_tlsa("3 1 1 <hex>")` -> `TlsaRecord`, and which records are usable (RFC 7672
  3.1.3: DANE-TA(2) and DANE-EE(3) only; PKIX-TA(0) and PKIX-EE(1) are "unusable", as are
  unknown selectors and matching types and digests of the wrong length);
- `dane_host(answer)`: one MX host's DNS outcome (mta.dns.dane) as what delivery needs:
  usable records, "unusable" (all records unusable: RFC 7672 3.1.3 and 2.2 ask for TLS
  without authentication, never the clear), none, insecure, or failed;
- `verify_chain(records, chain, names)`: whether a server's presented chain matches:
    DANE-EE(3): the leaf certificate (selector 0) or its SubjectPublicKeyInfo (1), in full
      (matching type 0) or as SHA-256 (1) / SHA-512 (2); no name and no expiry check
      (RFC 7672 3.1.1);
    DANE-TA(2): a certificate of the chain other than the leaf matches, and the leaf
      chains to it (checked by cryptography.x509.verification, a real path validation),
      with the name checks of RFC 7672 3.2.2: a DNS SAN of the leaf matches one of
      `names` (the MX host, and its CNAME target), "*." wildcards in the first label.
Failures carry an RFC 8460 4.3 result type (TLS-RPT reads them).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mta.dns import TlsaAnswer

__all__ = [
    "DANE_EE",
    "DANE_TA",
    "DaneHost",
    "DaneResult",
    "TlsaRecord",
    "TlsaSyntaxError",
    "dane_host",
    "parse_tlsa",
    "verify_chain",
]

# RFC 7218 names of the TLSA parameters.
PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
CERT, SPKI = 0, 1
FULL, SHA256, SHA512 = 0, 1, 2
_DIGEST_SIZE = {SHA256: 32, SHA512: 64}

# RFC 8460 4.3 result types this module and its callers report.
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
HOST_MISMATCH = "certificate-host-mismatch"
VALIDATION_FAILURE = "validation-failure"
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"


class TlsaSyntaxError(ValueError):
    """TLSA rdata that is not "usage selector matching-type hex"."""


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 3.1.3: only DANE-TA and DANE-EE, with known parameters, count."""
        if self.usage not in (DANE_TA, DANE_EE) or self.selector not in (CERT, SPKI):
            return False
        if self.mtype == FULL:
            return bool(self.data)
        return _DIGEST_SIZE.get(self.mtype) == len(self.data)

    @property
    def text(self) -> str:
        """The full presentation form (RFC 8460 4.4: a "tlsa" policy-string entry)."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def __str__(self) -> str:
        """Short, for reply texts."""
        hexa = self.data.hex()
        return f"{self.usage} {self.selector} {self.mtype} " + (
            hexa if len(hexa) <= 16 else hexa[:16] + "...")


def parse_tlsa(text: str) -> TlsaRecord:
    """TLSA rdata in presentation form (RFC 6698 2.2); the hex may be split by spaces."""
    fields = text.split()
    if len(fields) < 4:
        raise TlsaSyntaxError(f"TLSA {text!r}: not usage, selector, matching type and data")
    try:
        usage, selector, mtype = (int(f) for f in fields[:3])
        data = bytes.fromhex("".join(fields[3:]))
    except ValueError:
        raise TlsaSyntaxError(f"TLSA {text!r}: not numbers and hex") from None
    if not all(0 <= n <= 255 for n in (usage, selector, mtype)):
        raise TlsaSyntaxError(f"TLSA {text!r}: a parameter is not 0-255")
    return TlsaRecord(usage, selector, mtype, data)


# --- one MX host ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DaneHost:
    """What delivery to one MX host needs from DANE (see TlsRequirement)."""

    host: str
    state: str  # "usable" | "unusable" | "none" | "insecure" | "failed"
    records: tuple[TlsaRecord, ...] = ()  # the usable ones
    names: tuple[str, ...] = ()  # reference identifiers for DANE-TA
    detail: str = ""
    result_type: str = ""  # RFC 8460, when DANE found a problem in DNS
    base: str = ""  # the TLSA base domain (the host, or its CNAME target): SNI

    @property
    def applies(self) -> bool:
        """DANE decides for this host (and MTA-STS does not: RFC 8461 2)."""
        return self.state in ("usable", "unusable", "failed")


@functools.lru_cache(maxsize=4096)
def _parsed(records: tuple[str, ...]) -> tuple[tuple[TlsaRecord, ...], int]:
    """(usable records, how many were published); cached: the same RRset comes with
    every message to the host."""
    usable = []
    for text in records:
        try:
            record = parse_tlsa(text)
        except TlsaSyntaxError:
            continue
        if record.usable:
            usable.append(record)
    return tuple(dict.fromkeys(usable)), len(records)


def dane_host(answer: TlsaAnswer) -> DaneHost:
    if answer.state == "failed":
        return DaneHost(answer.host, "failed", (), answer.names, answer.detail,
                        DNSSEC_INVALID)
    if answer.state != "secure":
        return DaneHost(answer.host, answer.state, (), answer.names, answer.detail)
    usable, n = _parsed(answer.records)
    if not usable:
        return DaneHost(answer.host, "unusable", (), answer.names,
                        f"none of the {n} TLSA record(s) of {answer.tlsa_name} is usable "
                        "(only DANE-TA(2) and DANE-EE(3) are)", TLSA_INVALID)
    return DaneHost(answer.host, "usable", usable, answer.names,
                    f"{len(usable)} usable TLSA record(s) at {answer.tlsa_name}",
                    base=answer.tlsa_name.split(".", 2)[-1])


# --- matching a presented chain ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DaneResult:
    ok: bool
    detail: str  # what matched, or why nothing did
    result_type: str = ""  # RFC 8460, when not ok


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == CERT:
        return der
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _associated(data: bytes, mtype: int) -> bytes:
    if mtype == SHA256:
        return hashlib.sha256(data).digest()
    if mtype == SHA512:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TlsaRecord, cert: x509.Certificate, der: bytes) -> bool:
    return _associated(_selected(cert, der, record.selector), record.mtype) == record.data


def verify_chain(records: Iterable[TlsaRecord], chain: Sequence[bytes],
                 names: Sequence[str], now: datetime.datetime | None = None) -> DaneResult:
    """Whether the presented `chain` (DER, leaf first) matches one of `records`."""
    records = [r for r in records if r.usable]
    if not chain:
        return DaneResult(False, "the server presented no certificate", VALIDATION_FAILURE)
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain]
    except ValueError as e:
        return DaneResult(False, f"the server's certificate cannot be parsed: {e}",
                          VALIDATION_FAILURE)
    leaf = certs[0]
    for r in records:
        if r.usage == DANE_EE and _matches(r, leaf, chain[0]):
            return DaneResult(True, f"DANE-EE TLSA {r} matches the server's certificate")
    why = "no TLSA record matches the server's certificate"
    result_type = VALIDATION_FAILURE
    for r in records:
        if r.usage != DANE_TA:
            continue
        for cert, der in zip(certs[1:], chain[1:], strict=True):
            if not _matches(r, cert, der):
                continue
            outcome = _chains_to(leaf, cert, certs[1:], names, now)
            if outcome.ok:
                return DaneResult(True, f"DANE-TA TLSA {r} matches "
                                        f"{cert.subject.rfc4514_string()!r}, the issuer "
                                        "the certificate chains to")
            why, result_type = outcome.detail, outcome.result_type
    return DaneResult(False, why, result_type)


def _chains_to(leaf: x509.Certificate, anchor: x509.Certificate,
               intermediates: list[x509.Certificate], names: Sequence[str],
               now: datetime.datetime | None) -> DaneResult:
    """A real path validation from `leaf` to the TLSA-matched `anchor`, for each reference
    identifier in turn (the verifier checks names: SAN dNSName, RFC 6125 wildcards)."""
    builder = PolicyBuilder().store(Store([anchor])).time(
        now or datetime.datetime.now(datetime.UTC))
    last = ""
    for name in names:
        try:
            verifier = builder.build_server_verifier(x509.DNSName(name))
            verifier.verify(leaf, [c for c in intermediates if c != anchor])
            return DaneResult(True, "")
        except (VerificationError, ValueError) as e:
            last = str(e)
    if last and _names_differ(leaf, names):
        return DaneResult(False, "the certificate chains to the DANE-TA trust anchor but "
                                 f"names none of {', '.join(names)} (it names "
                                 f"{', '.join(_dns_names(leaf)) or 'no DNS name'})",
                          HOST_MISMATCH)
    return DaneResult(False, "the certificate does not chain to the DANE-TA trust anchor: "
                             f"{last}", VALIDATION_FAILURE)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]


def _names_differ(cert: x509.Certificate, names: Sequence[str]) -> bool:
    """True when no SAN of `cert` matches any of `names` (RFC 7672 3.2.3 rules)."""
    wanted = [n.lower().rstrip(".") for n in names]
    for san in _dns_names(cert):
        for name in wanted:
            if san == name:
                return False
            if san.startswith("*.") and name.partition(".")[2] == san[2:]:
                return False
    return True
