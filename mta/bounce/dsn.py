"""Delivery status notifications (RFC 3464, RFC 6522 multipart/report, RFC 3461 rules).

Owns the decision whether a DSN is due (null sender, NOTIFY) and the bytes of the DSN: a
`multipart/report; report-type=delivery-status` message with a human-readable part, the
`message/delivery-status` part and the original message (`message/rfc822`) or only its
headers (`text/rfc822-headers`). Built with the stdlib `email` package; CRLF line endings.

The caller sends the result with the null reverse-path (`MAIL FROM:<>`, RFC 3461 6.2 /
RFC 5321 4.5.5) to `RCPT TO:<mail_from>`. The returned original may carry 8-bit text
(message/rfc822 must not be base64-encoded, RFC 2046 5.2.1): send it with BODY=8BITMIME
when `dsn_is_8bit(data)`.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Literal, Protocol

from mta.rfc5321 import Reply, xtext_decode

__all__ = [
    "DsnMessage",
    "RecipientStatus",
    "dsn_is_8bit",
    "make_dsn",
    "notify_wants",
]

DsnAction = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

# SMTP policy: CRLF and 78-column folding for the headers we write; headers of the original
# are written back exactly as received (refold_source="none"), so its DKIM signature and
# its bytes survive.
_POLICY = email_policy.SMTP.clone(refold_source="none")

# RFC 3461 4.1: which NOTIFY keyword asks for a DSN with which action.
_NOTIFY_FOR_ACTION = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS",
                      "relayed": "SUCCESS", "expanded": "SUCCESS"}
# RFC 3461 4.1: without NOTIFY, "FAILURE" or "FAILURE,DELAY" at the MTA's choice; we send
# delay warnings only when [delivery] delay_warning is set, which the caller decides.
_DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One recipient's fate, as reported in its per-recipient block (RFC 3464 2.3)."""

    address: str  # the RCPT TO address (Final-Recipient)
    action: DsnAction
    reply: Reply | None = None  # the remote (or local) reply -> Diagnostic-Code, Status
    status: str | None = None  # RFC 3463 status; default: reply.enhanced, else by action
    remote_mta: str = ""  # MX host name that gave `reply` (Remote-MTA)
    orcpt: str | None = None  # ORCPT= as received (xtext), e.g. "rfc822;bob@example.com"
    notify: str | None = None  # NOTIFY= as received, e.g. "FAILURE,DELAY"; None: not given
    last_attempt: float | None = None  # unix time (Last-Attempt-Date)
    will_retry_until: float | None = None  # unix time, for "delayed" (Will-Retry-Until)

    @classmethod
    def from_reply(cls, address: str, reply: Reply | None, *, action: DsnAction = "failed",
                   orcpt: str | None = None, notify: str | None = None,
                   remote_mta: str = "", expired: bool = False,
                   last_attempt: float | None = None,
                   will_retry_until: float | None = None) -> RecipientStatus:
        """A recipient's status from its last reply. `expired`: the queue gave up on a
        transient failure, reported as RFC 3463 4.4.7 with that reply as diagnostic."""
        return cls(address, action, reply, "4.4.7" if expired else None, remote_mta, orcpt,
                   notify, last_attempt, will_retry_until)

    def status_code(self) -> str:
        if self.status:
            return self.status
        if self.reply is not None and self.reply.enhanced:
            return self.reply.enhanced
        if self.action == "delayed":
            return "4.0.0"
        if self.action == "failed":
            return "4.0.0" if self.reply is not None and self.reply.is_transient else "5.0.0"
        return "2.0.0"


def notify_wants(notify: str | None, action: str) -> bool:
    """Does a recipient's NOTIFY parameter ask for a DSN with this action? (RFC 3461 4.1)"""
    if notify is None or not notify.strip():
        wanted = _DEFAULT_NOTIFY
    else:
        wanted = frozenset(k.strip().upper() for k in notify.split(","))
        if "NEVER" in wanted:
            return False
    return _NOTIFY_FOR_ACTION.get(action, "") in wanted


def dsn_is_8bit(data: bytes) -> bool:
    return not data.isascii()


