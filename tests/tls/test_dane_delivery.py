"""DANE (RFC 7672) end to end, the way an operator sees it: the real daemon, its [dns]
Unbound validating a zone signed by ldns (tests/support/dnssec.py) beside an unsigned one,
and MX hosts on 127.0.0.x presenting certificates from a test CA.

    ee.dane.test      3 1 1 of the MX's key; its certificate names another host: delivered
    ta.dane.test      2 0 1 of the test CA, which the MX sends in its chain: delivered
    cname.dane.test   the MX host is a CNAME; TLSA and certificate at its target: delivered,
                      with the target as SNI (RFC 7672 2.2.2, 8.1)
    bad.dane.test     3 1 1 of some other key: deferred, the reason in events and explain
    bogus.dane.test   the TLSA record's signature is broken: deferred, MX never dialled
    notls.dane.test   usable TLSA, MX without STARTTLS: deferred, nothing sent in the clear
    nodane.dane.test  [tls] policy "dane-only", no TLSA published: deferred, never dialled
    plain.test        unsigned zone with a mismatching TLSA: ignored, opportunistic TLS
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import smtplib
import ssl
import urllib.request

import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.dnssec import sign_zone
from tests.support.tls import TestCA

OTHER = "cd" * 32  # a SHA-256 of nothing any MX presents


def _spki_sha256(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _context(cert_pem: bytes, key_path, tmp_path, name: str) -> ssl.SSLContext:
    chain = tmp_path / f"{name}.pem"
    chain.write_bytes(cert_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key_path)
    return ctx


@pytest_asyncio.fixture
async def world(tmp_path, dns_server_factory, mx_factory):
    ca = TestCA(tmp_path / "ca")
    ca_pem = ca.ca_file.read_bytes()
    ca_der = x509.load_pem_x509_certificate(ca_pem).public_bytes(Encoding.DER)
    ee_cert, ee_key = ca.issue("unrelated.name.test")  # DANE-EE checks no name
    ta_cert, ta_key = ca.issue("mx.ta.dane.test")
    cname_cert, cname_key = ca.issue("mx.target.dane.test")
    ee_pem = ee_cert.read_bytes()
    contexts = {
        "ee": _context(ee_pem, ee_key, tmp_path, "ee"),
        # DANE-TA: the trust anchor must be in the chain the server sends (RFC 7672 3.1.2).
        "ta": _context(ta_cert.read_bytes() + ca_pem, ta_key, tmp_path, "ta"),
        "cname": _context(cname_cert.read_bytes() + ca_pem, cname_key, tmp_path, "cname"),
    }
    sni: list[str | None] = []
    contexts["cname"].sni_callback = lambda _obj, name, _ctx: sni.append(name)
    mx = {
        "ee": await mx_factory("127.0.0.2", starttls=True, tls_context=contexts["ee"]),
        "ta": await mx_factory("127.0.0.3", starttls=True, tls_context=contexts["ta"]),
        "bad": await mx_factory("127.0.0.4", starttls=True,
                                tls_context=ca.server_context("mx.bad.dane.test")),
        "bogus": await mx_factory("127.0.0.5", starttls=True),
        "notls": await mx_factory("127.0.0.6", starttls=False),
        "plain": await mx_factory("127.0.0.7", starttls=True),
        "nodane": await mx_factory("127.0.0.8", starttls=True),
        "cname": await mx_factory("127.0.0.9", starttls=True, tls_context=contexts["cname"]),
    }
    signed = sign_zone("dane.test", f"""
ee                   MX   10 mx.ee
mx.ee                A    127.0.0.2
_25._tcp.mx.ee       TLSA 3 1 1 {_spki_sha256(ee_pem)}
ta                   MX   10 mx.ta
mx.ta                A    127.0.0.3
_25._tcp.mx.ta       TLSA 2 0 1 {hashlib.sha256(ca_der).hexdigest()}
bad                  MX   10 mx.bad
mx.bad               A    127.0.0.4
_25._tcp.mx.bad      TLSA 3 1 1 {OTHER}
bogus                MX   10 mx.bogus
mx.bogus             A    127.0.0.5
_25._tcp.mx.bogus    TLSA 3 1 1 {OTHER}
notls                MX   10 mx.notls
mx.notls             A    127.0.0.6
_25._tcp.mx.notls    TLSA 3 1 1 {OTHER}
nodane               MX   10 mx.nodane
mx.nodane            A    127.0.0.8
cname                MX   10 mx.cname
mx.cname             CNAME mx.target
mx.target            A    127.0.0.9
_25._tcp.mx.target   TLSA 2 0 1 {hashlib.sha256(ca_der).hexdigest()}
""", tmp_path, bogus=["_25._tcp.mx.bogus.dane.test"])
    dns = dns_server_factory({"plain.test": f"""
