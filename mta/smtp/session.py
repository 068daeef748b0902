"""The SMTP conversation, sans-IO: command lines in, events (replies, decisions) out.

Owns the session state machine (every legal (state, verb) pair is in `_TABLE`; anything else
gets the state's "bad sequence" reply), the choice of every reply, relay control, the SASL
exchange (PLAIN, LOGIN) and the error limit. Which ESMTP parameters MAIL and RCPT accept is
params.py's; what the session takes from the config is settings.py's. It never touches a
socket, a clock or a thread: decisions that need awaiting (policy at MAIL/RCPT, password
checks, storing the message) are returned as events, and the I/O adapter (server.py)
awaits them and calls `decide()` with the result.

    s = Session(settings, SessionInfo("192.0.2.1", 40000))
    s.greeting()                       -> Reply 220
    s.handle_line(b"EHLO client")      -> Send(Reply 250 ...)
    s.handle_line(b"MAIL FROM:<a@b>")  -> CheckMail(...)      (await the handler)
    s.decide(None)                     -> Send(Reply 250 2.1.0)
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
import time
from collections.abc import Callable

from mta.observe.events import EventLog
from mta.queue.envelope import Envelope, Recipient
from mta.rfc5321.command import Command, CommandError, Verb, parse_command
from mta.rfc5321.reply import Reply
from mta.smtp import replies, sasl
from mta.smtp.auth import AuthResult
from mta.smtp.cleanup import add_headers
from mta.smtp.data import ChunkReader, DataReader
from mta.smtp.events import (
    Authenticate,
    CheckMail,
    CheckRcpt,
    Decision,
    Deliver,
    Event,
    Send,
    StartData,
    StartTLS,
)
from mta.smtp.handler import SessionInfo
from mta.smtp.longlines import has_long_line, wrap_long_lines
from mta.smtp.params import mail_param, rcpt_param
from mta.smtp.settings import SessionSettings

__all__ = [
    "Authenticate",
    "CheckMail",
    "CheckRcpt",
    "Deliver",
    "Event",
    "Send",
    "Session",
    "SessionSettings",
    "StartData",
    "StartTLS",
    "State",
]


_BDAT_ARG = re.compile(r"(\d{1,10})(?: +(LAST))?", re.IGNORECASE)


class State(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's hash runs Python code
    GREETED = "greeted"  # banner sent; EHLO/HELO expected
    READY = "ready"  # after EHLO/HELO, no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # 354 sent (or a BDAT chunk announced): the adapter reads the bytes
    BDAT = "bdat"  # between BDAT chunks of one message (RFC 3030)
    AUTH = "auth"  # 334 sent: the next line is a SASL response
    PENDING = "pending"  # a decision is being awaited: call decide()
    CLOSED = "closed"


@functools.lru_cache(maxsize=4096)
def _in_networks(ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
                 ) -> tuple[bool, bool]:
    """(is loopback, is in one of `networks`). Cached: parsing an address costs ~20 µs and
    senders reconnect from the same few addresses all day."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False, False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback, any(addr in net for net in networks)


def _domain(address: str | None) -> str:
    return (address or "").rpartition("@")[2].lower()