def _ascii(text: str) -> str:
    """A DSN field value in ASCII: other characters as RFC 6533's \\x{HEX}, no controls."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    if text.isascii():
        return text.strip()
    return "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in text).strip()


def _address_field(address: str) -> str:
    # RFC 6533 3: a non-ASCII address is of type utf-8, with \x{HEX} escapes in this part.
    return f"rfc822; {address}" if address.isascii() else f"utf-8; {_ascii(address)}"


def _original_recipient(orcpt: str) -> str:
    kind, sep, addr = xtext_decode(orcpt, strict=False).partition(";")
    if not sep:
        kind, addr = "rfc822", kind
    return f"{kind.strip()}; {_ascii(addr.strip())}"


def _date(t: float) -> str:
    return format_datetime(dt.datetime.fromtimestamp(t, dt.UTC))


def _diagnostic(reply: Reply) -> str:
    # The reply as the server sent it, its lines joined on one (folded) field.
    lines = reply.to_bytes().decode("utf-8", "replace").split("\r\n")
    return "smtp; " + _ascii(" ".join(ln for ln in lines if ln))


def _split_header(original: bytes) -> bytes:
    """The header section of a message, with its final line ending (RFC 5322 2.1)."""
    ends = [i for i in (original.find(b"\r\n\r\n"), original.find(b"\n\n")) if i >= 0]
    if not ends:
        return original
    end = min(ends)
    return original[:end] + (b"\r\n" if original[end:end + 2] == b"\r\n" else b"\n")


def _crlf(data: bytes) -> bytes:
    """Bare LF line endings to CRLF (RFC 5322 2.1), CRLF ones left alone."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data) if b"\n" in data else data


def _human_text(reporting_mta: str, shown: Sequence[RecipientStatus]) -> str:
    out = [f"This is the mail system at host {reporting_mta}.", ""]
    groups: list[tuple[set[str], str]] = [
        ({"failed"}, "Your message could not be delivered to the recipients below. This is "
                     "a permanent error: the mail system has given up."),
        ({"delayed"}, "Your message could not be delivered yet to the recipients below. "
                      "The mail system will keep trying; you do not need to send it again."),
        ({"delivered", "expanded"},
         "Your message was delivered to the recipients below, as you asked."),
        ({"relayed"},
         "Your message was delivered to the mail servers of the recipients below, as you "
         "asked. Those servers do not report delivery status: this is the last report "
         "you will get."),
    ]
    for actions, intro in groups:
        rcpts = [r for r in shown if r.action in actions]
        if not rcpts:
            continue
        out += [intro, ""]
        for r in rcpts:
            line = f"<{r.address}>"
            if r.reply is not None:
                who = f"host {r.remote_mta} said" if r.remote_mta else "the reason was"
                line += f": {who}: {r.reply}"
            if r.action == "delayed" and r.will_retry_until is not None:
                line += f" (retrying until {_date(r.will_retry_until)})"
            out += [line, ""]
    out.append("The delivery report and the original message (or its headers) follow.")
    # Short lines keep this part plain 7bit text that any mail reader shows as is.
    return "\n".join(textwrap.fill(p, 76, break_long_words=False, break_on_hyphens=False)
                     for p in out) + "\n"


class DsnMessage(Protocol):
    """What a DSN needs to know of the message: `mta.queue`'s Envelope and MessageInfo."""

    mail_from: str  # "" is the null reverse-path
    mail_params: dict[str, str]  # MAIL FROM parameters: RET, ENVID (xtext, as received)
    client_ip: str
    helo: str
    received_at: float  # unix time; 0 if unknown


