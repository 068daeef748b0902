"""DKIM through the real path: a message relayed over SMTP is signed before the spool
write, delivered to a real MX on loopback, and verified by dkimpy resolving the published
key through the real test DNS server. Both algorithms, dual signatures, tampering, DSNs
signed with the server's own key, and a missing key refusing to start."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import urllib.request

import dkim

from mta.dkim.dnstxt import txt_lookup
from mta.dkim.keys import ED25519, RSA, generate_key, txt_value
from tests.support.dnsserver import txt

BASE_ZONES = {
    "dest.test": """
@       IN MX 10 mx1.dest.test.
mx1     IN A 127.0.0.2
""",
}


def _keys(tmp_path):
    out = {}
    for name, alg in (("rsa", RSA), ("ed", ED25519)):
        key, pem = generate_key(alg)
        path = tmp_path / f"{name}.key"
        path.write_bytes(pem)
        path.chmod(0o600)
        out[name] = (path, txt_value(key))
    return out


def _zones(keys) -> dict[str, str]:
    return {**BASE_ZONES, "signer.test": f"""
@              IN MX 10 mx.signer.test.
mx             IN A 127.0.0.4
rsa1._domainkey IN TXT {txt(keys["rsa"][1])}
ed1._domainkey  IN TXT {txt(keys["ed"][1])}
"""}


def _send(port: int, msg: bytes, sender: str = "alice@signer.test",
          rcpts: tuple[str, ...] = ("bob@dest.test",)) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail(sender, list(rcpts), msg)


MSG = (b"From: Alice <alice@signer.test>\r\nTo: bob@dest.test\r\nSubject: signed\r\n"
       b"Message-ID: <s1@signer.test>\r\n\r\nHello, signed world.\r\n")


async def _run(mta_factory, dns_server_factory, mx_factory, tmp_path, dkim_toml: str):
    keys = _keys(tmp_path)
    dns = dns_server_factory(_zones(keys))
    mx = await mx_factory("127.0.0.2")
    sender_mx = await mx_factory("127.0.0.4")
    toml = dkim_toml.format(rsa=keys["rsa"][0], ed=keys["ed"][0])
    mta = await asyncio.to_thread(mta_factory, toml, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    return mta, dns, mx, sender_mx


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _verify(body: bytes, nameserver: str) -> bool:
    return dkim.verify(body, dnsfunc=txt_lookup([nameserver]))


async def test_rsa_signature_verifies_against_the_published_key(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, dns, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path, """
[dkim."signer.test"]
selector = "rsa1"
key = "{rsa}"
""")
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    [m] = await mx.wait_for_messages(1, timeout=15)
    assert m.body.startswith(b"DKIM-Signature: ")
    assert b"a=rsa-sha256" in m.body.split(b"\r\n\r\n")[0]
    assert await asyncio.to_thread(_verify, m.body, dns.nameserver)
    metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{mta.http_port}/metrics")
    assert 'mta_dkim_sign_seconds_count{algorithm="dkim"} 1.0' in metrics
    # A body changed in transit no longer verifies.
    tampered = m.body.replace(b"Hello, signed world.", b"Hello, forged world.")
    assert not await asyncio.to_thread(_verify, tampered, dns.nameserver)


async def test_dual_rsa_and_ed25519_signatures(mta_factory, dns_server_factory, mx_factory,
                                               tmp_path):
    mta, dns, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path, """
[dkim."signer.test"]
algorithms = ["rsa-sha256", "ed25519-sha256"]
selector = "rsa1"
key = "{rsa}"
ed25519_selector = "ed1"
ed25519_key = "{ed}"
""")
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    [m] = await mx.wait_for_messages(1, timeout=15)
    head = m.body.split(b"\r\n\r\n")[0]
    assert head.count(b"DKIM-Signature:") == 2
    lookup = txt_lookup([dns.nameserver])
    for index in range(2):
        d = dkim.DKIM(m.body)
        assert await asyncio.to_thread(d.verify, index, lookup)


async def test_mail_from_an_unconfigured_domain_is_not_signed(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, _, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path, """
[dkim."signer.test"]
selector = "rsa1"
key = "{rsa}"
""")
    other = MSG.replace(b"alice@signer.test", b"carol@elsewhere.test")
    await asyncio.to_thread(_send, mta.smtp_port, other, "carol@elsewhere.test")
    [m] = await mx.wait_for_messages(1, timeout=15)
    assert b"DKIM-Signature" not in m.body


async def test_dsn_is_signed_with_the_servers_own_domain_key(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, dns, mx, sender_mx = await _run(
        mta_factory, dns_server_factory, mx_factory, tmp_path, """
[dkim."signer.test"]
selector = "rsa1"
key = "{rsa}"
sign_dsn = true
""")
    # The server's hostname must be in the signing domain for DSN signing to align.
    text = mta.config_path.read_text().replace('hostname = "mta.test"',
                                                'hostname = "mx.signer.test"')
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.terminate)
    await asyncio.to_thread(mta.start)
    mx.script("gone@dest.test", "550 5.1.1 no such user")
    await asyncio.to_thread(_send, mta.smtp_port, MSG, "alice@signer.test",
                            ("gone@dest.test",))
    [dsn] = await sender_mx.wait_for_messages(1, timeout=15)
    assert b"multipart/report" in dsn.body
    assert dsn.body.startswith(b"DKIM-Signature: ")
    assert await asyncio.to_thread(_verify, dsn.body, dns.nameserver)


def test_missing_key_refuses_to_start_with_a_clear_message(tmp_path):
    cfg = tmp_path / "mta.toml"
    cfg.write_text(f"""
[dkim."signer.test"]
selector = "rsa1"
key = "{tmp_path / 'missing.key'}"
""")
    for cmd in ("check-config", "serve"):
        proc = subprocess.run([sys.executable, "-m", "mta.cli", cmd, "-c", str(cfg)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 78
        assert 'dkim."signer.test".key' in proc.stderr
        assert "missing.key" in proc.stderr


async def test_sighup_loads_a_new_signing_key(mta_factory, dns_server_factory, mx_factory,
                                              tmp_path):
    import signal
    import time

    mta, dns, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path, "")
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    [unsigned] = await mx.wait_for_messages(1, timeout=15)
    assert b"DKIM-Signature" not in unsigned.body
    key = tmp_path / "rsa.key"  # written by _run, published as rsa1 in the test zone
    mta.config_path.write_text(mta.config_path.read_text() + (
        f'\n[dkim."signer.test"]\nselector = "rsa1"\nkey = "{key}"\n'))
    mta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "configuration reloaded" not in mta.stderr and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    messages = await mx.wait_for_messages(2, timeout=15)
    assert messages[1].body.startswith(b"DKIM-Signature: ")
    assert await asyncio.to_thread(_verify, messages[1].body, dns.nameserver)
