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

import base64
import binascii
import enum
import functools
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from mta.observe.events import EventLog
from mta.queue.envelope import Envelope, Recipient
from mta.rfc5321.command import Command, CommandError, Verb, parse_command
from mta.rfc5321.reply import Reply
from mta.smtp.auth import AuthResult
from mta.smtp.cleanup import add_headers
from mta.smtp.data import DataReader
from mta.smtp.handler import SessionInfo
from mta.smtp.intake import R_NOT_ACCEPTING
from mta.smtp.longlines import MAX_LINE, has_long_line, wrap_long_lines
from mta.smtp.params import R_TOO_BIG, mail_param, rcpt_param
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


class State(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's hash runs Python code
    GREETED = "greeted"  # banner sent; EHLO/HELO expected
    READY = "ready"  # after EHLO/HELO, no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # 354 sent: the adapter reads the message (DataReader)
    AUTH = "auth"  # 334 sent: the next line is a SASL response
    PENDING = "pending"  # a decision is being awaited: call decide()
    CLOSED = "closed"


# --- events the adapter acts on --------------------------------------------------------

@dataclass(slots=True)
class Send:
    """Send these replies; then close the connection if `close`."""

    replies: tuple[Reply, ...]
    close: bool = False


@dataclass(slots=True)
class StartTLS:
    """Send `reply` (220), then run the TLS handshake and call `tls_started()`."""

    reply: Reply


@dataclass(slots=True)
class StartData:
    """Send `reply` (354), then feed the message bytes to `reader`, then `data_done()`."""

    reply: Reply
    reader: DataReader


@dataclass(slots=True)
class CheckMail:
    address: str
    params: dict[str, str]


@dataclass(slots=True)
class CheckRcpt:
    address: str
    params: dict[str, str]


@dataclass(slots=True)
class Authenticate:
    """Verify these credentials; `decide()` with an `AuthResult`."""

    username: str
    password: str


@dataclass(slots=True)
class Deliver:
    """Hand the message to the handler; `decide()` with its Reply."""

    envelope: Envelope
    data: bytes


Event = Send | StartTLS | StartData | CheckMail | CheckRcpt | Authenticate | Deliver
Decision = CheckMail | CheckRcpt | Authenticate | Deliver


# --- replies (RFC 5321 4.2, enhanced codes RFC 3463) -------------------------------------

R_OK = Reply(250, "2.0.0", "Ok")
R_MAIL_OK = Reply(250, "2.1.0", "Ok")
R_RCPT_OK = Reply(250, "2.1.5", "Ok")
R_BYE = Reply(221, "2.0.0", "Bye")
R_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
R_HELP = Reply(214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)")
R_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
R_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
R_NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
R_NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
R_NO_VALID_RCPT = Reply(554, "5.5.1", "Error: no valid recipients")
R_NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
R_IN_TRANSACTION = Reply(503, "5.5.1", "Error: not allowed during a mail transaction")
R_BAD_SEQUENCE = Reply(503, "5.5.1", "Error: bad sequence of commands")
R_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
R_RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
R_TOO_MANY_RCPT = Reply(452, "4.5.3", "Too many recipients")
# Mail for the feedback domains (mta/bounce/inbound.py) is read, not queued: never mixed.
R_FEEDBACK_APART = Reply(452, "4.5.3", "Reports to this domain go in a transaction of their own")
R_BARE_NEWLINE = Reply(550, "5.6.11", "Message contains bare CR or LF characters; "
                                      "use CRLF line endings")
R_PIPELINING = Reply(554, "5.5.0", "Error: SMTP protocol synchronization: "
                                   "command pipelined after DATA or STARTTLS")
R_LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
R_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors")
R_TIMEOUT = Reply(421, "4.4.2", "Error: timeout exceeded")
R_SHUTDOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
# RFC 5322 2.1.1 / RFC 5321 4.5.3.1.6; [smtp] long_lines = "reject". RFC 3463 5.6.0: other
# or undefined media error.
R_LONG_LINE = Reply(550, "5.6.0", f"line longer than {MAX_LINE} octets")
R_FORBIDDEN = Reply(521, "5.7.0", "Error: this is an SMTP server")
R_UTF8_ADDRESS = Reply(553, "5.6.7", "Error: SMTPUTF8 is required for a non-ASCII address")
R_TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
R_TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
R_TLS_ACTIVE = Reply(503, "5.5.1", "Error: TLS already active")
R_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R_AUTH_FAILED = Reply(535, "5.7.8", "Error: authentication failed")
R_AUTH_LOCKED = Reply(454, "4.7.0", "Error: too many authentication failures, try later")
R_AUTH_ADDRESS_CAP = Reply(421, "4.7.0", "Error: too many authentication failures from "
                                         "your address")
R_AUTH_DONE = Reply(503, "5.5.1", "Error: already authenticated")
R_AUTH_DISABLED = Reply(502, "5.5.1", "Error: authentication not enabled")
R_AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication "
                                        "mechanism")
