"""HTTP API request limits: rates per API key (the real daemon), concurrency per key and
rates per admin token (the real app on loopback), 413 in the API's JSON form, and the
token bucket itself with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import aiohttp
from aiohttp import web

from mta.http.app import make_app
from mta.http.ratelimit import Limit, RateLimiter, RequestLimits
from mta.ingress import Ingress
from mta.queue import Spool
from mta.rfc5321.reply import Reply
from tests.support.daemon import ADMIN_TOKEN, free_port

KEYS = {"acme": "acme-key-0123456789", "beta": "beta-key-0123456789"}
MSG = {"from": "a@s.test", "to": ["b@d.test"], "subject": "hi", "text": "hello"}


async def _post(s: aiohttp.ClientSession, url: str, key: str, body: object = MSG,
                ) -> tuple[int, dict, dict[str, str]]:
    async with s.post(url + "/api/v1/messages", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json(), dict(r.headers)


async def test_a_key_past_its_limit_gets_429_while_another_key_gets_202(mta_factory):
    mta = await asyncio.to_thread(mta_factory, f"""
[tenants.acme]
api_keys = ["{KEYS['acme']}"]
api_rate = 2
api_burst = 3

[tenants.beta]
api_keys = ["{KEYS['beta']}"]
""")
    url = f"http://127.0.0.1:{mta.http_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        got = [await _post(s, url, KEYS["acme"]) for _ in range(3)]
        assert [g[0] for g in got] == [202, 202, 202], got
        assert got[0][2]["RateLimit-Policy"] == '"key";q=3;w=2'
        assert re.fullmatch(r'"key";r=[0-2];t=[0-9]+', got[-1][2]["RateLimit"])

        status, body, headers = await _post(s, url, KEYS["acme"])
        assert status == 429, body
        assert body["error"]["code"] == "rate_limited"
        assert body["error"]["limit"] == {"rate": 2.0, "burst": 3, "concurrency": 50}
        assert "2 requests per second" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
        assert headers["RateLimit"].startswith('"key";r=0;')
        assert headers["RateLimit-Policy"] == '"key";q=3;w=2'

        # The other key has its own bucket ([http] defaults: 100/s, burst 200).
        for _ in range(5):
            status, body, headers = await _post(s, url, KEYS["beta"])
            assert status == 202, body
        assert headers["RateLimit-Policy"] == '"key";q=200;w=2'

        # Half a second refills one token at 2/s: acme may send again.
        await asyncio.sleep(0.6)
        status, body, _ = await _post(s, url, KEYS["acme"])
        assert status == 202, body
        # A wrong key is not a principal: 401, not 429.
        status, body, _ = await _post(s, url, "no-such-key")
        assert (status, body["error"]["code"]) == (401, "unauthorized")


class SlowIngress(Ingress):
    """check_mail of tenant acme waits until the test lets it go (requests in flight);
    beta's senders are refused at once (an answer that is not 429)."""

    gate: asyncio.Event

    async def check_mail(self, client, address, params):
        if client.tenant == "acme":
            await self.gate.wait()
            return Reply(550, "5.7.1", "Sender refused")
        return Reply(550, "5.7.1", "Sender refused")


@contextlib.asynccontextmanager
async def _app(tmp_path, limits: RequestLimits, **kw):
    from mta.observe.events import EventLog

    spool = await Spool.open(tmp_path / "spool")
    ingress = SlowIngress(spool=spool, events=EventLog(None))
    ingress.gate = asyncio.Event()
    app = make_app(admin_token=ADMIN_TOKEN, ingress=ingress,
                   api_keys={KEYS["acme"]: "acme", KEYS["beta"]: "beta"},
                   request_limits=limits, **kw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", ingress
    finally:
        ingress.gate.set()
        await runner.cleanup()
        await spool.close()


async def test_requests_in_flight_per_key_are_bounded(tmp_path):
    async with _app(tmp_path, RequestLimits(api=Limit(0, 0, 2))) as (url, ingress), \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        slow = [asyncio.create_task(_post(s, url, KEYS["acme"])) for _ in range(2)]
        await asyncio.sleep(0.3)  # both are now waiting in check_mail
        status, body, headers = await _post(s, url, KEYS["acme"])
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert "2 requests in flight" in body["error"]["message"]
        assert headers["Retry-After"] == "1"
        status, body, _ = await _post(s, url, KEYS["beta"])  # beta is not held up
        assert status == 422, body
        ingress.gate.set()
        assert [(await t)[0] for t in slow] == [422, 422]
        status, _, _ = await _post(s, url, KEYS["acme"])  # places given back
        assert status == 422


async def test_the_admin_token_has_its_own_limit(tmp_path):
    limits = RequestLimits(api=Limit(1, 1, 0), admin=Limit(1, 2, 0))
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _app(tmp_path, limits) as (url, _), \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        codes = []
        for _ in range(3):
            async with s.get(url + "/api/v1/admin/queue", headers=auth) as r:
                codes.append(r.status)
                last = (await r.json(), dict(r.headers))
        assert codes == [503, 503, 429]  # no queue in this app: 503, but counted
        assert last[0]["error"]["code"] == "rate_limited"
        assert last[1]["RateLimit-Policy"] == '"key";q=2;w=2'
        # Without the token: 401 from the admin check, never counted against the token.
        async with s.get(url + "/api/v1/admin/queue") as r:
            assert r.status == 401
        # The API keys' buckets are apart from the admin token's.
        status, _, _ = await _post(s, url, KEYS["beta"])
        assert status == 422


async def test_an_admin_body_over_max_body_is_413_naming_the_limit(mta_factory):
    mta = await asyncio.to_thread(mta_factory)
    url = f"http://127.0.0.1:{mta.http_port}"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    limit = 1024 * 1024  # [http] max_body default
    big = json.dumps({"name": "x" * (limit + 10)}).encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(url + "/api/v1/admin/tenants", data=big, headers=auth) as r:
            body = await r.json()
            assert r.status == 413
            assert body["error"]["code"] == "payload_too_large"
            assert body["error"]["limit"] == limit
            assert f"{limit} bytes ([http] max_body)" in body["error"]["message"]

        async def chunks():  # no Content-Length: aiohttp finds it while reading
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]

        async with s.post(url + "/api/v1/admin/tenants", data=chunks(), headers=auth) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (413, "payload_too_large")
            assert body["error"]["limit"] == limit
        # A body within the limit is served as before.
        async with s.post(url + "/api/v1/admin/tenants", json={"name": "small"},
                          headers=auth) as r:
            assert r.status == 201, await r.text()


