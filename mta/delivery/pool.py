"""Connection pools per (egress source, site): open, reuse and retire SMTP sessions.

Owns the connections to one site from one source address. A site is its MX hosts in
preference order, each with its addresses (the dns package's rollup builds it). `lease()`
hands out an idle session to reuse, or opens one walking the MX list - next address or host
on a connect failure, a 4xx/5xx greeting or a failed EHLO (Postfix's smtp_skip_5xx_greeting),
remembering why - within `connection_limit`. Leaving the lease returns the session for reuse
unless it broke, reached `max_deliveries_per_connection` or the pool is above its limit (the
limit shrank); idle sessions close after `idle_timeout`. A session counts against the limit
until its goodbye is done, so the receiver never sees more than `connection_limit` at once.

Each lease may carry a `TlsRequirement` (mta.tls: the path's tls, a per-domain policy,
MTA-STS or DANE): only sessions that meet it are reused, new ones are dialled by it (an
enforce policy's non-matching MX hosts, hosts whose TLSA lookup failed and, dane-only,
hosts without usable TLSA are skipped, each with its reason), and idle sessions it cannot
use give up their slot to it.

No scheduling policy here: which messages go, and when, is the dispatcher's business; how
many connections shaping allows is passed in as `connection_limit`, and before each NEW
connection the optional `admit()` hook is awaited. It answers a grant (anything with an
async `release()`, e.g. a shaping lease, held for the connection's life and released once
it is closed) or the seconds to wait before asking again (a connection rate); an exception
from it propagates to the caller of `acquire()` (the path was suspended meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from mta.delivery.client import ClientSettings, SmtpClient, SmtpConnectError
from mta.queue.names import ready_queue_name
from mta.rfc5321 import Reply
from mta.tls import TlsRequirement

__all__ = ["Admit", "ConnectAttempt", "ConnectionPool", "Grant", "Lease", "MxHost",
           "SiteUnavailable"]


class Grant(Protocol):
    """Permission for one connection, given back when the connection is closed."""

    async def release(self) -> None: ...


# Before each new connection: a Grant, or seconds to wait before asking again.
Admit = Callable[[], Awaitable["Grant | float"]]


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # "mx1.example.com" (SNI, logs)
    addresses: tuple[str, ...]  # in the order to try


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    host: str
    address: str
    reply: Reply
    policy: bool = False  # refused by the TLS policy (MTA-STS enforce, DANE), not the host
    result_type: str = ""  # RFC 8460 4.3, for a TLS failure (TLS reporting reads it)


class SiteUnavailable(Exception):
    """No MX host of the site would take a session; `attempts` has every reason, for the
    log and for the dispatcher's dead-site timer. `reply`, what the recipients are told, is
    the last one a host said or a TLS check found (a refused greeting, a certificate that
    does not match), else the last "could not connect" (RFC 3463 4.4.1): a backup MX that
    is down must not hide why the primary refused."""

    def __init__(self, attempts: list[ConnectAttempt]) -> None:
        self.attempts = attempts
        spoken = [a for a in attempts if a.reply.enhanced != "4.4.1"]
        told = (spoken[-1] if spoken else attempts[-1]) if attempts else None
        self.reply = told.reply if told is not None else Reply(421, "4.4.4", "no MX address")
        # The RFC 8460 result type of the failure the recipients are told about.
        self.result_type = told.result_type if told is not None else ""
        super().__init__(str(self.reply))

    @property
    def policy_only(self) -> bool:
        """Every attempt was refused by our TLS policy: the site is not failing (other
        domains' mail goes on), so this is no shaping signal."""
        return bool(self.attempts) and all(a.policy for a in self.attempts)


class ConnectionPool:
    """Sessions to one site from one source. `async with pool.lease() as client: ...`"""

    def __init__(self, hosts: Sequence[MxHost], settings: ClientSettings, *, port: int,
                 source: str | None = None, connection_limit: int = 20,
                 max_deliveries_per_connection: int = 100, idle_timeout: float = 30.0,
                 name: str = "", admit: Admit | None = None) -> None:
        self.hosts = list(hosts)
        self.settings = settings
        self.port = port
        self.source = source  # local IP to bind, None: the kernel picks
        self.connection_limit = connection_limit
        self.max_deliveries = max_deliveries_per_connection
        self.idle_timeout = idle_timeout
        self.admit = admit
        self.name = name or ready_queue_name(source or "*",
                                             self.hosts[0].name if self.hosts else "?")
        # (session, loop time it went idle), oldest first; taken from the end (warm first).
        self._idle: list[tuple[SmtpClient, float]] = []
        # One timer for the oldest idle session, not one per release (a release per
        # message): it retires what has been idle idle_timeout and waits for the next.
        self._sweep: asyncio.TimerHandle | None = None
        self._busy: set[SmtpClient] = set()
        self._stale: set[SmtpClient] = set()  # busy when renew() ran: retired on release
        self._opening = 0
        self._slot_freed = asyncio.Event()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._grants: dict[SmtpClient, Grant] = {}
        self._no_tls: set[str] = set()  # addresses whose TLS handshake failed (opportunistic)
        # MTA-STS testing: addresses whose certificate did not verify, and why (dialled
        # with the path's tls from then on, the failure still recorded on every delivery).
        self._unverified: dict[str, str] = {}
        self._unverified_result: dict[str, str] = {}  # ... and its RFC 8460 result type
        self._closed = False
        self.connects = 0  # sessions opened
        self.last_attempts: list[ConnectAttempt] = []  # failures of the last successful open

    # --- counts ------------------------------------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self._idle) + len(self._busy) + self._opening

    @property
    def closing_count(self) -> int:
        """Sessions being closed (QUIT sent): still connections as the receiver sees them."""
        return len(self._closing_tasks)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def busy_count(self) -> int:
        return len(self._busy)

    # --- leases ------------------------------------------------------------------------
    def lease(self, requirement: TlsRequirement | None = None) -> Lease:
        return Lease(self, requirement)

    def _default_requirement(self) -> TlsRequirement:
        mode = self.settings.tls
        return TlsRequirement(mode, mode)

    async def acquire(self, requirement: TlsRequirement | None = None) -> SmtpClient:
        """An idle session that meets `requirement` (default: the path's tls), or a new
        one if below the limit; else wait for a release.

        Raises SiteUnavailable when every MX address failed.
        """
        req = requirement or self._default_requirement()
        while True:
            if self._closed:
                raise SiteUnavailable([ConnectAttempt(self.name, "", Reply(
                    421, "4.4.2", "connection pool closed"))])
            client = self._take_idle(req)
            if client is not None:
                self._busy.add(client)
                return client
            if self._idle and self.open_count + self.closing_count >= self.connection_limit:
                # Idle sessions that this delivery's TLS policy cannot use must not hold
                # the slots it needs: the coldest one goes.
                self._retire(self._idle.pop(0)[0])
            if self.open_count + self.closing_count < self.connection_limit:
                self._opening += 1  # the slot is ours while admission is asked
                try:
                    grant = await self.admit() if self.admit is not None else None
                except BaseException:
                    self._opening -= 1
                    self._slot_freed.set()
                    raise
                if isinstance(grant, (int, float)):
                    self._opening -= 1
                    await self._wait_slot(max(0.001, float(grant)))
                    continue
                return await self._open(grant, req)
            await self._wait_slot(None)

    def _take_idle(self, req: TlsRequirement) -> SmtpClient | None:
        """The warmest idle session `req` accepts; broken ones are retired on the way."""
        for i in range(len(self._idle) - 1, -1, -1):
            client = self._idle[i][0]
            if not client.usable:
                del self._idle[i]
                self._retire(client)
                continue
            if req.accepts(client.host, tls_active=client.tls_active,
                           tls_verified=client.tls_verified,
                           verify_tried=client.verify_tried,
                           dane_verified=client.dane_verified):
                del self._idle[i]
                return client
        return None

    async def _wait_slot(self, at_most: float | None) -> None:
        """Until a session is released or closed (or `at_most` seconds pass)."""
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._slot_freed.wait()

    def release(self, client: SmtpClient, *, broken: bool = False) -> None:
        """Back to the pool for reuse, unless broken, worn out, or the pool is closing."""
        self._busy.discard(client)
        if self._stale and client in self._stale:
            self._stale.discard(client)
            broken = True  # opened from the address or port before renew()
        if (broken or self._closed or not client.usable
                or client.transactions >= self.max_deliveries
                or self.open_count + self.closing_count >= self.connection_limit):
            self._retire(client)
        else:
            loop = asyncio.get_running_loop()
            now = loop.time()
            self._idle.append((client, now))
            if self._sweep is None:
                self._sweep = loop.call_at(now + self.idle_timeout, self._expire_idle)
        self._slot_freed.set()

    def renew(self) -> None:
        """The pool's source address or port changed (a reload): idle sessions are closed
        now and busy ones when they come back, so the next message goes on a new one."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            self._retire(client)
        self._stale.update(self._busy)
        self._slot_freed.set()

    async def aclose(self) -> None:
        """QUIT every idle session and wait (bounded) for the goodbyes."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for client, _ in idle:
            self._retire(client)
        self._slot_freed.set()
        if self._closing_tasks:
            await asyncio.wait(self._closing_tasks, timeout=10)

    # --- internals ---------------------------------------------------------------------
    async def _open(self, grant: Grant | None, req: TlsRequirement) -> SmtpClient:
        """Connect (the caller has counted the slot in `_opening`), walking the MX list;
        MX hosts `req` may not use are skipped, each with its reason."""
        attempts: list[ConnectAttempt] = []
        try:
            local = (self.source, 0) if self.source else None
            for mx in self.hosts:
                refused, result_type = req.refusal(mx.name)
                if refused:
                    attempts.append(ConnectAttempt(mx.name, "", Reply(451, "4.7.5", refused),
                                                   policy=True, result_type=result_type))
                    continue
                for address in mx.addresses:
                    client = await self._dial(mx, address, local, req, attempts)
                    if client is None:
                        continue
                    self.connects += 1
                    self.last_attempts = attempts
                    self._busy.add(client)
                    if grant is not None:
                        self._grants[client] = grant
                        grant = None
                    return client
        finally:
            self._opening -= 1
            if grant is not None:  # no connection came of it (failed or cancelled)
                self._spawn_close(None, grant)
        self._slot_freed.set()  # our reserved slot is free again
        raise SiteUnavailable(attempts)

    async def _dial(self, mx: MxHost, address: str, local: tuple[str, int] | None,
                    req: TlsRequirement, attempts: list[ConnectAttempt]) -> SmtpClient | None:
        """One address, with the requirement's tls modes in turn: a TLS failure with one
        (a certificate that does not verify, STARTTLS missing, a broken handshake) tries
        the next; what failed is remembered per address so later sessions skip it."""
        dane = req.dane_for(mx.name)
        modes = list(req.connect_modes(mx.name))
        testing = req.sts == "testing" and dane is None
        error = self._unverified.get(address, "") if testing else ""
        result_type = self._unverified_result.get(address, "") if testing else ""
        if error and len(modes) > 1 and modes[0] == "verify":
            modes.pop(0)  # its certificate failed before: the failure is known already
        if address in self._no_tls and "opportunistic" in modes and "disabled" in modes:
            modes.remove("opportunistic")  # RFC 7435: its handshake failed before
        for i, mode in enumerate(modes):
            try:
                client = await SmtpClient.connect(address, self.port, self.settings,
                                                  host=mx.name, local_addr=local, tls=mode,
                                                  dane=dane)
            except SmtpConnectError as e:
                tls_problem = e.tls_failed or e.tls_refused
                reply = e.reply
                # A policy's refusal (the host may be fine for other domains' mail).
                policy = tls_problem and (dane is not None or req.sts == "enforce")
                if dane is not None and tls_problem:
                    reply = Reply(reply.code, reply.enhanced,
                                  req.dane_text(mx.name, reply.text))
                elif req.sts == "enforce" and tls_problem:
                    reply = Reply(reply.code, reply.enhanced, req.refusal_text(reply.text))
                attempts.append(ConnectAttempt(mx.name, address, reply, policy=policy,
                                               result_type=e.result_type))
                if not tls_problem or i + 1 == len(modes):
                    return None
                if mode == "verify":
                    error = self._unverified[address] = e.reply.text
                    result_type = self._unverified_result[address] = e.result_type
                elif mode == "opportunistic":
                    self._no_tls.add(address)
                continue
            client.verify_tried = testing
            client.tls_error = error if not client.tls_verified else ""
            client.tls_result = result_type if not client.tls_verified else ""
            return client
        return None

    def _expire_idle(self) -> None:
        """Retire the sessions idle for idle_timeout (as it is now: a reload may have
        changed it), then wait for the oldest of the rest."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now, idle, expired = loop.time(), self._idle, 0
        while expired < len(idle) and idle[expired][1] + self.idle_timeout <= now:
            expired += 1
        if expired:
            gone, idle[:expired] = idle[:expired], []
            for client, _ in gone:
                self._retire(client)
            self._slot_freed.set()
        if idle and not self._closed:
            self._sweep = loop.call_at(idle[0][1] + self.idle_timeout, self._expire_idle)

    def _retire(self, client: SmtpClient) -> None:
        self._spawn_close(client, self._grants.pop(client, None))

    def _spawn_close(self, client: SmtpClient | None, grant: Grant | None) -> None:
        if grant is None and (client is None or not client.usable):
            if client is not None:
                client.abort()
            return
        task = asyncio.get_running_loop().create_task(self._close(client, grant))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closed_one)

    async def _close(self, client: SmtpClient | None, grant: Grant | None) -> None:
        """Say goodbye, then give the connection's grant back (never before: the receiver
        still counts the session until it is closed)."""
        try:
            if client is not None:
                if client.usable:
                    try:
                        await client.quit()
                    except Exception:  # a goodbye that failed is still a goodbye
                        client.abort()
                else:
                    client.abort()
        finally:
            if grant is not None:
                with contextlib.suppress(Exception):
                    await grant.release()

    def _closed_one(self, task: asyncio.Task[None]) -> None:
        self._closing_tasks.discard(task)
        self._slot_freed.set()


class Lease:
    """Async context manager: the session is returned on exit; an exception escaping the
    block marks it broken (we can't know what state the conversation is in)."""

    def __init__(self, pool: ConnectionPool,
                 requirement: TlsRequirement | None = None) -> None:
        self._pool = pool
        self._requirement = requirement
        self.client: SmtpClient | None = None

    async def __aenter__(self) -> SmtpClient:
        self.client = await self._pool.acquire(self._requirement)
        return self.client

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        client, self.client = self.client, None
        if client is not None:
            self._pool.release(client, broken=exc_type is not None)