class Session:
    """One SMTP session. Not thread-safe; one per connection."""

    def __init__(self, settings: SessionSettings, info: SessionInfo,
                 events: EventLog | None = None) -> None:
        self.settings = settings
        self.info = info
        self.events = events
        self.state = State.GREETED
        self.errors = 0
        self._loopback, self._relay_client = _in_networks(info.client_ip,
                                                          settings.relay_networks)
        if self._relay_client:
            info.tenant = "default"
        self._pending: Decision | None = None
        self._sasl: tuple[str, str] | None = None  # (mechanism, username so far)
        self._reset_transaction()

    # --- public API for the adapter --------------------------------------------------

    def greeting(self) -> Reply:
        return replies.greeting_reply(self.settings)

    def handle_line(self, line: bytes, *, more: bool = False) -> Event:
        """One command line (CRLF removed). `more`: the client already sent more bytes
        after this line (pipelined), which DATA and STARTTLS forbid (RFC 2920 3.1)."""
        if self.state is State.AUTH:
            return self._sasl_response(line)
        if self.state not in _TABLE:
            raise RuntimeError(f"handle_line() in state {self.state.name}")
        try:
            cmd = parse_command(line)
        except CommandError as e:
            return self._error(e.reply)
        if cmd.verb is Verb.BDAT:  # its chunk follows whatever the state: always read
            return self._bdat(cmd)
        handler = _TABLE[self.state].get(cmd.verb)
        if handler is None:
            return self._error(_OUT_OF_SEQUENCE.get((self.state, cmd.verb), replies.R_BAD_SEQUENCE))
        if more and cmd.verb in (Verb.DATA, Verb.STARTTLS):
            self._reject("pipelining", replies.R_PIPELINING)
            self.state = State.CLOSED
            return Send((replies.R_PIPELINING,), close=True)
        return handler(self, cmd)

    def line_too_long(self) -> Event:
        self._reject("line_too_long", replies.R_LINE_TOO_LONG)
        if self.state is State.AUTH:
            self._sasl, self.state = None, State.READY
        return self._error(replies.R_LINE_TOO_LONG)

    def timeout(self) -> Send:
        reason = "data_timeout" if self.state is State.DATA else "idle_timeout"
        self._reject(reason, replies.R_TIMEOUT)
        self.state = State.CLOSED
        return Send((replies.R_TIMEOUT,), close=True)

    def shutdown(self) -> Send:
        self.state = State.CLOSED
        return Send((replies.R_SHUTDOWN,), close=True)

    @property
    def idle(self) -> bool:
        """Between transactions: a drain may close it now without losing anything."""
        return self.state in (State.GREETED, State.READY)

    def tls_started(self, version: str | None = None) -> None:
        """RFC 3207 4.2: after the handshake forget everything learnt from the client."""
        self.info.tls = True
        self.info.tls_version = version
        self.info.helo = ""
        self.info.esmtp = False
        self.info.auth_user = None
        self.info.tenant = "default" if self._relay_client else None
        self._reset_transaction()
        self.state = State.GREETED

    def data_done(self, reader: DataReader | ChunkReader) -> Event:
        """The DataReader found the end marker (or a BDAT chunk is in): refuse the
        message or hand it over."""
        if isinstance(reader, ChunkReader):
            return self._chunk_done(reader)
        return self._message_done(reader.body, reader.bare_newline, reader.size)

    def _message_done(self, body: bytes | None, bare_newline: bool, size: int) -> Event:
        if body is None:
            reply = replies.R_TOO_BIG
            self._reject("size", reply, size=size)
        elif bare_newline:
            reply = replies.R_BARE_NEWLINE
            self._reject("bare_newline", reply)
        elif self.settings.long_lines == "reject" and has_long_line(body):
            reply = replies.R_LONG_LINE
            self._reject("long_line", reply)
        else:
            info = self.info
            recipients = self._recipients
            smtputf8 = "SMTPUTF8" in self._mail_params
            data = add_headers(body, info, hostname=self.settings.hostname,
                               recipients=[r.address for r in recipients], smtputf8=smtputf8)
            # [smtp] long_lines = "wrap": before signing, so the signature covers what is sent.
            data = wrap_long_lines(data)
            envelope = Envelope(
                tenant=info.tenant or "default", mail_from=self._mail_from or "",
                recipients=recipients, client_ip=info.client_ip, helo=info.helo,
                auth_user=info.auth_user, mail_params=self._mail_params,
                received_at=time.time())
            self._reset_transaction()
            self._pending = decision = Deliver(envelope, data)
            self.state = State.PENDING
            return decision
        self._reset_transaction()
        self.state = State.READY
        return Send((reply,))

    def decide(self, result: Reply | AuthResult | None) -> Send:
        """The result of the awaited decision: a handler's Reply (or None), an AuthResult.
        A Reply for an Authenticate means the check itself failed (sent as is)."""
        pending, self._pending = self._pending, None
        if isinstance(pending, CheckMail):
            self.state = State.READY
            if result is None or (isinstance(result, Reply) and result.is_positive):
                self.state = State.MAIL
                self._mail_from = pending.address
                return Send((result or replies.R_MAIL_OK,))
            return Send((self._policy_reject(result, "mail", sender=pending.address),))
        if isinstance(pending, CheckRcpt):
            self.state = State.RCPT if self._recipients else State.MAIL
            if result is None or (isinstance(result, Reply) and result.is_positive):
                p = pending.params
                self._recipients.append(Recipient(pending.address, p.get("NOTIFY"),
                                                  p.get("ORCPT")))
                self.state = State.RCPT
                return Send((result or replies.R_RCPT_OK,))
            return Send((self._policy_reject(result, "rcpt", recipient=pending.address),))
        if isinstance(pending, Authenticate):
            self.state = State.READY
            if (isinstance(result, AuthResult) and result.ok and result.networks
                    and not _in_networks(self.info.client_ip, result.networks)[1]):
                # The right password from outside the user's networks: the same 535 as a
                # wrong one (no hint that the password works), the reason in the event.
                self._reject("auth_failed", replies.R_AUTH_FAILED, user=pending.username,
                             why="client network not allowed for this user")
                return self._error(replies.R_AUTH_FAILED)
            if isinstance(result, AuthResult) and result.ok:
                self.info.auth_user = pending.username
                self.info.tenant = result.tenant
                return Send((replies.R_AUTH_OK,))
            if isinstance(result, AuthResult) and result.locked:
                self._reject("auth_locked", replies.R_AUTH_LOCKED, user=pending.username)
                return self._error(replies.R_AUTH_LOCKED)
            reply = result if isinstance(result, Reply) else replies.R_AUTH_FAILED
            self._reject("auth_failed", reply, user=pending.username)
            if isinstance(result, AuthResult) and result.disconnect:
                # Past the address's overall cap: each guess costs a new connection.
                self._reject("auth_address_cap", replies.R_AUTH_ADDRESS_CAP, user=pending.username)
                self.state = State.CLOSED
                return Send((reply, replies.R_AUTH_ADDRESS_CAP), close=True)
            return self._error(reply)
        if isinstance(pending, Deliver):
            self.state = State.READY
            reply = result if isinstance(result, Reply) else replies.R_INTERNAL
            if not reply.is_positive:
                env = pending.envelope
                self._reject("data", reply, sender=env.mail_from,
                             recipients=len(env.recipients))
            return Send((reply,))
        raise RuntimeError("decide() without a pending decision")

    # --- helpers ----------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self._mail_from: str | None = None
        self._mail_params: dict[str, str] = {}
        self._recipients: list[Recipient] = []
        self._chunks = bytearray()  # BDAT chunks so far
        self._chunks_size = 0  # their octets, counted even once past the limit
        if self.state in (State.MAIL, State.RCPT, State.BDAT):
            self.state = State.READY

    def _reject(self, reason: str, reply: Reply, **fields: object) -> None:
        if self.events is not None:
            self.events.emit("rejected", reason=reason, client_ip=self.info.client_ip,
                             tenant=self.info.tenant, reply=str(reply), **fields)

    def _policy_reject(self, reply: Reply | AuthResult | None, stage: str,
                       **fields: object) -> Reply:
        # Business decisions are not protocol errors: they don't count toward max_errors
        # (a sender with many suppressed recipients must not be disconnected).
        if not isinstance(reply, Reply):
            reply = replies.R_INTERNAL
        self._reject(f"policy_{stage}", reply, **fields)
        return reply

    def _error(self, reply: Reply) -> Send:
        """A protocol error: counts toward max_errors (Postfix smtpd_hard_error_limit)."""
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            self._reject("too_many_errors", replies.R_TOO_MANY_ERRORS)
            self.state = State.CLOSED
            return Send((reply, replies.R_TOO_MANY_ERRORS), close=True)
        return Send((reply,))

    def _auth_offered(self) -> bool:
        s = self.settings
        return s.auth_available and (self.info.tls or not s.auth_require_tls or self._loopback)

    # --- verbs ------------------------------------------------------------------------

    def _ehlo(self, cmd: Command) -> Event:
        if not cmd.arg:
            return self._error(Reply(501, "5.5.4", "Syntax: EHLO hostname"))
        # RFC 5321 4.1.4: EHLO in a transaction resets it.
        self._reset_transaction()
        self.info.helo, self.info.esmtp = cmd.arg, True
        self.state = State.READY
        s = self.settings
        return Send((replies.ehlo_reply(s.hostname, s.max_message_size,
                                 s.tls_available and not self.info.tls,
                                 self._auth_offered() and self.info.auth_user is None),))

    def _helo(self, cmd: Command) -> Event:
        if not cmd.arg:
            return self._error(Reply(501, "5.5.4", "Syntax: HELO hostname"))
        self._reset_transaction()
        self.info.helo, self.info.esmtp = cmd.arg, False
        self.state = State.READY
        return Send((Reply(250, None, self.settings.hostname),))

    def _noop(self, cmd: Command) -> Event:
        return Send((replies.R_OK,))

    def _rset(self, cmd: Command) -> Event:
        self._reset_transaction()
        return Send((replies.R_OK,))

    def _quit(self, cmd: Command) -> Event:
        self.state = State.CLOSED
        return Send((replies.R_BYE,), close=True)

    def _vrfy(self, cmd: Command) -> Event:
        if not cmd.arg:
            return self._error(Reply(501, "5.5.4", "Syntax: VRFY address"))
        return Send((replies.R_VRFY,))

    def _help(self, cmd: Command) -> Event:
        return Send((replies.R_HELP,))

    def _expn(self, cmd: Command) -> Event:
        return self._error(replies.R_NOT_IMPLEMENTED)

    def _forbidden(self, cmd: Command) -> Event:
        self._reject("forbidden_command", replies.R_FORBIDDEN)
        self.state = State.CLOSED
        return Send((replies.R_FORBIDDEN,), close=True)

    def _starttls(self, cmd: Command) -> Event:
        if self.info.tls:
            return self._error(replies.R_TLS_ACTIVE)
        if not self.settings.tls_available:
            return self._error(replies.R_TLS_UNAVAILABLE)
        return StartTLS(replies.R_TLS_READY)

    def _mail(self, cmd: Command) -> Event:
        info = self.info
        if self.settings.intake_paused():  # `mta drain`: no new transaction
            self._reject("intake_paused", replies.R_NOT_ACCEPTING, sender=cmd.address)
            self.state = State.CLOSED
            return Send((replies.R_NOT_ACCEPTING,), close=True)
        if info.tenant is None and not self.settings.feedback_domains:
            self._reject("auth_required", replies.R_AUTH_REQUIRED, sender=cmd.address)
            return self._error(replies.R_AUTH_REQUIRED)
        params = cmd.params
        mail_params: dict[str, str] = {}
        if params:
            if not info.esmtp:  # RFC 5321 4.1.1.2: parameters need EHLO
                return self._error(Reply(555, "5.5.4", "Error: ESMTP parameters need EHLO"))
            for key, value in params.items():
                bad = mail_param(key, value, mail_params, self.settings.max_message_size)
                if bad is not None:
                    if bad is replies.R_TOO_BIG:
                        self._reject("size", bad, sender=cmd.address, size=value)
                    return self._error(bad)
        if cmd.utf8 and "SMTPUTF8" not in mail_params:
            return self._error(replies.R_UTF8_ADDRESS)
        assert cmd.address is not None
        self._mail_params = mail_params
        if info.tenant is None:  # anyone may send reports to the feedback domains (RCPT)
            self._mail_from = cmd.address
            self.state = State.MAIL
            return Send((replies.R_MAIL_OK,))
        # Policy sees the accepted parameters (ENVID as xtext), plus the declared SIZE.
        check = dict(mail_params)
        if "SIZE" in params:
            check["SIZE"] = params["SIZE"]
        self._pending = decision = CheckMail(cmd.address, check)
        self.state = State.PENDING
        return decision

    def _rcpt(self, cmd: Command) -> Event:
        info = self.info
        ours = self.settings.feedback_domains
        feedback = bool(ours) and _domain(cmd.address) in ours
        if info.tenant is None and not feedback:  # no open relay
            self._reject("relay_denied", replies.R_RELAY_DENIED, recipient=cmd.address)
            return self._error(replies.R_RELAY_DENIED)
        if self._recipients and feedback != (_domain(self._recipients[0].address) in ours):
            return Send((replies.R_FEEDBACK_APART,))
        if len(self._recipients) >= self.settings.max_recipients:
            # RFC 5321 4.5.3.1.10: 452 tells the client to send the rest in another
            # transaction; not a protocol error.
            self._reject("max_recipients", replies.R_TOO_MANY_RCPT, recipient=cmd.address)
            return Send((replies.R_TOO_MANY_RCPT,))
        params = cmd.params
        accepted: dict[str, str] = {}
        if params:
            if not info.esmtp:
                return self._error(Reply(555, "5.5.4", "Error: ESMTP parameters need EHLO"))
            for key, value in params.items():
                bad = rcpt_param(key, value, accepted)
                if bad is not None:
                    return self._error(bad)
        if cmd.utf8 and "SMTPUTF8" not in self._mail_params:
            return self._error(replies.R_UTF8_ADDRESS)
        assert cmd.address is not None
        if feedback:  # a report for us (mta/bounce/inbound.py): nobody's sending, no policy
            self._recipients.append(Recipient(cmd.address, accepted.get("NOTIFY"),
                                              accepted.get("ORCPT")))
            self.state = State.RCPT
            return Send((replies.R_RCPT_OK,))
        self._pending = decision = CheckRcpt(cmd.address, accepted)
        self.state = State.PENDING
        return decision

    def _data(self, cmd: Command) -> Event:
        self.state = State.DATA
        return StartData(replies.R_DATA, DataReader(self.settings.max_message_size))

    # --- BDAT (RFC 3030 CHUNKING) ------------------------------------------------------

    def _bdat(self, cmd: Command) -> Event:
        m = _BDAT_ARG.fullmatch(cmd.arg)
        if m is None:  # no size we can trust to skip: refuse the line, as Postfix does
            return self._error(replies.R_BDAT_SYNTAX)
        size, last = int(m.group(1)), m.group(2) is not None
        refusal = None
        if self.state not in (State.RCPT, State.BDAT):
            refusal = {State.GREETED: replies.R_NEED_HELO, State.READY: replies.R_NEED_MAIL,
                       State.MAIL: replies.R_NO_VALID_RCPT}.get(self.state, replies.R_BAD_SEQUENCE)
        self._bdat_state = self.state
        self._chunks_size += size if refusal is None else 0
        keep = refusal is None and self._chunks_size <= self.settings.max_message_size
        self.state = State.DATA
        return StartData(None, ChunkReader(size, last, keep=keep, refusal=refusal))

    def _chunk_done(self, reader: ChunkReader) -> Event:
        if reader.refusal is not None:  # read and thrown away; the state is as it was
            self.state = self._bdat_state
            return self._error(reader.refusal)  # type: ignore[arg-type]
        if reader.data is not None:
            self._chunks += reader.data
        if not reader.last:
            self.state = State.BDAT
            return Send((Reply(250, "2.0.0", f"{reader.size} octets received"),))
        self.state = State.RCPT
        too_big = self._chunks_size > self.settings.max_message_size
        body = None if too_big else bytes(self._chunks)
        size = self._chunks_size
        self._chunks = bytearray()
        if body and not body.endswith(b"\r\n"):
            body += b"\r\n"  # the last line's end, as DATA's end marker supplies it
        bare = body is not None and (body.count(b"\n") != body.count(b"\r\n")
                                     or body.count(b"\r") != body.count(b"\r\n"))
        return self._message_done(body, bare, size)

    def _data_without_rcpt(self, cmd: Command) -> Event:
        return self._error(replies.R_NO_VALID_RCPT)

    # --- AUTH (RFC 4954) --------------------------------------------------------------

    def _auth(self, cmd: Command) -> Event:
        s = self.settings
        if not s.auth_available:
            return self._error(replies.R_AUTH_DISABLED)
        if self.info.auth_user is not None:
            return self._error(replies.R_AUTH_DONE)
        if not self._auth_offered():
            self._reject("auth_needs_tls", replies.R_AUTH_NEEDS_TLS)
            return self._error(replies.R_AUTH_NEEDS_TLS)
        if s.auth_locked(self.info.client_ip):
            self._reject("auth_locked", replies.R_AUTH_LOCKED)
            return self._error(replies.R_AUTH_LOCKED)
        mechanism, _, initial = cmd.arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in sasl.MECHANISMS:
            return self._error(replies.R_AUTH_MECHANISM)
        initial = initial.strip(" ")
        self.state = State.AUTH
        self._sasl = (mechanism, "")
        if not initial:
            return Send((sasl.EMPTY if mechanism == "PLAIN" else sasl.LOGIN_USER,))
        # RFC 4954 4: "=" is an empty initial response.
        return self._sasl_response(b"" if initial == "=" else initial.encode("ascii", "replace"),
                                   initial=True)

    def _sasl_response(self, line: bytes, *, initial: bool = False) -> Event:
        assert self._sasl is not None
        mechanism, username = self._sasl
        if line == b"*":
            self._sasl, self.state = None, State.READY
            return self._error(replies.R_AUTH_CANCELLED)
        decoded = sasl.decode(line)
        if decoded is None:
            self._sasl, self.state = None, State.READY
            return self._error(replies.R_AUTH_BAD_B64)
        if mechanism == "LOGIN" and not username:
            self._sasl = (mechanism, decoded.decode("utf-8", "replace") or "\0")
            return Send((sasl.LOGIN_PASS,))
        self._sasl = None
        if mechanism == "LOGIN":
            password = decoded.decode("utf-8", "replace")
        else:
            pair = sasl.plain(decoded)
            if pair is None:
                self.state = State.READY
                self._reject("auth_failed", replies.R_AUTH_FAILED)
                return self._error(replies.R_AUTH_FAILED)
            username, password = pair
        self._pending = decision = Authenticate(username, password)
        self.state = State.PENDING
        return decision


