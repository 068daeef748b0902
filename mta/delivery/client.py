"""The outbound SMTP client: one connection to one MX address, many transactions.

Owns the session with a remote server: connect (optionally from a given source address),
greeting, EHLO (HELO on 5xx), opportunistic, required, verified or DANE-authenticated
STARTTLS (RFC 3207; DANE: RFC 7672, the handshake unverified and the presented chain matched
against the MX host's TLSA records by mta.tls.dane), and per message
one transaction per chunk of recipients. With PIPELINING (RFC 2920) MAIL, every RCPT and DATA
go out in one write and the body with its "." in a second: two round trips per message.
Without it, lock-step. What to write and how to read the replies of a transaction is decided
without I/O in `mta.delivery.transaction`; this module only moves its bytes.

Every outcome is a `Reply`, per recipient, in the order given; failures that are not the
server's words get synthetic replies with RFC 3463 codes (4.4.1 connect failed, 4.4.2 lost or
timed out, 4.5.0 protocol error, 4.7.0/4.7.5 TLS), so bounce classification sees them all the
same way. Connection set-up failures raise `SmtpConnectError` carrying such a reply.

The I/O is an `asyncio.Protocol` (no streams, no wait_for tasks): replies are parsed as bytes
arrive (`wire.ReplyParser`) and one future per batch of expected replies is resolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mta.config import DeliveryConfig
from mta.delivery.tls_context import (
    handshake_result_type,
    opportunistic_context,
    peer_chain,
    verifying_context,
)
from mta.delivery.transaction import (
    DeliveryResult,
    Step,
    Transaction,
    TransactionResult,
    connection_lost,
    retry_indexes,
)
from mta.delivery.wire import (
    Extensions,
    ProtocolError,
    ReplyParser,
    bdat_command,
    mail_command,
    needs_smtputf8,
    prepare_body,
    rcpt_command,
)
from mta.rfc5321 import Reply
from mta.tls import DaneHost, verify_chain

__all__ = [
    "ClientSettings",
    "DeliveryResult",
    "RecipientLike",
    "SmtpClient",
    "SmtpConnectError",
    "TransactionResult",
    "connection_failed",
    "connection_lost",
    "tls_failure",
]

TLS_MODES = ("opportunistic", "required", "disabled")
# QUIT is a courtesy: never hold a pool slot for long waiting for "221".
_QUIT_TIMEOUT = 5.0


# --- synthetic replies -------------------------------------------------------------------

def connection_failed(text: str) -> Reply:
    """RFC 3463 4.4.1: no answer from host (refused, unreachable, connect timeout)."""
    return Reply(421, "4.4.1", text)


def protocol_error(text: str) -> Reply:
    """RFC 3463 4.5.0: the peer's bytes were not SMTP."""
    return Reply(421, "4.5.0", text)


def tls_failure(text: str, *, handshake: bool) -> Reply:
    """RFC 3463 4.7.5 (cryptographic failure) for a failed handshake, 4.7.0 when TLS was
    required but not offered or refused."""
    return Reply(421, "4.7.5" if handshake else "4.7.0", text)


class SmtpConnectError(Exception):
    """The session could not be set up; `reply` says why (the server's or synthetic)."""

    def __init__(self, reply: Reply, *, tls_failed: bool = False,
                 tls_refused: bool = False, result_type: str = "") -> None:
        super().__init__(str(reply))
        self.reply = reply
        # A TLS handshake failed: in opportunistic mode the caller may retry without TLS.
        self.tls_failed = tls_failed
        # TLS was required but not offered, or STARTTLS was refused.
        self.tls_refused = tls_refused
        # RFC 8460 4.3 result type of a TLS failure ("starttls-not-supported", ...), for
        # TLS reporting; "" when the failure was not TLS's.
        self.result_type = result_type


