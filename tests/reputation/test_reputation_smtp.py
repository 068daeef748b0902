"""The ladder in the real daemon: a tenant whose mail bounces at a real MX (550 5.1.1 for
a share of its recipients) climbs to a class suspension and a temporary limit by itself,
with an event naming the figures; its transactional mail still goes, its marketing mail
is refused, another tenant's mail is untouched; policy time (a clock file) moves on and
it steps down one level per clean period, across a restart; an operator escalates and
clears by hand."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
import urllib.request

from mta.smtp.auth import hash_password
from tests.integration.test_delivery import ZONES
from tests.integration.test_policy_smtp import PW
from tests.support.daemon import MtaProcess

T0 = 1_900_000_000  # policy time of the test (2030)


def _toml() -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[tenants.shop]
[tenants.other]
[users.shop]
tenant = "shop"
password = "{pw}"
[users.other]
tenant = "other"
password = "{pw}"

[reputation]
windows = ["1h"]
min_sample = 10
hard_bounce = [0.05, 0.10, 0.20, 0.60]
interval = "200ms"
step_down_after = "2h"
limited_per_hour = 40
"""


def _send(mta, user: str, rcpt: str, cls: str = "transactional") -> int:
    msg = (f"From: a@{user}.test\r\nTo: {rcpt}\r\nSubject: hi\r\nX-Mta-Class: {cls}\r\n"
           f"Message-ID: <{time.time_ns()}@{user}.test>\r\n"
           + ("List-Unsubscribe: <mailto:u@shop.test>\r\n" if cls == "marketing" else "")
           + "\r\nhello\r\n")
    try:
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=20) as s:
            s.ehlo("client.test")
            s.login(user, PW)
            s.sendmail(f"a@{user}.test", [rcpt], msg)
        return 250
    except smtplib.SMTPRecipientsRefused as e:
        return next(iter(e.recipients.values()))[0]
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
        return e.smtp_code


def _metrics(mta) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics") as resp:
        return resp.read().decode()


def _set_clock(path, t: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{int(t)}\n")
    tmp.replace(path)


def _rep(mta, tenant: str) -> dict:
    out = mta.cli("policy", "reputation", tenant, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def _wait_state(mta, tenant: str, state: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = await asyncio.to_thread(_rep, mta, tenant)
        if r["state"] == state:
            return r
        assert time.monotonic() < deadline, r
        await asyncio.sleep(0.2)


async def test_bounces_drive_a_tenant_up_the_ladder_and_time_brings_it_down(
        tmp_path, dns_server_factory, mx_factory):
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    for i in range(4):
        mx.script(f"gone{i}@dest.test", "550 5.1.1 no such user")
    clock = tmp_path / "clock"
    _set_clock(clock, T0)
    work = tmp_path / "mta"
    work.mkdir()
    mta = MtaProcess(work, _toml(), dns=dns.nameserver, delivery_port=mx_factory.port,
                     delivery_extra='retry = ["1s"]\nmax_age = "1h"')
    mta.env["MTA_POLICY_CLOCK"] = str(clock)
    try:
        await asyncio.to_thread(mta.start)
        # 16 delivered, 4 unknown users: 20% hard bounces over 20 final outcomes.
        for i in range(16):
            assert await asyncio.to_thread(_send, mta, "shop", f"ok{i}@dest.test") == 250
        for i in range(4):
            assert await asyncio.to_thread(_send, mta, "shop", f"gone{i}@dest.test") == 250
        r = await _wait_state(mta, "shop", "suspended_class")
        assert "hard bounce 20.00% over 1h >= 20.00%" in r["reason"], r
        # One move, or several when the guard looked while outcomes were still arriving
        # (2 bounces of 18 is already "limited"): each names its figures, the first leaves ok.
        (moved,) = await asyncio.to_thread(
            mta.wait_events, lambda e: e["event"] == "reputation_changed"
            and e["state"] == "suspended_class")
        moves = [e for e in mta.events() if e["event"] == "reputation_changed"]
        assert moves[0]["previous"] == "ok" and {m["tenant"] for m in moves} == {"shop"}
        assert moved["figures"][0]["sample"] == 20 and moved["figures"][0]["hard_bounce"] == 4
        # Marketing refused, transactional still goes; the other tenant is untouched.
        assert await asyncio.to_thread(_send, mta, "shop", "m@dest.test", "marketing") >= 500
        assert await asyncio.to_thread(_send, mta, "shop", "t@dest.test") == 250
        assert await asyncio.to_thread(_send, mta, "other", "m@dest.test", "marketing") == 250
        show = await asyncio.to_thread(mta.cli, "policy", "show", "shop", "--json")
        doc = json.loads(show.stdout)
        assert "reputation: " in json.dumps(doc) and "messages_per_hour" in json.dumps(doc)
        assert (await asyncio.to_thread(_rep, mta, "other"))["state"] == "ok"
        text = await asyncio.to_thread(_metrics, mta)
        assert 'mta_tenant_reputation_level{tenant="shop"} 3.0' in text
        assert 'mta_tenant_reputation_level{tenant="other"} 0.0' in text

        # Two clean hours later (policy time): one step down; the class suspension is lifted.
        _set_clock(clock, T0 + 2 * 3600 + 60)
        await _wait_state(mta, "shop", "limited")
        assert await asyncio.to_thread(_send, mta, "shop", "m2@dest.test", "marketing") == 250
        # The state survives a restart, and the next step follows the same timer.
        assert mta.terminate() == 0
        await asyncio.to_thread(mta.start)
        assert (await asyncio.to_thread(_rep, mta, "shop"))["state"] == "limited"
        _set_clock(clock, T0 + 4 * 3600 + 120)
        await _wait_state(mta, "shop", "warned")
        show = await asyncio.to_thread(mta.cli, "policy", "show", "shop", "--json")
        assert "reputation: " not in show.stdout  # the limit was lifted with "limited"

        # By hand: escalate the other tenant, then clear it.
        out = await asyncio.to_thread(mta.cli, "policy", "escalate", "other", "suspended",
                                      "--reason", "ticket 42")
        assert out.returncode == 0, out.stderr
        assert await asyncio.to_thread(_send, mta, "other", "x@dest.test") >= 500
        out = await asyncio.to_thread(mta.cli, "policy", "clear", "other", "--reason", "ok")
        assert out.returncode == 0, out.stderr
        assert await asyncio.to_thread(_send, mta, "other", "x@dest.test") == 250
        hist = (await asyncio.to_thread(_rep, mta, "other"))["history"]
        assert [(h["to"], h["by"]) for h in hist] == [("suspended", "operator"),
                                                     ("ok", "operator")]
    finally:
        mta.kill()