_V = Verb
_ANYTIME: dict[Verb, Callable[[Session, Command], Event]] = {
    _V.EHLO: Session._ehlo, _V.HELO: Session._helo, _V.NOOP: Session._noop,
    _V.RSET: Session._rset, _V.QUIT: Session._quit, _V.VRFY: Session._vrfy,
    _V.HELP: Session._help, _V.EXPN: Session._expn, _V.FORBIDDEN: Session._forbidden,
}
# Every legal (state, verb) pair. A verb missing from a state's row is out of sequence.
_TABLE: dict[State, dict[Verb, Callable[[Session, Command], Event]]] = {
    State.GREETED: {**_ANYTIME, _V.STARTTLS: Session._starttls},
    State.READY: {**_ANYTIME, _V.STARTTLS: Session._starttls, _V.AUTH: Session._auth,
                  _V.MAIL: Session._mail},
    State.MAIL: {**_ANYTIME, _V.RCPT: Session._rcpt, _V.DATA: Session._data_without_rcpt},
    State.RCPT: {**_ANYTIME, _V.RCPT: Session._rcpt, _V.DATA: Session._data},
    # Between chunks only BDAT (handled before this table), RSET, QUIT and the harmless.
    State.BDAT: {**_ANYTIME},
}
_OUT_OF_SEQUENCE: dict[tuple[State, Verb], Reply] = {
    **{(State.GREETED, v): replies.R_NEED_HELO for v in (_V.MAIL, _V.RCPT, _V.DATA, _V.AUTH)},
    (State.READY, _V.RCPT): replies.R_NEED_MAIL,
    (State.READY, _V.DATA): replies.R_NEED_MAIL,
    (State.MAIL, _V.MAIL): replies.R_NESTED_MAIL,
    (State.RCPT, _V.MAIL): replies.R_NESTED_MAIL,
    **{(st, v): replies.R_IN_TRANSACTION for st in (State.MAIL, State.RCPT)
       for v in (_V.AUTH, _V.STARTTLS)},
}
