"""SIGHUP on a real daemon: what the edited config file says applies from then on, to
policy (quotas, suspensions in [tenants]), shaping, egress paths and TLS, without a
restart."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
import ssl
import time
import urllib.request

from tests.support.daemon import ADMIN_TOKEN, MtaProcess, free_port
from tests.support.tls import write_self_signed

MSG = "From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n"


def _reload(mta: MtaProcess, old: str, new: str) -> None:
    """Edit the config file, SIGHUP, and wait for the daemon to say it took it."""
    text = mta.config_path.read_text()
    assert old in text
    done = mta.stderr.count("configuration reloaded")
    mta.config_path.write_text(text.replace(old, new, 1))
    mta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while mta.stderr.count("configuration reloaded") == done:
        assert time.monotonic() < deadline, mta.stderr
        assert "reload refused" not in mta.stderr, mta.stderr
        time.sleep(0.05)


def _rcpt(mta: MtaProcess, n: int) -> tuple[int, bytes]:
    """One message from the relay network (tenant "default"): the RCPT reply, and the
    message sent when it was accepted."""
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        code, text = s.mail("a@sender.test")
        if code != 250:
            return code, text
        code, text = s.rcpt(f"r{n}@dest.test")
        if code == 250:
            assert s.data(MSG)[0] == 250
        return code, text


def test_sighup_applies_a_new_daily_quota_over_smtp(mta_factory):
    mta = mta_factory("[tenants.default]\nmessages_per_day = 1\n")
    assert _rcpt(mta, 1)[0] == 250
    code, text = _rcpt(mta, 2)
    assert (code, text[:5]) == (451, b"4.7.1")  # the day's one message is used
    _reload(mta, "messages_per_day = 1", "messages_per_day = 3")
    assert _rcpt(mta, 3)[0] == 250
    assert _rcpt(mta, 4)[0] == 250
    code, text = _rcpt(mta, 5)
    assert (code, text[:5]) == (451, b"4.7.1")  # three a day now, and three were sent
    assert len(mta.queue_list()) == 3


def test_sighup_applies_a_suspension_set_in_the_config(mta_factory):
    mta = mta_factory('[tenants.default]\nstatus = "active"\n')
    assert _rcpt(mta, 1)[0] == 250
    _reload(mta, 'status = "active"', 'status = "suspended"')
    code, text = _rcpt(mta, 2)
    assert (code, text[:5]) == (554, b"5.7.1")
    _reload(mta, 'status = "suspended"', 'status = "active"')
    assert _rcpt(mta, 3)[0] == 250


def _site_rules(mta: MtaProcess, site: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}/api/v1/admin/shaping/sites/{site}")
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_sighup_applies_new_shaping(mta_factory):
    mta = mta_factory("[shaping.default]\nconnection_limit = 7\n")
    assert _site_rules(mta, "dest.test")["connections"]["limit"] == 7
    _reload(mta, "connection_limit = 7", "connection_limit = 3")
    assert _site_rules(mta, "dest.test")["connections"]["limit"] == 3


def test_sighup_turns_on_starttls_with_a_new_certificate(mta_factory):
    mta = mta_factory()
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
    write_self_signed(mta.workdir / "cert.pem", mta.workdir / "key.pem")
    _reload(mta, "[smtp]\n",
            f'[smtp]\ntls_cert = "{mta.workdir / "cert.pem"}"\n'
            f'tls_key = "{mta.workdir / "key.pem"}"\n')
    ctx = ssl.create_default_context(cafile=str(mta.workdir / "cert.pem"))
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        assert s.starttls(context=ctx)[0] == 220
        s.ehlo("client.test")
        assert s.sock.version() is not None  # the handshake used the new certificate
        s.sendmail("a@sender.test", ["b@dest.test"], MSG)
    assert len(mta.queue_list()) == 1


async def test_sighup_moves_delivery_paths_to_a_new_port(mta_factory, dns_server_factory,
                                                         mx_factory):
    """Egress paths are rebuilt on reload: a message deferred against a port nobody listens
    on reaches the MX once the config names the MX's port, without a restart."""
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory({"dest.test": "@ IN MX 10 mx.dest.test.\nmx IN A 127.0.0.4\n"})
    closed = free_port("127.0.0.4")
    mta = await asyncio.to_thread(
        mta_factory, dns=dns.nameserver, delivery_port=closed,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "2s"')
    assert (await asyncio.to_thread(_rcpt, mta, 1))[0] == 250
    deferred = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "deferred", 20)
    assert deferred and mx.messages == []
    await asyncio.to_thread(_reload, mta, f"port = {closed}", f"port = {mx_factory.port}")
    await mx.wait_for_messages(1, timeout=20)
    assert mx.messages[0].rcpt_tos == ["r1@dest.test"]


EGRESS = """
[[egress.source]]
name = "shared"
address = "127.0.0.10"

[[egress.source]]
name = "bulk1"
address = "127.0.0.11"

[egress.pool.default]
sources = { shared = 1 }
"""


async def test_sighup_applies_new_egress_pools_and_source_addresses(
        mta_factory, dns_server_factory, mx_factory):
    """The receiver sees each message come from the address the config names at the time:
    a pool moved to another source, then a source moved to another address."""
    mx = await mx_factory("127.0.0.4")
    dns = dns_server_factory({"dest.test": "@ IN MX 10 mx.dest.test.\nmx IN A 127.0.0.4\n"})
    mta = await asyncio.to_thread(mta_factory, EGRESS, dns=dns.nameserver,
                                  delivery_port=mx_factory.port)
    peers = []
    for n, (old, new) in enumerate([
            ("", ""),
            ("sources = { shared = 1 }", "sources = { bulk1 = 1 }"),
            ('address = "127.0.0.11"', 'address = "127.0.0.12"')]):
        if old:
            await asyncio.to_thread(_reload, mta, old, new)
        assert (await asyncio.to_thread(_rcpt, mta, n))[0] == 250
        await mx.wait_for_messages(n + 1, timeout=20)
        peers.append(mx.messages[n].peer[0])
    assert peers == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
