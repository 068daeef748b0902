"""Run-time SMTP AUTH users on real daemons sharing Redis: `mta users add` on one node, AUTH
over real SMTP on the other; a new password and a disable take effect at once on both;
config users are listed beside them and cannot be changed at run time; events."""

from __future__ import annotations

import asyncio
import json
import smtplib

import redis


def _login(mta, user: str, password: str) -> int:
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        if not s.has_extn("auth"):
            return 0
        try:
            return s.login(user, password)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_users_added_changed_and_disabled_at_once_on_two_nodes(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/10"  # this file's own database
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    toml = f'\n[cluster]\nredis_url = "{url}"\n\n[tenants.acme]\n'
    a = await asyncio.to_thread(mta_factory, toml)
    assert await asyncio.to_thread(_login, a, "bob", "s3cret") == 0  # no users: no AUTH
    _ok(await asyncio.to_thread(a.cli, "users", "add", "bob", "--tenant", "acme",
                                "--password", "s3cret"))
    assert await asyncio.to_thread(_login, a, "bob", "s3cret") == 235  # offered at once here
    b = await asyncio.to_thread(mta_factory, toml)
    assert await asyncio.to_thread(_login, b, "bob", "s3cret") == 235

    _ok(await asyncio.to_thread(a.cli, "users", "passwd", "bob", "--password", "n3w"))
    assert await asyncio.to_thread(_login, b, "bob", "s3cret") == 535
    assert await asyncio.to_thread(_login, b, "bob", "n3w") == 235

    _ok(await asyncio.to_thread(b.cli, "users", "disable", "bob"))
    assert await asyncio.to_thread(_login, a, "bob", "n3w") == 535
    assert await asyncio.to_thread(_login, b, "bob", "n3w") == 535
    [u] = json.loads(_ok(await asyncio.to_thread(a.cli, "users", "list", "--json")))
    assert (u["name"], u["tenant"], u["disabled"], u["source"]) == ("bob", "acme", True,
                                                                   "runtime")
    _ok(await asyncio.to_thread(a.cli, "users", "enable", "bob"))
    assert await asyncio.to_thread(_login, b, "bob", "n3w") == 235
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        dump = b"".join(r.dump(k) or b"" for k in r.keys("*"))
    assert b"n3w" not in dump and b"s3cret" not in dump  # only scrypt hashes
    # The events log is written behind: wait for the last line of each node.
    assert a.wait_events(lambda e: e["event"] == "user_enabled")
    assert b.wait_events(lambda e: e["event"] == "user_disabled")
    assert [e["event"] for e in a.events() if e["event"].startswith("user_")] == [
        "user_added", "user_passwd", "user_enabled"]
    assert [e["event"] for e in b.events() if e["event"].startswith("user_")] == [
        "user_disabled"]


def test_config_users_are_listed_and_kept_apart(mta_factory):
    from mta.smtp.auth import hash_password

    mta = mta_factory(f'[tenants.acme]\n\n[users.carol]\ntenant = "acme"\n'
                      f'password = "{hash_password("pw", ln=4)}"\n')
    proc = mta.cli("users", "add", "carol", "--tenant", "acme", "--password", "x")
    assert proc.returncode != 0 and "user_exists" in proc.stderr
    proc = mta.cli("users", "disable", "carol")
    assert proc.returncode != 0 and "config_user" in proc.stderr
    proc = mta.cli("users", "add", "dave", "--tenant", "nobody", "--password", "x")
    assert proc.returncode != 0 and "not_found" in proc.stderr
    _ok(mta.cli("users", "add", "dave", "--tenant", "acme", "--password", "dpw",
                "--network", "10.0.0.0/8"))
    users = {u["name"]: u for u in json.loads(_ok(mta.cli("users", "list", "--json")))}
    assert users["carol"]["source"] == "config" and users["dave"]["source"] == "runtime"
    assert users["dave"]["networks"] == ["10.0.0.0/8"]
    assert _login(mta, "carol", "pw") == 235
    assert _login(mta, "dave", "dpw") != 235  # loopback is outside its networks
    _ok(mta.cli("users", "remove", "dave"))
    assert "dave" not in _ok(mta.cli("users", "list"))
