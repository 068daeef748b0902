"""Where the DSNs delivery writes go: the `DsnSink` protocol, and the envelope of a DSN.

Delivery decides that a sender is owed a DSN and builds it (mta.bounce.dsn); it does not
know how mail is accepted. `mta serve` wires a sink that queues it through the same
accept path as any message (today an adapter over `Ingress`). The envelope is complete:
null sender, the original tenant, class and egress pool, one recipient (the original
sender), BODY=8BITMIME when the report carries 8-bit text.
"""

from __future__ import annotations

from typing import Protocol

from mta.bounce.dsn import dsn_is_8bit
from mta.queue import Envelope, MessageInfo, Recipient

__all__ = ["DsnSink", "dsn_envelope"]


class DsnSink(Protocol):
    async def submit(self, envelope: Envelope, body: bytes) -> str:
        """Queue the DSN; returns its queue id ("" if it could not be queued, logged)."""
        ...


def dsn_envelope(info: MessageInfo, body: bytes) -> Envelope:
    """The envelope of a DSN about `info`, to its envelope sender (received_at is set
    when it is accepted)."""
    return Envelope(tenant=info.tenant, mail_from="", recipients=[Recipient(info.mail_from)],
                    client_ip="127.0.0.1", helo="localhost",
                    mail_params={"BODY": "8BITMIME"} if dsn_is_8bit(body) else {},
                    msg_class=info.msg_class, pool=info.pool,
                    parents=info.parents)