@                    MX   10 mx
mx                   A    127.0.0.7
_25._tcp.mx          TLSA 3 1 1 {OTHER}
"""}, signed=[signed])
    return dns, mx, sni


def _send(port: int, rcpt: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        assert s.rcpt(rcpt)[0] == 250
        code, reply = s.data(f"From: s@sender.test\r\nTo: {rcpt}\r\nSubject: dane\r\n\r\n"
                             "hello\r\n".encode())
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


async def _event(mta, kind: str, rcpt: str) -> dict:
    found = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == kind and e.get("recipient") == rcpt, 20)
    assert found, f"no {kind} event for {rcpt}; events: {mta.events()}"
    return found[0]


def _metrics(mta) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics",
                                timeout=10) as r:
        return r.read().decode()


async def test_dane_end_to_end(mta_factory, mx_factory, world):
    dns, mx, sni = world
    mta = await asyncio.to_thread(
        mta_factory, '[tls]\npolicy = { "nodane.dane.test" = "dane-only" }\n',
        dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"')
    ids = {}
    for name in ("ee.dane.test", "ta.dane.test", "cname.dane.test", "bad.dane.test",
                 "bogus.dane.test", "notls.dane.test", "nodane.dane.test", "plain.test"):
        ids[name] = await asyncio.to_thread(_send, mta.smtp_port, f"rcpt@{name}")

    # A TLSA record matched: delivered, reported as DANE and verified.
    for name in ("ee.dane.test", "ta.dane.test", "cname.dane.test"):
        d = await _event(mta, "delivered", f"rcpt@{name}")
        assert d["tls_policy"] == "dane" and d["tls_verified"] is True, d
        assert d["tls"].startswith("TLSv1.") and "tls_failure" not in d, d
    assert [m.rcpt_tos for m in mx["ee"].messages] == [["rcpt@ee.dane.test"]]
    assert [m.tls for m in mx["ta"].messages] == [True]
    # The CNAME target's TLSA and name were used, and named in SNI.
    assert [m.rcpt_tos for m in mx["cname"].messages] == [["rcpt@cname.dane.test"]]
    assert sni == ["mx.target.dane.test"]

    # No match: deferred with the reason; not a byte of the mail to that MX.
    bad = await _event(mta, "deferred", "rcpt@bad.dane.test")
    assert bad["tls_policy"] == "dane" and bad["category"] == "tls_failure", bad
    assert ("DANE for MX host mx.bad.dane.test of bad.dane.test: TLSA records of "
            "mx.bad.dane.test[127.0.0.4] do not match its certificate") in bad["reply"], bad
    assert bad["tls_result"] == "validation-failure"
    assert not mx["bad"].messages

    # Bogus TLSA answer: deferred without even connecting (a forged answer must not
    # become "no DANE").
    bogus = await _event(mta, "deferred", "rcpt@bogus.dane.test")
    assert "TLSA lookup of _25._tcp.mx.bogus.dane.test failed" in bogus["reply"], bogus
    assert bogus["tls_result"] == "dnssec-invalid" and not mx["bogus"].connections

    # Usable TLSA but no STARTTLS: deferred, never sent in the clear.
    notls = await _event(mta, "deferred", "rcpt@notls.dane.test")
    assert "does not offer STARTTLS" in notls["reply"], notls
    assert notls["tls_result"] == "starttls-not-supported" and not mx["notls"].messages

    # dane-only without TLSA: deferred, the host never dialled.
    nodane = await _event(mta, "deferred", "rcpt@nodane.dane.test")
    assert nodane["tls_policy"] == "dane-only" and nodane["tls_result"] == "dane-required"
    assert ("DANE (dane-only) for MX host mx.nodane.dane.test of nodane.dane.test: "
            "mx.nodane.dane.test publishes no TLSA record") in nodane["reply"], nodane
    assert not mx["nodane"].connections

    # Unsigned zone: its TLSA record proves nothing and is ignored.
    plain = await _event(mta, "delivered", "rcpt@plain.test")
    assert plain["tls_policy"] == "opportunistic" and plain["tls_verified"] is False
    assert [m.rcpt_tos for m in mx["plain"].messages] == [["rcpt@plain.test"]]

    # What the operator's `mta queue explain` says about a deferred one.
    proc = await asyncio.to_thread(mta.cli, "queue", "explain", ids["bad.dane.test"])
    assert proc.returncode == 0, proc.stderr
    [r] = json.loads(proc.stdout)["recipients"]
    assert "DANE for MX host mx.bad.dane.test" in r["last_reply"], r
    assert r["tls_policy"] == "dane", r

    metrics = await asyncio.to_thread(_metrics, mta)
    assert 'mta_delivery_tls_total{policy="dane",verified="true"} 3.0' in metrics, metrics
    assert 'mta_delivery_tls_total{policy="dane",verified="false"}' in metrics
