"""The SMTP server's replies (RFC 5321 4.2, enhanced status codes RFC 3463), one name
each, for the session (mta.smtp.session) to choose from. `CONSTANT_REPLIES` lists them so
that the adapter encodes each once."""

from __future__ import annotations

import functools

from mta.rfc5321.reply import Reply
from mta.smtp.intake import R_NOT_ACCEPTING  # noqa: F401  (in CONSTANT_REPLIES; the session's)
from mta.smtp.longlines import MAX_LINE
from mta.smtp.params import R_TOO_BIG  # noqa: F401  (in CONSTANT_REPLIES; the session's)
from mta.smtp.sasl import MECHANISMS
from mta.smtp.settings import SessionSettings

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
R_BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
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

# Replies that are constants: the adapter encodes each once (R_NOT_ACCEPTING and R_TOO_BIG,
# imported above, included).
CONSTANT_REPLIES = tuple(v for k, v in dict(globals()).items()
                         if k.startswith("R_") and isinstance(v, Reply))


@functools.lru_cache(maxsize=64)
def ehlo_reply(hostname: str, max_size: int, starttls: bool, auth: bool) -> Reply:
    """RFC 5321 4.1.1.1 / RFC 1869: the EHLO reply lists our extensions. Cached: the same
    few variants are sent on every connection (and the adapter caches their bytes)."""
    lines = [hostname, "PIPELINING", f"SIZE {max_size}", "8BITMIME", "SMTPUTF8",
             "ENHANCEDSTATUSCODES", "DSN", "CHUNKING"]
    if starttls:
        lines.append("STARTTLS")
    if auth:
        lines.append("AUTH " + " ".join(MECHANISMS))
    return Reply(250, None, "\n".join(lines))


def greeting_reply(settings: SessionSettings) -> Reply:
    # RFC 2034 3: the greeting and the EHLO/HELO replies carry no enhanced code.
    return Reply(220, None, settings.banner.replace("{hostname}", settings.hostname))
