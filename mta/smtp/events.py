"""What the SMTP session (mta.smtp.session) hands its I/O adapter (mta.smtp.server): send
these replies, start TLS, read the message bytes, or await a decision (policy at MAIL and
RCPT, a password check, storing the message) and call `Session.decide()` with it. Like
h11's events: plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

from mta.queue.envelope import Envelope
from mta.rfc5321.reply import Reply
from mta.smtp.data import ChunkReader, DataReader

__all__ = ["Authenticate", "CheckMail", "CheckRcpt", "Decision", "Deliver", "Event", "Send",
           "StartData", "StartTLS"]


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
    """Send `reply` (354; None for a BDAT chunk: nothing), then feed the message bytes to
    `reader`, then `data_done()`."""

    reply: Reply | None
    reader: DataReader | ChunkReader


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
