"""Suppression lists in the real daemon: refused at RCPT over real SMTP and HTTP injection
before policy charges anything, the drop action, a sub-account inheriting its tenant's list,
the global list, expiry on the policy clock (MTA_POLICY_CLOCK), a real 5.1.1 bounce from a
real MX turning into an entry, the API's scoping of tenant keys, and the CLI's import and
export."""

from __future__ import annotations

import asyncio
import csv
import json
import smtplib
import urllib.error
import urllib.request

from mta.policy import FileClock
from mta.policy.clock import CLOCK_ENV
from mta.smtp.auth import hash_password
from tests.integration.test_delivery import ZONES
from tests.integration.test_policy_smtp import PW, _admin, _msg, _session
from tests.support.daemon import ADMIN_TOKEN, MtaProcess

KEYS = {"shop": "shop-key-0123456789", "other": "other-key-0123456789"}
T0 = 1_800_000_000.0


def _toml(extra: str = "") -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[tenants.shop]
prepaid = true
api_keys = ["{KEYS['shop']}"]
[tenants.sub]
parent = "shop"
[tenants.other]
api_keys = ["{KEYS['other']}"]

[users.shop]
tenant = "shop"
password = "{pw}"
[users.sub]
tenant = "sub"
password = "{pw}"
[users.other]
tenant = "other"
password = "{pw}"
""" + extra


def _api(mta, method: str, path: str, body=None, *, key: str = ADMIN_TOKEN,
         raw: bytes | None = None, ctype: str = "application/json") -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                        else None)
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method,
                                 data=data)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _suppress(mta, address: str, scope: str, reason: str = "manual") -> dict:
    status, body = _api(mta, "POST", "/api/v1/suppressions",
                        {"address": address, "scope": scope, "reason": reason})
    assert status == 201, body
    return body


def _balance(mta) -> int:
    return _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")["balance"]


def test_a_suppressed_recipient_gets_550_5_7_1_naming_the_list_and_is_not_charged(
        mta_factory):
    mta = mta_factory(_toml())
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 5, "paid": True})
    _suppress(mta, "gone@dest.test", "shop", "complaint")
    with _session(mta.smtp_port, "shop") as s:
        s.mail("a@shop.test")
        code, text = s.rcpt("Gone@Dest.test")
        assert (code, text) == (550, b'5.7.1 Recipient suppressed: list "shop", reason '
                                     b"complaint")
        assert s.rcpt("ok@dest.test")[0] == 250
        assert s.data(_msg())[0] == 250
    assert _balance(mta) == 4  # the suppressed recipient took no credit
    [m] = mta.queue_list()
    assert [r["address"] for r in m["recipients"]] == ["ok@dest.test"]
    [ev] = mta.wait_events(lambda e: e["event"] == "suppressed")
    assert (ev["tenant"], ev["recipient"], ev["scope"], ev["reason"]) == (
        "shop", "Gone@Dest.test", "shop", "complaint")


def test_drop_mode_answers_250_and_delivers_nothing_to_the_suppressed(mta_factory):
    mta = mta_factory(_toml('\n[suppression]\naction = "drop"\n'))
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 5, "paid": True})
    _suppress(mta, "@blocked.test", "shop")  # the whole domain
    with _session(mta.smtp_port, "shop") as s:
        s.mail("a@shop.test")
        assert s.rcpt("x@blocked.test") == (250, b"2.1.5 Ok")
        code, text = s.data(_msg("<d1@shop.test>"))
        assert code == 250 and b"suppressed" in text
        s.mail("a@shop.test")
        assert s.rcpt("y@blocked.test")[0] == 250
        assert s.rcpt("ok@dest.test")[0] == 250
        assert s.data(_msg("<d2@shop.test>"))[0] == 250
    [m] = mta.queue_list()
    assert [r["address"] for r in m["recipients"]] == ["ok@dest.test"]
    assert _balance(mta) == 4


def test_a_sub_account_inherits_its_tenant_s_list_and_everyone_the_global_list(
        mta_factory):
    mta = mta_factory(_toml())
    _suppress(mta, "parent-list@dest.test", "shop")
    _suppress(mta, "everyone@dest.test", "global")
    with _session(mta.smtp_port, "sub") as s:
        s.mail("a@sub.test")
        code, text = s.rcpt("parent-list@dest.test")
        assert code == 550 and b'list "shop"' in text
        code, text = s.rcpt("everyone@dest.test")
        assert code == 550 and b'list "global"' in text
    with _session(mta.smtp_port, "other") as s:
        s.mail("a@other.test")
        assert s.rcpt("parent-list@dest.test")[0] == 250  # not other's list
        assert s.rcpt("everyone@dest.test")[0] == 550


def test_http_injection_is_screened_the_same_way(mta_factory):
    mta = mta_factory(_toml())
    _suppress(mta, "gone@dest.test", "other")
    body = {"from": "a@other.test", "to": ["gone@dest.test", "ok@dest.test"],
            "subject": "hi", "text": "hello"}
    status, out = _api(mta, "POST", "/api/v1/messages", body, key=KEYS["other"])
    assert status == 202, out
    gone, ok = out["recipients"]
    assert not gone["accepted"] and gone["reply"].startswith("550 5.7.1")
    assert ok["accepted"]


def test_a_hard_bounce_expires_on_the_policy_clock(tmp_path):
    clock_file = tmp_path / "policy-clock"
    clock_file.write_text(f"{T0!r}\n")
    workdir = tmp_path / "mta"
    workdir.mkdir()
    mta = MtaProcess(workdir, _toml())
    mta.env[CLOCK_ENV] = str(clock_file)
    mta.start()
    try:
        entry = _suppress(mta, "gone@dest.test", "other", "hard_bounce")
        assert entry["expires_at"] == T0 + 30 * 86400  # [suppression] hard_bounce_expiry
        with _session(mta.smtp_port, "other") as s:
            s.mail("a@other.test")
            assert s.rcpt("gone@dest.test")[0] == 550
        FileClock(clock_file).set(T0 + 30 * 86400 + 1)
        with _session(mta.smtp_port, "other") as s:
            s.mail("a@other.test")
            assert s.rcpt("gone@dest.test")[0] == 250
    finally:
        mta.kill()


async def test_a_real_5_1_1_bounce_suppresses_the_next_message_at_rcpt(
        mta_factory, dns_server_factory, mx_factory):
    mx1 = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    await mx_factory("127.0.0.4")  # the sender's MX, for the DSN
    mx1.script("nobody@dest.test", "550 5.1.1 The email account that you tried to reach "
                                   "does not exist")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, _toml(), dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]\nmax_age = "1h"')

    def send() -> None:
        with _session(mta.smtp_port, "other") as s:
            s.sendmail("s@sender.test", ["nobody@dest.test"], _msg("<b1@other.test>"))
    await asyncio.to_thread(send)
    added = await asyncio.to_thread(mta.wait_events, lambda e: e["event"] ==
                                    "suppression_added", 30)
    assert added and added[0]["reason"] == "hard_bounce" and added[0]["scope"] == "other"

    def again() -> tuple[int, bytes]:
        with _session(mta.smtp_port, "other") as s:
            s.mail("s@sender.test")
            return s.rcpt("nobody@dest.test")
    code, text = await asyncio.to_thread(again)
    assert code == 550 and b'list "other", reason hard_bounce' in text


def test_a_tenant_key_sees_and_edits_only_its_own_list(mta_factory):
    mta = mta_factory(_toml())
    _suppress(mta, "g@dest.test", "global")
    status, e = _api(mta, "POST", "/api/v1/suppressions", {"address": "mine@dest.test"},
                     key=KEYS["shop"])
    assert status == 201 and e["scope"] == "shop" and e["reason"] == "manual"
    assert _api(mta, "POST", "/api/v1/suppressions",
                {"address": "x@dest.test", "scope": "other"}, key=KEYS["shop"])[0] == 403
    status, page = _api(mta, "GET", "/api/v1/suppressions", key=KEYS["shop"])
    assert [x["address"] for x in page["entries"]] == ["mine@dest.test"]
    assert _api(mta, "GET", "/api/v1/suppressions?scope=global", key=KEYS["shop"])[0] == 403
    assert _api(mta, "DELETE", "/api/v1/suppressions/global/g@dest.test",
                key=KEYS["shop"])[0] == 403
    assert _api(mta, "GET", "/api/v1/suppressions", key="wrong-key")[0] == 401
    status, page = _api(mta, "GET", "/api/v1/suppressions?limit=1")
    assert status == 200 and len(page["entries"]) == 1 and page["next"]
    status, rest = _api(mta, "GET", "/api/v1/suppressions?limit=10&cursor="
                        + urllib.request.quote(page["next"]))
    assert [x["scope"] for x in page["entries"] + rest["entries"]] == ["global", "shop"]
    status, out = _api(mta, "POST", "/api/v1/suppressions/import",
                       raw=b"a@dest.test\nnot an address\nb@dest.test\n",
                       ctype="text/csv", key=KEYS["other"])
    assert status == 200 and (out["imported"], out["invalid"]) == (2, 1), out
    assert out["errors"][0]["line"] == 2
    assert _api(mta, "DELETE", "/api/v1/suppressions/other/a@dest.test",
                key=KEYS["other"])[0] == 200


def test_cli_import_then_export_round_trip_of_100000_entries(mta_factory):
    mta = mta_factory(_toml())
    src = mta.workdir / "list.csv"
    src.write_text("address,reason\n" + "".join(f"u{i}@d{i % 50}.test,unsubscribe\n"
                                                for i in range(100_000)))
    proc = mta.cli("suppress", "import", str(src), "--scope", "shop", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "100,000" in proc.stdout
    again = mta.cli("suppress", "import", str(src), "--scope", "shop", timeout=120)
    assert again.returncode == 0, again.stderr  # idempotent
    out = mta.workdir / "out.jsonl"
    proc = mta.cli("suppress", "export", "--scope", "shop", "--format", "jsonl",
                   "-o", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100_000
    assert {r["reason"] for r in rows} == {"unsubscribe"}
    assert sorted(r["address"] for r in rows) == sorted(
        f"u{i}@d{i % 50}.test" for i in range(100_000))
    proc = mta.cli("suppress", "export", "--scope", "shop", timeout=120)
    assert len(list(csv.reader(proc.stdout.splitlines()))) == 100_001  # with its header
    assert mta.cli("suppress", "remove", "u7@d7.test", "--scope", "shop").returncode == 0
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 1, "paid": True})
    listed = mta.cli("suppress", "list", "--scope", "shop", "--json", "--limit", "2")
    assert [e["address"] for e in json.loads(listed.stdout)["entries"]] == [
        "u0@d0.test", "u10000@d0.test"]  # in address order
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=20) as s:
        s.ehlo("client.test")
        s.login("sub", PW)
        s.mail("a@sub.test")
        assert s.rcpt("u99999@d49.test")[0] == 550
        assert s.rcpt("u7@d7.test")[0] == 250
