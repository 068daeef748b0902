"""The sans-IO session, as C:/S: transcripts: no socket, no event loop.

Each test runs the C: lines through `Session` and compares the whole transcript it
produced (replies rendered as on the wire) with the expected one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from mta.observe.events import EventLog
from mta.rfc5321.reply import Reply
from mta.smtp.auth import AuthResult
from mta.smtp.handler import SessionInfo
from mta.smtp.session import (
    Authenticate,
    CheckMail,
    CheckRcpt,
    Deliver,
    Send,
    Session,
    SessionSettings,
    StartData,
    StartTLS,
    State,
)

USERS = {"alice": ("secret", "acme")}
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def settings(**kw: Any) -> SessionSettings:
    base: dict[str, Any] = dict(hostname="mx.test", max_message_size=10_000,
                                relay_networks=(LOOPBACK,), auth_available=True)
    base.update(kw)
    return SessionSettings(**base)


def default_decide(ev: Any, delivered: list[Deliver]) -> Any:
    if isinstance(ev, Authenticate):
        user = USERS.get(ev.username)
        return AuthResult(True, user[1]) if user and user[0] == ev.password else AuthResult(False)
    if isinstance(ev, Deliver):
        delivered.append(ev)
        return Reply(250, "2.0.0", f"Ok: queued as {len(delivered):08X}")
    return None


class Run:
    """Runs a transcript; keeps the session, the delivered messages and the events."""

    def __init__(self, ip: str = "127.0.0.1", decide: Callable[..., Any] | None = None,
                 **kw: Any) -> None:
        self.events = EventLog(None, keep_recent=100)
        self.session = Session(settings(**kw), SessionInfo(ip, 40000), self.events)
        self.delivered: list[Deliver] = []
        self.decide = decide or (lambda ev: default_decide(ev, self.delivered))
        self.closed = False

    def _render(self, out: list[str], replies: tuple[Reply, ...]) -> None:
        for r in replies:
            out.extend("S: " + ln for ln in r.to_bytes().decode().split("\r\n") if ln)

    def _handle(self, ev: Any, out: list[str]) -> None:
        while isinstance(ev, CheckMail | CheckRcpt | Authenticate | Deliver):
            ev = self.session.decide(self.decide(ev))
        if isinstance(ev, Send):
            self._render(out, ev.replies)
            self.closed = self.closed or ev.close
        elif isinstance(ev, StartData | StartTLS):
            self._render(out, (ev.reply,))
            if isinstance(ev, StartData):
                self.reader = ev.reader
        self.last = ev

    def __call__(self, text: str) -> None:
        """Play the C: lines of `text`; assert the S: lines are what the server said."""
        # Lines are stripped, so transcripts can be indented freely; in DATA, "<LF>" and
        # "<CR>" in a C: line stand for a bare LF / CR.
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        expected = "\n".join(lines)
        out: list[str] = []
        reader = None
        for line in lines:
            if not line.startswith("C:"):
                continue
            data = line[3:]
            out.append(line)
            if reader is not None:
                raw = data.replace("<LF>", "\n").replace("<CR>", "\r")
                rest = reader.feed(raw.encode() + b"\r\n")
                if rest is not None:
                    reader = None
                    self._handle(self.session.data_done(self.reader), out)
                continue
            self._handle(self.session.handle_line(data.encode()), out)
            if isinstance(self.last, StartData):
                reader = self.reader
        if not expected.startswith("S: "):
            actual = "\n".join(out)
        else:  # the transcript starts with the greeting
            actual = "\n".join(["S: " + str(self.session.greeting()), *out])
        assert actual == expected, f"\n--- got ---\n{actual}\n--- expected ---\n{expected}"

    def rejected(self) -> list[str]:
        return [e["reason"] for e in self.events.recent if e["event"] == "rejected"]


# --- RFC 5321 4.3.2 sequencing ------------------------------------------------------------

def test_4_3_2_a_whole_relay_session():
    run = Run()
    run("""
        S: 220 mx.test ESMTP mta
        C: EHLO client.test
        S: 250-mx.test
        S: 250-PIPELINING
        S: 250-SIZE 10000
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-DSN
        S: 250 AUTH PLAIN LOGIN
        C: MAIL FROM:<alice@client.test> SIZE=100 BODY=8BITMIME
        S: 250 2.1.0 Ok
        C: RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@example.com
        S: 250 2.1.5 Ok
        C: RCPT TO:<carol@example.com>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hi
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 Ok: queued as 00000001
        C: QUIT
        S: 221 2.0.0 Bye
    """)
    assert run.closed
    (msg,) = run.delivered
    env = msg.envelope
    assert (env.tenant, env.mail_from, env.helo) == ("default", "alice@client.test",
                                                     "client.test")
    assert env.mail_params == {"BODY": "8BITMIME"}
    assert [(r.address, r.notify, r.orcpt) for r in env.recipients] == [
        ("bob@example.com", "SUCCESS,FAILURE", "rfc822;bob+2Bx@example.com"),  # xtext
        ("carol@example.com", None, None)]
    assert msg.data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test")
    assert msg.data.endswith(b"\r\n\r\n.leading dot\r\n")
    assert b"\r\nSubject: hi\r\nMessage-ID: <" in msg.data


def test_4_1_4_mail_before_ehlo_is_503():
    Run()("""
        C: MAIL FROM:<a@b.test>
        S: 503 5.5.1 Error: send HELO/EHLO first
    """)


def test_4_1_4_out_of_sequence_commands_are_503():
    Run()("""
        C: HELO client.test
        S: 250 mx.test
        C: RCPT TO:<b@c.test>
        S: 503 5.5.1 Error: need MAIL command
        C: DATA
        S: 503 5.5.1 Error: need MAIL command
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: MAIL FROM:<a@b.test>
        S: 503 5.5.1 Error: nested MAIL command
        C: DATA
        S: 554 5.5.1 Error: no valid recipients
        C: RSET
        S: 250 2.0.0 Ok
        C: RCPT TO:<b@c.test>
        S: 503 5.5.1 Error: need MAIL command
    """)


def test_4_1_4_ehlo_in_a_transaction_resets_it():
    Run()(f"""
        C: EHLO a
        {_ehlo_lines()}
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@c.test>
        S: 250 2.1.5 Ok
        C: EHLO again
        {_ehlo_lines()}
        C: DATA
        S: 503 5.5.1 Error: need MAIL command
    """)


def _ehlo_lines(extra: tuple[str, ...] = ("AUTH PLAIN LOGIN",)) -> str:
    ext = ["PIPELINING", "SIZE 10000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN",
           *extra]
    lines = ["mx.test", *ext]
    return "\n".join(f"S: 250{'-' if i < len(lines) - 1 else ' '}{ln}"
                     for i, ln in enumerate(lines))


def test_3_5_3_vrfy_is_252_and_help_noop_answer():
    Run()("""
        C: VRFY someone
        S: 252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery
        C: NOOP
        S: 250 2.0.0 Ok
        C: HELP
        S: 214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)
        C: EXPN list
        S: 502 5.5.1 Error: command not implemented
        C: HELO
        S: 501 5.5.4 Syntax: HELO hostname
    """)


def test_http_request_is_refused_and_closed():
    run = Run()
    run("""
        C: GET / HTTP/1.1
        S: 521 5.7.0 Error: this is an SMTP server
    """)
    assert run.closed and run.rejected() == ["forbidden_command"]


# --- relay control ------------------------------------------------------------------------

def test_unauthenticated_client_outside_relay_networks_gets_530_at_mail():
    run = Run(ip="192.0.2.7", auth_require_tls=False)
    run("""
        C: HELO outside.test
        S: 250 mx.test
        C: MAIL FROM:<a@b.test>
        S: 530 5.7.0 Authentication required
        C: RCPT TO:<b@c.test>
        S: 503 5.5.1 Error: need MAIL command
    """)
    assert run.rejected() == ["auth_required"]
    assert run.events.recent[0]["client_ip"] == "192.0.2.7"


def test_rcpt_without_tenant_is_554_relay_denied():
    run = Run(ip="192.0.2.7")
    run.session.state = State.MAIL  # only reachable through a bug: the last line of defence
    run("""
        C: RCPT TO:<b@c.test>
        S: 554 5.7.1 Relay access denied
    """)
    assert run.rejected() == ["relay_denied"]


def test_rfc4954_authenticated_user_relays_as_its_tenant():
    run = Run(ip="192.0.2.7", auth_require_tls=False)
    run("""
        C: HELO outside.test
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 Error: already authenticated
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
    """)
    assert (run.session.info.tenant, run.session.info.auth_user) == ("acme", "alice")


def test_rfc4954_4_auth_login_exchange():
    run = Run()
    run("""
        C: EHLO c
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: YWxpY2U=
        S: 334 UGFzc3dvcmQ6
        C: c2VjcmV0
        S: 235 2.7.0 Authentication successful
    """.replace("C: EHLO c", "C: EHLO c\n" + _ehlo_lines()))
    assert run.session.info.tenant == "acme"


def test_rfc4954_4_plain_without_initial_response_and_cancel():
    run = Run()
    run("""
        C: HELO c
        S: 250 mx.test
        C: AUTH PLAIN
        S: 334
        C: *
        S: 501 5.7.0 Authentication cancelled
        C: AUTH PLAIN
        S: 334
        C: not base64!
        S: 501 5.5.2 Error: invalid base64 data
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Error: unsupported authentication mechanism
    """)


def test_rfc4954_6_wrong_password_is_535_5_7_8():
    run = Run()
    run("""
        C: HELO c
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHdyb25n
        S: 535 5.7.8 Error: authentication failed
    """)
    assert run.rejected() == ["auth_failed"]
    assert run.session.info.auth_user is None


def test_right_password_from_outside_the_users_networks_is_the_same_535():
    office = ipaddress.ip_network("198.51.100.0/24")

    def decide(ev: Any) -> Any:
        if isinstance(ev, Authenticate):
            return AuthResult(True, "acme", networks=(office,))
        return None

    outside = Run(ip="192.0.2.7", decide=decide, auth_require_tls=False)
    outside("""
        C: HELO c
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 535 5.7.8 Error: authentication failed
    """)
    [event] = [e for e in outside.events.recent if e["event"] == "rejected"]
    assert (event["reason"], event["user"]) == ("auth_failed", "alice")
    assert event["why"] == "client network not allowed for this user"
    assert outside.session.info.auth_user is None

    inside = Run(ip="198.51.100.9", decide=decide, auth_require_tls=False)
    inside("""
        C: HELO c
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
    """)


def test_auth_locked_client_gets_454_4_7_0():
    run = Run(auth_locked=lambda ip: True)
    run("""
        C: HELO c
        S: 250 mx.test
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 454 4.7.0 Error: too many authentication failures, try later
    """)


def test_rfc4954_4_auth_without_tls_from_non_loopback_is_538_and_not_offered():
    run = Run(ip="192.0.2.7", tls_available=True)
    run(f"""
        C: EHLO c
        {_ehlo_lines(("STARTTLS",))}
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 538 5.7.11 Encryption required for requested authentication mechanism
    """)
    run.session.tls_started("TLSv1.3")
    run(f"""
        C: EHLO c
        {_ehlo_lines()}
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
    """)


def test_auth_during_a_transaction_is_503():
    Run()("""
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 Error: not allowed during a mail transaction
    """)


# --- RFC 3207 STARTTLS ------------------------------------------------------------------

def test_rfc3207_4_2_state_is_reset_after_tls():
    run = Run(ip="192.0.2.7", tls_available=True, auth_require_tls=False)
    run(f"""
        C: EHLO c
        {_ehlo_lines(("STARTTLS", "AUTH PLAIN LOGIN"))}
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 235 2.7.0 Authentication successful
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
    """)
    run.session.tls_started("TLSv1.3")
    assert run.session.info.auth_user is None and run.session.info.tenant is None
    run("""
        C: MAIL FROM:<a@b.test>
        S: 503 5.5.1 Error: send HELO/EHLO first
        C: STARTTLS
        S: 503 5.5.1 Error: TLS already active
    """)


def test_starttls_without_certificate_is_454():
    Run()("""
        C: STARTTLS
        S: 454 4.7.0 TLS not available
    """)


# --- RFC 2920 pipelining ---------------------------------------------------------------------

def test_rfc2920_3_1_command_pipelined_after_data_is_refused_and_closed():
    run = Run()
    run("""
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@c.test>
        S: 250 2.1.5 Ok
    """)
    ev = run.session.handle_line(b"DATA", more=True)
    assert isinstance(ev, Send) and ev.close
    assert str(ev.replies[0]).startswith("554 5.5.0")
    assert run.rejected() == ["pipelining"]


# --- parameters: SIZE (RFC 1870), BODY (6152), SMTPUTF8 (6531), DSN (3461) --------------------

def test_rfc1870_size_above_maximum_is_552_5_3_4_at_mail():
    run = Run()
    run("""
        C: EHLO c
        C: MAIL FROM:<a@b.test> SIZE=10001
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@b.test> SIZE=x
        S: 501 5.5.4 Error: bad SIZE= value
    """.replace("C: EHLO c", "C: EHLO c\n" + _ehlo_lines()))
    assert run.rejected() == ["size"]


def test_unknown_parameter_is_555_5_5_4_and_params_need_ehlo():
    Run()(f"""
        C: EHLO c
        {_ehlo_lines()}
        C: MAIL FROM:<a@b.test> X-UNKNOWN=1
        S: 555 5.5.4 Error: unsupported parameter X-UNKNOWN
        C: MAIL FROM:<a@b.test> BODY=BINARYMIME
        S: 501 5.5.4 Error: BODY= must be 7BIT or 8BITMIME
        C: MAIL FROM:<a@b.test> RET=FULL ENVID=QQ+2B1
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@c.test> NOTIFY=NEVER,SUCCESS
        S: 501 5.5.4 Error: bad NOTIFY= value
        C: RCPT TO:<b@c.test> FOO=1
        S: 555 5.5.4 Error: unsupported parameter FOO
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<a@b.test> SIZE=1
        S: 555 5.5.4 Error: ESMTP parameters need EHLO
    """)


def test_rfc3461_envid_is_decoded_into_the_envelope():
    run = Run()
    run(f"""
        C: EHLO c
        {_ehlo_lines()}
        C: MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B1 AUTH=<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@c.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as 00000001
    """)
    assert run.delivered[0].envelope.mail_params == {"RET": "HDRS", "ENVID": "QQ+2B1"}  # xtext


def test_rfc6531_utf8_address_needs_smtputf8():
    run = Run()
    run(f"""
        C: EHLO c
        {_ehlo_lines()}
        C: MAIL FROM:<jösé@b.test>
        S: 553 5.6.7 Error: SMTPUTF8 is required for a non-ASCII address
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<bücher@c.test>
        S: 553 5.6.7 Error: SMTPUTF8 is required for a non-ASCII address
        C: RSET
        S: 250 2.0.0 Ok
        C: MAIL FROM:<jösé@b.test> SMTPUTF8
        S: 250 2.1.0 Ok
        C: RCPT TO:<bücher@c.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: ü
        C: .
        S: 250 2.0.0 Ok: queued as 00000001
    """)
    assert b"with UTF8SMTP" in run.delivered[0].data


# --- limits -------------------------------------------------------------------------------

def test_4_5_3_1_10_recipients_over_max_are_452_4_5_3():
    run = Run(max_recipients=2)
    run("""
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<1@c.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<2@c.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<3@c.test>
        S: 452 4.5.3 Too many recipients
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as 00000001
    """)
    assert len(run.delivered[0].envelope.recipients) == 2
    assert run.rejected() == ["max_recipients"]


def test_too_many_errors_is_421_4_7_0_and_close():
    run = Run(max_errors=3)
    run("""
        C: FOO
        S: 500 5.5.2 Error: command not recognized
        C: BAR
        S: 500 5.5.2 Error: command not recognized
        C: MAIL FROM:<a@b.test>
        S: 503 5.5.1 Error: send HELO/EHLO first
        S: 421 4.7.0 Error: too many errors
    """)
    assert run.closed and run.rejected() == ["too_many_errors"]


def test_message_with_bare_lf_is_550_5_6_11():
    run = Run()
    run("""
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<b@c.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: one<LF>.<LF>two
        C: .
        S: 550 5.6.11 Message contains bare CR or LF characters; use CRLF line endings
        C: MAIL FROM:<a@b.test>
        S: 250 2.1.0 Ok
    """)
    assert run.delivered == [] and run.rejected() == ["bare_newline"]


def test_policy_replies_are_sent_verbatim():
    def decide(ev: Any) -> Any:
        if isinstance(ev, CheckMail) and ev.address == "blocked@b.test":
            return Reply(550, "5.7.1", "Sender blocked by policy")
        if isinstance(ev, CheckRcpt) and ev.address == "over@c.test":
            return Reply(452, "4.2.2", "Quota exceeded")
        if isinstance(ev, Deliver):
            return Reply(451, "4.3.0", "Spool unavailable")
        return None

    run = Run(decide=decide)
    run("""
        C: HELO c
        S: 250 mx.test
        C: MAIL FROM:<blocked@b.test>
        S: 550 5.7.1 Sender blocked by policy
        C: MAIL FROM:<ok@b.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<over@c.test>
        S: 452 4.2.2 Quota exceeded
        C: DATA
        S: 554 5.5.1 Error: no valid recipients
        C: RCPT TO:<fine@c.test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 451 4.3.0 Spool unavailable
    """)
    assert run.rejected() == ["policy_mail", "policy_rcpt", "data"]
    assert run.session.errors == 1  # only the DATA without recipients was a protocol error


def test_line_too_long_and_timeout_replies():
    run = Run()
    ev = run.session.line_too_long()
    assert str(ev.replies[0]) == "500 5.5.2 Error: line too long"
    ev = run.session.timeout()
    assert str(ev.replies[0]) == "421 4.4.2 Error: timeout exceeded" and ev.close
    assert run.rejected() == ["line_too_long", "idle_timeout"]
