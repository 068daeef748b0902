"""`mta drain` / `mta intake resume` on a real daemon: new mail is refused (SMTP 421 4.3.2
at connect and at MAIL, HTTP injection 503), /readyz and the mta_intake_accepting gauge say
so, and mail already queued keeps being delivered."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import urllib.error
import urllib.request

from tests.support.daemon import ADMIN_TOKEN

ZONES = {"dest.test": "@ IN MX 10 mx1.dest.test.\nmx1 IN A 127.0.0.2\n"}


def _http(mta, method: str, path: str, body: dict | None = None,
          token: str | None = None) -> tuple[int, dict | str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def _send(port: int, rcpt: str = "a@dest.test") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@client.test")
        s.rcpt(rcpt)
        code, msg = s.data(b"Subject: x\r\n\r\nbody\r\n")
        assert code == 250, msg


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(512)
            if not chunk:
                break
            data += chunk
        return data


def _gauge(mta) -> str:
    _, text = _http(mta, "GET", "/metrics")
    assert isinstance(text, str)
    return next(line for line in text.splitlines()
                if line.startswith("mta_intake_accepting"))


async def test_drain_refuses_new_mail_keeps_delivering_and_resumes(
        mta_factory, dns_server_factory, mx_factory):
    await mx_factory("127.0.0.9")  # fixes the shared port; nothing listens on 127.0.0.2 yet
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(
        mta_factory, dns=dns.nameserver, delivery_port=mx_factory.port,
        delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "2s"',
        smtp_extra='relay_networks = ["127.0.0.0/8"]')
    assert _http(mta, "GET", "/readyz") == (200, {"ready": True, "accepting": True})
    assert _gauge(mta) == "mta_intake_accepting 1.0"
    await asyncio.to_thread(_send, mta.smtp_port)  # queued, deferred: no MX up yet
    # A client connected before the drain: its next MAIL is refused.
    early = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", mta.smtp_port, timeout=10)
    await asyncio.to_thread(early.ehlo, "early.test")

    proc = await asyncio.to_thread(mta.cli, "drain", "--reason", "moving to new host")
    assert proc.returncode == 0, proc.stderr
    assert "paused" in proc.stdout and "moving to new host" in proc.stdout

    code, msg = await asyncio.to_thread(early.mail, "s@client.test")
    assert (code, msg.split()[0]) == (421, b"4.3.2")
    assert (await asyncio.to_thread(_greeting, mta.smtp_port)).startswith(b"421 4.3.2 ")
    status, body = _http(mta, "POST", "/api/v1/messages", {"from": "a@b.test"})
    assert status == 503 and body["error"]["code"] == "not_accepting"
    status, body = _http(mta, "GET", "/readyz")
    assert status == 503 and body["ready"] is False and "draining" in body["reason"]
    assert _gauge(mta) == "mta_intake_accepting 0.0"
    proc = await asyncio.to_thread(mta.cli, "intake", "status", "--json")
    assert json.loads(proc.stdout)["accepting"] is False

    # The queue goes on: the destination comes up and gets the message queued before.
    dest = await mx_factory("127.0.0.2")
    [got] = await dest.wait_for_messages(1, timeout=15)
    assert got.rcpt_tos == ["a@dest.test"]

    proc = await asyncio.to_thread(mta.cli, "intake", "resume")
    assert proc.returncode == 0 and "accepting" in proc.stdout, proc.stderr
    assert _http(mta, "GET", "/readyz")[0] == 200
    assert _gauge(mta) == "mta_intake_accepting 1.0"
    await asyncio.to_thread(_send, mta.smtp_port, "b@dest.test")
    await dest.wait_for_messages(2, timeout=15)
    # Without an API key injection is 401 again, no longer 503.
    assert _http(mta, "POST", "/api/v1/messages", {"from": "a@b.test"})[0] == 401
    switched = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "intake" and e["accepting"])
    assert switched, "no intake event for the resume"  # the events log is written in bursts
    events = [e for e in mta.events() if e["event"] in ("intake", "rejected")]
    assert [e["accepting"] for e in events if e["event"] == "intake"] == [False, True]
    assert {e["reason"] for e in events if e["event"] == "rejected"} == {"intake_paused"}


async def test_admin_route_validates_and_needs_the_token(mta_factory):
    mta = await asyncio.to_thread(mta_factory)
    assert _http(mta, "POST", "/api/v1/admin/intake", {"accepting": False})[0] == 401
    status, body = _http(mta, "POST", "/api/v1/admin/intake", {"accepting": "no"},
                         token=ADMIN_TOKEN)
    assert status == 400 and body["error"]["code"] == "bad_accepting"
    status, body = _http(mta, "POST", "/api/v1/admin/intake", {"accepting": False},
                         token=ADMIN_TOKEN)
    assert status == 200 and body["accepting"] is False
    assert _http(mta, "GET", "/api/v1/admin/intake", token=ADMIN_TOKEN)[1][
        "accepting"] is False
