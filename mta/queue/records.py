"""What the spool hands out and takes back: message and recipient views, pending work,
delivery outcomes, and the errors a put can end with.

These are plain values shared by delivery/, http/ and cli/; the spool is their only
producer (MessageInfo, RecipientInfo, PendingRecipient) or consumer (Outcome).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mta.rfc5321.reply import Reply

__all__ = [
    "MESSAGE_STATES",
    "RECIPIENT_STATES",
    "MessageInfo",
    "Outcome",
    "OutcomeState",
    "PendingRecipient",
    "RecipientInfo",
    "SpoolError",
    "SpoolFullError",
]

MESSAGE_STATES = ("queued", "held", "done")
RECIPIENT_STATES = ("queued", "held", "delivered", "bounced", "expired")
FINAL_STATES = ("delivered", "bounced", "expired")

OutcomeState = Literal["delivered", "deferred", "bounced", "expired"]


class SpoolError(Exception):
    """The spool could not store or update something; `reply` is what SMTP answers."""

    reply = Reply(451, "4.3.0", "Temporary local problem, please try again later")

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        if reply is not None:
            self.reply = reply


class SpoolFullError(SpoolError):
    """SQLITE_FULL: the disk (or the configured size limit) is full. RFC 3463 4.3.1."""

    reply = Reply(452, "4.3.1", "Insufficient system storage, please try again later")


@dataclass(frozen=True, slots=True)
class RecipientInfo:
    index: int  # position in the envelope, stable for the message's life
    address: str
    notify: str | None
    orcpt: str | None
    state: str  # one of RECIPIENT_STATES
    attempts: int
    next_attempt: float  # unix time; 0 means "as soon as possible"
    last_reply: Reply | None
    site: str | None  # MX rollup, once known
    updated_at: float
    warned: bool = False  # a "delayed" DSN was sent for it


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: str
    tenant: str
    mail_from: str
    mail_params: dict[str, str]
    client_ip: str
    helo: str
    auth_user: str | None
    received_at: float
    state: str  # one of MESSAGE_STATES
    size: int
    recipients: list[RecipientInfo] = field(default_factory=list)
    msg_class: str = ""
    expires_at: float = 0.0  # 0: received_at + [delivery] max_age
    pool: str = ""  # egress pool decided at acceptance; "": resolve from the tenant
    parents: tuple[str, ...] = ()  # the tenant's ancestors at acceptance (Envelope.parents)


@dataclass(frozen=True, slots=True)
class PendingRecipient:
    """One `queued` recipient, as recovery streams it to the scheduler."""

    msg_id: str
    index: int
    tenant: str
    address: str
    site: str | None
    attempts: int
    next_attempt: float
    received_at: float
    pool: str = ""  # the message's egress pool (Envelope.pool)
    parents: tuple[str, ...] = ()  # the tenant's ancestors (Envelope.parents)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one delivery attempt (or of expiry) for one recipient.

    `deferred` keeps the recipient queued until `next_attempt`; the others are final.
    `attempted=False` records a state without counting an attempt (expiry found by the
    scheduler, an admin bounce).
    """

    msg_id: str
    index: int
    state: OutcomeState
    reply: Reply | None = None
    next_attempt: float = 0.0
    site: str | None = None
    attempted: bool = True
    warned: bool = False  # a "delayed" DSN goes out with this deferral: remember it
