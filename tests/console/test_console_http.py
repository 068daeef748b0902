"""The console's guards seen by a plain HTTP client (no browser) against a real daemon:
a POST without the session's CSRF token is refused, the cookie's attributes, sign-in
required, and sign-in attempts rate-limited."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import aiohttp

from tests.console.conftest import PASSWORD, Site, console_toml
from tests.support.daemon import MtaProcess


def _cookie(resp: aiohttp.ClientResponse, name: str) -> str:
    morsel = resp.cookies.get(name)
    assert morsel is not None, f"no {name} cookie in {resp.headers.getall('Set-Cookie', [])}"
    return morsel.value


async def sign_in(http: aiohttp.ClientSession, base: str, user: str,
                  password: str = PASSWORD) -> aiohttp.ClientResponse:
    async with http.get(base + "/console/sign-in") as r:
        page = await r.text()
        pre = _cookie(r, "mta_console_signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    async with http.post(base + "/console/sign-in", allow_redirects=False,
                         data={"csrf": token, "user": user, "password": password},
                         headers={"Cookie": f"mta_console_signin={pre}"}) as r:
        await r.read()
        return r


async def test_a_post_without_the_csrf_token_is_refused(site: Site):
    msg_id = site.inject("key-acme", "csrf@dest.test", "csrf")
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, site.base, "olga")
        assert r.status == 303 and r.headers["Location"] == "/console/"
        set_cookie = r.headers["Set-Cookie"]
        for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console"):
            assert attr in set_cookie, set_cookie
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
        url = f"{site.base}/console/queue/{msg_id}/hold"
        async with http.get(url, headers=cookie) as page:  # the confirmation page's form
            token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        for form in ({}, {"csrf": ""}, {"csrf": "x" * len(token)}):
            async with http.post(url, data=form, headers=cookie,
                                 allow_redirects=False) as refused:
                assert refused.status == 403, form
                assert "CSRF" in await refused.text()
        # The right token, but sent from another site's page: refused too.
        async with http.post(url, data={"csrf": token}, allow_redirects=False,
                             headers={**cookie, "Origin": "http://evil.example"}) as r2:
            assert r2.status == 403
        assert site.admin(f"/api/v1/admin/queue/{msg_id}")["state"] == "queued"
        # The same form with its token is what the console accepts.
        async with http.post(url, data={"csrf": token}, headers=cookie,
                             allow_redirects=False) as ok:
            assert ok.status == 303
        assert site.admin(f"/api/v1/admin/queue/{msg_id}")["state"] == "held"


async def test_pages_need_a_session_and_a_forged_cookie_is_none(site: Site):
    async with aiohttp.ClientSession() as http:
        async with http.get(site.base + "/console", allow_redirects=False) as r:
            assert r.status == 301 and r.headers["Location"] == "/console/"
        async with http.get(site.base + "/console/queue", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/sign-in"
        r = await sign_in(http, site.base, "vera")
        value = _cookie(r, "mta_console")
        sid, _, mac = value.rpartition(".")
        forged = f"{sid}.{'0' * len(mac)}"
        async with http.get(site.base + "/console/queue", allow_redirects=False,
                            headers={"Cookie": f"mta_console={forged}"}) as r:
            assert r.status == 303
        async with http.post(site.base + "/console/queue-flush", data={"csrf": "x"},
                             allow_redirects=False,
                             headers={"Cookie": f"mta_console={forged}"}) as r:
            assert r.status == 401
        async with http.get(site.base + "/console/queue", allow_redirects=False,
                            headers={"Cookie": f"mta_console={value}"}) as r:
            assert r.status == 200
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]


async def test_wrong_passwords_are_rate_limited(tmp_path):
    mta = MtaProcess(tmp_path, console_toml(burst=3)).start()
    try:
        base = f"http://127.0.0.1:{mta.http_port}"
        async with aiohttp.ClientSession() as http:
            statuses = [(await sign_in(http, base, "olga", "wrong")).status for _ in range(4)]
            assert statuses == [401, 401, 401, 429]
            # Even the right password waits now: a guesser cannot tell it apart.
            assert (await sign_in(http, base, "olga")).status == 429
    finally:
        mta.kill()



async def _form_token(http: aiohttp.ClientSession, url: str, cookie: dict[str, str]) -> str:
    async with http.get(url, headers=cookie) as page:
        assert page.status == 200, await page.text()
        return re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)


async def test_an_operator_suspends_a_tenant_and_lifts_it(site: Site):
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, site.base, "olga")
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
        url = site.base + "/console/tenants/globex/suspend"
        token = await _form_token(http, url, cookie)
        async with http.post(url, data={"csrf": token, "reason": "spam trap hits"},
                             headers=cookie, allow_redirects=False) as done:
            assert done.status == 303
        [s] = site.admin("/api/v1/admin/tenants/globex/suspensions")["suspensions"]
        assert s["reason"] == "console: spam trap hits"
        url = site.base + "/console/tenants/globex/unsuspend"
        token = await _form_token(http, url, cookie)
        async with http.post(url, data={"csrf": token}, headers=cookie,
                             allow_redirects=False) as done:
            assert done.status == 303
        assert site.admin("/api/v1/admin/tenants/globex/suspensions")["suspensions"] == []


async def test_an_operator_adds_credits_and_moves_the_reputation_state(site: Site):
    """The CLI's other tenant actions on the tenant page: `mta policy credits add`,
    `escalate` and `clear`, checked through the admin API; a bad amount is refused."""
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, site.base, "olga")
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}

        async def act(action: str, form: dict[str, str]) -> int:
            url = f"{site.base}/console/tenants/globex/{action}"
            token = await _form_token(http, url, cookie)
            async with http.post(url, data={"csrf": token, **form}, headers=cookie,
                                 allow_redirects=False) as done:
                return done.status

        before = site.admin("/api/v1/admin/tenants/globex/credits")["balance"]
        assert await act("credits", {"amount": "250", "paid": "on"}) == 303
        assert site.admin("/api/v1/admin/tenants/globex/credits")["balance"] == before + 250
        assert await act("credits", {"amount": "lots"}) == 400
        assert await act("credits", {"amount": "0"}) == 400
        # A temporary limit, as `mta policy limits set`, and cleared again.
        assert await act("limit", {"limit": "messages_per_hour", "value": "10",
                                   "until": "2099-01-31", "reason": "cooling"}) == 303
        def hourly() -> list[dict]:
            return [u for u in site.admin("/api/v1/admin/tenants/globex/limits")["usage"]
                    if u["name"] == "messages_per_hour" and u["limit"] == 10]

        assert len(hourly()) == 1
        assert await act("limit", {"limit": "messages_per_hour", "value": "10",
                                   "until": "someday", "reason": "x"}) == 400
        assert await act("unlimit", {}) == 303
        assert hourly() == []
        assert await act("escalate", {"to": "limited", "reason": "list bought"}) == 303
        rep = site.admin("/api/v1/admin/tenants/globex/reputation")
        assert rep["state"] == "limited" and "list bought" in rep["reason"]
        # The escalation is an alert on the Overview, and the tenant page shows the
        # thresholds the rates are held against.
        async with http.get(site.base + "/console/", headers=cookie) as page:
            assert "Tenant globex: reputation limited." in await page.text()
        async with http.get(site.base + "/console/tenants/globex", headers=cookie) as page:
            text = await page.text()
            assert 'id="reputation-thresholds"' in text and "complaint" in text
        assert await act("escalate", {"to": "nowhere", "reason": "x"}) == 400
        assert await act("clear", {"reason": "cleaned"}) == 303
        assert site.admin("/api/v1/admin/tenants/globex/reputation")["state"] == "ok"


async def test_an_account_removed_by_sighup_is_signed_out(tmp_path):
    mta = MtaProcess(tmp_path, console_toml()).start()
    try:
        base = f"http://127.0.0.1:{mta.http_port}"
        async with aiohttp.ClientSession() as http:
            r = await sign_in(http, base, "vera")
            cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
            async with http.get(base + "/console/queue", headers=cookie,
                                allow_redirects=False) as page:
                assert page.status == 200
            text = mta.config_path.read_text()
            mta.config_path.write_text(text.replace("[console.accounts.vera]",
                                                    "[console.accounts.vera-gone]"))
            mta.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while "configuration reloaded" not in mta.stderr:
                assert time.monotonic() < deadline, mta.stderr
                await asyncio.sleep(0.1)
            async with http.get(base + "/console/queue", headers=cookie,
                                allow_redirects=False) as page:
                assert page.status == 303 and page.headers["Location"] == "/console/sign-in"
    finally:
        mta.kill()


async def test_the_events_page_filters_by_message_id_and_type(site: Site):
    a = site.inject("key-acme", "one@dest.test", "one")
    b = site.inject("key-acme", "two@dest.test", "two")
    assert site.mta.wait_events(lambda e: e.get("id") == b and e["event"] == "received")
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, site.base, "vera")
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
        async with http.get(f"{site.base}/console/events?id={a}&event=received",
                            headers=cookie) as page:
            rows = re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>",
                              await page.text())
        assert rows == [("received", a)]
        async with http.get(f"{site.base}/console/events?recipient=two@dest.test",
                            headers=cookie) as page:
            text = await page.text()
        assert b in text and a not in text


async def test_sigterm_ends_a_live_tail_and_the_daemon_exits_0(tmp_path):
    mta = MtaProcess(tmp_path, console_toml()).start()
    try:
        base = f"http://127.0.0.1:{mta.http_port}"
        async with aiohttp.ClientSession() as http:
            r = await sign_in(http, base, "olga")
            cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
            async with http.get(base + "/console/events/stream", headers=cookie) as stream:
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                assert await stream.content.readline() == b": live\n"
                # A browser left open on the Events page must not hold the shutdown.
                assert await asyncio.to_thread(mta.terminate) == 0
                assert await stream.content.read() in (b"", b"\n")
    finally:
        mta.kill()
