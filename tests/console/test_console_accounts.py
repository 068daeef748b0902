"""Run-time console accounts on two real daemons sharing Redis: `mta console accounts` on
one node, sign-in on the other; a role change applies at the next request everywhere; a
new password, a disable and a removal end the account's sessions on both nodes; config
accounts are listed and never changed at run time; the admin API's refusals; events."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import redis

from tests.console.conftest import PASSWORD, console_toml
from tests.console.test_console_http import _cookie, sign_in

# The session's redis-server (tests/support/redis.py) has the default 16 databases.
REDIS_DB = 11  # this area's own


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def _status(http: aiohttp.ClientSession, base: str, cookie: str, path: str) -> int:
    async with http.get(base + path, allow_redirects=False,
                        headers={"Cookie": f"mta_console={cookie}"}) as r:
        await r.read()
        return r.status


@pytest.fixture
def redis_db(redis_url) -> str:
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    return url


async def test_accounts_made_on_one_node_sign_in_on_the_other(mta_factory, redis_db):
    toml = console_toml() + f'\n[cluster]\nredis_url = "{redis_db}"\n'
    a = await asyncio.to_thread(mta_factory, toml)
    b = await asyncio.to_thread(mta_factory, toml)
    base_a, base_b = (f"http://127.0.0.1:{m.http_port}" for m in (a, b))

    _ok(await asyncio.to_thread(a.cli, "console", "accounts", "add", "otto", "--role",
                                "viewer", "--password", PASSWORD))
    _ok(await asyncio.to_thread(a.cli, "console", "accounts", "add", "portal", "--tenant",
                                "acme", "--password", PASSWORD))
    listed = {x["name"]: x for x in json.loads(_ok(await asyncio.to_thread(
        b.cli, "console", "accounts", "list", "--json")))}
    assert (listed["otto"]["role"], listed["otto"]["source"]) == ("viewer", "runtime")
    assert (listed["portal"]["role"], listed["portal"]["tenant"]) == ("viewer", "acme")
    assert (listed["olga"]["source"], listed["ada"]["role"]) == ("config", "admin")
    text = _ok(await asyncio.to_thread(b.cli, "console", "accounts", "list"))
    assert "otto" in text and "runtime" in text

    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, base_b, "otto")  # made on a, signs in on b
        assert r.status == 303
        otto_b = _cookie(r, "mta_console")
        r = await sign_in(http, base_a, "otto")
        otto_a = _cookie(r, "mta_console")
        # A viewer may not act; as an operator (changed on b), the same session may.
        assert await _status(http, base_a, otto_a, "/console/queue-flush") == 403
        _ok(await asyncio.to_thread(b.cli, "console", "accounts", "role", "otto",
                                    "operator"))
        assert await _status(http, base_a, otto_a, "/console/queue-flush") == 200
        # An operator does not manage accounts.
        assert await _status(http, base_a, otto_a, "/console/accounts") == 403

        # A new password (set through a) ends the sessions on both nodes.
        _ok(await asyncio.to_thread(a.cli, "console", "accounts", "passwd", "otto",
                                    "--password", "another long one"))
        assert await _status(http, base_a, otto_a, "/console/queue") == 303
        assert await _status(http, base_b, otto_b, "/console/queue") == 303
        assert (await sign_in(http, base_b, "otto")).status == 401
        r = await sign_in(http, base_b, "otto", "another long one")
        otto_b = _cookie(r, "mta_console")
        assert await _status(http, base_b, otto_b, "/console/queue") == 200

        # Disabled: refused at sign-in and its session ends; enabled again: signs in.
        _ok(await asyncio.to_thread(a.cli, "console", "accounts", "disable", "otto"))
        assert await _status(http, base_b, otto_b, "/console/queue") == 303
        assert (await sign_in(http, base_a, "otto", "another long one")).status == 401
        _ok(await asyncio.to_thread(a.cli, "console", "accounts", "enable", "otto"))
        r = await sign_in(http, base_b, "otto", "another long one")
        otto_b = _cookie(r, "mta_console")

        # Removed (on a): b's session ends; made again with the old password, the old
        # cookie stays void.
        _ok(await asyncio.to_thread(a.cli, "console", "accounts", "remove", "otto"))
        assert await _status(http, base_b, otto_b, "/console/queue") == 303
        _ok(await asyncio.to_thread(a.cli, "console", "accounts", "add", "otto",
                                    "--password", "another long one"))
        assert await _status(http, base_b, otto_b, "/console/queue") == 303

        # The tenant portal account sees its tenant only.
        r = await sign_in(http, base_b, "portal")
        portal = _cookie(r, "mta_console")
        assert await _status(http, base_b, portal, "/console/tenants/acme") == 200
        assert await _status(http, base_b, portal, "/console/tenants/globex") == 404
        assert await _status(http, base_b, portal, "/console/accounts") == 403

    # Config accounts cannot be changed at run time.
    refused = await asyncio.to_thread(a.cli, "console", "accounts", "remove", "olga")
    assert refused.returncode != 0 and "config" in refused.stderr
    with redis.Redis.from_url(redis_db, socket_timeout=5) as r:
        dump = b"".join(r.dump(k) or b"" for k in r.keys("*"))
    assert PASSWORD.encode() not in dump and b"another long one" not in dump
    events = [e for e in a.wait_events(lambda e: e["event"] == "console_account_removed")]
    assert events and events[0]["account"] == "otto"
    changes = [e["change"] for e in a.events() if e["event"] == "console_account_changed"]
    assert changes == ["password", "disabled", "enabled"]
    assert b.wait_events(lambda e: e["event"] == "console_account_changed"
                         and e["change"] == "role" and e["role"] == "operator")
    added = [e["account"] for e in a.events() if e["event"] == "console_account_added"]
    assert added == ["otto", "portal", "otto"]


async def test_the_admin_api_refuses_what_it_cannot_do(site):
    def post(path: str, body: dict, method: str = "POST") -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        from tests.support.daemon import ADMIN_TOKEN

        req = urllib.request.Request(site.base + path, data=json.dumps(body).encode(),
                                     method=method,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    base = "/api/v1/admin/console/accounts"
    cases = [
        ({"name": "x y", "password": PASSWORD}, 400, "bad_account"),
        ({"name": "xy", "password": "short"}, 400, "weak_password"),
        ({"name": "xy", "role": "root", "password": PASSWORD}, 400, "bad_role"),
        ({"name": "xy"}, 400, "bad_field"),
        ({"name": "xy", "tenant": "nobody", "password": PASSWORD}, 404, "not_found"),
        ({"name": "olga", "password": PASSWORD}, 409, "account_exists"),
        ({"name": "xy", "password": PASSWORD, "colour": "red"}, 400, "unknown_field"),
    ]
    for body, status, code in cases:
        got = await asyncio.to_thread(post, base, body)
        assert (got[0], got[1]["error"]["code"]) == (status, code), body
    status, rec = await asyncio.to_thread(post, base, {"name": "tina", "tenant": "globex",
                                                        "role": "admin",
                                                        "password": PASSWORD})
    assert status == 201 and (rec["role"], rec["tenant"]) == ("viewer", "globex")
    got = await asyncio.to_thread(post, base + "/tina/role", {"role": "admin"}, "PUT")
    assert (got[0], got[1]["error"]["code"]) == (409, "tenant_account")
    got = await asyncio.to_thread(post, base + "/olga/role", {"role": "admin"}, "PUT")
    assert (got[0], got[1]["error"]["code"]) == (409, "config_account")
    got = await asyncio.to_thread(post, base + "/nobody/disable", {})
    assert (got[0], got[1]["error"]["code"]) == (404, "not_found")
    listed = site.admin(base)["accounts"]
    assert {a["name"] for a in listed} >= {"olga", "vera", "acme", "ada", "tina"}
    assert not any("password" in a for a in listed)
