"""The policy engine on the HTTP injection path of the real daemon (POST /api/v1/messages
with a tenant's API key): the same credits, quotas and suspensions as SMTP, with transient
refusals as 429 so that clients retry, and nothing charged for what was refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.integration.test_policy_smtp import _admin

KEYS = {"shop": "shop-key-0123456789", "daily": "daily-key-0123456789"}


def _toml() -> str:
    return f"""
[plans.one_a_day]
messages_per_day = 1

[tenants.shop]
prepaid = true
api_keys = ["{KEYS['shop']}"]

[tenants.daily]
plan = "one_a_day"
api_keys = ["{KEYS['daily']}"]
"""


def _inject(mta, tenant: str, to: list[str]) -> tuple[int, dict]:
    body = json.dumps({"from": f"a@{tenant}.test", "to": to, "subject": "hi",
                       "text": "hello"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}/api/v1/messages",
                                 data=body, method="POST")
    req.add_header("Authorization", f"Bearer {KEYS[tenant]}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_credits_over_http_accept_what_is_paid_and_ask_to_retry_the_rest(mta_factory):
    mta = mta_factory(_toml())
    _admin(mta, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 2, "paid": True})

    status, body = _inject(mta, "shop", ["a@dest.test", "b@dest.test", "c@dest.test"])
    assert status == 202, body
    assert [r["accepted"] for r in body["recipients"]] == [True, True, False]
    assert body["recipients"][2]["reply"].startswith("452 4.7.1")

    # Nothing left: every recipient refused for a reason that passes -> 429, retry later.
    status, body = _inject(mta, "shop", ["d@dest.test"])
    assert status == 429, body
    assert body["error"]["code"] == "no_recipients_accepted"
    assert body["error"]["recipients"][0]["reply"].startswith("452 4.7.1")

    summary = _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits")
    assert (summary["balance"], summary["held"]) == (0, 0)
    history = _admin(mta, "GET", "/api/v1/admin/tenants/shop/credits/history")["entries"]
    assert sorted(e["recipient"] for e in history if e["kind"] == "reserve") == [
        "a@dest.test", "b@dest.test"]
    [queued] = mta.queue_list()
    assert [r["address"] for r in queued["recipients"]] == ["a@dest.test", "b@dest.test"]


def test_a_daily_quota_and_a_suspension_over_http(mta_factory):
    mta = mta_factory(_toml())
    assert _inject(mta, "daily", ["x@dest.test"])[0] == 202
    status, body = _inject(mta, "daily", ["y@dest.test"])
    assert status == 429, body  # the day's one message is sent: retry tomorrow
    assert body["error"]["code"] == "sender_refused"  # refused at MAIL: the window is full
    assert body["error"]["reply"].startswith("451 4.7.1 Daily message limit of 1 reached")

    _admin(mta, "POST", "/api/v1/admin/tenants/shop/suspensions", {"reason": "abuse report"})
    status, body = _inject(mta, "shop", ["z@dest.test"])
    assert status == 422, body  # suspended until lifted: permanent
    assert body["error"]["reply"] == "554 5.7.1 Tenant shop is suspended: abuse report"
