"""Webhooks from the real daemon to a real receiver that verifies each request with the
`standardwebhooks` library: events arrive signed and batched; a receiver down for a while
gets every event afterwards, repeats with the same webhook id; kill -9 with a full outbox
loses nothing; tenants see only their own events and may not point an endpoint at a
private address; batches that fail for good are listed and replayed; an endpoint failing
too long, or answering 410, is disabled with an event."""

from __future__ import annotations

import asyncio
import json
import smtplib
import sqlite3
import time
import urllib.error
import urllib.request

from mta.smtp.auth import hash_password
from tests.integration.test_policy_smtp import PW
from tests.support.daemon import ADMIN_TOKEN
from tests.support.receiver import WebhookReceiver

FAST = """
[webhooks]
batch_wait = "50ms"
retry_initial = "200ms"
retry_max = "500ms"
"""


def _send(mta, n: int = 1, rcpt: str = "someone@dest.test", user: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=20) as s:
        s.ehlo("client.test")
        if user:
            s.login(user, PW)
        for i in range(n):
            s.sendmail("app@shop.test", [rcpt], f"From: app@shop.test\r\nSubject: {i}\r\n"
                       f"Message-ID: <{time.time_ns()}.{i}@shop.test>\r\n\r\nhi\r\n")


def _api(mta, method: str, path: str, body: dict | None = None,
         token: str = ADMIN_TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _add(mta, rx: WebhookReceiver, *args: str) -> str:
    out = mta.cli("webhooks", "add", rx.url, "--json", *args)
    assert out.returncode == 0, out.stderr
    ep = json.loads(out.stdout)
    rx.secret = ep["secret"]
    return ep["id"]


def _outbox_events(mta) -> int:
    db = sqlite3.connect(mta.workdir / "spool" / "webhooks-00.sqlite")
    try:
        return db.execute("SELECT COALESCE(SUM(events), 0) FROM batches").fetchone()[0]
    finally:
        db.close()


async def test_events_arrive_signed_and_batched(mta_factory):
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, FAST)
        ep = await asyncio.to_thread(_add, mta, rx, "--events", "received")
        await asyncio.to_thread(_send, mta, 30)
        got = await rx.wait_events(lambda e: e["event"] == "received", 30)
        assert len(got) == 30
        assert {e["recipient"] for e in got} == {"someone@dest.test"}
        assert all(e["tenant"] == "default" and e["id"] for e in got)
        # The client's own reference travels with our queue id.
        assert all(e["message_id"].endswith("@shop.test>") for e in got)
        # Batched: one message's 30 events take far fewer than 30 requests.
        assert len(rx.accepted) < 30 and rx.bad_signatures == 0
        assert {d.type for d in rx.accepted} == {"mta.events"}
        # The filter: no other event kind reached the endpoint.
        assert {e["event"] for e in rx.events} == {"received"}
        listed = await asyncio.to_thread(mta.cli, "webhooks", "list")
        assert ep in listed.stdout and "whsec_" not in listed.stdout
        test = await asyncio.to_thread(mta.cli, "webhooks", "test", ep)
        assert test.returncode == 0 and "answered 204" in test.stdout, test.stdout
        assert any(d.type == "webhook.test" for d in rx.accepted)
    finally:
        await rx.stop()


async def test_receiver_down_then_up_gets_every_event_with_the_same_ids(mta_factory):
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, FAST)
        await asyncio.to_thread(_add, mta, rx, "--events", "received")
        rx.status = 503
        rx.headers = {"Retry-After": "0"}
        await asyncio.to_thread(_send, mta, 50)
        deadline = time.monotonic() + 10
        while len(set(rx.refused_ids)) < 1 or len(rx.refused_ids) < 3:
            assert time.monotonic() < deadline, "no retries seen"
            await asyncio.sleep(0.05)
        listed = await asyncio.to_thread(mta.cli, "webhooks", "list", "--json")
        test = await asyncio.to_thread(mta.cli, "webhooks", "test",
                                       json.loads(listed.stdout)[0]["id"])
        assert test.returncode == 69 and "503" in test.stdout
        rx.status = 200
        got = await rx.wait_events(lambda e: e["event"] == "received", 50)
        assert len(got) == 50
        # At least once, never twice for a batch that was accepted; a refused batch came
        # back with the same webhook id.
        ids = [d.webhook_id for d in rx.accepted]
        assert len(ids) == len(set(ids))
        assert set(rx.refused_ids[:1]) <= set(ids)
        assert len({e["id"] for e in got}) == 50
    finally:
        await rx.stop()