R_AUTH_MECHANISM = Reply(504, "5.5.4", "Error: unsupported authentication mechanism")
R_AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
R_AUTH_BAD_B64 = Reply(501, "5.5.2", "Error: invalid base64 data")
R_INTERNAL = Reply(451, "4.3.0", "Error: internal error, try again later")

# Replies that are constants: the adapter encodes each once.
CONSTANT_REPLIES = tuple(v for k, v in dict(globals()).items()
                         if k.startswith("R_") and isinstance(v, Reply))

_AUTH_MECHANISMS = ("PLAIN", "LOGIN")
_LOGIN_USER = Reply(334, None, "VXNlcm5hbWU6")  # "Username:"
_LOGIN_PASS = Reply(334, None, "UGFzc3dvcmQ6")  # "Password:"
_SASL_EMPTY = Reply(334, None, "")


@functools.lru_cache(maxsize=64)
def _ehlo_reply(hostname: str, max_size: int, starttls: bool, auth: bool) -> Reply:
    """RFC 5321 4.1.1.1 / RFC 1869: the EHLO reply lists our extensions. Cached: the same
    few variants are sent on every connection (and the adapter caches their bytes)."""
    lines = [hostname, "PIPELINING", f"SIZE {max_size}", "8BITMIME", "SMTPUTF8",
             "ENHANCEDSTATUSCODES", "DSN"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH " + " ".join(_AUTH_MECHANISMS))
    return Reply(250, None, "\n".join(lines))


def greeting_reply(settings: SessionSettings) -> Reply:
    # RFC 2034 3: the greeting and the EHLO/HELO replies carry no enhanced code.
    return Reply(220, None, settings.banner.replace("{hostname}", settings.hostname))


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
        return greeting_reply(self.settings)

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
        handler = _TABLE[self.state].get(cmd.verb)
        if handler is None:
            return self._error(_OUT_OF_SEQUENCE.get((self.state, cmd.verb), R_BAD_SEQUENCE))
        if more and cmd.verb in (Verb.DATA, Verb.STARTTLS):
            self._reject("pipelining", R_PIPELINING)
            self.state = State.CLOSED
            return Send((R_PIPELINING,), close=True)
        return handler(self, cmd)

    def line_too_long(self) -> Event:
        self._reject("line_too_long", R_LINE_TOO_LONG)
        if self.state is State.AUTH:
            self._sasl, self.state = None, State.READY
        return self._error(R_LINE_TOO_LONG)

    def timeout(self) -> Send:
        reason = "data_timeout" if self.state is State.DATA else "idle_timeout"
        self._reject(reason, R_TIMEOUT)
        self.state = State.CLOSED
        return Send((R_TIMEOUT,), close=True)

    def shutdown(self) -> Send:
        self.state = State.CLOSED
        return Send((R_SHUTDOWN,), close=True)

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

    def data_done(self, reader: DataReader) -> Event:
        """The DataReader found the end marker: refuse the message or hand it over."""
        if reader.body is None:
            reply = R_TOO_BIG
            self._reject("size", reply, size=reader.size)
        elif reader.bare_newline:
            reply = R_BARE_NEWLINE
            self._reject("bare_newline", reply)
        elif self.settings.long_lines == "reject" and has_long_line(reader.body):
            reply = R_LONG_LINE
            self._reject("long_line", reply)
        else:
            info = self.info
            recipients = self._recipients
            smtputf8 = "SMTPUTF8" in self._mail_params
            data = add_headers(reader.body, info, hostname=self.settings.hostname,
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
                return Send((result or R_MAIL_OK,))
            return Send((self._policy_reject(result, "mail", sender=pending.address),))
        if isinstance(pending, CheckRcpt):
            self.state = State.RCPT if self._recipients else State.MAIL
            if result is None or (isinstance(result, Reply) and result.is_positive):
                p = pending.params
                self._recipients.append(Recipient(pending.address, p.get("NOTIFY"),
                                                  p.get("ORCPT")))
                self.state = State.RCPT
                return Send((result or R_RCPT_OK,))
            return Send((self._policy_reject(result, "rcpt", recipient=pending.address),))
        if isinstance(pending, Authenticate):
            self.state = State.READY
            if (isinstance(result, AuthResult) and result.ok and result.networks
                    and not _in_networks(self.info.client_ip, result.networks)[1]):
                # The right password from outside the user's networks: the same 535 as a
                # wrong one (no hint that the password works), the reason in the event.
                self._reject("auth_failed", R_AUTH_FAILED, user=pending.username,
                             why="client network not allowed for this user")
                return self._error(R_AUTH_FAILED)
            if isinstance(result, AuthResult) and result.ok:
                self.info.auth_user = pending.username
                self.info.tenant = result.tenant
                return Send((R_AUTH_OK,))
            if isinstance(result, AuthResult) and result.locked:
                self._reject("auth_locked", R_AUTH_LOCKED, user=pending.username)
                return self._error(R_AUTH_LOCKED)
            reply = result if isinstance(result, Reply) else R_AUTH_FAILED
            self._reject("auth_failed", reply, user=pending.username)
            if isinstance(result, AuthResult) and result.disconnect:
                # Past the address's overall cap: each guess costs a new connection.
                self._reject("auth_address_cap", R_AUTH_ADDRESS_CAP, user=pending.username)
                self.state = State.CLOSED
                return Send((reply, R_AUTH_ADDRESS_CAP), close=True)
            return self._error(reply)
        if isinstance(pending, Deliver):
            self.state = State.READY
            reply = result if isinstance(result, Reply) else R_INTERNAL
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
        if self.state in (State.MAIL, State.RCPT):
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
            reply = R_INTERNAL
        self._reject(f"policy_{stage}", reply, **fields)
        return reply

    def _error(self, reply: Reply) -> Send:
        """A protocol error: counts toward max_errors (Postfix smtpd_hard_error_limit)."""
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            self._reject("too_many_errors", R_TOO_MANY_ERRORS)
            self.state = State.CLOSED
            return Send((reply, R_TOO_MANY_ERRORS), close=True)
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
        return Send((_ehlo_reply(s.hostname, s.max_message_size,
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
        return Send((R_OK,))

    def _rset(self, cmd: Command) -> Event:
        self._reset_transaction()
        return Send((R_OK,))

    def _quit(self, cmd: Command) -> Event:
        self.state = State.CLOSED
        return Send((R_BYE,), close=True)

    def _vrfy(self, cmd: Command) -> Event:
        if not cmd.arg:
            return self._error(Reply(501, "5.5.4", "Syntax: VRFY address"))
        return Send((R_VRFY,))

    def _help(self, cmd: Command) -> Event:
        return Send((R_HELP,))

    def _expn(self, cmd: Command) -> Event:
        return self._error(R_NOT_IMPLEMENTED)

    def _forbidden(self, cmd: Command) -> Event:
        self._reject("forbidden_command", R_FORBIDDEN)
        self.state = State.CLOSED
        return Send((R_FORBIDDEN,), close=True)

    def _starttls(self, cmd: Command) -> Event:
        if self.info.tls:
            return self._error(R_TLS_ACTIVE)
        if not self.settings.tls_available:
            return self._error(R_TLS_UNAVAILABLE)
        return StartTLS(R_TLS_READY)

    def _mail(self, cmd: Command) -> Event:
        info = self.info
        if self.settings.intake_paused():  # `mta drain`: no new transaction
            self._reject("intake_paused", R_NOT_ACCEPTING, sender=cmd.address)
            self.state = State.CLOSED
            return Send((R_NOT_ACCEPTING,), close=True)
        if info.tenant is None and not self.settings.feedback_domains:
            self._reject("auth_required", R_AUTH_REQUIRED, sender=cmd.address)
            return self._error(R_AUTH_REQUIRED)
        params = cmd.params
        mail_params: dict[str, str] = {}
        if params:
            if not info.esmtp:  # RFC 5321 4.1.1.2: parameters need EHLO
                return self._error(Reply(555, "5.5.4", "Error: ESMTP parameters need EHLO"))
            for key, value in params.items():
                bad = mail_param(key, value, mail_params, self.settings.max_message_size)
                if bad is not None:
                    if bad is R_TOO_BIG:
                        self._reject("size", bad, sender=cmd.address, size=value)
                    return self._error(bad)
        if cmd.utf8 and "SMTPUTF8" not in mail_params:
            return self._error(R_UTF8_ADDRESS)
        assert cmd.address is not None
        self._mail_params = mail_params
        if info.tenant is None:  # anyone may send reports to the feedback domains (RCPT)
            self._mail_from = cmd.address
            self.state = State.MAIL
            return Send((R_MAIL_OK,))
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
            self._reject("relay_denied", R_RELAY_DENIED, recipient=cmd.address)
            return self._error(R_RELAY_DENIED)
        if self._recipients and feedback != (_domain(self._recipients[0].address) in ours):
            return Send((R_FEEDBACK_APART,))
        if len(self._recipients) >= self.settings.max_recipients:
            # RFC 5321 4.5.3.1.10: 452 tells the client to send the rest in another
            # transaction; not a protocol error.
            self._reject("max_recipients", R_TOO_MANY_RCPT, recipient=cmd.address)
            return Send((R_TOO_MANY_RCPT,))
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
            return self._error(R_UTF8_ADDRESS)
        assert cmd.address is not None
        if feedback:  # a report for us (mta/bounce/inbound.py): nobody's sending, no policy
            self._recipients.append(Recipient(cmd.address, accepted.get("NOTIFY"),
                                              accepted.get("ORCPT")))
            self.state = State.RCPT
            return Send((R_RCPT_OK,))
        self._pending = decision = CheckRcpt(cmd.address, accepted)
        self.state = State.PENDING
        return decision

    def _data(self, cmd: Command) -> Event:
        self.state = State.DATA
        return StartData(R_DATA, DataReader(self.settings.max_message_size))

    def _data_without_rcpt(self, cmd: Command) -> Event:
        return self._error(R_NO_VALID_RCPT)

    # --- AUTH (RFC 4954) --------------------------------------------------------------

    def _auth(self, cmd: Command) -> Event:
        s = self.settings
        if not s.auth_available:
            return self._error(R_AUTH_DISABLED)
        if self.info.auth_user is not None:
            return self._error(R_AUTH_DONE)
        if not self._auth_offered():
            self._reject("auth_needs_tls", R_AUTH_NEEDS_TLS)
            return self._error(R_AUTH_NEEDS_TLS)
        if s.auth_locked(self.info.client_ip):
            self._reject("auth_locked", R_AUTH_LOCKED)
            return self._error(R_AUTH_LOCKED)
        mechanism, _, initial = cmd.arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in _AUTH_MECHANISMS:
            return self._error(R_AUTH_MECHANISM)
        initial = initial.strip(" ")
        self.state = State.AUTH
        self._sasl = (mechanism, "")
        if not initial:
            return Send((_SASL_EMPTY if mechanism == "PLAIN" else _LOGIN_USER,))
        # RFC 4954 4: "=" is an empty initial response.
        return self._sasl_response(b"" if initial == "=" else initial.encode("ascii", "replace"),
                                   initial=True)

    def _sasl_response(self, line: bytes, *, initial: bool = False) -> Event:
        assert self._sasl is not None
        mechanism, username = self._sasl
        if line == b"*":
            self._sasl, self.state = None, State.READY
            return self._error(R_AUTH_CANCELLED)
        try:
            decoded = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self._sasl, self.state = None, State.READY
            return self._error(R_AUTH_BAD_B64)
        if mechanism == "LOGIN" and not username:
            self._sasl = (mechanism, decoded.decode("utf-8", "replace") or "\0")
            return Send((_LOGIN_PASS,))
        self._sasl = None
        if mechanism == "LOGIN":
            password = decoded.decode("utf-8", "replace")
        else:  # PLAIN: [authzid] NUL authcid NUL passwd (RFC 4616 2)
            parts = decoded.split(b"\0")
            if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
                self.state = State.READY
                self._reject("auth_failed", R_AUTH_FAILED)
                return self._error(R_AUTH_FAILED)
            username = parts[1].decode("utf-8", "replace")
            password = parts[2].decode("utf-8", "replace")
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
}
_OUT_OF_SEQUENCE: dict[tuple[State, Verb], Reply] = {
    **{(State.GREETED, v): R_NEED_HELO for v in (_V.MAIL, _V.RCPT, _V.DATA, _V.AUTH)},
    (State.READY, _V.RCPT): R_NEED_MAIL,
    (State.READY, _V.DATA): R_NEED_MAIL,
    (State.MAIL, _V.MAIL): R_NESTED_MAIL,
    (State.RCPT, _V.MAIL): R_NESTED_MAIL,
    **{(st, v): R_IN_TRANSACTION for st in (State.MAIL, State.RCPT)
       for v in (_V.AUTH, _V.STARTTLS)},
}
