"""The policy engine through real SMTP sessions: credits, quotas, suspension, duplicates,
and exact accounting when many sessions race for the last credits."""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.request

from mta.smtp.auth import hash_password
from tests.support.daemon import ADMIN_TOKEN

PW = "pw-123456"


def _tenants_toml() -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[policy]
duplicate_window = "1d"

[plans.tiny]
unique_recipients_per_month = 3

[tenants.shop]
prepaid = true
[tenants.free]
plan = "tiny"
[tenants.banned]
status = "suspended"

[users.shop]
tenant = "shop"
password = "{pw}"
[users.free]
tenant = "free"
password = "{pw}"
[users.banned]
tenant = "banned"
password = "{pw}"
"""


def _admin(mta, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body else None)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _session(port: int, user: str) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo("client.test")
    s.login(user, PW)
    return s


def _msg(mid: str = "<m@shop.test>") -> bytes:
    return f"From: a@shop.test\r\nMessage-ID: {mid}\r\nSubject: x\r\n\r\nhi\r\n".encode()


def test_prepaid_tenant_needs_credits_and_is_refused_with_452_4_7_1(mta_factory):
    mta = mta_factory(_tenants_toml())
    with _session(mta.smtp_port, "shop") as s:
        s.mail("a@shop.test")
        code, text = s.rcpt("r1@dest.test")
        assert (code, text[:5]) == (452, b"4.7.1")
        assert b"credit" in text.lower()
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 2, "paid": True})
    with _session(mta.smtp_port, "shop") as s:
        s.mail("a@shop.test")
        assert s.rcpt("r1@dest.test")[0] == 250
        assert s.rcpt("r2@dest.test")[0] == 250
        assert s.rcpt("r3@dest.test")[0] == 452  # refused recipients are never charged
        assert s.data(_msg())[0] == 250
    summary = _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")
    assert summary["balance"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'mta_tenant_credits{tenant="shop"} 0.0' in metrics


def test_unpaid_credits_are_not_usable(mta_factory):
    mta = mta_factory(_tenants_toml())
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 5, "paid": False})
    with _session(mta.smtp_port, "shop") as s:
        s.mail("a@shop.test")
        assert s.rcpt("r1@dest.test")[0] == 452


def test_plan_quota_of_unique_recipients_answers_a_temporary_failure(mta_factory):
    mta = mta_factory(_tenants_toml())
    with _session(mta.smtp_port, "free") as s:
        s.mail("a@free.test")
        for i in range(3):
            assert s.rcpt(f"r{i}@dest.test")[0] == 250
        code, text = s.rcpt("r9@dest.test")
        assert code == 451 and text.startswith(b"4.7.1")
        assert b"unique-recipient limit of 3" in text
        assert s.data(_msg("<q1@free.test>"))[0] == 250
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'mta_tenant_quota_used{limit="unique_recipients_per_month",tenant="free"} 3.0' \
        in metrics
    # The same recipients again are not new unique recipients this month.
    with _session(mta.smtp_port, "free") as s:
        s.mail("a@free.test")
        assert s.rcpt("r0@dest.test")[0] == 250


def test_suspended_tenant_is_refused_at_mail_from(mta_factory):
    mta = mta_factory(_tenants_toml())
    with _session(mta.smtp_port, "banned") as s:
        code, text = s.mail("a@banned.test")
        assert code == 554 and text.startswith(b"5.7.1")


def test_duplicate_message_id_is_accepted_once(mta_factory):
    mta = mta_factory(_tenants_toml())
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 10, "paid": True})
    for _ in range(2):
        with _session(mta.smtp_port, "shop") as s:
            s.sendmail("a@shop.test", ["r1@dest.test"], _msg("<same@shop.test>"))
    assert len(mta.queue_list()) == 1  # the repeat got 250 but was not queued again
    assert _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")["balance"] == 9


async def test_fifty_sessions_racing_for_the_last_100_credits_get_exactly_100(mta_factory):
    mta = await asyncio.to_thread(mta_factory, _tenants_toml())
    await asyncio.to_thread(_admin, mta, "POST", "/api/v1/admin/tenants/shop/credits",
                            {"amount": 100, "paid": True})

    def client(i: int) -> int:
        accepted = 0
        with _session(mta.smtp_port, "shop") as s:
            s.mail("a@shop.test")
            for j in range(3):
                if s.rcpt(f"r{i}-{j}@dest.test")[0] == 250:
                    accepted += 1
            if accepted:
                assert s.data(_msg(f"<race{i}@shop.test>"))[0] == 250
        return accepted

    results = await asyncio.gather(*(asyncio.to_thread(client, i) for i in range(50)))
    assert sum(results) == 100
    queued = await asyncio.to_thread(mta.queue_list)
    assert sum(len(m["recipients"]) for m in queued) == 100
    summary = await asyncio.to_thread(_admin, mta, "GET", "/api/v1/admin/tenants/shop/credits")
    assert summary["balance"] == 0


SOURCES = """
[[egress.source]]
name = "a"
address = "127.0.0.10"
ehlo_name = "a.mta.test"
"""


async def test_policy_suspend_of_an_egress_source_by_address_stops_its_mail_until_resumed(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.2")
    dns = dns_server_factory({"dest.test": "@ MX 10 mx1\nmx1 A 127.0.0.2\n"})
    mta = await asyncio.to_thread(mta_factory, SOURCES, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    proc = await asyncio.to_thread(mta.cli, "policy", "suspend", "--source", "127.0.0.10",
                                   "--reason", "listed on a blocklist")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("source a (127.0.0.10): suspended until lifted")

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
            s.sendmail("a@sender.test", ["r@dest.test"], b"Subject: x\r\n\r\nhi\r\n")

    await asyncio.to_thread(send)
    # Delivery to this MX takes well under 1s when nothing holds it; 2s of silence (and the
    # message still queued) is the suspension holding it.
    await asyncio.sleep(2.0)
    assert mx.messages == []
    [queued] = await asyncio.to_thread(mta.queue_list)
    assert queued["recipients"][0]["state"] == "queued"

    proc = await asyncio.to_thread(mta.cli, "policy", "resume", "--source", "a")
    assert proc.returncode == 0 and proc.stdout == "source a: resumed (listed on a blocklist)\n"
    # Resuming sends the held mail at once: no flush, no wait for the next recheck.
    await mx.wait_for_messages(1, timeout=10)
    assert mx.connections[0].peer[0] == "127.0.0.10"

    proc = await asyncio.to_thread(mta.cli, "policy", "suspend", "--source", "127.0.0.99",
                                   "--reason", "x")
    assert proc.returncode == 1
    assert "no egress source named or bound to '127.0.0.99' (configured: a (127.0.0.10))" \
        in proc.stderr


def test_kill_9_under_load_charges_every_accepted_recipient_exactly_once(mta_factory):
    """The embedded store answers reservations before its fsync and makes them durable
    before the 250: after kill -9 mid-load, every recipient the clients saw accepted is
    queued and charged once, and the credits of transactions cut short come back."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    mta = mta_factory(_tenants_toml())
    credits = 2000
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": credits,
                                                              "paid": True})
    acked: list[str] = []
    stop = threading.Event()

    def client(c: int) -> None:
        for i in range(1000):
            if stop.is_set():
                return
            rcpts = [f"k{c}-{i}-{j}@dest.test" for j in range(2)]
            try:
                with _session(mta.smtp_port, "shop") as s:
                    s.mail("a@shop.test")
                    if all(s.rcpt(r)[0] == 250 for r in rcpts) and \
                            s.data(_msg(f"<k{c}-{i}@shop.test>"))[0] == 250:
                        acked.extend(rcpts)
            except (OSError, smtplib.SMTPException):
                return  # the daemon died under us

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(client, c) for c in range(16)]
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        mta.kill()  # SIGKILL while sessions are between RCPT and the 250
        stop.set()
        for f in futures:
            f.result(timeout=60)
    assert len(acked) >= 200
    mta.start()  # same spool: reconciliation settles the open reservations

    queued = [r["address"] for m in mta.queue_list() for r in m["recipients"]]
    assert set(acked) <= set(queued)  # a 250 was never lost
    summary = _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")
    assert summary["held"] == 0
    # Exactly one credit per queued recipient (one written just before the kill may be
    # queued without its client having seen the 250: it is charged too), none for others.
    assert summary["balance"] == credits - len(queued)
    history = _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits/history?limit=10000"
                     )["entries"]
    taken: dict[str, int] = {}
    for e in history:
        if e["kind"] in ("reserve", "release"):
            taken[e["recipient"]] = taken.get(e["recipient"], 0) - e["delta"]
    assert {r for r, n in taken.items() if n} == set(queued)
    assert set(taken.values()) <= {0, 1}


def test_a_user_limited_to_its_networks_cannot_authenticate_from_elsewhere(mta_factory):
    mta = mta_factory(_tenants_toml() + '\n[users.office]\ntenant = "shop"\n'
                      f'password = "{hash_password(PW, ln=10)}"\nnetworks = ["127.0.0.2/32"]\n')

    def login(source: str) -> int:
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10,
                          source_address=(source, 0)) as s:
            s.ehlo("client.test")
            try:
                return s.login("office", PW)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    assert login("127.0.0.3") == 535  # right password, wrong network: no hint of which
    assert login("127.0.0.2") == 235
    # smtplib tries PLAIN, then LOGIN: one event per attempt (the events file is written
    # in batches, hence the wait).
    refused = mta.wait_events(lambda e: e["event"] == "rejected")
    assert refused and {(e["client_ip"], e["user"], e["why"]) for e in refused} == {
        ("127.0.0.3", "office", "client network not allowed for this user")}