async def test_kill_9_with_a_full_outbox_loses_nothing(mta_factory):
    rx = await WebhookReceiver.start()
    port = rx.port
    mta = await asyncio.to_thread(mta_factory, FAST)
    await asyncio.to_thread(_add, mta, rx, "--events", "received")
    secret = rx.secret
    await rx.stop()  # the receiver is gone: connections refused
    await asyncio.to_thread(_send, mta, 40)
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(_outbox_events, mta) < 40:
        assert time.monotonic() < deadline, "events never reached the outbox"
        await asyncio.sleep(0.05)
    mta.kill()
    rx = await WebhookReceiver.start(port=port)
    rx.secret = secret
    try:
        await asyncio.to_thread(mta.start)
        got = await rx.wait_events(lambda e: e["event"] == "received", 40)
        assert len({e["id"] for e in got}) == 40
    finally:
        await rx.stop()


async def test_tenants_see_only_their_own_events_and_no_private_targets(mta_factory):
    pw = hash_password(PW, ln=10)
    toml = FAST + f"""
[tenants.shop]
api_keys = ["key-shop-0123456789"]
[tenants.other]
[users.shop]
tenant = "shop"
password = "{pw}"
[users.other]
tenant = "other"
password = "{pw}"
"""
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, toml)
        # A tenant's key may not aim at loopback (the admin API lives there).
        status, err = await asyncio.to_thread(_api, mta, "POST", "/api/v1/webhooks",
                                              {"url": rx.url}, "key-shop-0123456789")
        assert status == 400 and "private" in err["error"]["message"], err
        status, _ = await asyncio.to_thread(_api, mta, "POST", "/api/v1/webhooks",
                                            {"url": "http://hooks.example/x",
                                             "tenant": "other"}, "key-shop-0123456789")
        assert status == 403
        # The operator adds the shop's endpoint on loopback.
        await asyncio.to_thread(_add, mta, rx, "--tenant", "shop", "--events", "received")
        status, mine = await asyncio.to_thread(_api, mta, "GET", "/api/v1/webhooks", None,
                                               "key-shop-0123456789")
        assert status == 200 and len(mine["endpoints"]) == 1
        assert "secret" not in mine["endpoints"][0]
        await asyncio.to_thread(_send, mta, 3, "x@dest.test", "other")
        await asyncio.to_thread(_send, mta, 2, "y@dest.test", "shop")
        await rx.wait_events(lambda e: e["event"] == "received", 2)
        await asyncio.sleep(0.5)
        assert {e["tenant"] for e in rx.events} == {"shop"} and len(rx.events) == 2
    finally:
        await rx.stop()


async def test_batches_failing_for_good_are_listed_and_replayed(mta_factory):
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, FAST + 'retry_for = "1s"\n')
        await asyncio.to_thread(_add, mta, rx, "--events", "received")
        rx.status = 500
        await asyncio.to_thread(_send, mta, 5)
        deadline = time.monotonic() + 15
        while True:
            failed = await asyncio.to_thread(mta.cli, "webhooks", "failed", "--json")
            rows = json.loads(failed.stdout) if failed.returncode == 0 else []
            if sum(r["events"] for r in rows) >= 5:
                break
            assert time.monotonic() < deadline, failed.stdout + failed.stderr
            await asyncio.sleep(0.2)
        # Each names the error; the head batch was tried, those behind it perhaps not.
        assert all("500" in r["last_error"] for r in rows)
        assert any(r["attempts"] >= 1 for r in rows)
        rx.status = 200
        await asyncio.sleep(1.0)
        assert not rx.accepted  # failed batches wait for the operator
        out = await asyncio.to_thread(mta.cli, "webhooks", "replay")
        assert out.returncode == 0 and "replaying" in out.stdout
        got = await rx.wait_events(lambda e: e["event"] == "received", 5)
        assert len(got) == 5
        assert {r["webhook_id"] for r in rows} == {d.webhook_id for d in rx.accepted}
    finally:
        await rx.stop()


async def test_an_endpoint_failing_too_long_or_gone_is_disabled(mta_factory):
    rx = await WebhookReceiver.start()
    gone = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, FAST + 'disable_after = "1s"\n')
        ep = await asyncio.to_thread(_add, mta, rx, "--events", "received")
        ep_gone = await asyncio.to_thread(_add, mta, gone, "--events", "received")
        rx.status, gone.status = 503, 410
        await asyncio.to_thread(_send, mta, 1)
        found = await asyncio.to_thread(
            mta.wait_events, lambda e: e["event"] == "webhook_disabled", 15)
        deadline = time.monotonic() + 15
        while len({e["endpoint"] for e in found}) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            found = await asyncio.to_thread(mta.events)
            found = [e for e in found if e["event"] == "webhook_disabled"]
        by = {e["endpoint"]: e["reason"] for e in found}
        assert "410" in by[ep_gone] and "failing since" in by[ep]
        listed = json.loads((await asyncio.to_thread(mta.cli, "webhooks", "list", "--json")
                             ).stdout)
        assert not any(e["enabled"] for e in listed)
        rx.status = 200
        out = await asyncio.to_thread(mta.cli, "webhooks", "enable", ep)
        assert out.returncode == 0
        got = await rx.wait_events(lambda e: e["event"] == "received", 1)
        assert got
    finally:
        await rx.stop()
        await gone.stop()
