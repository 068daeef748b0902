"""SMTP AUTH credentials: scrypt password hashes, user lookup and failure throttling.

Owns the hash format `$scrypt$ln=14,r=8,p=1$<salt b64>$<hash b64>` (what `mta passwd`
prints and `[users.NAME] password` holds), verification off the event loop (one check costs
~50 ms of CPU and 16 MiB), and the failure windows (`AuthFailures`): per (client address,
username), which stops the guessing of one user's password, and per client address, which
slows a client trying many users - without ever refusing one user's right password because
of another user's failures. The SASL exchange itself (PLAIN, LOGIN) is in session.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mta.config import UserConfig

__all__ = ["AuthFailures", "AuthResult", "Authenticator", "RuntimeUsers", "hash_password",
           "verify_password"]

# ln=14 (N=16384), r=8, p=1: the parameters RFC 7914 and OWASP give for interactive logins;
# about 50 ms and 16 MiB per check.
DEFAULT_LN = 14
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAXMEM = 128 * 1024 * 1024  # room for ln up to 16 with r=8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, ln: int = DEFAULT_LN, r: int = 8, p: int = 1) -> str:
    """Hash `password` for `[users.NAME] password` (blocking; ~50 ms at ln=14)."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p,
                            maxmem=_MAXMEM, dklen=_HASH_BYTES)
    return f"$scrypt$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """True if `password` matches `hashed` (blocking: call it in a thread).

    A malformed hash never matches (and never raises).
    """
    try:
        _, scheme, params, salt_s, hash_s = hashed.split("$")
        if scheme != "scrypt":
            return False
        kv = dict(item.split("=", 1) for item in params.split(","))
        ln, r, p = int(kv["ln"]), int(kv["r"]), int(kv["p"])
        salt, expected = _unb64(salt_s), _unb64(hash_s)
        if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and expected):
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p,
                                maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, KeyError, binascii.Error, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


# Checked for unknown users, so "no such user" costs the same time as "wrong password".
_DUMMY_HASH = f"$scrypt$ln={DEFAULT_LN},r=8,p=1${'A' * 22}${'A' * 43}"


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    tenant: str | None = None
    locked: bool = False  # refused without checking: too many recent failures (this user)
    # A failure from an address past its overall cap: the session ends after the 535.
    disconnect: bool = False
    # The client networks the user may authenticate from (the session checks its client
    # address against them); empty: anywhere.
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


log = logging.getLogger("mta.smtp")


class RuntimeUsers:
    """SMTP AUTH users made at run time (`mta users add`), beside `[users.NAME]`: records in
    the policy store's keyed records (mta.policy.kv: policy.db, or the cluster's Redis), so
    every node sees a new user, a new password or a disabled user at the next AUTH (a
    lookup reads the store; nothing is cached). A name in the config is the config's.

    Record: namespace "users", key = user name, value = JSON {"tenant", "password" (the
    scrypt hash `mta passwd` prints), "networks", "disabled", "created"}.

    Whether AUTH is offered at all (EHLO) is decided per session from `present`: true
    when the store holds a user, refreshed every REFRESH seconds and at once on this
    node's own changes, so a node starts offering AUTH for another node's first user
    within REFRESH seconds.
    """

    NS = "users"
    REFRESH = 10.0

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.present = False
        self.config: Mapping[str, UserConfig] = {}  # [users.NAME], set on each (re)load
        self.listeners: list[Callable[[], None]] = []

    async def record(self, name: str) -> dict[str, Any] | None:
        raw = await self.kv.get(self.NS, name)
        return None if raw is None else dict(json.loads(raw))

    async def records(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in (await self.kv.items(self.NS)).items()}

    async def put(self, name: str, rec: dict[str, Any]) -> None:
        await self.kv.put(self.NS, name, json.dumps(rec, sort_keys=True))
        await self.refresh()

    async def delete(self, name: str) -> bool:
        found = await self.kv.delete(self.NS, name)
        await self.refresh()
        return found

    async def lookup(self, name: str) -> UserConfig | None:
        """The user as AUTH sees it; None when unknown or disabled."""
        rec = await self.record(name)
        if rec is None or rec.get("disabled"):
            return None
        return UserConfig(tenant=rec["tenant"], password=rec["password"],
                          networks=[ipaddress.ip_network(n) for n in rec.get("networks", [])])

    async def refresh(self) -> None:
        present = bool(await self.kv.items(self.NS))
        if present != self.present:
            self.present = present
            for listener in self.listeners:
                listener()

    def start(self) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.REFRESH)
                try:
                    await self.refresh()
                except Exception:
                    log.exception("run-time users: could not read the policy store")
        return asyncio.get_running_loop().create_task(loop(), name="runtime-users")


class Authenticator:
    """Looks up `[users.NAME]` (then the run-time users) and verifies passwords in a worker
    thread."""

    def __init__(self, users: Mapping[str, UserConfig],
                 runtime: RuntimeUsers | None = None) -> None:
        self._users = dict(users)
        self._runtime = runtime

    def __bool__(self) -> bool:
        return bool(self._users) or (self._runtime is not None and self._runtime.present)

    async def verify(self, username: str, password: str) -> AuthResult:
        user = self._users.get(username)
        if user is None and self._runtime is not None:
            try:
                user = await self._runtime.lookup(username)
            except Exception:
                log.exception("run-time users: lookup of %r failed", username)
        hashed = user.password if user is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(verify_password, password, hashed)
        if ok and user is not None:
            return AuthResult(True, user.tenant, networks=tuple(user.networks))
        return AuthResult(False)


class _Window:
    """Failure times per key within a sliding window, bounded: at most `cap` times per
    key, and keys whose window has passed are dropped once the table holds `max_keys`."""

    def __init__(self, cap: int, max_keys: int) -> None:
        self.cap = cap
        self.max_keys = max_keys
        self.table: dict[object, deque[float]] = {}

    def count(self, key: object, now: float, window: float) -> int:
        q = self.table.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - window:
            q.popleft()
        if not q:
            del self.table[key]
            return 0
        return len(q)

    def add(self, key: object, now: float, window: float) -> int:
        n = self.count(key, now, window)
        q = self.table.get(key)
        if q is None:
            if len(self.table) >= self.max_keys:
                self._prune(now, window)
            q = self.table[key] = deque(maxlen=max(self.cap, 1))
        elif q.maxlen != max(self.cap, 1):  # the cap changed on reload
            q = self.table[key] = deque(q, maxlen=max(self.cap, 1))
        q.append(now)
        return min(n + 1, len(q))

    def clear(self, key: object) -> None:
        self.table.pop(key, None)

    def _prune(self, now: float, window: float) -> None:
        for key in list(self.table):
            self.count(key, now, window)
        if len(self.table) >= self.max_keys:  # all still active: drop the oldest
            oldest = min(self.table, key=lambda k: self.table[k][-1])
            del self.table[oldest]


# A SASL username as a key: bounded, so a client cannot make the table hold megabytes.
_MAX_USER_KEY = 256
# Slowing grows with a (address, user)'s failures: delay, 2x, 4x ... up to this many times.
_MAX_SLOWDOWN = 16


class AuthFailures:
    """Failed AUTH attempts within a sliding window, per (client address, username) and
    overall per client address.

    - After `max_failures` failures for one user from one address, AUTH as that user from
      that address is refused (454) without a password check until the window passes:
      the guessing of that user's password stops there. Other users from the same address
      (a NAT, an office) are not affected; a success clears the pair's failures.
    - After `max_per_address` failures from one address, whatever the users, every further
      failure from it is slowed the most and ends the connection (`address_over_cap`):
      spraying many usernames costs time and a reconnect per guess. A right password from
      that address is still checked and accepted.
    - `delay_for(n)`: each failure is answered after `delay`, doubled for each earlier
      failure of the pair, at most 16 times `delay`.

    `clock` is injected (a monotonic seconds source) so tests can move time. Memory is
    bounded by `max_clients` keys per table and `max_failures` / `max_per_address` times
    per key.
    """

    def __init__(self, max_failures: int, window: float, *, max_per_address: int = 0,
                 delay: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        self._clock = clock
        self._pairs = _Window(max_failures, max_clients)
        self._addresses = _Window(max_per_address or 10 * max_failures, max_clients)
        self.window = window
        self.delay = delay
        self.max_failures = max_failures
        self.max_per_address = max_per_address

    @property
    def max_failures(self) -> int:
        return self._pairs.cap

    @max_failures.setter
    def max_failures(self, value: int) -> None:
        self._pairs.cap = value

    @property
    def max_per_address(self) -> int:
        return self._addresses.cap

    @max_per_address.setter
    def max_per_address(self, value: int) -> None:
        # 0: ten times the per-user cap.
        self._addresses.cap = value or 10 * self._pairs.cap

    @staticmethod
    def _pair(ip: str, user: str) -> tuple[str, str]:
        return ip, user[:_MAX_USER_KEY]

    def is_locked(self, ip: str, user: str) -> bool:
        """Whether AUTH as `user` from `ip` is refused now (its own failures only)."""
        n = self._pairs.count(self._pair(ip, user), self._clock(), self.window)
        return n >= self.max_failures

    def address_over_cap(self, ip: str) -> bool:
        return self._addresses.count(ip, self._clock(), self.window) >= self.max_per_address

    def record_failure(self, ip: str, user: str) -> int:
        """Count a failure; returns the pair's failures within the window."""
        now = self._clock()
        self._addresses.add(ip, now, self.window)
        return self._pairs.add(self._pair(ip, user), now, self.window)

    def record_success(self, ip: str, user: str) -> None:
        self._pairs.clear(self._pair(ip, user))

    def delay_for(self, failures: int, *, over_cap: bool = False) -> float:
        """How long to wait before answering a pair's `failures`-th failure."""
        if over_cap:
            return self.delay * _MAX_SLOWDOWN
        return self.delay * min(2 ** max(failures - 1, 0), _MAX_SLOWDOWN)