async def test_an_injection_body_over_its_limit_is_413_naming_it(tmp_path):
    async with _app(tmp_path, RequestLimits()) as (url, _), \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        limit = 25 * 1024 * 1024 * 4 // 3 + 64 * 1024  # [smtp] max_message_size default
        async with s.post(url + "/api/v1/messages", data=b"x" * (limit + 1),
                          headers={"Authorization": f"Bearer {KEYS['beta']}",
                                   "Content-Type": "application/json"}) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (413, "payload_too_large")
            assert body["error"]["limit"] == limit


def test_token_bucket_refills_at_the_rate_and_holds_the_burst():
    now = [1000.0]
    rl = RateLimiter(clock=lambda: now[0])
    lim = Limit(rate=10, burst=5)
    assert all(rl.acquire("k", lim).ok for _ in range(5))
    d = rl.acquire("k", lim)
    assert (d.ok, d.reason, d.retry_after) == (False, "rate", 1)
    assert d.headers["RateLimit"] == '"key";r=0;t=1'
    now[0] += 0.1  # one token back
    assert rl.acquire("k", lim).ok
    assert not rl.acquire("k", lim).ok
    assert rl.acquire("other", lim).ok  # its own bucket
    now[0] += 60  # never more than the burst
    assert sum(rl.acquire("k", lim).ok for _ in range(10)) == 5
    for _ in range(11):
        rl.release("k")
    assert RateLimiter().acquire("k", Limit()).ok  # no limits: always


def test_limits_from_config_with_a_tenant_override():
    from mta.config import parse_config

    cfg = parse_config('[http]\napi_rate = 5\napi_burst = 10\n[tenants.a]\napi_burst = 50\n'
                       '[tenants.b]\n')
    lim = RequestLimits.from_config(cfg)
    assert lim.for_tenant("a") == Limit(5.0, 50, 50)
    assert lim.for_tenant("b") == lim.for_tenant("runtime-tenant") == Limit(5.0, 10, 50)
    assert lim.admin == Limit(50.0, 100, 20)



async def test_failed_authentication_is_limited_per_client_address(mta_factory):
    """Guessing keys: past [http] auth_fail_burst failures an address gets 429 for every
    request, a right key too, until its bucket refills; another address and the local
    admin socket are untouched."""
    mta = await asyncio.to_thread(mta_factory, f"""
[tenants.acme]
api_keys = ["{KEYS['acme']}"]
""")
    await asyncio.to_thread(mta.terminate)
    mta.config_path.write_text(mta.config_path.read_text().replace(
        "[http]\n", "[http]\nauth_fail_rate = 0.5\nauth_fail_burst = 3\n", 1))
    await asyncio.to_thread(mta.start)
    url = f"http://127.0.0.1:{mta.http_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        assert (await _post(s, url, KEYS["acme"]))[0] == 202
        for guess in range(3):
            status, body, _ = await _post(s, url, f"guess-{guess}")
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body, headers = await _post(s, url, "guess-3")
        assert (status, body["error"]["code"]) == (429, "auth_rate_limited")
        assert 1 <= int(headers["Retry-After"]) <= 2
        # The address is held, whatever it sends: the right key, the admin token.
        assert (await _post(s, url, KEYS["acme"]))[0] == 429
        async with s.get(url + "/api/v1/admin/queue",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 429
    # Another address of this host has its own bucket.
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=10)) as s:
        assert (await _post(s, url, KEYS["acme"]))[0] == 202
    # The local admin socket is never limited.
    listed = await asyncio.to_thread(mta.cli, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    # 0.5/s: two seconds give one more try back.
    await asyncio.sleep(2.1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        assert (await _post(s, url, KEYS["acme"]))[0] == 202
        assert (await _post(s, url, "guess-4"))[0] == 401
        assert (await _post(s, url, "guess-5"))[0] == 429