# --- settings and results ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Per delivery path, built once (not per message). Timeouts per RFC 5321 4.5.3.2."""

    ehlo_name: str
    # Defaults are mta/config's (the one place that says why), for tests that build these.
    tls: str = DeliveryConfig.tls  # "opportunistic" | "required" | "verify" | "disabled"
    tls_ca_file: str = DeliveryConfig.tls_ca_file  # what "verify" trusts ("": the system's)
    chunking: bool = DeliveryConfig.chunking  # BDAT where the server offers CHUNKING
    connect_timeout: float = DeliveryConfig.connect_timeout
    greeting_timeout: float = DeliveryConfig.greeting_timeout
    # EHLO, STARTTLS, MAIL, RCPT, DATA (354), RSET
    command_timeout: float = DeliveryConfig.command_timeout
    data_timeout: float = DeliveryConfig.data_timeout  # body sent -> final reply
    max_recipients_per_transaction: int = DeliveryConfig.max_recipients_per_transaction

    @classmethod
    def from_config(cls, cfg: DeliveryConfig, hostname: str) -> ClientSettings:
        return cls(
            ehlo_name=cfg.ehlo_name or hostname,
            tls=cfg.tls, tls_ca_file=cfg.tls_ca_file, chunking=cfg.chunking,
            connect_timeout=cfg.connect_timeout,
            greeting_timeout=cfg.greeting_timeout,
            command_timeout=cfg.command_timeout,
            data_timeout=cfg.data_timeout,
            max_recipients_per_transaction=cfg.max_recipients_per_transaction,
        )


class RecipientLike(Protocol):
    """What the client needs of a recipient (mta.queue.envelope.Recipient fits)."""

    address: str
    notify: str | None
    orcpt: str | None


# --- the protocol ------------------------------------------------------------------------

class _ConnectionLost(Exception):
    def __init__(self, reply: Reply, partial: list[Reply]) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.partial = partial  # replies that did arrive before the loss


