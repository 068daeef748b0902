"""Connection pools per (egress source, site): open, reuse and retire SMTP sessions.

Owns the connections to one site from one source address. A site is its MX hosts in
preference order, each with its addresses (the dns package's rollup builds it). `lease()`
hands out an idle session to reuse, or opens one walking the MX list - next address or host
on a connect failure, a 4xx/5xx greeting or a failed EHLO (Postfix's smtp_skip_5xx_greeting),
remembering why - within `connection_limit`. Leaving the lease returns the session for reuse
unless it broke, reached `max_deliveries_per_connection` or the pool is above its limit (the
limit shrank); idle sessions close after `idle_timeout`. A session counts against the limit
until its goodbye is done, so the receiver never sees more than `connection_limit` at once.

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


class SiteUnavailable(Exception):
    """No MX host of the site would take a session; `attempts` has every reason, for the
    log and for the dispatcher's dead-site timer. `reply`, what the recipients are told, is
    the last one a host said or a TLS check found (a refused greeting, a certificate that
    does not match), else the last "could not connect" (RFC 3463 4.4.1): a backup MX that
    is down must not hide why the primary refused."""

    def __init__(self, attempts: list[ConnectAttempt]) -> None:
        self.attempts = attempts
        spoken = [a.reply for a in attempts if a.reply.enhanced != "4.4.1"]
        self.reply = (spoken[-1] if spoken else attempts[-1].reply) if attempts \
            else Reply(421, "4.4.4", "no MX address")
        super().__init__(str(self.reply))


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
        self._idle: list[tuple[SmtpClient, asyncio.TimerHandle]] = []  # LIFO: warm first
        self._busy: set[SmtpClient] = set()
        self._opening = 0
        self._slot_freed = asyncio.Event()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._grants: dict[SmtpClient, Grant] = {}
        self._no_tls: set[str] = set()  # addresses whose TLS handshake failed (opportunistic)
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
    def lease(self) -> Lease:
        return Lease(self)

    async def acquire(self) -> SmtpClient:
        """An idle session, or a new one if below the limit; else wait for a release.

        Raises SiteUnavailable when every MX address failed.
        """
        while True:
            if self._closed:
                raise SiteUnavailable([ConnectAttempt(self.name, "", Reply(
                    421, "4.4.2", "connection pool closed"))])
            while self._idle:
                client, timer = self._idle.pop()
                timer.cancel()
                if client.usable:
                    self._busy.add(client)
                    return client
                self._retire(client)
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
                return await self._open(grant)
            await self._wait_slot(None)

    async def _wait_slot(self, at_most: float | None) -> None:
        """Until a session is released or closed (or `at_most` seconds pass)."""
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._slot_freed.wait()

    def release(self, client: SmtpClient, *, broken: bool = False) -> None:
        """Back to the pool for reuse, unless broken, worn out, or the pool is closing."""
        self._busy.discard(client)
        if (broken or self._closed or not client.usable
                or client.transactions >= self.max_deliveries
                or self.open_count + self.closing_count >= self.connection_limit):
            self._retire(client)
        else:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.idle_timeout, self._idle_expired, client)
            self._idle.append((client, timer))
        self._slot_freed.set()

    async def aclose(self) -> None:
        """QUIT every idle session and wait (bounded) for the goodbyes."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client, timer in idle:
            timer.cancel()
            self._retire(client)
        self._slot_freed.set()
        if self._closing_tasks:
            await asyncio.wait(self._closing_tasks, timeout=10)

    # --- internals ---------------------------------------------------------------------
    async def _open(self, grant: Grant | None) -> SmtpClient:
        """Connect (the caller has counted the slot in `_opening`), walking the MX list."""
        attempts: list[ConnectAttempt] = []
        try:
            local = (self.source, 0) if self.source else None
            for mx in self.hosts:
                for address in mx.addresses:
                    tls = "disabled" if address in self._no_tls else None
                    try:
                        client = await SmtpClient.connect(
                            address, self.port, self.settings, host=mx.name,
                            local_addr=local, tls=tls)
                    except SmtpConnectError as e:
                        attempts.append(ConnectAttempt(mx.name, address, e.reply))
                        if not (e.tls_failed and self.settings.tls == "opportunistic"):
                            continue
                        # RFC 7435: opportunistic TLS that fails falls back to the clear.
                        self._no_tls.add(address)
                        try:
                            client = await SmtpClient.connect(
                                address, self.port, self.settings, host=mx.name,
                                local_addr=local, tls="disabled")
                        except SmtpConnectError as e2:
                            attempts.append(ConnectAttempt(mx.name, address, e2.reply))
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

    def _idle_expired(self, client: SmtpClient) -> None:
        for i, (c, _) in enumerate(self._idle):
            if c is client:
                del self._idle[i]
                break
        self._retire(client)
        self._slot_freed.set()

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

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.client: SmtpClient | None = None

    async def __aenter__(self) -> SmtpClient:
        self.client = await self._pool.acquire()
        return self.client

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        client, self.client = self.client, None
        if client is not None:
            self._pool.release(client, broken=exc_type is not None)
