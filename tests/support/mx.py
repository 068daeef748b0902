"""Destination MX hosts for tests: real SMTP servers on loopback addresses, scriptable.

Each `MxServer` listens on its own 127.x address (several can share one port, as MX hosts
of a site share port 25), runs in the test's event loop, and is aiosmtpd underneath - an
independent SMTP implementation is a better judge of our client than our own server. What
aiosmtpd can't do (a 421 greeting) is a few lines of protocol here.

    mx = await mx_factory("127.0.0.2")                 # port: mx_factory.port
    mx.script("bad@x.test", "550 5.1.1 no such user")  # refused at RCPT
    mx.script("big@x.test", "552 5.3.4 too big", at="data")
    mx.script("gone@x.test", DROP)                     # connection dropped at RCPT
    mx.greeting = "421 4.3.2 try later"
    mx.pipelining = False; mx.starttls = True; mx.delay = 0.2
    await mx.wait_for_messages(3, timeout=5)
    mx.messages[0].rcpt_tos, mx.messages[0].body, mx.connections[0].peer

Fixtures: `mx_factory` (servers closed at the end of the test), `mx_tls_context` (a
self-signed certificate made with `cryptography`, once per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = [
    "DROP",
    "ConnectionRecord",
    "MxFactory",
    "MxServer",
    "ReceivedMessage",
    "make_self_signed",
    "mx_factory",
    "mx_tls_context",
]

DROP = "DROP"  # a script reply: close the connection instead of answering

# RFC 3461 parameters aiosmtpd would refuse with 555 before any hook runs; the MX takes them
# (and records them in the options) when it offers DSN.
_DSN_PARAMS = ("RET", "ENVID", "NOTIFY", "ORCPT")


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    body: bytes  # as received, dot-stuffing undone, CRLF line ends
    mail_options: list[str]
    rcpt_options: list[str]
    peer: tuple[str, int]
    tls: bool
    arrived_at: float  # time.monotonic()


@dataclass
class ConnectionRecord:
    peer: tuple[str, int]
    opened_at: float  # time.monotonic()
    closed_at: float | None = None
    tls: bool = False
    ehlo: str = ""
    transport: asyncio.BaseTransport | None = field(default=None, repr=False, compare=False)


@dataclass
class _Rule:
    reply: str
    at: str  # "rcpt" | "data"
    delay: float


class MxServer:
    """One scriptable MX host. Attributes are read on every connection or command, so a
    test may change them between (or during) deliveries."""

    def __init__(self, host: str, tls_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = 0
        self.hostname = f"mx-{host}.test"
        self._tls_context = tls_context
        # --- behaviour -----------------------------------------------------------------
        self.greeting: str | None = None  # e.g. "421 4.3.2 busy": answer this and close
        self.pipelining = True
        self.starttls = False  # offer STARTTLS (needs the mx_tls_context)
        self.tls_broken = False  # say 220 to STARTTLS, then send junk: the handshake fails
        self.dsn = False
        self.smtputf8 = False
        self.chunking = False  # offer RFC 3030 CHUNKING and take BDAT
        self.size_limit = 0  # advertised SIZE and enforced; 0: none advertised
        self.ehlo_reply: str | None = None  # e.g. "502 5.5.1 no": refuse EHLO (HELO still ok)
        self.mail_reply: str | None = None  # e.g. "451 4.3.0 later": refuse MAIL
        # Refuse MAIL on connections from these client addresses: {"127.0.0.10": "550 ..."}
        self.mail_reply_from: dict[str, str] = {}
        self.default_rcpt = "250 2.1.5 Ok"
        self.data_reply = "250 2.0.0 Ok: queued"
        self.max_recipients = 0  # per transaction, then "452 4.5.3 Too many recipients"
        self.delay = 0.0  # before every MAIL/RCPT/DATA reply
        self._rules: dict[str, _Rule] = {}
        # --- records -------------------------------------------------------------------
        self.messages: list[ReceivedMessage] = []
        self.connections: list[ConnectionRecord] = []
        self.concurrency: list[tuple[float, int]] = []  # (monotonic time, open connections)
        self.max_concurrent = 0
        # EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET QUIT, in order
        self.commands: list[str] = []
        self._open = 0
        self._live: set[asyncio.BaseTransport] = set()
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None

    # --- scripting ---------------------------------------------------------------------
    def script(self, recipient: str, reply: str, *, at: str = "rcpt",
               delay: float = 0.0) -> None:
        """Answer `reply` (or DROP) to this recipient at RCPT, or at the end of DATA."""
        if at not in ("rcpt", "data"):
            raise ValueError("at must be 'rcpt' or 'data'")
        self._rules[recipient.lower()] = _Rule(reply, at, delay)

    # --- waiting -----------------------------------------------------------------------
    # `timeout=` is the API the suite asked for (mx.wait_for_messages(3, timeout=5)).
    async def wait_for_messages(self, n: int,
                                timeout: float = 5.0,
                                ) -> list[ReceivedMessage]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= n)
        return self.messages

    async def wait_for_idle(self, timeout: float = 5.0) -> None:
        """Until no connection is open (the client closed or dropped them all)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._open == 0)

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self._live):
            transport.abort()
        for _ in range(3):  # let connection_lost run before the test's loop closes
            await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()
        self._server = None

    def _factory(self) -> asyncio.Protocol:
        if self.greeting is not None:
            return _Greeter(self, self.greeting)
        return _MxSmtp(self)

    # --- bookkeeping (called by the protocols) -----------------------------------------
    def _opened(self, transport: asyncio.BaseTransport) -> ConnectionRecord:
        self._live.add(transport)
        rec = ConnectionRecord(transport.get_extra_info("peername"), time.monotonic(),
                               transport=transport)
        self.connections.append(rec)
        self._open += 1
        self.max_concurrent = max(self.max_concurrent, self._open)
        self.concurrency.append((rec.opened_at, self._open))
        return rec

    def _closed(self, rec: ConnectionRecord) -> None:
        if rec.closed_at is not None:
            return
        rec.closed_at = time.monotonic()
        if rec.transport is not None:
            self._live.discard(rec.transport)
        self._open -= 1
        self.concurrency.append((rec.closed_at, self._open))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class _Greeter(asyncio.Protocol):
    """A server that greets with a refusal and hangs up (RFC 5321 3.1: 421/554 greeting)."""

    def __init__(self, mx: MxServer, line: str) -> None:
        self.mx, self.line = mx, line
        self.rec: ConnectionRecord | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.rec = self.mx._opened(transport)
        transport.write(self.line.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.rec is not None:
            self.mx._closed(self.rec)


class _Handler:
    """aiosmtpd hooks: apply the MxServer's script and record what arrives."""

    def __init__(self, mx: MxServer, smtp: _MxSmtp) -> None:
        self.mx, self.smtp = mx, smtp

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        mx = self.mx
        mx.commands.append("EHLO")
        if mx.ehlo_reply is not None:
            session.extended_smtp = False
            return [mx.ehlo_reply]
        session.host_name = hostname
        self.smtp.rec.ehlo = hostname
        # Rebuild the keyword list from the script (aiosmtpd offers its own set).
        keep = [r for r in responses[1:-1] if r[4:].split(" ")[0] in ("8BITMIME", "STARTTLS")]
        if not mx.starttls:
            keep = [r for r in keep if "STARTTLS" not in r]
        lines = [f"250-{mx.hostname}", *keep]
        if mx.pipelining:
            lines.append("250-PIPELINING")
        if mx.size_limit:
            lines.append(f"250-SIZE {mx.size_limit}")
        if mx.smtputf8:
            lines.append("250-SMTPUTF8")
        if mx.dsn:
            lines.append("250-DSN")
        if mx.chunking:
            lines.append("250-CHUNKING")
        lines.append("250 ENHANCEDSTATUSCODES")
        return lines

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        self.mx.commands.append("HELO")
        session.host_name = hostname
        return f"250 {self.mx.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        mx = self.mx
        mx.commands.append("MAIL")
        if mx.delay:
            await asyncio.sleep(mx.delay)
        if mx.mail_reply is not None:
            return self._answer(mx.mail_reply)
        if session.peer and session.peer[0] in mx.mail_reply_from:
            return self._answer(mx.mail_reply_from[session.peer[0]])
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        mx = self.mx
        mx.commands.append("RCPT")
        rule = mx._rules.get(address.lower())
        delay = mx.delay + (rule.delay if rule else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if mx.max_recipients and len(envelope.rcpt_tos) >= mx.max_recipients:
            return "452 4.5.3 Too many recipients"
        if rule is not None and rule.at == "rcpt":
            reply = rule.reply
        else:
            reply = mx.default_rcpt if rule is None else "250 2.1.5 Ok"
        if not reply.startswith("2"):
            return self._answer(reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mx.commands.append("RSET")
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mx.commands.append("QUIT")
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mx = self.mx
        if not self.smtp.in_bdat:  # the BDAT LAST chunk lands here too, recorded as BDAT
            mx.commands.append("DATA")
        reply = mx.data_reply
        delay = mx.delay
        for rcpt in envelope.rcpt_tos:
            rule = mx._rules.get(rcpt.lower())
            if rule is not None and rule.at == "data":
                reply, delay = rule.reply, delay + rule.delay
                break
        if delay:
            await asyncio.sleep(delay)
        if reply.startswith("2"):
            body = envelope.original_content or b""
            mx.messages.append(ReceivedMessage(
                mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
                body=bytes(body), mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options), peer=session.peer,
                tls=session.ssl is not None, arrived_at=time.monotonic()))
            await mx._notify()
        return self._answer(reply)

    def _answer(self, reply: str) -> str:
        if reply == DROP:
            self.smtp.drop()
            return "421 4.4.2 dropped"  # never arrives: the transport is gone
        return reply


class _MxSmtp(SMTP):
    """aiosmtpd's SMTP with a DSN-aware parameter check and connection records."""

    def __init__(self, mx: MxServer) -> None:
        self.mx = mx
        self.rec = ConnectionRecord(("", 0), 0.0)
        self._chunks: list[bytes] = []  # BDAT chunks of the message being received
        self.in_bdat = False
        super().__init__(
            _Handler(mx, self), hostname=mx.hostname, ident="mta-test-mx",
            tls_context=mx._tls_context if mx.starttls else None,
            data_size_limit=mx.size_limit or None, enable_SMTPUTF8=True,
            timeout=30, loop=asyncio.get_running_loop())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the first call; a second one comes after STARTTLS
            self.rec = self.mx._opened(transport)
        else:
            self.rec.tls = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mx._closed(self.rec)
        super().connection_lost(exc)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.mx.tls_broken and self.transport is not None:
            self.mx.commands.append("STARTTLS")
            await self.push("220 2.0.0 Ready to start TLS")
            await asyncio.sleep(0.05)  # junk arrives as the client's handshake starts
            self.transport.write(b"this is not a TLS record\r\n" * 8)  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
            self.drop()
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_BDAT(self, arg: str) -> None:
        """RFC 3030 chunks into the envelope; at LAST, the DATA hook decides as for DATA."""
        mx = self.mx
        words = arg.split()
        if not mx.chunking or not words or not words[0].isdigit() or len(words) > 2 \
                or (len(words) == 2 and words[1].upper() != "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        mx.commands.append("BDAT")
        chunk = await self._reader.readexactly(int(words[0]))
        assert self.envelope is not None
        self._chunks.append(chunk)
        if len(words) == 1:
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
            return
        content, self._chunks = b"".join(self._chunks), []
        if not self.envelope.rcpt_tos:
            await self.push("554 5.5.1 No valid recipients")
            return
        self.envelope.original_content = content
        self.envelope.content = content
        self.in_bdat = True
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            self.in_bdat = False
        self._set_post_data_state()
        await self.push(status)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def _getparams(self, params: Any) -> Any:
        result = super()._getparams(params)
        if result is not None and self.mx.dsn:
            for key in _DSN_PARAMS:
                result.pop(key, None)
        return result


# --- certificates ------------------------------------------------------------------------

def make_self_signed(directory: Path, hostname: str = "mx.test") -> tuple[Path, Path]:
    """A throw-away EC certificate and key (PEM files) for STARTTLS tests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --- fixtures ----------------------------------------------------------------------------

class MxFactory:
    """`await mx_factory("127.0.0.2")`: every server of one test shares one port, chosen
    by the first (port 0), so they look like the MX hosts of one site."""

    def __init__(self, tls_context: ssl.SSLContext) -> None:
        self.tls_context = tls_context
        self.port = 0
        self.servers: list[MxServer] = []

    async def __call__(self, host: str = "127.0.0.2", port: int | None = None, *,
                       tls_context: ssl.SSLContext | None = None,
                       **behaviour: Any) -> MxServer:
        """`tls_context`: this server's own certificate (default: the shared one)."""
        mx = MxServer(host, tls_context or self.tls_context)
        for k, v in behaviour.items():
            if not hasattr(mx, k):
                raise TypeError(f"MxServer has no setting {k!r}")
            setattr(mx, k, v)
        await mx.start(self.port if port is None else port)
        if not self.port:
            self.port = mx.port
        self.servers.append(mx)
        return mx

    async def aclose(self) -> None:
        for mx in self.servers:
            await mx.stop()


@pytest.fixture(scope="session")
def mx_tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every test MX's certificate (self-signed, naming mx.test) and key: the certificate
    is also the CA a test gives `[delivery] tls_ca_file` to verify them."""
    return make_self_signed(tmp_path_factory.mktemp("mx-tls"))


@pytest.fixture(scope="session")
def mx_tls_context(mx_tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = mx_tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@pytest_asyncio.fixture
async def mx_factory(mx_tls_context: ssl.SSLContext) -> AsyncIterator[MxFactory]:
    factory = MxFactory(mx_tls_context)
    try:
        yield factory
    finally:
        await factory.aclose()

