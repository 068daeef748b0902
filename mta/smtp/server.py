"""The SMTP listener: a lean asyncio.Protocol that drives one sans-IO Session per connection.

Owns the I/O side of ingress: listeners (SO_REUSEPORT, so worker processes share a port),
connection admission (total and per client address), buffering and line splitting with byte
searches, the line length limit, handing DATA bytes to the DataReader in whole chunks, one
write per burst of pipelined replies, idle and DATA timeouts, STARTTLS via the public
`loop.start_tls()`, awaiting the handler and the password checks, reload and graceful stop.
Every decision about what to answer is the Session's.

A handler answers a decision at once when it can (a plain value: the usual MAIL and RCPT);
only an awaitable it returns (disk, network, a thread) costs a task and a loop iteration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mta.config import Config
from mta.observe.events import EventLog
from mta.rfc5321.reply import Reply
from mta.smtp.auth import Authenticator, AuthFailures, AuthResult, RuntimeUsers
from mta.smtp.data import DataReader
from mta.smtp.events import (
    Authenticate,
    CheckMail,
    CheckRcpt,
    Deliver,
    Event,
    Send,
    StartData,
    StartTLS,
)
from mta.smtp.handler import IngressHandler, SessionInfo
from mta.smtp.intake import R_NOT_ACCEPTING, Intake
from mta.smtp.replies import CONSTANT_REPLIES, R_INTERNAL, greeting_reply
from mta.smtp.session import Session, SessionSettings

__all__ = ["SmtpServer"]

log = logging.getLogger("mta.smtp")

_WIRE = {id(r): r.to_bytes() for r in CONSTANT_REPLIES}
R_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Error: too many connections")
R_TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Error: too many connections from your address")
# While a decision is awaited the client may keep sending; past this we stop reading.
_MAX_BUFFER_WHILE_BUSY = 256 * 1024
# How long a closing connection may take to flush before it is aborted (stop()).
_CLOSE_GRACE = 1.0
_TLS_HANDSHAKE_TIMEOUT = 30.0


_MULTILINE: dict[Reply, bytes] = {}  # EHLO replies: a few variants, sent on every session


def _wire(reply: Reply) -> bytes:
    b = _WIRE.get(id(reply))
    if b is not None:
        return b
    if "\n" not in reply.text:
        return reply.to_bytes()
    b = _MULTILINE.get(reply)
    if b is None:
        if len(_MULTILINE) >= 64:
            _MULTILINE.clear()
        b = _MULTILINE[reply] = reply.to_bytes()
    return b


@dataclass(frozen=True, slots=True)
class _Runtime:
    """Everything derived from one config; swapped whole by reload()."""

    settings: SessionSettings
    ssl_context: ssl.SSLContext | None
    authenticator: Authenticator
    max_connections: int
    max_connections_per_ip: int
    max_line_length: int
    idle_timeout: float
    data_timeout: float
    auth_failure_delay: float
    greeting: bytes


class SmtpServer:
    """ESMTP ingress server. `await start()`, `await stop(timeout)`, `reload(config)`."""

    def __init__(self, config: Config, handler: IngressHandler, *,
                 events: EventLog | None = None,
                 clock: Callable[[], float] = time.monotonic, reuse_port: bool = False,
                 intake: Intake | None = None, users: RuntimeUsers | None = None) -> None:
        self.handler = handler
        # `mta drain` switches it off: new connections and MAIL get 421 4.3.2.
        self.intake = intake or Intake()
        # Run-time AUTH users (mta users add), beside [users.NAME]; AUTH is offered once
        # either has a user.
        self.users = users
        self._config = config
        if users is not None:
            users.listeners.append(lambda: self.reload(self._config))
        # SO_REUSEPORT only for worker processes sharing the listeners on purpose: with it
        # a second, unrelated `mta serve` on the same port would start silently and take
        # part of the connections instead of failing with "address already in use".
        self._reuse_port = reuse_port
        self.events = events
        self._clock = clock
        s = config.smtp
        self.auth_failures = AuthFailures(s.auth_max_failures, s.auth_failure_window,
                                          max_per_address=s.auth_max_failures_per_address,
                                          delay=s.auth_failure_delay, clock=clock)
        self._config = config
        self._listen = list(s.listen)
        self._listen_tls = list(s.listen_tls)
        # Implicit-TLS listeners keep one context; a reload loads the new pair into it.
        self._implicit_ctx: ssl.SSLContext | None = None
        self._runtime = self._build_runtime(config)
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[_Connection] = set()
        self._per_ip: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.draining = False
        self._drained: asyncio.Event | None = None

    def _build_runtime(self, config: Config) -> _Runtime:
        s = config.smtp
        ctx = None
        if s.tls_cert is not None and s.tls_key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
        self.auth_failures.max_failures = s.auth_max_failures
        self.auth_failures.max_per_address = s.auth_max_failures_per_address
        self.auth_failures.window = s.auth_failure_window
        self.auth_failures.delay = s.auth_failure_delay
        # No address is refused AUTH outright: locks are per (address, user), decided
        # once the username is known (_authenticate).
        settings = SessionSettings.from_config(config, tls_available=ctx is not None,
                                               intake_paused=self.intake.paused)
        auth = Authenticator(config.users, self.users)
        if self.users is not None:
            self.users.config = config.users
        if bool(auth) != settings.auth_available:
            settings = dataclasses.replace(settings, auth_available=bool(auth))
        return _Runtime(settings, ctx, auth, s.max_connections,
                        s.max_connections_per_ip, s.max_line_length, s.idle_timeout,
                        s.data_timeout, s.auth_failure_delay,
                        greeting_reply(settings).to_bytes())

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every `[smtp] listen` address; on failure, close what was bound."""
        loop = asyncio.get_running_loop()
        try:
            for host, port in self._listen:
                srv = await loop.create_server(lambda: _Connection(self), host, port,
                                               reuse_port=self._reuse_port, backlog=1024)
                self._servers.append(srv)
            if self._listen_tls:
                self._implicit_ctx = self._tls_pair_context()
            for host, port in self._listen_tls:
                srv = await loop.create_server(
                    lambda: _Connection(self, implicit_tls=True), host, port,
                    ssl=self._implicit_ctx, ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT,
                    reuse_port=self._reuse_port, backlog=1024)
                self._servers.append(srv)
        except BaseException:
            for srv in self._servers:
                srv.close()
            self._servers.clear()
            raise
        log.info("smtp listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs: port 0 in the config is resolved here."""
        out = []
        for srv in self._servers:
            for sock in srv.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _tls_pair_context(self) -> ssl.SSLContext:
        s = self._config.smtp
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert s.tls_cert is not None and s.tls_key is not None  # the loader checks
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
        return ctx

    def reload(self, config: Config) -> None:
        """New limits, users and TLS apply to sessions started from now on."""
        self._config = config
        self._runtime = self._build_runtime(config)
        s = config.smtp
        if self._implicit_ctx is not None and s.tls_cert is not None and s.tls_key is not None:
            self._implicit_ctx.load_cert_chain(s.tls_cert, s.tls_key)

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a drain deadline
        """Stop accepting; idle sessions get 421 now, busy ones may finish their
        transaction within `timeout`, then get 421 and are closed."""
        self.draining = True
        for srv in self._servers:
            srv.close()
        self._drained = asyncio.Event()
        for conn in list(self._connections):
            conn.drain_if_idle()
        if self._connections:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                for conn in list(self._connections):
                    conn.shutdown()
                try:
                    await asyncio.wait_for(self._drained.wait(), _CLOSE_GRACE)
                except TimeoutError:
                    for conn in list(self._connections):
                        conn.abort()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()

    # --- admission --------------------------------------------------------------------

    def _admit(self, conn: _Connection, ip: str) -> Reply | None:
        rt = self._runtime
        if len(self._connections) >= rt.max_connections:
            reason, reply = "max_connections", R_TOO_MANY_CONNECTIONS
        elif self._per_ip.get(ip, 0) >= rt.max_connections_per_ip:
            reason, reply = "max_connections_per_ip", R_TOO_MANY_FROM_IP
        elif self.draining:
            return Reply(421, "4.3.2", "Service shutting down, try again later")
        elif not self.intake.accepting:
            reason, reply = "intake_paused", R_NOT_ACCEPTING
        else:
            self._connections.add(conn)
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            return None
        if self.events is not None:
            self.events.emit("rejected", reason=reason, client_ip=ip, reply=str(reply))
        return reply

    def _release(self, conn: _Connection, ip: str) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            n = self._per_ip.get(ip, 0) - 1
            if n > 0:
                self._per_ip[ip] = n
            else:
                self._per_ip.pop(ip, None)
        if self._drained is not None and not self._connections:
            self._drained.set()


class _Connection(asyncio.Protocol):
    """One client connection: bytes in, Session events, bytes out."""

    def __init__(self, server: SmtpServer, *, implicit_tls: bool = False) -> None:
        self.server = server
        self.implicit_tls = implicit_tls  # a listen_tls connection: TLS from the start
        self.rt = server._runtime
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.buf = bytearray()
        self.reader: DataReader | None = None
        self.out: list[bytes] = []
        self.busy = False  # a decision or the TLS handshake is in flight
        self.closing = False
        self.paused = False
        self.skipping = False  # discarding the rest of an over-long line
        # The client has sent more after the command being handled (pipelining): it is
        # not waiting for the replies so far before it goes on, so a decision that must
        # wait does not flush them on its own (one write per burst, not per wait).
        self.more = False
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.ip = ""
        self.debug = log.isEnabledFor(logging.DEBUG)

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.ip, port = peer[0], peer[1]
        refusal = self.server._admit(self, self.ip)
        if refusal is not None:
            self.closing = True
            transport.write(refusal.to_bytes())
            transport.close()
            return
        info = SessionInfo(self.ip, port, session_id=f"{next(self.server._ids):x}")
        self.session = Session(self.rt.settings, info, self.server.events)
        if self.implicit_tls:  # the handshake is done before connection_made (RFC 8314)
            ssl_object = transport.get_extra_info("ssl_object")
            info.tls = True
            info.tls_version = ssl_object.version() if ssl_object else None
        transport.write(self.rt.greeting)
        self.last_activity = self.loop.time()
        self.timer = self.loop.call_at(self.last_activity + self.rt.idle_timeout,
                                       self._check_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_activity = self.loop.time()
        if self.reader is not None and not self.busy and not self.buf:
            rest = self.reader.feed(data)  # the DATA fast path: no copy into buf
            if rest is None:
                return
            self._data_finished(rest)
        else:
            self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > _MAX_BUFFER_WHILE_BUSY and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        self.server._release(self, self.ip)
        if self.session is not None and self.session.info.transaction is not None:
            self.server.handler.session_closed(self.session.info)

    # --- the command loop -------------------------------------------------------------

    def _process(self) -> None:
        """Handle everything buffered, then write all replies at once."""
        session = self.session
        assert session is not None
        buf = self.buf
        pos = 0
        max_line = self.rt.max_line_length
        while not self.busy and not self.closing:
            if self.reader is not None:  # DATA mode: the rest of the buffer is message
                if pos < len(buf):
                    rest = self.reader.feed(memoryview(buf)[pos:])
                    pos = len(buf)
                    if rest is not None:
                        del buf[:]
                        buf += rest
                        pos = 0
                        self.more = bool(rest)
                        self._data_finished_event()
                        continue
                break
            idx = buf.find(b"\n", pos)
            if self.skipping:
                if idx < 0:
                    pos = len(buf)
                    break
                self.skipping = False
                pos = idx + 1
                continue
            if idx < 0:
                if len(buf) - pos > max_line:
                    pos = len(buf)
                    self.skipping = True
                    self._event(session.line_too_long())
                break
            end = idx - 1 if idx > pos and buf[idx - 1] == 13 else idx  # strip CR
            if idx + 1 - pos > max_line:
                pos = idx + 1
                self._event(session.line_too_long())
                continue
            line = bytes(buf[pos:end])
            pos = idx + 1
            if self.debug:
                log.debug("%s C: %r", session.info.session_id, line)
            if self.server.draining and session.idle:
                self._event(session.shutdown())
                break
            self.more = pos < len(buf)
            self._event(session.handle_line(line, more=self.more))
        if pos:
            del buf[:pos]
        if (self.server.draining and not self.busy and not self.closing
                and session.idle and not buf):
            self._event(session.shutdown())
        self._flush()
        if self.paused and not self.busy and not self.closing:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _data_finished(self, rest: bytes) -> None:
        """The DATA fast path found the end marker; `rest` follows it."""
        self.buf += rest
        self.more = bool(rest)
        self._data_finished_event()

    def _data_finished_event(self) -> None:
        reader, self.reader = self.reader, None
        assert reader is not None and self.session is not None
        self._event(self.session.data_done(reader))

    def _event(self, ev: Event) -> None:
        if isinstance(ev, Send):
            for reply in ev.replies:
                self.out.append(_wire(reply))
            if self.debug:
                log.debug("%s S: %s", self.session.info.session_id,  # type: ignore[union-attr]
                          " / ".join(map(str, ev.replies)))
            if ev.close:
                self._close()
        elif isinstance(ev, StartData):
            if ev.reply is not None:  # 354 for DATA; a BDAT chunk is read unannounced
                self.out.append(_wire(ev.reply))
            self.reader = ev.reader  # type: ignore[assignment]
            if self.rt.data_timeout < self.rt.idle_timeout:  # the timer is due too late
                self._arm_timer(self.loop.time() + self.rt.data_timeout)
        elif isinstance(ev, StartTLS):
            self.out.append(_wire(ev.reply))
            self._flush()
            self.busy = True
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.loop.create_task(self._start_tls())
        else:
            self._await_decision(ev)

    def _await_decision(self, ev: CheckMail | CheckRcpt | Authenticate | Deliver) -> None:
        try:
            result = self._decide(ev)
        except Exception:
            log.exception("smtp handler failed for %s", type(ev).__name__)
            result = R_INTERNAL
        if not inspect.isawaitable(result):  # decided without waiting: the common case
            self._event(self.session.decide(result))  # type: ignore[union-attr]
            return
        self.busy = True
        if not self.more:  # the client may be waiting for them: let it see them now
            self._flush()
        task = self.loop.create_task(self._wait_decision(ev, result))
        task.add_done_callback(self._decided)

    def _decided(self, task: asyncio.Task[Any]) -> None:
        self.busy = False
        if self.closing:
            return
        try:
            result = task.result()
        except BaseException:
            log.exception("smtp decision failed")
            result = R_INTERNAL
        self._event(self.session.decide(result))  # type: ignore[union-attr]
        self.last_activity = self.loop.time()
        self._process()

    def _decide(self, ev: CheckMail | CheckRcpt | Authenticate | Deliver) -> Any:
        """Ask the handler. Handler methods may answer at once (a plain value) or with an
        awaitable, so checks that need no I/O cost no task per command."""
        handler = self.server.handler
        info = self.session.info  # type: ignore[union-attr]
        if isinstance(ev, CheckMail):
            return handler.check_mail(info, ev.address, ev.params)
        if isinstance(ev, CheckRcpt):
            return handler.check_rcpt(info, ev.address, ev.params)
        if isinstance(ev, Deliver):
            return handler.accept_message(info, ev.envelope, ev.data)
        return self._authenticate(ev)

    async def _authenticate(self, ev: Authenticate) -> AuthResult:
        failures = self.server.auth_failures
        if failures.is_locked(self.ip, ev.username):
            # This user's password was guessed wrong too often from here: no check, and
            # as slow as a failure (the answer must not be cheaper than a guess).
            await asyncio.sleep(failures.delay_for(failures.max_failures))
            return AuthResult(False, locked=True)
        result = await self.rt.authenticator.verify(ev.username, ev.password)
        if result.ok:
            failures.record_success(self.ip, ev.username)
            return result
        over_cap = failures.address_over_cap(self.ip)
        n = failures.record_failure(self.ip, ev.username)
        await asyncio.sleep(failures.delay_for(n, over_cap=over_cap))
        return AuthResult(False, disconnect=over_cap) if over_cap else result

    @staticmethod
    async def _wait_decision(ev: object, awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except Exception:
            log.exception("smtp handler failed for %s", type(ev).__name__)
            return R_INTERNAL

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.rt.ssl_context is not None
        try:
            transport = await self.loop.start_tls(
                self.transport, self, self.rt.ssl_context, server_side=True,
                ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
            log.info("smtp %s: TLS handshake failed: %s", self.ip, e)
            self.closing = True
            self.transport.abort()
            return
        if transport is None or self.closing:
            return
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        # RFC 3207 4.2: nothing the client sent before the handshake survives it.
        self.buf.clear()
        self.session.tls_started(ssl_object.version() if ssl_object else None)  # type: ignore
        self.busy = False
        self.last_activity = self.loop.time()

    # --- output, timeouts, shutdown ---------------------------------------------------

    def _flush(self) -> None:
        out = self.out
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _close(self) -> None:
        self._flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _arm_timer(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._check_timeout)

    def _check_timeout(self) -> None:
        if self.closing or self.session is None:
            return
        timeout = self.rt.data_timeout if self.reader is not None else self.rt.idle_timeout
        deadline = self.last_activity + timeout
        if self.busy or self.loop.time() < deadline:
            # Busy: our own decision is slow, not the client. Check again later.
            self._arm_timer(max(deadline, self.loop.time() + 0.05))
            return
        self._event(self.session.timeout())

    def drain_if_idle(self) -> None:
        if (not self.closing and self.session is not None and self.session.idle
                and not self.busy and self.reader is None):
            self._event(self.session.shutdown())

    def shutdown(self) -> None:
        if not self.closing and self.session is not None:
            self._event(self.session.shutdown())
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