class _SmtpProtocol(asyncio.Protocol):
    """Receives bytes, parses replies, wakes the one reader waiting for `want` replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        self.replies: deque[Reply] = deque()
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Reply | None = None
        self.deadline = 0.0  # loop time by which the awaited replies must have come
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            got = self.parser.feed(data)
        except ProtocolError as e:
            self._fail(protocol_error(f"protocol error: {e}"))
            if self.transport is not None:
                self.transport.abort()
            return
        if got:
            self.replies.extend(got)
            w = self.waiter
            if w is not None and len(self.replies) >= self.want and not w.done():
                w.set_result(None)

    def eof_received(self) -> bool:
        self._fail(connection_lost("connection closed by server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_watchdog()
        why = f"connection lost: {exc}" if exc else "connection closed by server"
        self._fail(connection_lost(why))

    def _fail(self, reply: Reply) -> None:
        if self.lost is None:
            self.lost = reply
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self, n: int, wait: float, what: str) -> list[Reply]:
        """The next `n` replies, or _ConnectionLost (with those that came) on loss/timeout."""
        if len(self.replies) < n and self.lost is None:
            waiter = self.loop.create_future()
            self.waiter, self.want = waiter, n
            self._arm(wait)
            try:
                await waiter
            except TimeoutError:
                pass  # reported below as a lost connection
            finally:
                self.waiter = None
        if len(self.replies) >= n:
            return [self.replies.popleft() for _ in range(n)]
        partial = list(self.replies)
        self.replies.clear()
        if self.lost is None:
            self.lost = connection_lost(f"timeout after {wait:g}s waiting for reply to {what}")
        raise _ConnectionLost(self.lost, partial)

    # A timer per read (call_later + cancel) costs more than the rest of a read. Instead one
    # watchdog per connection: each read moves the deadline; the timer is only re-armed
    # when it would fire too late, and on firing re-arms itself if the deadline moved on.
    def _arm(self, wait: float) -> None:
        deadline = self.loop.time() + wait
        self.deadline = deadline
        timer = self.timer
        if timer is None or deadline < self.timer_at:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._watchdog)
            self.timer_at = deadline

    def _watchdog(self) -> None:
        self.timer = None
        w = self.waiter
        if w is None or w.done():
            return  # nothing awaited; the next read arms again
        if self.loop.time() >= self.deadline:
            w.set_exception(TimeoutError())
        else:
            self.timer = self.loop.call_at(self.deadline, self._watchdog)
            self.timer_at = self.deadline

    def stop_watchdog(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# --- the client --------------------------------------------------------------------------

class SmtpClient:
    """An open SMTP session. Build with `await SmtpClient.connect(...)`."""

    def __init__(self, proto: _SmtpProtocol, settings: ClientSettings, host: str,
                 address: str, port: int) -> None:
        self._p = proto
        self.settings = settings
        self.host = host  # MX host name (for logs and SNI)
        self.address = address  # the IP we connected to
        self.port = port
        self.greeting: Reply | None = None
        self.ehlo: Reply | None = None
        self.extensions = Extensions.none()
        self.tls_active = False
        self.tls_version = ""  # after STARTTLS: "TLSv1.3", and the cipher suite's name
        self.tls_cipher = ""
        self.tls_verified = False  # the peer's certificate was checked (tls = "verify")
        self.dane_verified = False  # a TLSA record of the MX host matched (tls = "dane")
        self.dane_detail = ""  # which one
        # Set by the pool: a "verify" attempt was made for this session (MTA-STS testing)
        # and, when it failed and the session fell back, why (the policy's failure).
        self.verify_tried = False
        self.tls_error = ""
        self.tls_result = ""  # ... and its RFC 8460 result type
        self.transactions = 0  # completed or attempted MAIL transactions
        self.messages = 0  # send() calls
        self._needs_rset = False
        self._closing = False

    # --- set-up ------------------------------------------------------------------------
    @classmethod
    async def connect(cls, address: str, port: int, settings: ClientSettings, *,
                      host: str = "", local_addr: tuple[str, int] | None = None,
                      tls: str | None = None, dane: DaneHost | None = None) -> SmtpClient:
        """Connect, read the greeting, EHLO/HELO, STARTTLS as `tls` (default: settings);
        tls = "dane" needs `dane`, the MX host's usable TLSA records.

        Raises SmtpConnectError with the reason; the connection is then already closed.
        """
        tls = tls or settings.tls
        loop = asyncio.get_running_loop()
        proto = _SmtpProtocol(loop)
        target = f"{host or address}[{address}]:{port}"
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await loop.create_connection(lambda: proto, address, port,
                                             local_addr=local_addr)
        except TimeoutError:
            raise SmtpConnectError(connection_failed(
                f"connect to {target} timed out after {settings.connect_timeout:g}s")) from None
        except OSError as e:
            raise SmtpConnectError(connection_failed(
                f"connect to {target}: {e.strerror or e}")) from None
        client = cls(proto, settings, host or address, address, port)
        try:
            await client._open(tls, dane)
        except BaseException:
            client.abort()
            raise
        return client

    async def _open(self, tls: str, dane: DaneHost | None = None) -> None:
        s = self.settings
        self.greeting = await self._expect_one(s.greeting_timeout, "greeting")
        if self.greeting.code != 220:
            # RFC 5321 3.1: after a 554 (or 421) greeting, QUIT and go; don't wait.
            self._write(b"QUIT\r\n")
            raise SmtpConnectError(self.greeting)
        await self._hello()
        if tls == "disabled":
            return
        mandatory = tls in ("required", "verify", "dane")
        if "STARTTLS" not in self.extensions:
            if mandatory:
                await self.quit()
                raise SmtpConnectError(tls_failure(
                    f"TLS required but {self.host} does not offer STARTTLS", handshake=False),
                    tls_refused=True, result_type="starttls-not-supported")
            return
        reply = await self._command(b"STARTTLS\r\n", s.command_timeout, "STARTTLS")
        if reply.code != 220:
            if mandatory:
                await self.quit()
                raise SmtpConnectError(tls_failure(
                    f"TLS required but STARTTLS refused: {reply}", handshake=False),
                    tls_refused=True, result_type="starttls-not-supported")
            return  # RFC 3207 4: the session goes on in the clear
        # RFC 7672 8.1: SNI names the TLSA base domain (a CNAME'd host's target).
        sni = dane.base if tls == "dane" and dane is not None and dane.base else None
        await self._start_tls(verify=tls == "verify", sni=sni)
        if tls == "dane":
            self._check_dane(dane)
        await self._hello()  # RFC 3207 4.2: forget what we knew, ask again

    async def _hello(self) -> None:
        s = self.settings
        name = s.ehlo_name.encode()
        reply = await self._command(b"EHLO " + name + b"\r\n", s.command_timeout, "EHLO")
        if reply.code == 250:
            self.ehlo, self.extensions = reply, Extensions.from_ehlo(reply)
            return
        if reply.is_permanent:  # RFC 5321 3.2: an old server; fall back to HELO
            reply = await self._command(b"HELO " + name + b"\r\n", s.command_timeout, "HELO")
            if reply.code == 250:
                self.ehlo, self.extensions = reply, Extensions.none()
                return
        self._write(b"QUIT\r\n")
        raise SmtpConnectError(reply)

    async def _start_tls(self, *, verify: bool, sni: str | None = None) -> None:
        p = self._p
        loop = p.loop
        assert p.transport is not None
        p.parser.clear()  # RFC 3207 4.2: discard anything sent before the handshake
        p.replies.clear()
        try:
            # Verifying, an address literal is checked against the certificate's IP names.
            context = (verifying_context(self.settings.tls_ca_file) if verify
                       else opportunistic_context())
            new = await loop.start_tls(
                p.transport, p, context, server_side=False,
                server_hostname=sni or (
                    self.host if verify or not _is_ip(self.host) else None),
                ssl_handshake_timeout=self.settings.command_timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, EOFError) as e:
            raise SmtpConnectError(
                tls_failure(f"TLS handshake with {self.host}[{self.address}] failed: {e}",
                            handshake=True), tls_failed=True,
                result_type=handshake_result_type(e)) from None
        if new is None:
            raise SmtpConnectError(tls_failure("TLS handshake: connection closed",
                                               handshake=True), tls_failed=True)
        p.transport = new  # type: ignore[assignment]
        self.tls_active = True
        self.tls_verified = verify
        ssl_object = new.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls_version = ssl_object.version() or ""
            self.tls_cipher = cipher[0] if cipher else ""

    def _check_dane(self, dane: DaneHost | None) -> None:
        """RFC 7672 3: the presented chain must match one of the host's usable TLSA
        records (the handshake itself verified nothing). A mismatch ends the session
        before any mail: the caller defers, never falls back to the clear."""
        t = self._p.transport
        ssl_object = t.get_extra_info("ssl_object") if t is not None else None
        chain = peer_chain(ssl_object) if ssl_object is not None else []
        names = (dane.names or (self.host,)) if dane is not None else (self.host,)
        result = verify_chain(dane.records if dane is not None else (), chain, names)
        if not result.ok:
            raise SmtpConnectError(tls_failure(
                f"TLSA records of {self.host}[{self.address}] do not match its "
                f"certificate: {result.detail}", handshake=True),
                tls_failed=True, result_type=result.result_type)
        self.dane_verified = True
        self.dane_detail = result.detail

    # --- state -------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open, not told to go away (421), not broken by a timeout or a protocol error, and
        with no unsolicited reply waiting (an idle server's "421 timeout" before it hangs up)."""
        return self._p.lost is None and not self._closing and not self._p.replies

    @property
    def local_address(self) -> tuple[str, int] | None:
        t = self._p.transport
        return t.get_extra_info("sockname") if t is not None else None

    # --- a message ---------------------------------------------------------------------
    async def send(self, mail_from: str, recipients: Sequence[RecipientLike], body: bytes,
                   params: Mapping[str, str] | None = None) -> DeliveryResult:
        """Deliver one message; returns an outcome per recipient, in the order given.

        Recipients go in chunks of max_recipients_per_transaction; those refused as "too
        many recipients" (RFC 5321 4.5.3.1.10) go again in a further transaction as long as
        the previous one delivered. `params` are the MAIL parameters from ingress (BODY,
        SMTPUTF8, RET, ENVID); each is sent only if the server offers its extension.
        """
        params = params or {}
        self.messages += 1
        n = len(recipients)
        ext = self.extensions
        smtputf8 = needs_smtputf8(mail_from, [r.address for r in recipients], params)
        refusal = self._refuse_before_sending(smtputf8, body)
        if refusal is not None:
            return DeliveryResult([refusal] * n, [])
        mail = mail_command(mail_from, len(body), ext, params, not body.isascii(), smtputf8)
        rcpts = [rcpt_command(r.address, ext, r.notify, r.orcpt) for r in recipients]
        chunking = self.settings.chunking and "CHUNKING" in ext
        data = bdat_command(body) if chunking else prepare_body(body)
        limit = max(1, self.settings.max_recipients_per_transaction)
        transaction = self._transaction
        outcomes: list[Reply | None]
        if n <= limit and self.usable:  # the common case: one transaction
            tr = await transaction(mail, list(range(n)), rcpts, data, chunking)
            pending = retry_indexes(tr)
            if not pending:
                return DeliveryResult(list(tr.per_recipient), [tr])
            results, outcomes = [tr], list(tr.per_recipient)
        else:
            pending, results = list(range(n)), []
            outcomes = [None] * n
        while pending:
            if not self.usable:
                gone = self._p.lost or connection_lost("connection closed")
                for i in pending:
                    outcomes[i] = gone
                break
            chunk, rest = pending[:limit], pending[limit:]
            tr = await transaction(mail, chunk, [rcpts[i] for i in chunk], data, chunking)
            results.append(tr)
            for i, outcome in zip(chunk, tr.per_recipient, strict=True):
                outcomes[i] = outcome
            pending = retry_indexes(tr) + rest
        lost = connection_lost("no outcome")  # unreachable: every index is set above
        return DeliveryResult([lost if o is None else o for o in outcomes], results)

    def _refuse_before_sending(self, smtputf8: bool, body: bytes) -> Reply | None:
        """Failures known from EHLO alone, without spending a transaction on them."""
        ext = self.extensions
        if smtputf8 and "SMTPUTF8" not in ext:
            # RFC 6531 3.2: without SMTPUTF8 at the server, this can't be delivered there.
            return Reply(553, "5.6.7", f"{self.host} does not support SMTPUTF8")
        limit = ext.size_limit
        if limit is not None and len(body) > limit:
            # RFC 1870 6.1: the server declared its fixed limit.
            return Reply(552, "5.3.4", f"message size {len(body)} exceeds the limit "
                                       f"{limit} of {self.host}")
        return None

    async def _transaction(self, mail: bytes, chunk: list[int], rcpts: list[bytes],
                           data: bytes, chunking: bool) -> TransactionResult:
        """Drive one `Transaction` (mta.delivery.transaction) over this connection."""
        self.transactions += 1
        p = self._p
        s = self.settings
        txn = Transaction(mail, chunk, rcpts, data, pipelined="PIPELINING" in self.extensions,
                          rset=self._needs_rset, chunking=chunking)
        step: Step | None = txn.start()
        while step is not None:
            self._write(step.data)
            wait = s.data_timeout if step.data_timeout else s.command_timeout
            try:
                replies = await p.read(step.replies, wait, step.what)
            except _ConnectionLost as e:
                self.abort()
                return txn.lost(e.reply, e.partial)
            step = txn.receive(replies)
        self._needs_rset = txn.needs_rset
        if txn.closing:
            self._closing = True
        assert txn.result is not None
        return txn.result

    # --- I/O ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self._p.transport
        if t is not None and not t.is_closing():
            t.write(data)

    async def _command(self, line: bytes, wait: float, what: str) -> Reply:
        self._write(line)
        return await self._expect_one(wait, what)

    async def _expect_one(self, wait: float, what: str) -> Reply:
        try:
            return (await self._p.read(1, wait, what))[0]
        except _ConnectionLost as e:
            if what in ("greeting", "EHLO", "HELO", "STARTTLS"):
                self.abort()
                raise SmtpConnectError(e.reply) from None
            raise

    async def quit(self) -> None:
        """Polite close: QUIT, wait briefly for 221, close."""
        if self._p.lost is None and self._p.transport is not None:
            self._write(b"QUIT\r\n")
            try:
                await self._p.read(1, min(self.settings.command_timeout, _QUIT_TIMEOUT), "QUIT")
            except _ConnectionLost:
                pass
        self.close()

    def close(self) -> None:
        self._closing = True
        t = self._p.transport
        if t is not None:
            t.close()

    def abort(self) -> None:
        """Drop the connection now (after a timeout or a loss: nothing more to say)."""
        self._closing = True
        t = self._p.transport
        if t is not None:
            t.abort()

    def __repr__(self) -> str:
        return (f"<SmtpClient {self.host}[{self.address}]:{self.port} "
                f"tls={self.tls_active} transactions={self.transactions}>")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
