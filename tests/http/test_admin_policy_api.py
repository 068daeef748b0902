"""/api/v1/admin/tenants...: thin routes over a real PolicyAdmin (SQLite policy store)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from mta.config import parse_config
from mta.http.app import make_app
from mta.observe.metrics import Metrics
from mta.policy import PolicyAdmin, PolicyEngine
from tests.support.daemon import free_port

ADMIN = "admin-token"


@pytest.fixture
async def admin_api(tmp_path):
    cfg = parse_config('[tenants.acme]\nprepaid = true\n', base=tmp_path)
    engine = await PolicyEngine.open(cfg, tmp_path)
    metrics = Metrics()
    runner = web.AppRunner(make_app(admin_token=ADMIN, policy_admin=PolicyAdmin(engine),
                                    metrics=metrics), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                    headers={"Authorization": f"Bearer {ADMIN}"},
                                    timeout=aiohttp.ClientTimeout(total=10))

    async def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
        async with session.request(method, path, json=body) as r:
            return r.status, await r.json()

    call.metrics = metrics  # type: ignore[attr-defined]
    try:
        yield call
    finally:
        await session.close()
        await runner.cleanup()
        await engine.aclose()


async def test_tenants_list_create_delete(admin_api):
    status, body = await admin_api("GET", "/api/v1/admin/tenants")
    assert status == 200 and [t["name"] for t in body["tenants"]] == ["acme"]
    status, body = await admin_api("POST", "/api/v1/admin/tenants",
                                   {"name": "beta", "limits": {"messages_per_day": 10}})
    assert status == 201 and body["limits"]["messages_per_day"] == 10
    assert admin_api.metrics.tenant("beta") == "beta"  # gets its own metric series
    _, body = await admin_api("GET", "/api/v1/admin/tenants")
    assert sorted(t["name"] for t in body["tenants"]) == ["acme", "beta"]
    status, _ = await admin_api("DELETE", "/api/v1/admin/tenants/beta")
    assert status == 200


async def test_credits_add_show_history_and_paid(admin_api):
    status, lot = await admin_api("POST", "/api/v1/admin/tenants/acme/credits",
                                  {"amount": 1000, "note": "order 7"})
    assert status == 201 and lot["amount"] == 1000 and lot["paid"] is False
    _, summary = await admin_api("GET", "/api/v1/admin/tenants/acme/credits")
    assert (summary["balance"], summary["unpaid"]) == (0, 1000)
    status, paid = await admin_api("POST", f"/api/v1/admin/credit-lots/{lot['id']}/paid")
    assert status == 200 and paid["paid"] is True
    _, summary = await admin_api("GET", "/api/v1/admin/tenants/acme/credits")
    assert summary["balance"] == 1000
    _, hist = await admin_api("GET", "/api/v1/admin/tenants/acme/credits/history")
    assert [e["kind"] for e in hist["entries"]] == ["add", "paid"]


async def test_limits_and_suspensions(admin_api):
    status, lim = await admin_api("POST", "/api/v1/admin/tenants/acme/limits", {
        "name": "messages_per_hour", "value": 5, "until": "2999-01-01", "reason": "abuse"})
    assert status == 201 and lim["value"] == 5
    _, usage = await admin_api("GET", "/api/v1/admin/tenants/acme/limits")
    assert any(u["name"] == "messages_per_hour" and u["limit"] == 5 for u in usage["usage"])
    _, cleared = await admin_api("DELETE", "/api/v1/admin/tenants/acme/limits")
    assert cleared["cleared"] == 1
    status, s = await admin_api("POST", "/api/v1/admin/tenants/acme/suspensions",
                                {"reason": "complaints"})
    assert status == 201 and s["msg_class"] == "*"
    _, lifted = await admin_api("DELETE", "/api/v1/admin/tenants/acme/suspensions")
    assert lifted["lifted"] == 1


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("GET", "/api/v1/admin/tenants/nobody/credits", None, 404, "not_found"),
    ("POST", "/api/v1/admin/tenants/acme/credits", {"amount": -1}, 400, "policy_error"),
    ("POST", "/api/v1/admin/tenants/acme/credits", {"amount": "x"}, 400, "bad_field"),
    ("POST", "/api/v1/admin/tenants/acme/credits", {}, 400, "missing_field"),
    ("POST", "/api/v1/admin/tenants/acme/limits",
     {"name": "nope", "value": 1, "until": "2999-01-01", "reason": "r"}, 400, "policy_error"),
    ("POST", "/api/v1/admin/tenants/acme/limits",
     {"name": "messages_per_hour", "value": 1, "until": "soon", "reason": "r"}, 400,
     "bad_field"),
    ("POST", "/api/v1/admin/tenants", {"name": "x y"}, 400, "bad_tenant"),
    ("POST", "/api/v1/admin/tenants", {"name": "z", "colour": 1}, 400, "unknown_field"),
    ("POST", "/api/v1/admin/credit-lots/abc/paid", None, 400, "bad_lot"),
])
async def test_errors_have_stable_codes(admin_api, method, path, body, status, code):
    got, answer = await admin_api(method, path, body)
    assert (got, answer["error"]["code"]) == (status, code), answer


# --- sender-domain suspensions ------------------------------------------------------------

async def test_sender_domain_suspension_create_list_lift(admin_api):
    path = "/api/v1/admin/sender-domains/Spam.Example./suspensions"
    status, body = await admin_api("POST", path, {"reason": "phishing", "duration": "2h"})
    assert status == 201
    assert body["domain"] == "spam.example" and body["reason"] == "phishing"
    assert body["until"] - body["since"] == pytest.approx(7200, abs=1)
    assert "tenant" not in body  # the store subject "@spam.example" stays inside
    status, body = await admin_api("GET", "/api/v1/admin/sender-domains/spam.example/"
                                          "suspensions")
    assert status == 200 and [s["reason"] for s in body["suspensions"]] == ["phishing"]
    status, body = await admin_api("DELETE", path)
    assert (status, body) == (200, {"domain": "spam.example", "lifted": 1})
    status, body = await admin_api("GET", path)
    assert status == 200 and body["suspensions"] == []


async def test_sender_domain_suspension_refuses_bad_input(admin_api):
    status, body = await admin_api("POST", "/api/v1/admin/sender-domains/com/suspensions",
                                   {"reason": "x"})
    assert status == 400 and body["error"]["code"] == "bad_domain"
    path = "/api/v1/admin/sender-domains/spam.example/suspensions"
    for doc, code in [({}, "missing_field"), ({"reason": "x", "class": "marketing"},
                                               "unknown_field"),
                      ({"reason": "a\nb"}, "bad_field"),
                      ({"reason": "x", "duration": "-1h"}, "bad_field"),
                      ({"reason": "x", "until": "2001-01-01"}, "policy_error")]:
        status, body = await admin_api("POST", path, doc)
        assert (status, body["error"]["code"]) == (400, code), doc


async def test_tenant_suspensions_listed_and_created_for_a_duration(admin_api):
    status, body = await admin_api("POST", "/api/v1/admin/tenants/acme/suspensions",
                                   {"reason": "billing", "duration": 60})
    assert status == 201 and body["until"] - body["since"] == pytest.approx(60, abs=1)
    status, body = await admin_api("GET", "/api/v1/admin/tenants/acme/suspensions")
    assert status == 200 and [s["reason"] for s in body["suspensions"]] == ["billing"]
    status, body = await admin_api("GET", "/api/v1/admin/tenants/nobody/suspensions")
    assert status == 404


async def test_a_tenant_name_cannot_look_like_a_sender_domain_subject(admin_api):
    status, body = await admin_api("POST", "/api/v1/admin/tenants", {"name": "@spam.example"})
    assert status == 400 and body["error"]["code"] == "bad_tenant"
