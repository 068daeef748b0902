"""What the SMTP server asks of the rest of mta: the `IngressHandler` protocol.

The server knows nothing about policy or the spool. At MAIL, at each RCPT and at the end of
DATA it awaits the handler that `mta serve` passed in. `SessionInfo` is what the handler
learns about the client.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mta.queue.envelope import Envelope
from mta.rfc5321.reply import Reply

if TYPE_CHECKING:
    from mta.policy.engine import PolicyTxn

__all__ = ["IngressHandler", "SessionInfo"]


@dataclass(slots=True)
class SessionInfo:
    """One SMTP connection as policy sees it. Updated in place as the session goes on."""

    client_ip: str
    client_port: int
    helo: str = ""  # the EHLO/HELO argument; "" before it
    esmtp: bool = False  # EHLO (True) or HELO (False)
    tenant: str | None = None  # who relays: the AUTH user's tenant, "default" by network
    auth_user: str | None = None
    tls: bool = False
    tls_version: str | None = None  # "TLSv1.3"
    session_id: str = ""  # short id for logs
    # The policy transaction the handler opened at MAIL (its reservations), until the end
    # of DATA; the server only asks whether there is one when the connection is lost.
    transaction: PolicyTxn | None = None


class IngressHandler(Protocol):
    """`None` means "go on"; a `Reply` is sent to the client as is.

    Each method may answer at once (return the value) or return an awaitable (an `async
    def` method does): checks that need no I/O then cost no task per command.
    """

    def check_mail(
        self, session: SessionInfo, address: str, params: dict[str, str]
    ) -> Reply | Awaitable[Reply | None] | None: ...

    def check_rcpt(
        self, session: SessionInfo, address: str, params: dict[str, str]
    ) -> Reply | Awaitable[Reply | None] | None: ...

    def accept_message(self, session: SessionInfo, envelope: Envelope,
                       data: bytes) -> Reply | Awaitable[Reply]:
        """Store the message; answer e.g. `Reply(250, "2.0.0", "Ok: queued as 0123ABCD")`
        only once it is safely on disk, or a 4xx/5xx reply."""
        ...

    def session_closed(self, session: SessionInfo) -> None:
        """The connection is gone: release what an unfinished transaction holds."""
        ...
