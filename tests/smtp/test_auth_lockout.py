"""AUTH failures limited per (client address, user) and overall per address, over real
SMTP sessions to the SmtpServer: one attacker behind a shared address (a NAT) can lock only
the user it guesses, never another user's right password; spraying many users from one
address is slowed and disconnected; failures are answered slower and slower."""

from __future__ import annotations

import asyncio
import base64
import time

from mta.config import UserConfig
from mta.smtp.auth import hash_password
from tests.smtp.conftest import PASSWORD, Running, StartServer
from tests.smtp.rawclient import RawClient

_HASH = hash_password(PASSWORD, ln=4)
USERS = {name: UserConfig(tenant="acme", password=_HASH) for name in ("alice", "bob")}


def _plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def _client(srv: Running) -> RawClient:
    c = await RawClient.connect(srv.host, srv.port)
    assert (await c.ehlo()).startswith("250-")
    return c


async def _try(srv: Running, user: str, password: str) -> str:
    c = await _client(srv)
    try:
        return await c.cmd(_plain(user, password))
    finally:
        await c.close()


async def test_one_users_failures_never_lock_out_another_user_at_the_same_address(
        start_server: StartServer):
    srv = await start_server(users=USERS, auth_max_failures=3)
    for _ in range(3):  # an attacker at 127.0.0.1 guessing alice's password
        assert (await _try(srv, "alice", "guess")).startswith("535 5.7.8")
    # alice is locked from this address, even with her right password (no more guesses)...
    assert (await _try(srv, "alice", PASSWORD)).startswith("454 4.7.0")
    # ...but bob, behind the same address, logs in, and keeps logging in.
    for _ in range(3):
        assert (await _try(srv, "bob", PASSWORD)).startswith("235 2.7.0")
    assert srv.rejected("auth_locked")[0]["user"] == "alice"


async def test_the_lock_ends_with_the_window_and_a_success_clears_earlier_failures(
        start_server: StartServer):
    srv = await start_server(users=USERS, auth_max_failures=2, auth_failure_window=0.5)
    for _ in range(2):
        assert (await _try(srv, "alice", "guess")).startswith("535")
    assert (await _try(srv, "alice", PASSWORD)).startswith("454")
    await asyncio.sleep(0.6)
    assert (await _try(srv, "alice", PASSWORD)).startswith("235")
    # bob mistypes once, then gets it right: the count starts again from nothing.
    assert (await _try(srv, "bob", "typo")).startswith("535")
    assert (await _try(srv, "bob", PASSWORD)).startswith("235")
    assert (await _try(srv, "bob", "typo")).startswith("535")
    assert (await _try(srv, "bob", PASSWORD)).startswith("235")


async def test_spraying_many_users_hits_the_address_cap_right_passwords_still_work(
        start_server: StartServer):
    srv = await start_server(users=USERS, auth_max_failures=3,
                             auth_max_failures_per_address=4)
    for i in range(4):  # four users, one guess each: under every per-user limit
        assert (await _try(srv, f"user{i}", "guess")).startswith("535")
    c = await _client(srv)
    assert (await c.cmd(_plain("user9", "guess"))).startswith("535 5.7.8")
    assert (await c.reply()).startswith("421 4.7.0")  # and the connection ends
    assert await c.closed()
    await c.close()
    # The address is over its cap, yet a right password is accepted.
    assert (await _try(srv, "alice", PASSWORD)).startswith("235 2.7.0")
    assert srv.rejected("auth_address_cap")


async def test_failures_are_answered_slower_and_slower(start_server: StartServer):
    srv = await start_server(users=USERS, auth_max_failures=5, auth_failure_delay=0.05)
    c = await _client(srv)
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert (await c.cmd(_plain("alice", "guess"))).startswith("535")
        took.append(time.monotonic() - started)
    # 0.05 s, then 0.1 s, then 0.2 s (10 ms tolerance each).
    assert took[0] >= 0.04 and took[1] >= 0.09 and took[2] >= 0.19
    started = time.monotonic()
    assert (await c.cmd(_plain("bob", PASSWORD))).startswith("235")  # success: no delay
    assert time.monotonic() - started < 0.05
    await c.close()
