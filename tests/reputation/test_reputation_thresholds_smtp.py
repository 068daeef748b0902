"""Thresholds per plan and per tenant in the real daemon: two tenants on one plan send the
same mail to a real MX, which answers 550 5.1.1 for the same share of each one's
recipients; the tenant with stricter thresholds of its own (and its sub-account, which
inherits them) is suspended for marketing, the other stays ok under its plan's looser
figures, until an operator gives it strict thresholds at run time through the admin API:
the next evaluation moves it too. `mta policy reputation` says where each value came from."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from mta.smtp.auth import hash_password
from tests.integration.test_delivery import ZONES
from tests.integration.test_policy_smtp import PW
from tests.reputation.test_reputation_smtp import _rep, _send, _wait_state
from tests.support.daemon import ADMIN_TOKEN

TENANTS = ("strict", "loose", "kid")


def _toml() -> str:
    pw = hash_password(PW, ln=10)
    users = "".join(f'[users.{t}]\ntenant = "{t}"\npassword = "{pw}"\n' for t in TENANTS)
    return f"""
[plans.bulk]
[tenants.strict]
plan = "bulk"
[tenants.loose]
plan = "bulk"
[tenants.kid]
parent = "strict"
{users}
[reputation]
windows = ["1h"]
min_sample = 10
interval = "200ms"
step_down_after = "2h"
limited_per_hour = 40

# The plan tolerates 20% unknown users; "strict" (and its sub-accounts) do not.
[reputation.plans.bulk]
hard_bounce = [0.30, 0.50, 0.70, 0.90]
[reputation.tenants.strict]
hard_bounce = [0.05, 0.10, 0.15, 0.50]
"""


def _post(mta, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}{path}", data=json.dumps(body).encode(),
        method="POST", headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def _wait_sample(mta, tenant: str, n: int) -> dict:
    for _ in range(100):
        r = await asyncio.to_thread(_rep, mta, tenant)
        if r["figures"][0]["sample"] >= n:
            return r
        await asyncio.sleep(0.2)
    raise AssertionError(r)


async def test_two_tenants_same_bounce_rate_different_states(
        mta_factory, dns_server_factory, mx_factory):
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    for t in TENANTS:
        for i in range(2):
            mx.script(f"gone-{t}{i}@dest.test", "550 5.1.1 no such user")
    mta = await asyncio.to_thread(mta_factory, _toml(), dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]\nmax_age = "1h"')
    # Each: 8 delivered, 2 unknown users, i.e. 20% hard bounces over 10 final outcomes.
    for t in TENANTS:
        for i in range(8):
            assert await asyncio.to_thread(_send, mta, t, f"ok-{t}{i}@dest.test") == 250
        for i in range(2):
            assert await asyncio.to_thread(_send, mta, t, f"gone-{t}{i}@dest.test") == 250

    r = await _wait_state(mta, "strict", "suspended_class")
    assert "hard bounce 20.00% over 1h >= 15.00%" in r["reason"], r
    assert r["thresholds"]["hard_bounce"] == {"value": [0.05, 0.10, 0.15, 0.50],
                                              "source": "[reputation.tenants.strict]"}
    kid = await _wait_state(mta, "kid", "suspended_class")
    assert kid["thresholds"]["hard_bounce"]["source"] == "[reputation.tenants.strict]"
    # Same figures, the plan's thresholds: nothing to do.
    r = await _wait_sample(mta, "loose", 10)
    assert r["figures"][0]["hard_bounce"] == 2
    assert (r["state"], r["figures_reach"]) == ("ok", "ok"), r
    assert r["thresholds"]["hard_bounce"]["source"] == "[reputation.plans.bulk]"
    assert r["thresholds"]["complaint"]["source"] == "[reputation]"
    assert await asyncio.to_thread(_send, mta, "strict", "m@dest.test", "marketing") >= 500
    assert await asyncio.to_thread(_send, mta, "loose", "m@dest.test", "marketing") == 250
    text = await asyncio.to_thread(mta.cli, "policy", "reputation", "loose")
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if x.startswith("hard_bounce"))
    assert "0.3, 0.5, 0.7, 0.9" in line and "[reputation.plans.bulk]" in line, text.stdout

    # The operator makes "loose" strict at run time: the next evaluation moves it, with
    # no new outcome needed (the marketing message above is counted and judged first).
    r = await _wait_sample(mta, "loose", 11)
    assert r["state"] == "ok", r
    r = await asyncio.to_thread(
        _post, mta, "/api/v1/admin/tenants/loose/reputation/thresholds",
        {"set": {"hard_bounce": [0.05, 0.10, 0.15, 0.50]}})
    assert r["thresholds"]["hard_bounce"]["source"] == "run-time override of loose"
    r = await _wait_state(mta, "loose", "suspended_class")
    assert r["reason"].startswith("hard bounce ") and " >= 15.00% " in r["reason"], r
    # One move, straight from ok (the figures were all in), with the figures behind it.
    moves = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "reputation_changed"
        and e["tenant"] == "loose")
    assert [(m["previous"], m["state"]) for m in moves] == [("ok", "suspended_class")]
    assert moves[0]["figures"][0]["hard_bounce"] == 2
    (changed,) = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "reputation_thresholds_changed")
    assert changed["tenant"] == "loose" and changed["override"] == {
        "hard_bounce": [0.05, 0.10, 0.15, 0.50]}
    assert await asyncio.to_thread(_send, mta, "loose", "m2@dest.test", "marketing") >= 500
    assert await asyncio.to_thread(_send, mta, "loose", "t@dest.test") == 250

    # The CLI sets and drops run-time values; a bad one is refused, naming the key.
    out = await asyncio.to_thread(mta.cli, "policy", "reputation", "strict", "--set",
                                  "min_sample=50", "--set", "limited_per_hour=5", "--json")
    assert out.returncode == 0, out.stderr
    th = json.loads(out.stdout)["thresholds"]
    assert th["min_sample"] == {"value": 50, "source": "run-time override of strict"}
    assert th["hard_bounce"]["source"] == "[reputation.tenants.strict]"
    # The sub-account inherits its parent's run-time values as well.
    assert (await asyncio.to_thread(_rep, mta, "kid"))["thresholds"]["min_sample"][
        "source"] == "run-time override of strict"
    bad = await asyncio.to_thread(mta.cli, "policy", "reputation", "strict", "--set",
                                  "complaint=0.5,0.1")
    assert bad.returncode != 0 and "complaint" in bad.stderr, bad
    out = await asyncio.to_thread(mta.cli, "policy", "reputation", "loose", "--unset", "all",
                                  "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["thresholds"]["hard_bounce"]["source"] == \
        "[reputation.plans.bulk]"