def make_dsn(
    message: DsnMessage,
    recipients: Sequence[RecipientStatus],
    original: bytes | None,
    *,
    reporting_mta: str,
    max_returned_size: int = 50_000,
    now: float | None = None,
) -> bytes | None:
    """The DSN for these recipients of `message`, or None when none is due.

    None when the envelope sender is null (RFC 3461 6.2: never a DSN about a DSN, or any
    other mail sent from <>) or when no recipient's NOTIFY asks for its action. `original`
    is the message as spooled (None: no third part); `reporting_mta` is `[bounce]
    reporting_mta` or else `[server] hostname`, `max_returned_size` `[bounce]
    max_returned_size`; `now` is the injected clock's unix time.
    """
    mail_from = message.mail_from
    if mail_from in ("", "<>"):
        return None
    params = {k.upper(): v for k, v in message.mail_params.items()}
    envid, ret = params.get("ENVID"), params.get("RET")
    arrival_date = message.received_at or None
    received_from_mta = None
    if message.helo or message.client_ip:
        received_from_mta = (f"{message.helo} ([{message.client_ip}])" if message.helo
                             and message.client_ip else message.helo or f"[{message.client_ip}]")
    shown = [r for r in recipients if notify_wants(r.notify, r.action)]
    if not shown:
        return None
    now = time.time() if now is None else now
    any_failed = any(r.action == "failed" for r in shown)

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    msg["To"] = f"<{mail_from}>"
    if any_failed:
        msg["Subject"] = "Undelivered Mail Returned to Sender"
    elif any(r.action == "delayed" for r in shown):
        msg["Subject"] = "Delayed Mail (still being retried)"
    else:
        msg["Subject"] = "Successful Mail Delivery Report"
    msg["Date"] = _date(now)
    msg["Message-ID"] = make_msgid(domain=reporting_mta)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 5: no auto-replies to this
    msg["MIME-Version"] = "1.0"

    text = MIMEPart(policy=_POLICY)
    human = _human_text(reporting_mta, shown)
    if max(len(line) for line in human.splitlines()) < 998:  # RFC 5322 2.1.1
        text.set_content(human, cte="7bit" if human.isascii() else "8bit")
    else:
        text.set_content(human)
    text["Content-Description"] = "Notification"

    # RFC 3464 2.2: per-message fields, then one block per recipient.
    per_message = Message(policy=_POLICY)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    if envid:
        per_message["Original-Envelope-Id"] = _ascii(xtext_decode(envid, strict=False))
    if received_from_mta:
        per_message["Received-From-MTA"] = f"dns; {_ascii(received_from_mta)}"
    if arrival_date is not None:
        per_message["Arrival-Date"] = _date(arrival_date)
    blocks = [per_message]
    for r in shown:
        b = Message(policy=_POLICY)
        if r.orcpt:
            b["Original-Recipient"] = _original_recipient(r.orcpt)
        b["Final-Recipient"] = _address_field(r.address)
        b["Action"] = r.action
        b["Status"] = r.status_code()
        if r.remote_mta:
            b["Remote-MTA"] = f"dns; {_ascii(r.remote_mta)}"
        if r.reply is not None:
            b["Diagnostic-Code"] = _diagnostic(r.reply)
        if r.last_attempt is not None:
            b["Last-Attempt-Date"] = _date(r.last_attempt)
        if r.action == "delayed" and r.will_retry_until is not None:
            b["Will-Retry-Until"] = _date(r.will_retry_until)
        blocks.append(b)
    status = MIMEPart(policy=_POLICY)
    status["Content-Type"] = "message/delivery-status"
    status["Content-Description"] = "Delivery report"
    status.set_payload(blocks)

    parts: list[Message] = [text, status]
    if original is not None:
        parts.append(_returned(original, ret, any_failed, max_returned_size))
        # compat32: the raw value; a malformed Message-ID must not break the DSN.
        orig_id = str(BytesParser(policy=email_policy.compat32).parsebytes(
            _split_header(original), headersonly=True).get("Message-ID", "")).strip()
        if re.fullmatch(r"<[\x21-\x7e]+>", orig_id):
            msg["References"] = orig_id

    msg["Content-Type"] = "multipart/report; report-type=delivery-status"
    msg.set_payload(parts)
    # Generated as text, then encoded: bytes of the original that are not ASCII travel as
    # surrogate escapes and come back out unchanged (BytesGenerator would refuse them in
    # a message/rfc822 payload).
    pol = _POLICY if mail_from.isascii() else _POLICY.clone(utf8=True)  # RFC 6531 sender
    return msg.as_string(policy=pol).encode("utf-8", "surrogateescape")


def _returned(original: bytes, ret: str | None, any_failed: bool, limit: int) -> MIMEPart:
    """The original (RET=FULL or none, within the size limit) or only its headers.

    RFC 3461 4.3: FULL applies to failure notices only, and an MTA may return just the
    headers of a message larger than its limit."""
    part = MIMEPart(policy=_POLICY)
    want_full = any_failed and (ret or "FULL").upper() != "HDRS"
    if want_full and len(original) <= limit:
        part["Content-Type"] = "message/rfc822"
        part["Content-Description"] = "Undelivered message"
        # The original goes in verbatim, as one opaque payload: re-generating it through
        # the email package would re-encode parts of it (and fails on broken MIME).
        part.set_payload(_crlf(original).decode("ascii", "surrogateescape"))
        return part
    part["Content-Type"] = "text/rfc822-headers"
    part["Content-Description"] = "Undelivered message headers"
    headers = _split_header(original).decode("ascii", "surrogateescape")
    if not headers.isascii():
        part["Content-Transfer-Encoding"] = "8bit"
    part.set_payload(headers)
    return part
